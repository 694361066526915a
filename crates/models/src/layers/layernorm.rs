//! `nn.LayerNorm` over the last dimension (Ba et al., 2016), as ViT uses it (eps 1e-6 in timm).

use crate::error::Result;
use crate::module::{Mode, Module, TensorKind};
use tessera_core::Tensor;

/// Layer normalisation of the last dimension with a learnable scale and shift.
pub struct LayerNorm {
    /// `[d]`, initialised to 1.
    pub weight: Tensor,
    /// `[d]`, initialised to 0.
    pub bias: Tensor,
    /// Added to the variance before the square root.
    pub eps: f32,
}

impl LayerNorm {
    /// Normalises a last dimension of size `d`.
    pub fn new(d: usize, eps: f32) -> Self {
        LayerNorm {
            weight: Tensor::ones(&[d]),
            bias: Tensor::zeros(&[d]),
            eps,
        }
    }
}

impl Module for LayerNorm {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let d = self.weight.shape()[0];
        Ok(x.layer_norm(&[d], Some(&self.weight), Some(&self.bias), self.eps)?)
    }

    fn visit(&self, prefix: &str, f: &mut dyn FnMut(&str, &Tensor, TensorKind)) {
        f(
            &format!("{prefix}weight"),
            &self.weight,
            TensorKind::Parameter,
        );
        f(&format!("{prefix}bias"), &self.bias, TensorKind::Parameter);
    }

    fn visit_mut(&mut self, prefix: &str, f: &mut dyn FnMut(&str, &mut Tensor, TensorKind)) {
        f(
            &format!("{prefix}weight"),
            &mut self.weight,
            TensorKind::Parameter,
        );
        f(
            &format!("{prefix}bias"),
            &mut self.bias,
            TensorKind::Parameter,
        );
    }

    fn set_mode(&mut self, _mode: Mode) {}
}
