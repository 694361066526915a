//! The stem and block stages of timm's EfficientNet / MobileNet family, built from a table of
//! block rows as timm's `_efficientnet_builder` does: `conv_stem`/`bn1`/act, then
//! `blocks.{stage}.{block}` from [`BlockDef`] rows with timm's `round_channels` (channel
//! multiplier) and `make_divisible` rounding; only the first block of a stage strides.

use crate::error::{ModelError, Result};
use crate::layers::{Activation, BatchNorm2d, ConvBnAct};
use crate::module::{in_child, Module};
use crate::module_children;
use tessera_core::{Rng, Tensor};

use super::efficientnet_init::{goog_conv, make_divisible, round_channels};
use super::inverted_residual::{DepthwiseSeparable, InvertedResidual};
use super::squeeze_excite::SqueezeExcite;

/// The kind of a block row (timm's block-string prefix).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BlockKind {
    /// `ds`: [`DepthwiseSeparable`].
    Ds,
    /// `ir`: [`InvertedResidual`].
    Ir,
    /// `cn`: [`ConvBnAct`] (`conv` / `bn1` / act, no skip: MobileNetV3's last 1x1 stage).
    Cn,
}

/// One row of an architecture table: `repeats` blocks of one kind (timm's block string
/// `ir_r{repeats}_k{kernel}_s{stride}_e{exp}_c{out}[_se0.25][_nre]`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BlockDef {
    /// The block type (`ds`, `ir` or `cn` in timm's block strings).
    pub kind: BlockKind,
    /// How many blocks the row stacks.
    pub repeats: usize,
    /// Depthwise (or `cn`) kernel size.
    pub kernel: usize,
    /// Stride of the first block of the row (later ones use 1).
    pub stride: usize,
    /// Expansion ratio (inverted residuals only).
    pub exp: f64,
    /// Output channels before the channel multiplier.
    pub out: usize,
    /// Squeeze-excitation with ratio 0.25 of the (expanded) channels.
    pub se: bool,
    /// The block's activation; `None` uses the model's (`_nre` rows are
    /// `Some(Activation::Relu)`).
    pub act: Option<Activation>,
}

/// A block of the trunk.
// A trunk holds a few dozen blocks, built once per model: the variants' size difference (a
// few hundred bytes each) costs nothing worth a box on every access.
#[allow(clippy::large_enum_variant)]
pub enum MbBlock {
    /// Depthwise-separable block (`ds`).
    Ds(DepthwiseSeparable),
    /// Inverted residual (`ir`).
    Ir(InvertedResidual),
    /// Plain convolution + batch norm + activation (`cn`).
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

    fn visit(&self, p: &str, f: &mut dyn FnMut(&str, &Tensor, crate::module::TensorKind)) {
        self.inner().visit(p, f)
    }

    fn visit_mut(&mut self, p: &str, f: &mut dyn FnMut(&str, &mut Tensor, crate::TensorKind)) {
        self.inner_mut().visit_mut(p, f)
    }

    fn set_mode(&mut self, mode: crate::Mode) {
        self.inner_mut().set_mode(mode)
    }
}

/// How to build a [`Trunk`].
#[derive(Debug, Clone)]
pub struct TrunkConfig<'a> {
    /// Input image channels.
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
    pub act: Activation,
    /// The SE gate (hard-sigmoid in MobileNetV3).
    pub se_gate: Activation,
}

/// Stem plus the stages of blocks: the shared front of MobileNetV2 and MobileNetV3.
pub struct Trunk {
    /// `conv_stem` / `bn1` / act.
    pub stem: ConvBnAct,
    /// `blocks[stage][block]`, named `blocks.{stage}.{block}`.
    pub blocks: Vec<Vec<MbBlock>>,
    /// Channels of the last block's output.
    pub out_chs: usize,
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
        let bn1 = BatchNorm2d::new(cfg.stem_size);
        Ok(Trunk {
            stem: ConvBnAct::new(conv_stem, bn1, Some(cfg.act), ["conv_stem", "bn1"]),
            blocks,
            out_chs: in_chs,
        })
    }

    /// Runs the stem and the stages, reporting `conv_stem` and each `blocks.{i}`.
    pub fn forward_stages(
        &self,
        x: &Tensor,
        stage: &mut dyn FnMut(&str, &Tensor),
    ) -> Result<Tensor> {
        let mut h = self.stem.forward(x)?;
        stage("conv_stem", &h);
        for (i, st) in self.blocks.iter().enumerate() {
            for (j, b) in st.iter().enumerate() {
                h = in_child(format_args!("blocks.{i}.{j}"), || b.forward(&h))?;
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
            SqueezeExcite::new(chs, rd, Activation::Relu, cfg.se_gate, rng)
        })
    };
    let cba = |conv, c, act, names| ConvBnAct::new(conv, BatchNorm2d::new(c), act, names);
    match row.kind {
        BlockKind::Ds => {
            let conv_dw = goog_conv(in_chs, in_chs, k, stride, in_chs, false, rng);
            let se = se(in_chs, rng);
            let conv_pw = goog_conv(in_chs, out, 1, 1, 1, false, rng);
            MbBlock::Ds(DepthwiseSeparable {
                dw: cba(conv_dw, in_chs, Some(act), ["conv_dw", "bn1"]),
                se,
                pw: cba(conv_pw, out, None, ["conv_pw", "bn2"]),
                has_skip,
            })
        }
        BlockKind::Ir => {
            let mid = make_divisible(in_chs as f64 * row.exp, 8);
            let conv_pw = goog_conv(in_chs, mid, 1, 1, 1, false, rng);
            let conv_dw = goog_conv(mid, mid, k, stride, mid, false, rng);
            let se = se(mid, rng);
            let conv_pwl = goog_conv(mid, out, 1, 1, 1, false, rng);
            MbBlock::Ir(InvertedResidual {
                pw: cba(conv_pw, mid, Some(act), ["conv_pw", "bn1"]),
                dw: cba(conv_dw, mid, Some(act), ["conv_dw", "bn2"]),
                se,
                pwl: cba(conv_pwl, out, None, ["conv_pwl", "bn3"]),
                has_skip,
            })
        }
        BlockKind::Cn => MbBlock::Cn(cba(
            goog_conv(in_chs, out, k, stride, 1, false, rng),
            out,
            Some(act),
            ["conv", "bn1"],
        )),
    }
}

impl Module for Trunk {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.forward_stages(x, &mut |_, _| {})
    }

    module_children!("" => stem, "blocks" => blocks);
}
