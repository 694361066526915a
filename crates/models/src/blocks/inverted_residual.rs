//! The blocks of timm's EfficientNet / MobileNet family (`timm.models._efficientnet_blocks`) and
//! the stack builder that assembles them from a table (`_efficientnet_builder`):
//!
//! - [`InvertedResidual`] (Sandler et al., "MobileNetV2: Inverted Residuals and Linear
//!   Bottlenecks", CVPR 2018): 1x1 expansion `conv_pw`/`bn1`/act, depthwise `conv_dw`/`bn2`/act,
//!   optional `se`, linear 1x1 projection `conv_pwl`/`bn3` (no activation: the linear
//!   bottleneck), residual when the stride is 1 and the channels match.
//! - [`DepthwiseSeparable`] (the expansion-1 block): `conv_dw`/`bn1`/act, optional `se`,
//!   `conv_pw`/`bn2` (no activation), residual as above.
//! - [`ConvBnAct`]: `conv`/`bn1`/act (MobileNetV3's last 1x1 stage, timm's `cn` block).
//! - [`Trunk`]: `conv_stem`/`bn1`/act then `blocks.{stage}.{block}` built from [`BlockDef`]
//!   rows with timm's `round_channels` (channel multiplier) and `make_divisible` rounding; only
//!   the first block of a stage strides (timm's builder).
//!
//! Padding is timm's symmetric default `((stride - 1) + (k - 1)) / 2` (= `k / 2` for the odd
//! kernels used here). Weights are initialised as timm's `_init_weight_goog`.

use crate::error::{ModelError, Result};
use crate::init;
use crate::layers::{Act, BatchNorm2d, Conv2d, Linear};
use crate::module::{child, Mode, Module, TensorKind};
use std::sync::OnceLock;
use tessera_core::kernels::conv::PackedConvWeight;
use tessera_core::kernels::Activation;
use tessera_core::{is_grad_enabled, Conv2dParams, Rng, Tensor};

use super::squeeze_excite::SqueezeExcite;

/// timm's `make_divisible(v, divisor, min_value=None, round_limit=0.9)`: the nearest multiple of
/// `divisor` (at least `divisor`), bumped up one step if rounding lost more than 10 %.
pub fn make_divisible(v: f64, divisor: usize) -> usize {
    let d = divisor as f64;
    let mut new_v = (((v + d / 2.0).floor() / d).floor() * d).max(d);
    if new_v < 0.9 * v {
        new_v += d;
    }
    new_v as usize
}

/// timm's `round_channels(channels, multiplier)`: `make_divisible(channels * multiplier, 8)`
/// (unchanged when `multiplier` is 0).
pub fn round_channels(channels: usize, multiplier: f64) -> usize {
    if multiplier == 0.0 {
        channels
    } else {
        make_divisible(channels as f64 * multiplier, 8)
    }
}

/// A `k x k` convolution initialised as timm's `_init_weight_goog`: weight
/// `N(0, 2 / fan_out)` with `fan_out = k * k * out / groups`, bias zero.
pub fn goog_conv(
    in_ch: usize,
    out_ch: usize,
    k: usize,
    stride: usize,
    groups: usize,
    bias: bool,
    rng: &mut Rng,
) -> Conv2d {
    let fan_out = (k * k * out_ch / groups).max(1);
    let std = (2.0 / fan_out as f64).sqrt() as f32;
    let padding = ((stride - 1) + (k - 1)) / 2;
    Conv2d {
        weight: init::normal(&[out_ch, in_ch / groups, k, k], std, rng),
        bias: bias.then(|| Tensor::zeros(&[out_ch])),
        params: Conv2dParams::new(stride, padding).groups(groups),
    }
}

/// A linear layer initialised as timm's `_init_weight_goog`: weight `U(-1/sqrt(out),
/// 1/sqrt(out))`, bias zero.
pub fn goog_linear(in_f: usize, out_f: usize, rng: &mut Rng) -> Linear {
    let bound = 1.0 / (out_f.max(1) as f32).sqrt();
    Linear {
        weight: init::uniform(&[out_f, in_f], bound, rng),
        bias: Some(Tensor::zeros(&[out_f])),
    }
}

/// The eval-mode folded weight and bias of one conv + batch-norm pair, computed at the first
/// inference forward and kept until [`FoldCache::clear`] (called by the blocks' `visit_mut`
/// and `set_mode`, the ways weights and statistics change; code that assigns the public
/// tensors directly must call `clear` too).
/// Dense convolutions keep their folded weight packed for the GEMM (packed once, not on every
/// call); depthwise ones, which do not use the GEMM, keep it as a tensor.
#[derive(Default)]
pub struct FoldCache(OnceLock<(FoldedWeight, Tensor)>);

/// A folded convolution weight, in the form its kernel consumes.
enum FoldedWeight {
    Packed(Box<PackedConvWeight>),
    Plain(Tensor),
}

impl FoldCache {
    /// Forgets the folded tensors.
    pub fn clear(&mut self) {
        self.0 = OnceLock::new();
    }
}

/// `act(bn(conv(x)))`. At inference (eval mode, nothing to record) the batch norm is folded
/// into the convolution (`w' = w * s`, `b' = (b - mean) * s + beta`, `s = gamma /
/// sqrt(var + eps)`, `s` in f64; cached in `cache`) and the activation fused into its epilogue:
/// one pass over the output instead of three, equal to the unfolded composition up to float
/// rounding.
pub fn conv_bn(
    conv: &Conv2d,
    bn: &BatchNorm2d,
    act: Option<Act>,
    x: &Tensor,
    mode: Mode,
    cache: &FoldCache,
) -> Result<Tensor> {
    let recording = is_grad_enabled()
        && (x.requires_grad()
            || conv.weight.requires_grad()
            || bn.weight.requires_grad()
            || bn.bias.requires_grad());
    if mode == Mode::Eval && !recording {
        let (w, b) = match cache.0.get() {
            Some(wb) => wb,
            None => {
                let wb = fold_bn(conv, bn)?;
                // A concurrent forward may have set it first: both values are equal.
                let _ = cache.0.set(wb);
                cache
                    .0
                    .get()
                    .ok_or_else(|| ModelError::config("fold cache unset"))?
            }
        };
        let a = act.map_or(Activation::Identity, Act::kernel);
        return Ok(match w {
            FoldedWeight::Packed(w) => x.conv2d_packed(w, Some(b), conv.params, a)?,
            FoldedWeight::Plain(w) => x.conv2d_act(w, Some(b), conv.params, a)?,
        });
    }
    // Training (or a recorded eval forward): batch norm and the activation as one fused op.
    let y = conv.forward(x)?;
    match act {
        Some(a) => bn.forward_act(&y, a),
        None => bn.forward(&y),
    }
}

/// The convolution weight and bias with an eval-mode batch norm folded in.
fn fold_bn(conv: &Conv2d, bn: &BatchNorm2d) -> Result<(FoldedWeight, Tensor)> {
    let (mean, var) = bn.running_stats();
    let (mean, var) = (mean.data(), var.data());
    let (gamma, beta) = (bn.weight.data(), bn.bias.data());
    let c = conv.out_channels();
    let scale: Vec<f64> = (0..c)
        .map(|i| f64::from(gamma[i]) / (f64::from(var[i]) + f64::from(bn.eps)).sqrt())
        .collect();
    let mut w = conv.weight.data().into_owned();
    let per = w.len() / c.max(1);
    for (row, s) in w.chunks_exact_mut(per.max(1)).zip(&scale) {
        for v in row {
            *v = (f64::from(*v) * s) as f32;
        }
    }
    let cb = conv.bias.as_ref().map(|b| b.data());
    let b: Vec<f32> = (0..c)
        .map(|i| {
            let b0 = cb.as_ref().map_or(0.0, |b| f64::from(b[i]));
            ((b0 - f64::from(mean[i])) * scale[i] + f64::from(beta[i])) as f32
        })
        .collect();
    let shape = conv.weight.shape();
    let groups = conv.params.groups;
    let dims = [shape[0], shape[1], shape[2], shape[3]];
    let w = if !PackedConvWeight::applies(dims, groups) {
        FoldedWeight::Plain(Tensor::from_vec(w, shape)?)
    } else {
        FoldedWeight::Packed(Box::new(
            PackedConvWeight::pack(&w, dims, groups, None)
                .map_err(|e| ModelError::config(format!("conv_bn fold: {e}")))?,
        ))
    };
    Ok((w, Tensor::from_vec(b, &[c])?))
}

/// The inverted residual (MBConv) block.
pub struct InvertedResidual {
    /// 1x1 expansion.
    pub conv_pw: Conv2d,
    /// Batch norm after the expansion.
    pub bn1: BatchNorm2d,
    /// Depthwise convolution.
    pub conv_dw: Conv2d,
    /// Batch norm after the depthwise convolution.
    pub bn2: BatchNorm2d,
    /// Squeeze-and-excitation, if the block has it.
    pub se: Option<SqueezeExcite>,
    /// 1x1 linear projection.
    pub conv_pwl: Conv2d,
    /// Batch norm after the projection (no activation).
    pub bn3: BatchNorm2d,
    /// Activation after `bn1` and `bn2`.
    pub act: Act,
    /// Whether the input is added to the output (stride 1, same channels).
    pub has_skip: bool,
    /// Train or eval (eval folds the batch norms at inference).
    pub mode: Mode,
    /// Folded conv + batch-norm pairs, in forward order.
    pub fold: [FoldCache; 3],
}

impl InvertedResidual {
    fn clear_fold(&mut self) {
        for c in &mut self.fold {
            c.clear();
        }
    }
}

impl Module for InvertedResidual {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let mut h = conv_bn(
            &self.conv_pw,
            &self.bn1,
            Some(self.act),
            x,
            self.mode,
            &self.fold[0],
        )?;
        h = conv_bn(
            &self.conv_dw,
            &self.bn2,
            Some(self.act),
            &h,
            self.mode,
            &self.fold[1],
        )?;
        if let Some(se) = &self.se {
            h = se.forward(&h)?;
        }
        h = conv_bn(
            &self.conv_pwl,
            &self.bn3,
            None,
            &h,
            self.mode,
            &self.fold[2],
        )?;
        if self.has_skip {
            h = h.add(x)?;
        }
        Ok(h)
    }

    fn visit(&self, p: &str, f: &mut dyn FnMut(&str, &Tensor, TensorKind)) {
        self.conv_pw.visit(&child(p, "conv_pw"), f);
        self.bn1.visit(&child(p, "bn1"), f);
        self.conv_dw.visit(&child(p, "conv_dw"), f);
        self.bn2.visit(&child(p, "bn2"), f);
        if let Some(se) = &self.se {
            se.visit(&child(p, "se"), f);
        }
        self.conv_pwl.visit(&child(p, "conv_pwl"), f);
        self.bn3.visit(&child(p, "bn3"), f);
    }

    fn visit_mut(&mut self, p: &str, f: &mut dyn FnMut(&str, &mut Tensor, TensorKind)) {
        self.clear_fold();
        self.conv_pw.visit_mut(&child(p, "conv_pw"), f);
        self.bn1.visit_mut(&child(p, "bn1"), f);
        self.conv_dw.visit_mut(&child(p, "conv_dw"), f);
        self.bn2.visit_mut(&child(p, "bn2"), f);
        if let Some(se) = &mut self.se {
            se.visit_mut(&child(p, "se"), f);
        }
        self.conv_pwl.visit_mut(&child(p, "conv_pwl"), f);
        self.bn3.visit_mut(&child(p, "bn3"), f);
    }

    fn set_mode(&mut self, mode: Mode) {
        self.mode = mode;
        self.clear_fold();
        self.bn1.set_mode(mode);
        self.bn2.set_mode(mode);
        self.bn3.set_mode(mode);
    }
}

/// The depthwise-separable block (an inverted residual without expansion).
pub struct DepthwiseSeparable {
    /// Depthwise convolution.
    pub conv_dw: Conv2d,
    /// Batch norm after the depthwise convolution.
    pub bn1: BatchNorm2d,
    /// Squeeze-and-excitation, if the block has it.
    pub se: Option<SqueezeExcite>,
    /// 1x1 projection.
    pub conv_pw: Conv2d,
    /// Batch norm after the projection.
    pub bn2: BatchNorm2d,
    /// Activation after `bn1` (and after `bn2` where the block has one).
    pub act: Act,
    /// Whether the input is added to the output.
    pub has_skip: bool,
    /// Train or eval (eval folds the batch norms at inference).
    pub mode: Mode,
    /// Folded conv + batch-norm pairs, in forward order.
    pub fold: [FoldCache; 2],
}

impl DepthwiseSeparable {
    fn clear_fold(&mut self) {
        for c in &mut self.fold {
            c.clear();
        }
    }
}

impl Module for DepthwiseSeparable {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let mut h = conv_bn(
            &self.conv_dw,
            &self.bn1,
            Some(self.act),
            x,
            self.mode,
            &self.fold[0],
        )?;
        if let Some(se) = &self.se {
            h = se.forward(&h)?;
        }
        h = conv_bn(&self.conv_pw, &self.bn2, None, &h, self.mode, &self.fold[1])?;
        if self.has_skip {
            h = h.add(x)?;
        }
        Ok(h)
    }

    fn visit(&self, p: &str, f: &mut dyn FnMut(&str, &Tensor, TensorKind)) {
        self.conv_dw.visit(&child(p, "conv_dw"), f);
        self.bn1.visit(&child(p, "bn1"), f);
        if let Some(se) = &self.se {
            se.visit(&child(p, "se"), f);
        }
        self.conv_pw.visit(&child(p, "conv_pw"), f);
        self.bn2.visit(&child(p, "bn2"), f);
    }

    fn visit_mut(&mut self, p: &str, f: &mut dyn FnMut(&str, &mut Tensor, TensorKind)) {
        self.clear_fold();
        self.conv_dw.visit_mut(&child(p, "conv_dw"), f);
        self.bn1.visit_mut(&child(p, "bn1"), f);
        if let Some(se) = &mut self.se {
            se.visit_mut(&child(p, "se"), f);
        }
        self.conv_pw.visit_mut(&child(p, "conv_pw"), f);
        self.bn2.visit_mut(&child(p, "bn2"), f);
    }

    fn set_mode(&mut self, mode: Mode) {
        self.mode = mode;
        self.clear_fold();
        self.bn1.set_mode(mode);
        self.bn2.set_mode(mode);
    }
}

/// Convolution, batch norm, activation (no skip, as MobileNetV3 uses it).
pub struct ConvBnAct {
    /// The convolution.
    pub conv: Conv2d,
    /// Its batch norm.
    pub bn1: BatchNorm2d,
    /// Activation after the batch norm.
    pub act: Act,
    /// Train or eval (eval folds the batch norm at inference).
    pub mode: Mode,
    /// The folded conv + batch norm.
    pub fold: FoldCache,
}

impl ConvBnAct {
    fn clear_fold(&mut self) {
        self.fold.clear();
    }
}

impl Module for ConvBnAct {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        conv_bn(
            &self.conv,
            &self.bn1,
            Some(self.act),
            x,
            self.mode,
            &self.fold,
        )
    }

    fn visit(&self, p: &str, f: &mut dyn FnMut(&str, &Tensor, TensorKind)) {
        self.conv.visit(&child(p, "conv"), f);
        self.bn1.visit(&child(p, "bn1"), f);
    }

    fn visit_mut(&mut self, p: &str, f: &mut dyn FnMut(&str, &mut Tensor, TensorKind)) {
        self.clear_fold();
        self.conv.visit_mut(&child(p, "conv"), f);
        self.bn1.visit_mut(&child(p, "bn1"), f);
    }

    fn set_mode(&mut self, mode: Mode) {
        self.mode = mode;
        self.clear_fold();
        self.bn1.set_mode(mode);
    }
}

/// The kind of a block row (timm's block-string prefix).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BlockKind {
    /// `ds`: [`DepthwiseSeparable`].
    Ds,
    /// `ir`: [`InvertedResidual`].
    Ir,
    /// `cn`: [`ConvBnAct`].
    Cn,
}

/// One row of an architecture table: `repeats` blocks of one kind (timm's block string
/// `ir_r{repeats}_k{kernel}_s{stride}_e{exp}_c{out}[_se0.25][_nre]`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BlockDef {
    /// Block type.
    pub kind: BlockKind,
    /// Number of blocks in the stage.
    pub repeats: usize,
    /// Kernel size of the depthwise (or plain) convolution.
    pub kernel: usize,
    /// Stride of the first block of the row (later ones use 1).
    pub stride: usize,
    /// Expansion ratio (inverted residuals only).
    pub exp: f64,
    /// Output channels before the channel multiplier.
    pub out: usize,
    /// Squeeze-excitation with ratio 0.25 of the (expanded) channels.
    pub se: bool,
    /// The block's activation; `None` uses the model's (`_nre` rows are `Some(Act::Relu)`).
    pub act: Option<Act>,
}

/// A block of the trunk.
pub enum MbBlock {
    /// A depthwise-separable block.
    Ds(DepthwiseSeparable),
    /// An inverted residual block.
    Ir(InvertedResidual),
    /// A plain convolution + batch norm + activation.
    Cn(ConvBnAct),
}

impl MbBlock {
    fn inner(&self) -> &dyn Module {
        match self {
            MbBlock::Ds(b) => b,
            MbBlock::Ir(b) => b,
            MbBlock::Cn(b) => b,
        }
    }

    fn inner_mut(&mut self) -> &mut dyn Module {
        match self {
            MbBlock::Ds(b) => b,
            MbBlock::Ir(b) => b,
            MbBlock::Cn(b) => b,
        }
    }
}

impl Module for MbBlock {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.inner().forward(x)
    }

    fn visit(&self, p: &str, f: &mut dyn FnMut(&str, &Tensor, TensorKind)) {
        self.inner().visit(p, f)
    }

    fn visit_mut(&mut self, p: &str, f: &mut dyn FnMut(&str, &mut Tensor, TensorKind)) {
        self.inner_mut().visit_mut(p, f)
    }

    fn set_mode(&mut self, mode: Mode) {
        self.inner_mut().set_mode(mode)
    }
}

/// How to build a [`Trunk`].
#[derive(Debug, Clone)]
pub struct TrunkConfig<'a> {
    /// Input channels.
    pub in_chans: usize,
    /// Stem channels (already rounded or fixed, as the architecture decides).
    pub stem_size: usize,
    /// Stride of `conv_stem` (2 in timm; 1 in the small-image presets).
    pub stem_stride: usize,
    /// Stages of rows; a stage becomes `blocks.{i}`.
    pub stages: &'a [&'a [BlockDef]],
    /// Stages whose first block does not stride (small-image presets; empty in timm's).
    pub unstrided_stages: &'a [usize],
    /// timm's channel multiplier for block outputs.
    pub multiplier: f64,
    /// The model's activation (stem and rows whose `act` is `None`).
    pub act: Act,
    /// The SE gate (hard-sigmoid in MobileNetV3).
    pub se_gate: Act,
}

/// Stem plus the stages of blocks: the shared front of MobileNetV2 and MobileNetV3.
pub struct Trunk {
    /// Stem convolution.
    pub conv_stem: Conv2d,
    /// Batch norm after the stem.
    pub bn1: BatchNorm2d,
    /// Activation after the stem.
    pub act: Act,
    /// `blocks[stage][block]`, named `blocks.{stage}.{block}`.
    pub blocks: Vec<Vec<MbBlock>>,
    /// Channels of the last block's output.
    pub out_chs: usize,
    /// Train or eval (eval folds the stem batch norm at inference).
    pub mode: Mode,
    /// The folded stem conv + batch norm.
    pub fold: FoldCache,
}

impl Trunk {
    /// Builds the stem and every stage, initialised from `rng` as timm does.
    pub fn new(cfg: &TrunkConfig<'_>, rng: &mut Rng) -> Result<Trunk> {
        if cfg.in_chans == 0 {
            return Err(ModelError::config("in_chans must be at least 1"));
        }
        let conv_stem = goog_conv(
            cfg.in_chans,
            cfg.stem_size,
            3,
            cfg.stem_stride,
            1,
            false,
            rng,
        );
        let mut in_chs = cfg.stem_size;
        let mut blocks = Vec::with_capacity(cfg.stages.len());
        for (si, stage) in cfg.stages.iter().enumerate() {
            let mut list = Vec::new();
            for row in stage.iter() {
                for _ in 0..row.repeats {
                    let first = list.is_empty();
                    let stride = if first && !cfg.unstrided_stages.contains(&si) {
                        row.stride
                    } else {
                        1
                    };
                    let out = round_channels(row.out, cfg.multiplier);
                    list.push(make_block(row, in_chs, out, stride, cfg, rng));
                    in_chs = out;
                }
            }
            blocks.push(list);
        }
        Ok(Trunk {
            conv_stem,
            bn1: BatchNorm2d::new(cfg.stem_size),
            act: cfg.act,
            blocks,
            out_chs: in_chs,
            mode: Mode::Eval,
            fold: Default::default(),
        })
    }

    /// Runs the stem and the stages, reporting `conv_stem` and each `blocks.{i}`.
    pub fn forward_stages(
        &self,
        x: &Tensor,
        stage: &mut dyn FnMut(&str, &Tensor),
    ) -> Result<Tensor> {
        let mut h = conv_bn(
            &self.conv_stem,
            &self.bn1,
            Some(self.act),
            x,
            self.mode,
            &self.fold,
        )?;
        stage("conv_stem", &h);
        for (i, st) in self.blocks.iter().enumerate() {
            for b in st {
                h = b.forward(&h)?;
            }
            stage(&format!("blocks.{i}"), &h);
        }
        Ok(h)
    }
}

fn make_block(
    row: &BlockDef,
    in_chs: usize,
    out: usize,
    stride: usize,
    cfg: &TrunkConfig<'_>,
    rng: &mut Rng,
) -> MbBlock {
    let act = row.act.unwrap_or(cfg.act);
    let k = row.kernel;
    let has_skip = stride == 1 && in_chs == out;
    // SE channels from the block's (expanded) channels, ReLU inside, as timm's MobileNetV3.
    let se = |chs: usize, rng: &mut Rng| {
        row.se.then(|| {
            let rd = make_divisible(chs as f64 * 0.25, 8);
            SqueezeExcite::new(chs, rd, Act::Relu, cfg.se_gate, rng)
        })
    };
    match row.kind {
        BlockKind::Ds => {
            let conv_dw = goog_conv(in_chs, in_chs, k, stride, in_chs, false, rng);
            let se = se(in_chs, rng);
            MbBlock::Ds(DepthwiseSeparable {
                conv_dw,
                bn1: BatchNorm2d::new(in_chs),
                se,
                conv_pw: goog_conv(in_chs, out, 1, 1, 1, false, rng),
                bn2: BatchNorm2d::new(out),
                act,
                has_skip,
                mode: Mode::Eval,
                fold: Default::default(),
            })
        }
        BlockKind::Ir => {
            let mid = make_divisible(in_chs as f64 * row.exp, 8);
            let conv_pw = goog_conv(in_chs, mid, 1, 1, 1, false, rng);
            let conv_dw = goog_conv(mid, mid, k, stride, mid, false, rng);
            let se = se(mid, rng);
            MbBlock::Ir(InvertedResidual {
                conv_pw,
                bn1: BatchNorm2d::new(mid),
                conv_dw,
                bn2: BatchNorm2d::new(mid),
                se,
                conv_pwl: goog_conv(mid, out, 1, 1, 1, false, rng),
                bn3: BatchNorm2d::new(out),
                act,
                has_skip,
                mode: Mode::Eval,
                fold: Default::default(),
            })
        }
        BlockKind::Cn => MbBlock::Cn(ConvBnAct {
            conv: goog_conv(in_chs, out, k, stride, 1, false, rng),
            bn1: BatchNorm2d::new(out),
            act,
            mode: Mode::Eval,
            fold: Default::default(),
        }),
    }
}

impl Trunk {
    fn clear_fold(&mut self) {
        self.fold.clear();
    }
}

impl Module for Trunk {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.forward_stages(x, &mut |_, _| {})
    }

    fn visit(&self, p: &str, f: &mut dyn FnMut(&str, &Tensor, TensorKind)) {
        self.conv_stem.visit(&child(p, "conv_stem"), f);
        self.bn1.visit(&child(p, "bn1"), f);
        let bp = child(p, "blocks");
        for (i, st) in self.blocks.iter().enumerate() {
            let sp = child(&bp, &i.to_string());
            for (j, b) in st.iter().enumerate() {
                b.visit(&child(&sp, &j.to_string()), f);
            }
        }
    }

    fn visit_mut(&mut self, p: &str, f: &mut dyn FnMut(&str, &mut Tensor, TensorKind)) {
        self.clear_fold();
        self.conv_stem.visit_mut(&child(p, "conv_stem"), f);
        self.bn1.visit_mut(&child(p, "bn1"), f);
        let bp = child(p, "blocks");
        for (i, st) in self.blocks.iter_mut().enumerate() {
            let sp = child(&bp, &i.to_string());
            for (j, b) in st.iter_mut().enumerate() {
                b.visit_mut(&child(&sp, &j.to_string()), f);
            }
        }
    }

    fn set_mode(&mut self, mode: Mode) {
        self.mode = mode;
        self.clear_fold();
        self.bn1.set_mode(mode);
        for b in self.blocks.iter_mut().flatten() {
            b.set_mode(mode);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn make_divisible_matches_timm() {
        // Values computed with timm.layers.make_divisible.
        assert_eq!(make_divisible(32.0 * 0.35, 8), 16);
        assert_eq!(make_divisible(24.0 * 3.67, 8), 88);
        assert_eq!(make_divisible(16.0 * 4.5, 8), 72);
        assert_eq!(make_divisible(80.0 * 2.3, 8), 184);
        assert_eq!(make_divisible(96.0 * 0.25, 8), 24);
        assert_eq!(make_divisible(72.0 * 0.25, 8), 24);
        assert_eq!(make_divisible(3.0, 8), 8);
        assert_eq!(make_divisible(20.0, 8), 24);
        assert_eq!(round_channels(1280, 1.4), 1792);
        assert_eq!(round_channels(17, 0.0), 17);
    }
}
