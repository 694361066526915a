//! `nn.Linear`: `y = x W^T + b` with `W` `[out, in]`; the bias is fused into the GEMM epilogue
//! by `Tensor::linear`.

use crate::error::Result;
use crate::init;
use crate::module::{Mode, Module, TensorKind};
use tessera_core::{Rng, Tensor};

/// A fully-connected layer.
pub struct Linear {
    /// `[out_features, in_features]`.
    pub weight: Tensor,
    /// `[out_features]`.
    pub bias: Option<Tensor>,
}

impl Linear {
    /// PyTorch's default initialisation (`U(-1/sqrt(in), 1/sqrt(in))` for weight and bias).
    pub fn new(in_features: usize, out_features: usize, bias: bool, rng: &mut Rng) -> Self {
        let bound = init::default_bound(in_features);
        Linear {
            weight: init::uniform(&[out_features, in_features], bound, rng),
            bias: bias.then(|| init::uniform(&[out_features], bound, rng)),
        }
    }

    /// Input features.
    pub fn in_features(&self) -> usize {
        self.weight.shape()[1]
    }

    /// Output features.
    pub fn out_features(&self) -> usize {
        self.weight.shape()[0]
    }
}

impl Module for Linear {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        Ok(x.linear(&self.weight, self.bias.as_ref())?)
    }

    fn visit(&self, prefix: &str, f: &mut dyn FnMut(&str, &Tensor, TensorKind)) {
        f(
            &format!("{prefix}weight"),
            &self.weight,
            TensorKind::Parameter,
        );
        if let Some(b) = &self.bias {
            f(&format!("{prefix}bias"), b, TensorKind::Parameter);
        }
    }

    fn visit_mut(&mut self, prefix: &str, f: &mut dyn FnMut(&str, &mut Tensor, TensorKind)) {
        f(
            &format!("{prefix}weight"),
            &mut self.weight,
            TensorKind::Parameter,
        );
        if let Some(b) = &mut self.bias {
            f(&format!("{prefix}bias"), b, TensorKind::Parameter);
        }
    }

    fn set_mode(&mut self, _mode: Mode) {}
}
