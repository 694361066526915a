//! ResNet (He et al., "Deep Residual Learning for Image Recognition", CVPR 2016) and SE-ResNet
//! (Hu et al., "Squeeze-and-Excitation Networks", CVPR 2018) with bottleneck blocks, exactly as
//! timm's `resnet.ResNet` (names, parameter counts, initialisation):
//!
//! ```text
//! conv1 7x7/2 (64) -> bn1 -> act -> maxpool 3x3/2 p1
//!   -> layer1..layer4 (Bottleneck x depth, stride 1, 2, 2, 2 on the first block's 3x3 conv)
//!   -> global average pool -> fc
//! ```
//!
//! | name        | depths       | channels           | SE | params (timm) |
//! |-------------|--------------|--------------------|----|---------------|
//! | resnet50    | 3, 4, 6, 3   | 64, 128, 256, 512  | no | 25,557,032    |
//! | resnet101   | 3, 4, 23, 3  | 64, 128, 256, 512  | no | 44,549,160    |
//! | seresnet50  | 3, 4, 6, 3   | 64, 128, 256, 512  | yes| 28,088,024    |
//! | seresnet101 | 3, 4, 23, 3  | 64, 128, 256, 512  | yes| 49,326,872    |
//!
//! Small presets for small images (tessera's own, not in timm), for 8x8 digits and 32x32
//! CIFAR-10: `resnet_digits` / `seresnet_digits` are the same network with one bottleneck per
//! stage, channels (16, 32, 64, 128) (so 512 features), and a 3x3 stride-1 stem conv (still 64
//! channels, timm's stem width) with no max-pool, so an 8x8 input reaches layer4 at 1x1 and a
//! 32x32 input at 4x4. Defaults: `in_chans` 1, `img_size` 8, `num_classes` 10 (CIFAR-10:
//! `in_chans = 3`, `img_size = 32`). Its PyTorch equivalent is timm's
//! `ResNet(Bottleneck, [1, 1, 1, 1], channels=(16, 32, 64, 128), in_chans=1, num_classes=10)`
//! with `conv1` replaced by `nn.Conv2d(in_chans, 64, 3, 1, 1, bias=False)` and `maxpool` by
//! `nn.Identity()` (see `scripts/fixtures_resnet.py`).
//!
//! Overrides: `img_size` (only the default input; any height and width >= 1 runs), `in_chans`,
//! `num_classes` (0 = no classifier: the pooled features, as timm), `act` (timm's `act_layer`:
//! stem and block activations; the SE module keeps its ReLU and sigmoid). Other configurations
//! use [`ResNetConfig`] and [`build_config`] with timm's constructor arguments (`layers`,
//! `channels`, `base_width`, `cardinality`, `block_args=dict(attn_layer='se')`,
//! `zero_init_last`).
//!
//! Initialisation as timm's `ResNet.init_weights`: every conv (SE's 1x1 convs included)
//! `kaiming_normal_(mode="fan_out", nonlinearity="relu")`, conv biases (SE only) PyTorch's
//! default, batch norm scale 1 / shift 0, and `zero_init_last=True` (timm's default): the
//! scale of each block's `bn3` is 0. `fc` keeps PyTorch's default `nn.Linear` initialisation.

use crate::blocks::bottleneck::{conv_kaiming, Bottleneck, BottleneckArgs, EXPANSION};
use crate::error::{ModelError, Result};
use crate::layers::Activation;
use crate::layers::{BatchNorm2d, ConvBnAct, Linear};
use crate::module::{in_child, Module, Numbered};
use crate::module_children;
use crate::plan::{plan_bottleneck, Plan, PlanBuilder, PlanOptions};
use crate::zoo::{Model, Overrides};
use tessera_core::ops::conv::Conv2dParams;
use tessera_core::ops::pool::Pool2dParams;
use tessera_core::{Rng, Tensor};

/// Architecture names this family provides.
pub const NAMES: &[&str] = &[
    "resnet50",
    "resnet101",
    "seresnet50",
    "seresnet101",
    "resnet_digits",
    "seresnet_digits",
];

/// The stem before `layer1`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stem {
    /// timm's default: `conv1` 7x7 stride 2 padding 3, `bn1`, act, `maxpool` 3x3 stride 2
    /// padding 1 (overall stride 4).
    Default,
    /// For small images: `conv1` 3x3 stride 1 padding 1, `bn1`, act, no max-pool (stride 1).
    Small,
}

/// The stem width: timm's `ResNet` with the default (non-deep) stem always has 64 channels.
pub const STEM_WIDTH: usize = 64;

/// A ResNet configuration as data, with timm's constructor arguments.
#[derive(Debug, Clone, PartialEq)]
pub struct ResNetConfig {
    /// Blocks per stage (timm's `layers`), 1 to 4 stages.
    pub layers: Vec<usize>,
    /// Base channels per stage (timm's `channels`); a stage outputs `4 x` these.
    pub channels: Vec<usize>,
    /// timm's `base_width` (64).
    pub base_width: usize,
    /// timm's `cardinality` (groups of the 3x3 convs, 1).
    pub cardinality: usize,
    /// Squeeze-and-excitation in every block (timm's `block_args=dict(attn_layer='se')`).
    pub se: bool,
    /// timm's `zero_init_last` (default true): zero `bn3.weight` at initialisation.
    pub zero_init_last: bool,
    /// The stem: timm's single 7x7 convolution or the deep 3x3 variants.
    pub stem: Stem,
    /// Default input channels.
    pub in_chans: usize,
    /// Default (square) input size; any size runs.
    pub img_size: usize,
    /// Classifier outputs (0: the head returns pooled features).
    pub num_classes: usize,
    /// The main activation (timm's `act_layer`).
    pub act: Activation,
}

impl ResNetConfig {
    /// The configuration of one of [`NAMES`].
    pub fn for_arch(arch: &str) -> Result<ResNetConfig> {
        #[rustfmt::skip]
        let (layers, channels, se, stem): (&[usize], &[usize], bool, Stem) = match arch {
            "resnet50"        => (&[3, 4, 6, 3],  &[64, 128, 256, 512], false, Stem::Default),
            "resnet101"       => (&[3, 4, 23, 3], &[64, 128, 256, 512], false, Stem::Default),
            "seresnet50"      => (&[3, 4, 6, 3],  &[64, 128, 256, 512], true,  Stem::Default),
            "seresnet101"     => (&[3, 4, 23, 3], &[64, 128, 256, 512], true,  Stem::Default),
            "resnet_digits"   => (&[1, 1, 1, 1],  &[16, 32, 64, 128],   false, Stem::Small),
            "seresnet_digits" => (&[1, 1, 1, 1],  &[16, 32, 64, 128],   true,  Stem::Small),
            _ => {
                return Err(ModelError::config(format!(
                    "{arch:?} is not a ResNet; known: {}",
                    NAMES.join(", ")
                )))
            }
        };
        let small = stem == Stem::Small;
        Ok(ResNetConfig {
            layers: layers.to_vec(),
            channels: channels.to_vec(),
            base_width: 64,
            cardinality: 1,
            se,
            zero_init_last: true,
            stem,
            in_chans: if small { 1 } else { 3 },
            img_size: if small { 8 } else { 224 },
            num_classes: if small { 10 } else { 1000 },
            act: Activation::Relu,
        })
    }

    /// Applies timm's `create_model` overrides; errors name the architecture and the value.
    pub fn with_overrides(mut self, arch: &str, o: &Overrides) -> Result<ResNetConfig> {
        let unsupported = [
            ("patch_size", o.patch_size.is_some()),
            ("embed_dim", o.embed_dim.is_some()),
            ("depth", o.depth.is_some()),
            ("num_heads", o.num_heads.is_some()),
            ("mlp_ratio", o.mlp_ratio.is_some()),
        ];
        for (name, set) in unsupported {
            if set {
                return Err(ModelError::config(format!(
                    "{arch}: ResNet does not take the ViT override {name}"
                )));
            }
        }
        if let Some(v) = o.img_size {
            self.img_size = v;
        }
        if let Some(v) = o.in_chans {
            self.in_chans = v;
        }
        if let Some(v) = o.num_classes {
            self.num_classes = v;
        }
        if let Some(a) = &o.act {
            self.act = crate::layers::parse_override(arch, a)?;
        }
        Ok(self)
    }

    fn validate(&self, arch: &str) -> Result<()> {
        let err = |m: String| Err(ModelError::config(format!("{arch}: {m}")));
        if self.img_size == 0 {
            return err("img_size must be positive, got 0".into());
        }
        if self.in_chans == 0 {
            return err("in_chans must be positive, got 0".into());
        }
        if self.layers.is_empty() || self.layers.len() > 4 {
            return err(format!(
                "1 to 4 stages are supported (no dilation), got layers {:?}",
                self.layers
            ));
        }
        if self.layers.len() != self.channels.len() {
            return err(format!(
                "layers {:?} and channels {:?} differ in length",
                self.layers, self.channels
            ));
        }
        if self.layers.contains(&0) || self.channels.contains(&0) {
            return err(format!(
                "every stage needs >= 1 block and >= 1 channel, got layers {:?} channels {:?}",
                self.layers, self.channels
            ));
        }
        if self.base_width == 0 || self.cardinality == 0 {
            return err(format!(
                "base_width {} and cardinality {} must be positive",
                self.base_width, self.cardinality
            ));
        }
        Ok(())
    }

    /// Features before the classifier (`channels[-1] * 4`).
    pub fn num_features(&self) -> usize {
        self.channels.last().copied().unwrap_or(0) * EXPANSION
    }
}

/// A ResNet / SE-ResNet with bottleneck blocks; tensor names are timm's.
pub struct ResNet {
    arch: String,
    cfg: ResNetConfig,
    /// `conv1` / `bn1` / act: the stem convolution.
    pub stem: ConvBnAct,
    /// `layers[i][j]` is `layer{i+1}.{j}`.
    /// `layer1` .. `layer4`, each a list of blocks.
    pub layers: Numbered<Vec<Bottleneck>>,
    /// None when `num_classes == 0`.
    pub fc: Option<Linear>,
}

/// Builds one of [`NAMES`] (the interface `zoo::create` calls).
pub fn build(arch: &str, o: &Overrides, seed: u64) -> Result<Box<dyn Model>> {
    let cfg = ResNetConfig::for_arch(arch)?.with_overrides(arch, o)?;
    Ok(Box::new(build_config(arch, &cfg, seed)?))
}

/// Builds a ResNet from an explicit configuration, initialised from `seed` as timm does;
/// `arch` is only its reported name.
pub fn build_config(arch: &str, cfg: &ResNetConfig, seed: u64) -> Result<ResNet> {
    cfg.validate(arch)?;
    crate::limits::check_resnet(arch, cfg)?;
    let mut rng = Rng::new(seed);
    let conv1 = match cfg.stem {
        Stem::Default => conv_kaiming(
            cfg.in_chans,
            STEM_WIDTH,
            7,
            Conv2dParams::new(2, 3),
            &mut rng,
        )?,
        Stem::Small => conv_kaiming(
            cfg.in_chans,
            STEM_WIDTH,
            3,
            Conv2dParams::new(1, 1),
            &mut rng,
        )?,
    };
    let mut inplanes = STEM_WIDTH;
    let mut layers = Vec::with_capacity(cfg.layers.len());
    for (stage, (&depth, &planes)) in cfg.layers.iter().zip(&cfg.channels).enumerate() {
        let mut blocks = Vec::with_capacity(depth);
        for j in 0..depth {
            let args = BottleneckArgs {
                inplanes,
                planes,
                stride: if stage > 0 && j == 0 { 2 } else { 1 },
                cardinality: cfg.cardinality,
                base_width: cfg.base_width,
                se: cfg.se,
                act: cfg.act,
                zero_init_last: cfg.zero_init_last,
            };
            let b = Bottleneck::new(&args, &mut rng)?;
            inplanes = b.out_channels();
            blocks.push(b);
        }
        layers.push(blocks);
    }
    let fc = (cfg.num_classes > 0).then(|| Linear::new(inplanes, cfg.num_classes, true, &mut rng));
    Ok(ResNet {
        arch: arch.to_string(),
        cfg: cfg.clone(),
        stem: ConvBnAct::new(
            conv1,
            BatchNorm2d::new(STEM_WIDTH),
            Some(cfg.act),
            ["conv1", "bn1"],
        ),
        layers: Numbered {
            stem: "layer",
            items: layers,
        },
        fc,
    })
}

impl ResNet {
    /// The configuration it was built from (overrides applied).
    pub fn config(&self) -> &ResNetConfig {
        &self.cfg
    }

    fn stem(&self, x: &Tensor) -> Result<Tensor> {
        // bn1 and the activation as one fused op (same values and gradients as the two).
        let h = self.stem.forward(x)?;
        Ok(match self.cfg.stem {
            Stem::Default => h.max_pool2d(Pool2dParams::new(3).stride_padding(2, 1))?,
            Stem::Small => h,
        })
    }
}

impl Model for ResNet {
    fn arch(&self) -> &str {
        &self.arch
    }

    fn input_chw(&self) -> [usize; 3] {
        [self.cfg.in_chans, self.cfg.img_size, self.cfg.img_size]
    }

    fn num_classes(&self) -> usize {
        self.cfg.num_classes
    }

    /// Stages: `conv1` (the stem: conv1, bn1, act and max-pool), each block `layer{i}.{j}`,
    /// `global_pool` (`[n, features]`) and `fc` (the logits; absent with `num_classes = 0`).
    fn forward_stages(&self, x: &Tensor, stage: &mut dyn FnMut(&str, &Tensor)) -> Result<Tensor> {
        match *x.shape() {
            [_, c, h, w] if c == self.cfg.in_chans && h > 0 && w > 0 => {}
            _ => {
                return Err(ModelError::config(format!(
                    "{}: input must be [n, {}, h, w] with h, w >= 1, got {:?}",
                    self.arch,
                    self.cfg.in_chans,
                    x.shape()
                )))
            }
        }
        let mut h = self.stem(x)?;
        stage("conv1", &h);
        for (i, blocks) in self.layers.iter().enumerate() {
            for (j, b) in blocks.iter().enumerate() {
                h = in_child(format_args!("layer{}.{j}", i + 1), || b.forward(&h))?;
                stage(&format!("layer{}.{j}", i + 1), &h);
            }
        }
        let n = h.shape()[0];
        let c = h.shape()[1];
        let pooled = h.global_avg_pool2d()?.reshape(&[n, c])?;
        stage("global_pool", &pooled);
        match &self.fc {
            Some(fc) => {
                let y = in_child("fc", || fc.forward(&pooled))?;
                stage("fc", &y);
                Ok(y)
            }
            None => Ok(pooled),
        }
    }

    fn plan_with(&self, input: [usize; 4], _options: &PlanOptions) -> Result<Plan> {
        self.build_plan(input, false)
    }

    fn plan_reference(&self, input: [usize; 4]) -> Result<Plan> {
        self.build_plan(input, true)
    }
}

impl Module for ResNet {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.forward_stages(x, &mut |_, _| {})
    }

    module_children!("" => stem, "" => layers, "fc" => fc);
}

impl ResNet {
    /// The inference plan for `input` (with its float64 reference when `reference`).
    fn build_plan(&self, input: [usize; 4], reference: bool) -> Result<Plan> {
        if input[1] != self.cfg.in_chans {
            return Err(ModelError::config(format!(
                "{}: plan input must be [n, {}, h, w], got {input:?}",
                self.arch, self.cfg.in_chans
            )));
        }
        let (mut b, x) = if reference {
            PlanBuilder::new_reference(input)?
        } else {
            PlanBuilder::new(input)?
        };
        let mut h = b.conv_bn_act(&x, &self.stem)?;
        if self.cfg.stem == Stem::Default {
            h = b.max_pool(&h, 3, 2, 1)?;
        }
        for blk in self.layers.iter().flatten() {
            h = plan_bottleneck(&mut b, h, blk)?;
        }
        let p = b.global_pool(&h)?;
        match &self.fc {
            Some(fc) => {
                let y = b.linear(p.buf, p.n, fc, Activation::Identity, None)?;
                b.finish(y, vec![p.n, fc.out_features()])
            }
            None => b.finish(p.buf, vec![p.n, p.c]),
        }
    }
}
