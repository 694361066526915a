//! Squeeze-and-excitation channel attention as timm's `layers.SEModule` (Hu et al.,
//! "Squeeze-and-Excitation Networks", CVPR 2018): global average pool ("squeeze"), a 1x1 conv
//! `fc1` with bias to `rd_channels`, ReLU, a 1x1 conv `fc2` with bias back to `channels`, and a
//! sigmoid gate that rescales every input channel ("excitation").
//!
//! At inference (no graph recorded) the gate is computed in f64 from the f32 input and weights
//! and rounded once (`Tensor::excite_gate`), and SE-ResNet's residual join after it,
//! `act(x * s + shortcut)`, is one fused multiply-add (`Tensor::scale_join`): the gate's
//! logits and the join both cancel, and in f32 they are the largest error a block adds
//! (docs/accuracy.md). With a graph (training), the gate is the differentiable ops in f32 and
//! the join `mul` then `add_relu`.
//!
//! `rd_channels = make_divisible(channels / 16, 8, round_limit = 0)` as timm (so 256 -> 16,
//! 2048 -> 128, 32 -> 8). timm's optional `bn` is `nn.Identity` here (no tensors), and the
//! `add_maxpool` variant is not provided.

use crate::error::{ModelError, Result};
use crate::init;
use crate::layers::{Activation, Conv2d};
use crate::module::{in_child, Module};
use crate::module_children;
use tessera_core::autograd::needs_grad;
use tessera_core::ops::conv::Conv2dParams;
use tessera_core::{Rng, Tensor};

/// timm's `make_divisible(v, divisor, min_value=None, round_limit)`: `v` rounded to the nearest
/// multiple of `divisor` (at least `divisor`), bumped up by one `divisor` if that lost more than
/// `1 - round_limit` of `v`.
pub fn make_divisible(v: f64, divisor: usize, round_limit: f64) -> usize {
    let d = divisor as f64;
    let rounded = ((v + d / 2.0).floor() as usize / divisor) * divisor;
    let mut new_v = rounded.max(divisor);
    if (new_v as f64) < round_limit * v {
        new_v += divisor;
    }
    new_v
}

/// A 1x1 convolution with bias, weight `N(0, 2 / fan_out)` (timm ResNet's
/// `kaiming_normal_(mode="fan_out")`, which it applies to every `nn.Conv2d`) and PyTorch's
/// default uniform bias.
fn conv1x1_bias(in_ch: usize, out_ch: usize, rng: &mut Rng) -> Conv2d {
    let std = (2.0 / out_ch as f32).sqrt();
    let weight = init::normal(&[out_ch, in_ch, 1, 1], std, rng);
    let bias = init::uniform(&[out_ch], init::default_bound(in_ch), rng);
    Conv2d {
        weight,
        bias: Some(bias),
        params: Conv2dParams::new(1, 0),
    }
}

/// timm's `SEModule` with its defaults (`rd_ratio = 1/16`, `rd_divisor = 8`, bias, ReLU,
/// sigmoid gate): tensors `fc1.weight`, `fc1.bias`, `fc2.weight`, `fc2.bias`.
pub struct SeModule {
    /// `channels -> rd_channels`, 1x1 with bias.
    pub fc1: Conv2d,
    /// `rd_channels -> channels`, 1x1 with bias.
    pub fc2: Conv2d,
}

impl SeModule {
    /// The reduced width timm uses for `channels`: `make_divisible(channels / 16, 8, 0.0)`.
    pub fn rd_channels(channels: usize) -> usize {
        make_divisible(channels as f64 / 16.0, 8, 0.0)
    }

    /// An SE module over `channels` channels, initialised as inside a timm ResNet.
    pub fn new(channels: usize, rng: &mut Rng) -> Result<Self> {
        if channels == 0 {
            return Err(ModelError::config("SEModule: channels must be positive"));
        }
        let rd = Self::rd_channels(channels);
        Ok(SeModule {
            fc1: conv1x1_bias(channels, rd, rng),
            fc2: conv1x1_bias(rd, channels, rng),
        })
    }

    /// Number of channels it gates.
    pub fn channels(&self) -> usize {
        self.fc1.in_channels()
    }
}

impl SeModule {
    /// The gate `[n, c, 1, 1]` of `x`.
    fn gate(&self, x: &Tensor) -> Result<Tensor> {
        let (fc1, fc2) = (&self.fc1, &self.fc2);
        let mut inputs = vec![x, &fc1.weight, &fc2.weight];
        inputs.extend(fc1.bias.as_ref());
        inputs.extend(fc2.bias.as_ref());
        if !needs_grad(&inputs) {
            let (b1, b2) = (fc1.bias.as_ref(), fc2.bias.as_ref());
            let (relu, sigmoid) = (Activation::Relu, Activation::Sigmoid);
            return Ok(x.excite_gate(&fc1.weight, b1, relu, &fc2.weight, b2, sigmoid)?);
        }
        let s = x.global_avg_pool2d()?;
        let s = in_child("fc1", || fc1.forward(&s))?.relu();
        // N x C gate values, each scaling a whole channel: correctly rounded (see
        // `Tensor::sigmoid_exact`), at no measurable cost.
        Ok(in_child("fc2", || fc2.forward(&s))?.sigmoid_exact())
    }

    /// `act(x * gate(x) + shortcut)`, the tail of an SE-ResNet block. At inference, for
    /// identity and ReLU, the join is rounded once (`Tensor::scale_join`). With a graph it is
    /// `mul` then `add_relu`: on the full-size SE-ResNet-101 case of docs/accuracy.md the fused
    /// join in training left the training logits' error where it was and only changed which
    /// near-zero ReLU inputs flip.
    pub fn forward_join(&self, x: &Tensor, shortcut: &Tensor, act: Activation) -> Result<Tensor> {
        let s = self.gate(x)?;
        let fused = matches!(act, Activation::Identity | Activation::Relu);
        if fused && shortcut.shape() == x.shape() && !needs_grad(&[x, &s, shortcut]) {
            return Ok(x.scale_join(&s, shortcut, act)?);
        }
        let h = x.mul(&s)?;
        if act == Activation::Relu {
            return Ok(h.add_relu(shortcut)?);
        }
        Ok(h.add(shortcut)?.activate(act))
    }
}

impl Module for SeModule {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        Ok(x.mul(&self.gate(x)?)?)
    }

    module_children!("fc1" => fc1, "fc2" => fc2);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rd_channels_follow_timm() {
        // timm: make_divisible(c / 16, 8, round_limit=0.)
        assert_eq!(SeModule::rd_channels(256), 16);
        assert_eq!(SeModule::rd_channels(512), 32);
        assert_eq!(SeModule::rd_channels(1024), 64);
        assert_eq!(SeModule::rd_channels(2048), 128);
        assert_eq!(SeModule::rd_channels(32), 8);
        assert_eq!(SeModule::rd_channels(200), 16); // 12.5 + 4 -> 16
        assert_eq!(SeModule::rd_channels(1), 8);
    }
}
