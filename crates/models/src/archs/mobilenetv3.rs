//! MobileNetV3 (Howard et al., "Searching for MobileNetV3", ICCV 2019) exactly as timm builds
//! it (`timm.models.mobilenetv3._gen_mobilenet_v3` on the `MobileNetV3` class), with timm's
//! state_dict keys:
//!
//! `conv_stem`, `bn1`, `blocks.{stage}.{block}.{conv_pw,bn1,conv_dw,bn2,se.conv_reduce,
//! se.conv_expand,conv_pwl,bn3}` (depthwise-separable first stage: `conv_dw,bn1,[se],conv_pw,bn2`;
//! last stage a `conv`/`bn1` 1x1 block), `conv_head` (with bias), `classifier`.
//!
//! Details reproduced: hard-swish as the model activation and ReLU in the `_nre` rows (paper
//! Tables 1 and 2, column NL); SE with ReLU inside, hard-sigmoid gate and
//! `make_divisible(expanded_channels * 0.25, 8)` reduced channels; stem 16 channels (rounded by
//! the multiplier unless it is below 0.75); head = global average pooling, then `conv_head`
//! (1x1 with bias, no batch norm) to 1280 (large) / 1024 (small) features, hard-swish, flatten,
//! `classifier`.
//!
//! Presets (timm names): `mobilenetv3_large_075/100`, `mobilenetv3_small_050/075/100`
//! (`mobilenetv3_large_100` has 5,483,032 parameters, `mobilenetv3_small_100` 2,542,856).
//! The `act` override replaces hard-swish (stem, non-`_nre` blocks, head) with another
//! activation, as timm's `act_layer=` does; the ReLU rows, SE activation and gate are unchanged.
//!
//! `mobilenetv3_digits` is a tessera preset for small images (not in timm): the
//! `mobilenetv3_small_050` network with a stride-1 stem and a stride-1 first stage
//! (`blocks.0`), total stride 8 instead of 32 (8x8 digits -> 1x1, 32x32 CIFAR -> 4x4); defaults
//! `in_chans 1`, `img_size 8`, `num_classes 10`.

use crate::archs::mobilenetv2::check_cnn_overrides;
use crate::blocks::efficientnet_init::{goog_conv, goog_linear, round_channels};
use crate::blocks::trunk::{BlockDef, BlockKind, Trunk, TrunkConfig};
use crate::error::{ModelError, Result};
use crate::layers::{Activation, Conv2d, Linear};
use crate::module::{in_child, Module};
use crate::module_children;
use crate::plan::{plan_trunk, Plan, PlanBuilder, PlanOptions, CHANNELS_LAST_HW};
use crate::zoo::{Model, Overrides};
use tessera_core::{Rng, Tensor};

use BlockKind::{Cn, Ds, Ir};

/// `RE`: ReLU; `HS`: the model activation (hard-swish unless overridden).
const RE: Option<Activation> = Some(Activation::Relu);
const HS: Option<Activation> = None;

#[allow(clippy::too_many_arguments)]
const fn row(
    kind: BlockKind,
    repeats: usize,
    kernel: usize,
    stride: usize,
    exp: f64,
    out: usize,
    se: bool,
    act: Option<Activation>,
) -> BlockDef {
    BlockDef {
        kind,
        repeats,
        kernel,
        stride,
        exp,
        out,
        se,
        act,
    }
}

/// MobileNetV3-Large (paper Table 1, timm's `arch_def`): kind, repeats, kernel, stride,
/// expansion, out channels, SE, activation.
#[rustfmt::skip]
pub const LARGE: &[&[BlockDef]] = &[
    &[row(Ds, 1, 3, 1, 1.0, 16, false, RE)],
    &[row(Ir, 1, 3, 2, 4.0, 24, false, RE), row(Ir, 1, 3, 1, 3.0, 24, false, RE)],
    &[row(Ir, 3, 5, 2, 3.0, 40, true, RE)],
    &[row(Ir, 1, 3, 2, 6.0, 80, false, HS), row(Ir, 1, 3, 1, 2.5, 80, false, HS),
      row(Ir, 2, 3, 1, 2.3, 80, false, HS)],
    &[row(Ir, 2, 3, 1, 6.0, 112, true, HS)],
    &[row(Ir, 3, 5, 2, 6.0, 160, true, HS)],
    &[row(Cn, 1, 1, 1, 1.0, 960, false, HS)],
];

/// MobileNetV3-Small (paper Table 2, timm's `arch_def`).
#[rustfmt::skip]
pub const SMALL: &[&[BlockDef]] = &[
    &[row(Ds, 1, 3, 2, 1.0, 16, true, RE)],
    &[row(Ir, 1, 3, 2, 4.5, 24, false, RE), row(Ir, 1, 3, 1, 3.67, 24, false, RE)],
    &[row(Ir, 1, 5, 2, 4.0, 40, true, HS), row(Ir, 2, 5, 1, 6.0, 40, true, HS)],
    &[row(Ir, 2, 5, 1, 3.0, 48, true, HS)],
    &[row(Ir, 3, 5, 2, 6.0, 96, true, HS)],
    &[row(Cn, 1, 1, 1, 1.0, 576, false, HS)],
];

struct Preset {
    name: &'static str,
    large: bool,
    multiplier: f64,
    /// Small-image preset: stride-1 stem and stride-1 `blocks.0`.
    small_images: bool,
    in_chans: usize,
    img_size: usize,
    num_classes: usize,
}

#[rustfmt::skip]
const PRESETS: &[Preset] = &[
    Preset { name: "mobilenetv3_large_075", large: true, multiplier: 0.75, small_images: false, in_chans: 3, img_size: 224, num_classes: 1000 },
    Preset { name: "mobilenetv3_large_100", large: true, multiplier: 1.0, small_images: false, in_chans: 3, img_size: 224, num_classes: 1000 },
    Preset { name: "mobilenetv3_small_050", large: false, multiplier: 0.5, small_images: false, in_chans: 3, img_size: 224, num_classes: 1000 },
    Preset { name: "mobilenetv3_small_075", large: false, multiplier: 0.75, small_images: false, in_chans: 3, img_size: 224, num_classes: 1000 },
    Preset { name: "mobilenetv3_small_100", large: false, multiplier: 1.0, small_images: false, in_chans: 3, img_size: 224, num_classes: 1000 },
    Preset { name: "mobilenetv3_digits", large: false, multiplier: 0.5, small_images: true, in_chans: 1, img_size: 8, num_classes: 10 },
];

/// Architecture names this family provides.
pub const NAMES: &[&str] = &[
    "mobilenetv3_large_075",
    "mobilenetv3_large_100",
    "mobilenetv3_small_050",
    "mobilenetv3_small_075",
    "mobilenetv3_small_100",
    "mobilenetv3_digits",
];

/// MobileNetV3 as timm's `MobileNetV3` class builds it.
pub struct MobileNetV3 {
    arch: String,
    input_chw: [usize; 3],
    /// Stem and `blocks`.
    pub trunk: Trunk,
    /// 1x1 convolution with bias after pooling, to 1280 / 1024 features.
    pub conv_head: Conv2d,
    /// The model activation (after the stem and `conv_head`).
    pub act: Activation,
    /// `None` when built with `num_classes = 0` (the head features are returned).
    pub classifier: Option<Linear>,
    num_classes: usize,
}

/// Builds one of [`NAMES`].
pub fn build(arch: &str, o: &Overrides, seed: u64) -> Result<Box<dyn Model>> {
    let p = PRESETS
        .iter()
        .find(|p| p.name == arch)
        .ok_or_else(|| ModelError::config(format!("{arch}: not a MobileNetV3 architecture")))?;
    check_cnn_overrides(arch, o)?;
    let act = match &o.act {
        Some(name) => crate::layers::parse_override(arch, name)?,
        None => Activation::HardSwish,
    };
    let in_chans = o.in_chans.unwrap_or(p.in_chans);
    let img_size = o.img_size.unwrap_or(p.img_size);
    let num_classes = o.num_classes.unwrap_or(p.num_classes);
    let stem_size = if p.multiplier < 0.75 {
        16
    } else {
        round_channels(16, p.multiplier)
    };
    let unstrided: &[usize] = if p.small_images { &[0] } else { &[] };
    let mut rng = Rng::new(seed);
    let trunk = Trunk::new(
        &TrunkConfig {
            in_chans,
            stem_size,
            stem_stride: if p.small_images { 1 } else { 2 },
            stages: if p.large { LARGE } else { SMALL },
            unstrided_stages: unstrided,
            multiplier: p.multiplier,
            act,
            se_gate: Activation::HardSigmoid,
        },
        &mut rng,
    )?;
    let num_features = if p.large { 1280 } else { 1024 };
    let conv_head = goog_conv(trunk.out_chs, num_features, 1, 1, 1, true, &mut rng);
    let classifier = (num_classes > 0).then(|| goog_linear(num_features, num_classes, &mut rng));
    Ok(Box::new(MobileNetV3 {
        arch: arch.to_string(),
        input_chw: [in_chans, img_size, img_size],
        trunk,
        conv_head,
        act,
        classifier,
        num_classes,
    }))
}

impl Model for MobileNetV3 {
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
        let h = h.global_avg_pool2d()?;
        let h = in_child("conv_head", || self.conv_head.forward(&h))?.activate(self.act);
        stage("conv_head", &h);
        let h = h.flatten(1, 3)?;
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

impl Module for MobileNetV3 {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.forward_stages(x, &mut |_, _| {})
    }

    module_children!("" => trunk, "conv_head" => conv_head, "classifier" => classifier);
}

impl MobileNetV3 {
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
        let p = b.global_pool(&h)?;
        // conv_head on the pooled 1x1 map is a linear layer with the activation fused.
        let ch = &self.conv_head;
        let bias = ch.bias.as_ref().map(|t| t.data().into_owned());
        let f = ch.out_channels();
        let h = b.linear_raw(p.buf, p.n, &ch.weight.data(), f, bias, self.act, None)?;
        match &self.classifier {
            Some(c) => {
                let y = b.linear(h, p.n, c, Activation::Identity, None)?;
                b.finish(y, vec![p.n, c.out_features()])
            }
            None => b.finish(h, vec![p.n, f]),
        }
    }
}
