//! MobileNetV2 (Sandler et al., "MobileNetV2: Inverted Residuals and Linear Bottlenecks",
//! CVPR 2018) exactly as timm builds it (`timm.models.efficientnet._gen_mobilenet_v2` on the
//! `EfficientNet` class), with timm's state_dict keys:
//!
//! `conv_stem`, `bn1`, `blocks.{stage}.{block}.{conv_pw,bn1,conv_dw,bn2,conv_pwl,bn3}` (the first
//! stage is a depthwise-separable block: `conv_dw,bn1,conv_pw,bn2`), `conv_head`, `bn2`,
//! `classifier`. ReLU6 everywhere, linear bottlenecks (no activation after the projection),
//! head `conv_head` (1x1, no bias) + `bn2` + ReLU6 to `max(1280, round_channels(1280))`
//! features, global average pooling, `classifier`.
//!
//! Presets (timm names): `mobilenetv2_035/050/075/100/140` (channel multiplier 0.35 ... 1.4;
//! `mobilenetv2_100` has 3,504,872 parameters). timm's `_110d`/`_120d` (depth multiplier, fixed
//! stem/head) are not provided.
//!
//! `mobilenetv2_digits` is a tessera preset for small images (not in timm): the
//! `mobilenetv2_035` network with a stride-1 stem and a stride-1 first `ir` stage (`blocks.1`),
//! so the total stride is 8 instead of 32 (8x8 digits -> 1x1, 32x32 CIFAR -> 4x4 before
//! pooling); defaults `in_chans 1`, `img_size 8`, `num_classes 10`. Its state dict has exactly
//! the shapes of `mobilenetv2_035` with the same `in_chans` / `num_classes`; `blocks.1.0`,
//! now stride 1 with 8 -> 8 channels, gets the residual timm's builder gives such a block.

use crate::blocks::efficientnet_init::{goog_conv, goog_linear, round_channels};
use crate::blocks::trunk::{BlockDef, BlockKind, Trunk, TrunkConfig};
use crate::error::{ModelError, Result};
use crate::layers::{Activation, BatchNorm2d, ConvBnAct, Linear};
use crate::module::{in_child, Module};
use crate::module_children;
use crate::plan::{plan_trunk, Plan, PlanBuilder, PlanOptions, CHANNELS_LAST_HW};
use crate::zoo::{Model, Overrides};
use tessera_core::{Rng, Tensor};

use BlockKind::{Ds, Ir};

const fn row(kind: BlockKind, repeats: usize, stride: usize, exp: f64, out: usize) -> BlockDef {
    BlockDef {
        kind,
        repeats,
        kernel: 3,
        stride,
        exp,
        out,
        se: false,
        act: None,
    }
}

/// The paper's Table 2 (timm's `arch_def`): kind, repeats n, stride s, expansion t, channels c.
/// All kernels 3x3, no SE, ReLU6.
#[rustfmt::skip]
pub const ARCH: &[&[BlockDef]] = &[
    &[row(Ds, 1, 1, 1.0, 16)],
    &[row(Ir, 2, 2, 6.0, 24)],
    &[row(Ir, 3, 2, 6.0, 32)],
    &[row(Ir, 4, 2, 6.0, 64)],
    &[row(Ir, 3, 1, 6.0, 96)],
    &[row(Ir, 3, 2, 6.0, 160)],
    &[row(Ir, 1, 1, 6.0, 320)],
];

/// A named configuration.
struct Preset {
    name: &'static str,
    multiplier: f64,
    /// Small-image preset: stride-1 stem and stride-1 `blocks.1`.
    small: bool,
    in_chans: usize,
    img_size: usize,
    num_classes: usize,
}

#[rustfmt::skip]
const PRESETS: &[Preset] = &[
    Preset { name: "mobilenetv2_035", multiplier: 0.35, small: false, in_chans: 3, img_size: 224, num_classes: 1000 },
    Preset { name: "mobilenetv2_050", multiplier: 0.5, small: false, in_chans: 3, img_size: 224, num_classes: 1000 },
    Preset { name: "mobilenetv2_075", multiplier: 0.75, small: false, in_chans: 3, img_size: 224, num_classes: 1000 },
    Preset { name: "mobilenetv2_100", multiplier: 1.0, small: false, in_chans: 3, img_size: 224, num_classes: 1000 },
    Preset { name: "mobilenetv2_140", multiplier: 1.4, small: false, in_chans: 3, img_size: 224, num_classes: 1000 },
    Preset { name: "mobilenetv2_digits", multiplier: 0.35, small: true, in_chans: 1, img_size: 8, num_classes: 10 },
];

/// Architecture names this family provides.
pub const NAMES: &[&str] = &[
    "mobilenetv2_035",
    "mobilenetv2_050",
    "mobilenetv2_075",
    "mobilenetv2_100",
    "mobilenetv2_140",
    "mobilenetv2_digits",
];

/// Rejects the ViT-only overrides and a zero image size (shared by both MobileNet files).
pub(crate) fn check_cnn_overrides(arch: &str, o: &Overrides) -> Result<()> {
    let vit_only = [
        ("patch_size", o.patch_size.is_some()),
        ("embed_dim", o.embed_dim.is_some()),
        ("depth", o.depth.is_some()),
        ("num_heads", o.num_heads.is_some()),
        ("mlp_ratio", o.mlp_ratio.is_some()),
    ];
    for (name, set) in vit_only {
        if set {
            return Err(ModelError::config(format!(
                "{arch}: override {name} applies to ViT only"
            )));
        }
    }
    if o.img_size == Some(0) || o.in_chans == Some(0) {
        return Err(ModelError::config(format!(
            "{arch}: img_size and in_chans must be at least 1 (got img_size {:?}, in_chans {:?})",
            o.img_size, o.in_chans
        )));
    }
    Ok(())
}

/// MobileNetV2 as timm's `EfficientNet` class builds it.
pub struct MobileNetV2 {
    arch: String,
    input_chw: [usize; 3],
    /// Stem and `blocks`.
    pub trunk: Trunk,
    /// 1x1 convolution to `num_features`, no bias.
    /// `conv_head` / `bn2` / ReLU6.
    pub head: ConvBnAct,
    /// `None` when built with `num_classes = 0` (the pooled features are returned).
    pub classifier: Option<Linear>,
    num_classes: usize,
}

/// Builds one of [`NAMES`].
pub fn build(arch: &str, o: &Overrides, seed: u64) -> Result<Box<dyn Model>> {
    let p = PRESETS
        .iter()
        .find(|p| p.name == arch)
        .ok_or_else(|| ModelError::config(format!("{arch}: not a MobileNetV2 architecture")))?;
    check_cnn_overrides(arch, o)?;
    if let Some(a) = &o.act {
        return Err(ModelError::config(format!(
            "{arch}: the act override ({a:?}) applies to MobileNetV3 only"
        )));
    }
    let in_chans = o.in_chans.unwrap_or(p.in_chans);
    let img_size = o.img_size.unwrap_or(p.img_size);
    let num_classes = o.num_classes.unwrap_or(p.num_classes);
    let mut rng = Rng::new(seed);
    let unstrided: &[usize] = if p.small { &[1] } else { &[] };
    let trunk = Trunk::new(
        &TrunkConfig {
            in_chans,
            stem_size: round_channels(32, p.multiplier),
            stem_stride: if p.small { 1 } else { 2 },
            stages: ARCH,
            unstrided_stages: unstrided,
            multiplier: p.multiplier,
            act: Activation::Relu6,
            se_gate: Activation::HardSigmoid,
        },
        &mut rng,
    )?;
    let num_features = round_channels(1280, p.multiplier).max(1280);
    let conv_head = goog_conv(trunk.out_chs, num_features, 1, 1, 1, false, &mut rng);
    let classifier = (num_classes > 0).then(|| goog_linear(num_features, num_classes, &mut rng));
    Ok(Box::new(MobileNetV2 {
        arch: arch.to_string(),
        input_chw: [in_chans, img_size, img_size],
        trunk,
        head: ConvBnAct::new(
            conv_head,
            BatchNorm2d::new(num_features),
            Some(Activation::Relu6),
            ["conv_head", "bn2"],
        ),
        classifier,
        num_classes,
    }))
}

impl Model for MobileNetV2 {
    fn arch(&self) -> &str {
        &self.arch
    }

    fn input_chw(&self) -> [usize; 3] {
        self.input_chw
    }

    fn num_classes(&self) -> usize {
        self.num_classes
    }

    fn forward_stages(&self, x: &Tensor, stage: &mut dyn FnMut(&str, &Tensor)) -> Result<Tensor> {
        let h = self.trunk.forward_stages(x, stage)?;
        let h = self.head.forward(&h)?;
        stage("conv_head", &h);
        let h = h.global_avg_pool2d()?.flatten(1, 3)?;
        let h = match &self.classifier {
            Some(c) => in_child("classifier", || c.forward(&h))?,
            None => h,
        };
        stage("classifier", &h);
        Ok(h)
    }

    fn plan_with(&self, input: [usize; 4], options: &PlanOptions) -> Result<Plan> {
        self.build_plan(input, false, options)
    }

    fn plan_reference(&self, input: [usize; 4]) -> Result<Plan> {
        self.build_plan(input, true, &PlanOptions::default())
    }
}

impl Module for MobileNetV2 {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.forward_stages(x, &mut |_, _| {})
    }

    module_children!("" => trunk, "" => head, "classifier" => classifier);
}

impl MobileNetV2 {
    /// The inference plan for `input` (with its float64 reference when `reference`).
    fn build_plan(&self, input: [usize; 4], reference: bool, o: &PlanOptions) -> Result<Plan> {
        let (mut b, x) = if reference {
            PlanBuilder::new_reference(input)?
        } else {
            PlanBuilder::new(input)?
        };
        if o.channels_last {
            b.channels_last_up_to(CHANNELS_LAST_HW);
        }
        let h = plan_trunk(&mut b, x, &self.trunk)?;
        let h = b.conv_bn_act(&h, &self.head)?;
        let p = b.global_pool(&h)?;
        match &self.classifier {
            Some(c) => {
                let y = b.linear(p.buf, p.n, c, Activation::Identity, None)?;
                b.finish(y, vec![p.n, c.out_features()])
            }
            None => b.finish(p.buf, vec![p.n, p.c]),
        }
    }
}
