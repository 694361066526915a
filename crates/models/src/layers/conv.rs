//! `nn.Conv2d`: NCHW input, weight `[out, in / groups, kh, kw]`, optional bias; stride,
//! padding, dilation and groups (depthwise when `groups == in == out`).

use crate::error::{ModelError, Result};
use crate::init;
use crate::module::{Mode, Module, TensorKind};
use tessera_core::ops::conv::Conv2dParams;
use tessera_core::{Rng, Tensor};

/// A 2-D convolution.
pub struct Conv2d {
    /// `[out_channels, in_channels / groups, kh, kw]`.
    pub weight: Tensor,
    /// `[out_channels]`.
    pub bias: Option<Tensor>,
    pub params: Conv2dParams,
}

impl Conv2d {
    /// A square `k x k` convolution configured by the core's builder
    /// (`Conv2dParams::new(stride, padding).groups(g)`), with PyTorch's default initialisation.
    /// Errors if the channels are not divisible by `params.groups`.
    pub fn new(
        in_ch: usize,
        out_ch: usize,
        k: usize,
        params: Conv2dParams,
        bias: bool,
        rng: &mut Rng,
    ) -> Result<Self> {
        let groups = params.groups;
        if groups == 0 || !in_ch.is_multiple_of(groups) || !out_ch.is_multiple_of(groups) {
            return Err(ModelError::config(format!(
                "conv2d: {in_ch} -> {out_ch} channels are not divisible by groups {groups}"
            )));
        }
        let fan_in = in_ch / groups * k * k;
        let bound = init::default_bound(fan_in);
        Ok(Conv2d {
            weight: init::uniform(&[out_ch, in_ch / groups, k, k], bound, rng),
            bias: bias.then(|| init::uniform(&[out_ch], bound, rng)),
            params,
        })
    }

    /// Output channels.
    pub fn out_channels(&self) -> usize {
        self.weight.shape()[0]
    }

    /// Input channels.
    pub fn in_channels(&self) -> usize {
        self.weight.shape()[1] * self.params.groups
    }
}

impl Module for Conv2d {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        Ok(x.conv2d(&self.weight, self.bias.as_ref(), self.params)?)
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
