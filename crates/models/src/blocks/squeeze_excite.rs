//! Squeeze-and-excitation as timm's EfficientNet / MobileNet family has it
//! (`timm.models._efficientnet_blocks.SqueezeExcite`; Hu et al., "Squeeze-and-Excitation
//! Networks", CVPR 2018, as adapted by Howard et al., "Searching for MobileNetV3", ICCV 2019):
//!
//! `x * gate(conv_expand(act(conv_reduce(mean_hw(x)))))`
//!
//! with 1x1 convolutions *with bias* (`conv_reduce`, `conv_expand`), so the state_dict keys are
//! `se.conv_reduce.{weight,bias}` and `se.conv_expand.{weight,bias}`. MobileNetV3 uses ReLU
//! inside (timm's `force_act_layer=nn.ReLU`), the hard-sigmoid gate, and reduced channels
//! `make_divisible(channels * 0.25, 8)` (timm's `round_channels` as `rd_round_fn`).
//!
//! At inference (no graph recorded) the gate is computed in f64 from the f32 input and
//! weights and rounded once (`Tensor::excite_gate`), as the compiled plan does; with a graph
//! it is the differentiable ops in f32.

use crate::error::Result;
use crate::layers::{Activation, Conv2d};
use crate::module::{in_child, Module};
use crate::module_children;
use tessera_core::autograd::needs_grad;
use tessera_core::{Rng, Tensor};

use super::efficientnet_init::goog_conv;

/// The SE attention of an EfficientNet-family block.
pub struct SqueezeExcite {
    /// `in -> rd` 1x1 convolution with bias.
    pub conv_reduce: Conv2d,
    /// Activation between the two convolutions (`act1` in timm, parameter-free).
    pub act: Activation,
    /// `rd -> in` 1x1 convolution with bias.
    pub conv_expand: Conv2d,
    /// The gate (hard-sigmoid in MobileNetV3, sigmoid in EfficientNet).
    pub gate: Activation,
}

impl SqueezeExcite {
    /// `channels -> rd_channels -> channels`, initialised as timm's `_init_weight_goog`
    /// (convolutions `N(0, 2 / fan_out)`, biases zero).
    pub fn new(
        channels: usize,
        rd_channels: usize,
        act: Activation,
        gate: Activation,
        rng: &mut Rng,
    ) -> Self {
        SqueezeExcite {
            conv_reduce: goog_conv(channels, rd_channels, 1, 1, 1, true, rng),
            act,
            conv_expand: goog_conv(rd_channels, channels, 1, 1, 1, true, rng),
            gate,
        }
    }

    /// The reduced channel count.
    pub fn rd_channels(&self) -> usize {
        self.conv_reduce.out_channels()
    }
}

impl Module for SqueezeExcite {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let (cr, ce) = (&self.conv_reduce, &self.conv_expand);
        let mut inputs = vec![x, &cr.weight, &ce.weight];
        inputs.extend(cr.bias.as_ref());
        inputs.extend(ce.bias.as_ref());
        if !needs_grad(&inputs) {
            // Inference: the gate in f64, rounded once (as the compiled plan computes it).
            let (b1, b2) = (cr.bias.as_ref(), ce.bias.as_ref());
            let s = x.excite_gate(&cr.weight, b1, self.act, &ce.weight, b2, self.gate)?;
            return Ok(x.mul(&s)?);
        }
        let s = x.mean(&[2, 3], true)?;
        let s = in_child("conv_reduce", || self.conv_reduce.forward(&s))?.activate(self.act);
        let s = in_child("conv_expand", || self.conv_expand.forward(&s))?.activate(self.gate);
        Ok(x.mul(&s)?)
    }

    module_children!("conv_reduce" => conv_reduce, "conv_expand" => conv_expand);
}
