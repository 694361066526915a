//! `ConvBnAct`: a convolution, its batch norm and an optional activation as one layer (timm's
//! `ConvNormAct`, and every conv + BN [+ act] triple inside the MobileNet and ResNet blocks).
//!
//! In training (or whenever a graph is recorded) it runs the three ops (batch norm and the
//! activation fused as one op). At inference the batch norm is an affine map per channel
//! (Ioffe & Szegedy, 2015, section 3.2):
//!
//! ```text
//! s = gamma / sqrt(var + eps)     bn(conv(x) + b) = s * conv(x) + (b - mean) * s + beta
//! ```
//!
//! and the layer runs one convolution with it and the activation in the epilogue. A dense
//! convolution keeps its weights and applies `s` and the shift per output channel in the GEMM
//! epilogue ([`PackedConvWeight::with_channel_scale`]): folding `s` into the weights
//! (`w' = w * s`) rounds every weight once more, and SE-ResNet-101's logits came out 3x
//! further from the float64 truth with it (`docs/accuracy.md`). A depthwise convolution, whose
//! kernel has no scale, takes the folded weights. The packed weights are computed at the
//! first inference forward and kept until the tensors or the mode change: `visit_mut` and
//! `set_mode` forget them, and code that assigns the public tensors directly must call
//! [`ConvBnAct::invalidate`].
//!
//! The layer has no name of its own: its convolution and batch norm keep the names timm gives
//! them inside their parent (`conv_pw` / `bn1`, `conv1` / `bn1`, `downsample.0` /
//! `downsample.1`), so the parent lists it with an empty child name.

use crate::error::{ModelError, Result};
use crate::layers::{Activation, BatchNorm2d, Conv2d};
use crate::module::{child, in_child, Mode, Module, TensorKind};
use std::sync::OnceLock;
use tessera_core::kernels::conv::PackedConvWeight;
use tessera_core::kernels::norm::fold::eval_scale_shift;
use tessera_core::{is_grad_enabled, Tensor};

/// The inference form of a conv + batch-norm pair: a dense weight packed with the batch norm's
/// channel scale, or a depthwise weight with it folded in; the bias is the shift.
struct Folded {
    weight: FoldedWeight,
    bias: Tensor,
}

/// A convolution weight for inference: packed for the GEMM with its channel scale (dense
/// convolutions) or a plain tensor with the scale folded in (depthwise ones, which do not use
/// the GEMM).
enum FoldedWeight {
    Packed(Box<PackedConvWeight>),
    Plain(Tensor),
}

/// `act(bn(conv(x)))`, folded at inference.
pub struct ConvBnAct {
    /// The convolution (`conv*` in timm's names).
    pub conv: Conv2d,
    /// Its batch norm (`bn*`).
    pub bn: BatchNorm2d,
    /// `None`: no activation (a linear bottleneck's projection, ResNet's `bn3`).
    pub act: Option<Activation>,
    /// The state_dict names of `conv` and `bn` inside the parent.
    names: [&'static str; 2],
    mode: Mode,
    folded: OnceLock<Folded>,
}

impl ConvBnAct {
    /// Joins `conv` and `bn` (named `names[0]` and `names[1]` in the parent), eval mode.
    pub fn new(
        conv: Conv2d,
        bn: BatchNorm2d,
        act: Option<Activation>,
        names: [&'static str; 2],
    ) -> Self {
        ConvBnAct {
            conv,
            bn,
            act,
            names,
            mode: Mode::Eval,
            folded: OnceLock::new(),
        }
    }

    /// The kernels' activation of the epilogue (identity when there is none).
    pub fn kernel_act(&self) -> Activation {
        self.act.unwrap_or(Activation::Identity)
    }

    /// Forgets the folded weights (after assigning `conv` or `bn` tensors directly).
    pub fn invalidate(&mut self) {
        self.folded = OnceLock::new();
    }

    /// Output channels.
    pub fn out_channels(&self) -> usize {
        self.conv.out_channels()
    }

    /// The convolution weight and bias with the eval-mode batch norm folded in, as plain
    /// vectors (`[c_out, c_in / groups, kh, kw]` and `[c_out]`).
    pub fn folded_weights(&self) -> (Vec<f32>, Vec<f32>) {
        let (mean, var) = self.bn.running_stats();
        let conv_bias = self.conv.bias.as_ref().map(|b| b.data());
        fold_batch_norm(
            &self.conv.weight.data(),
            conv_bias.as_deref(),
            BnAffine {
                gamma: &self.bn.weight.data(),
                beta: &self.bn.bias.data(),
                mean: &mean.data(),
                var: &var.data(),
                eps: self.bn.eps,
            },
        )
    }

    /// The eval-mode batch norm (after the convolution's own bias) as a per-output-channel
    /// `(scale, shift)`: `bn(conv(x) + b) = scale * conv(x) + shift`, each computed in f64 and
    /// rounded once.
    pub fn scale_shift(&self) -> Result<(Vec<f32>, Vec<f32>)> {
        let (mean, var) = self.bn.running_stats();
        let conv_bias = self.conv.bias.as_ref().map(|b| b.data());
        eval_scale_shift(
            &self.bn.weight.data(),
            &self.bn.bias.data(),
            &mean.data(),
            &var.data(),
            self.bn.eps,
            conv_bias.as_deref(),
        )
        .map_err(|e| ModelError::config(format!("conv + batch norm: {e}")))
    }

    fn fold(&self) -> Result<Folded> {
        let shape = self.conv.weight.shape();
        let groups = self.conv.params.groups;
        let dims = [shape[0], shape[1], shape[2], shape[3]];
        let err = |e| ModelError::config(format!("conv + batch norm: {e}"));
        if PackedConvWeight::applies(dims, groups) {
            let (scale, shift) = self.scale_shift()?;
            let packed = PackedConvWeight::pack(&self.conv.weight.data(), dims, groups, None)
                .and_then(|p| p.with_channel_scale(scale))
                .map_err(err)?;
            let c = shift.len();
            return Ok(Folded {
                weight: FoldedWeight::Packed(Box::new(packed)),
                bias: Tensor::from_vec(shift, &[c])?,
            });
        }
        let (w, b) = self.folded_weights();
        let weight = FoldedWeight::Plain(Tensor::from_vec(w, shape)?);
        let c = b.len();
        Ok(Folded {
            weight,
            bias: Tensor::from_vec(b, &[c])?,
        })
    }

    fn folded(&self) -> Result<&Folded> {
        if let Some(f) = self.folded.get() {
            return Ok(f);
        }
        // A concurrent forward may set it first: both values are equal.
        let _ = self.folded.set(self.fold()?);
        self.folded
            .get()
            .ok_or_else(|| ModelError::config("conv + batch norm fold: cache unset"))
    }
}

/// An eval-mode batch norm's per-channel statistics and affine parameters.
#[derive(Debug, Clone, Copy)]
pub struct BnAffine<'a> {
    /// Scale (`weight`).
    pub gamma: &'a [f32],
    /// Shift (`bias`).
    pub beta: &'a [f32],
    /// Running mean.
    pub mean: &'a [f32],
    /// Running variance.
    pub var: &'a [f32],
    /// Added to the variance before the square root.
    pub eps: f32,
}

/// The batch-norm fold: `w' = w * s`, `b' = (b - mean) * s + beta` with
/// `s = gamma / sqrt(var + eps)` per output channel (rows of `w`), computed in f64 and rounded
/// once. `w` holds `c_out` equal rows; `conv_bias` is `[c_out]` or absent (zero).
pub fn fold_batch_norm(
    w: &[f32],
    conv_bias: Option<&[f32]>,
    bn: BnAffine<'_>,
) -> (Vec<f32>, Vec<f32>) {
    let c = bn.gamma.len();
    let scale: Vec<f64> = (0..c)
        .map(|i| f64::from(bn.gamma[i]) / (f64::from(bn.var[i]) + f64::from(bn.eps)).sqrt())
        .collect();
    let per = (w.len() / c.max(1)).max(1);
    let mut wf = w.to_vec();
    for (row, s) in wf.chunks_exact_mut(per).zip(&scale) {
        for v in row {
            *v = (f64::from(*v) * s) as f32;
        }
    }
    let bf = (0..c)
        .map(|i| {
            let b0 = conv_bias.map_or(0.0, |b| f64::from(b[i]));
            ((b0 - f64::from(bn.mean[i])) * scale[i] + f64::from(bn.beta[i])) as f32
        })
        .collect();
    (wf, bf)
}

impl Module for ConvBnAct {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let recording = is_grad_enabled()
            && (x.requires_grad()
                || self.conv.weight.requires_grad()
                || self.bn.weight.requires_grad()
                || self.bn.bias.requires_grad());
        if self.mode == Mode::Eval && !recording {
            let f = self.folded()?;
            let a = self.kernel_act();
            let p = self.conv.params;
            // One convolution for the pair: named after the conv.
            return Ok(in_child(self.names[0], || match &f.weight {
                FoldedWeight::Packed(w) => x.conv2d_packed(w, Some(&f.bias), p, a),
                FoldedWeight::Plain(w) => x.conv2d_act(w, Some(&f.bias), p, a),
            })?);
        }
        // Training (or a recorded eval forward): batch norm and the activation as one fused op.
        let y = in_child(self.names[0], || self.conv.forward(x))?;
        in_child(self.names[1], || match self.act {
            Some(a) => self.bn.forward_act(&y, a),
            None => self.bn.forward(&y),
        })
    }

    fn visit(&self, p: &str, f: &mut dyn FnMut(&str, &Tensor, TensorKind)) {
        self.conv.visit(&child(p, self.names[0]), f);
        self.bn.visit(&child(p, self.names[1]), f);
    }

    fn visit_mut(&mut self, p: &str, f: &mut dyn FnMut(&str, &mut Tensor, TensorKind)) {
        self.invalidate();
        self.conv.visit_mut(&child(p, self.names[0]), f);
        self.bn.visit_mut(&child(p, self.names[1]), f);
    }

    fn set_mode(&mut self, mode: Mode) {
        self.mode = mode;
        self.invalidate();
        self.bn.set_mode(mode);
    }
}
