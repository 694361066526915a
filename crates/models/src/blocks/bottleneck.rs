//! The ResNet bottleneck block as timm's `resnet.Bottleneck` (He et al., "Deep Residual Learning
//! for Image Recognition", CVPR 2016; the stride on the 3x3 conv, "ResNet v1.5", as timm and
//! torchvision), optionally with squeeze-and-excitation after `bn3` (Hu et al., CVPR 2018):
//!
//! ```text
//! x -> conv1 1x1 -> bn1 -> act -> conv2 3x3 (stride) -> bn2 -> act -> conv3 1x1 -> bn3
//!   -> [se] -> + shortcut -> act,      shortcut = x or downsample.1(downsample.0(x))
//! ```
//!
//! `width = floor(planes * base_width / 64) * cardinality`, output `planes * 4` channels; the
//! downsample (1x1 conv with the block's stride, then batch norm) exists when the stride is not
//! 1 or the channels change. Tensor names are timm's (`conv1.weight`, `bn3.running_var`,
//! `se.fc1.bias`, `downsample.0.weight`, ...).

use crate::error::{ModelError, Result};
use crate::init;
use crate::layers::{Act, BatchNorm2d, Conv2d};
use crate::module::{child, Mode, Module, Sequential, TensorKind};
use tessera_core::ops::conv::Conv2dParams;
use tessera_core::{Rng, Tensor};

use super::inverted_residual::{conv_bn, FoldCache};
use super::se_module::SeModule;

/// Output channels per `planes` of a bottleneck block.
pub const EXPANSION: usize = 4;

/// A convolution without bias initialised as timm ResNet's `init_weights`:
/// `kaiming_normal_(mode = "fan_out", nonlinearity = "relu")`, i.e. `N(0, 2 / (out * k * k))`.
pub fn conv_kaiming(
    in_ch: usize,
    out_ch: usize,
    k: usize,
    params: Conv2dParams,
    rng: &mut Rng,
) -> Result<Conv2d> {
    let g = params.groups;
    if g == 0 || !in_ch.is_multiple_of(g) || !out_ch.is_multiple_of(g) || k == 0 {
        return Err(ModelError::config(format!(
            "conv2d: {in_ch} -> {out_ch} channels, kernel {k}, groups {g} is invalid"
        )));
    }
    let std = (2.0 / (out_ch * k * k) as f32).sqrt();
    Ok(Conv2d {
        weight: init::normal(&[out_ch, in_ch / g, k, k], std, rng),
        bias: None,
        params,
    })
}

/// Construction arguments of one [`Bottleneck`] (timm's names).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BottleneckArgs {
    /// Input channels.
    pub inplanes: usize,
    /// Base channels; the output has `planes * 4`.
    pub planes: usize,
    /// Stride of the 3x3 conv (and of the downsample).
    pub stride: usize,
    /// Groups of the 3x3 conv (1 for ResNet).
    pub cardinality: usize,
    /// Width per group (64 for ResNet).
    pub base_width: usize,
    /// Squeeze-and-excitation after `bn3` (timm's `attn_layer='se'`).
    pub se: bool,
    /// The main activation (ReLU in ResNet).
    pub act: Act,
    /// Zero the `bn3` scale at initialisation (timm's `zero_init_last`, on by default).
    pub zero_init_last: bool,
}

/// timm's `Bottleneck` (without anti-aliasing, drop-block or drop-path).
pub struct Bottleneck {
    /// 1x1 reduction.
    pub conv1: Conv2d,
    /// Batch norm after `conv1`.
    pub bn1: BatchNorm2d,
    /// 3x3 convolution (carries the stride).
    pub conv2: Conv2d,
    /// Batch norm after `conv2`.
    pub bn2: BatchNorm2d,
    /// 1x1 expansion.
    pub conv3: Conv2d,
    /// Batch norm after `conv3`.
    pub bn3: BatchNorm2d,
    /// Squeeze-and-excitation (`se.fc1`, `se.fc2`), SE-ResNet only.
    pub se: Option<SeModule>,
    /// `downsample.0` (1x1 conv, stride) and `downsample.1` (batch norm) on the shortcut.
    pub downsample: Option<Sequential>,
    /// Activation after each batch norm and the residual join.
    pub act: Act,
    mode: Mode,
    /// Eval-mode conv + batch-norm folds of (conv1, bn1), (conv2, bn2), (conv3, bn3), cleared
    /// by `visit_mut` and `set_mode`; code that assigns the public tensors directly must call
    /// [`Bottleneck::clear_folds`].
    folds: [FoldCache; 3],
}

impl Bottleneck {
    /// Builds a block initialised as timm's ResNet does (convs `N(0, 2 / fan_out)`, batch norm
    /// scale 1 and shift 0, `bn3` scale 0 with `zero_init_last`).
    pub fn new(a: &BottleneckArgs, rng: &mut Rng) -> Result<Self> {
        if a.inplanes == 0 || a.planes == 0 || a.stride == 0 || a.cardinality == 0 {
            return Err(ModelError::config(format!(
                "Bottleneck: inplanes {}, planes {}, stride {}, cardinality {} must be positive",
                a.inplanes, a.planes, a.stride, a.cardinality
            )));
        }
        let width = (a.planes * a.base_width / 64) * a.cardinality;
        if width == 0 {
            return Err(ModelError::config(format!(
                "Bottleneck: planes {} with base_width {} gives width 0",
                a.planes, a.base_width
            )));
        }
        let out = a.planes * EXPANSION;
        let conv1 = conv_kaiming(a.inplanes, width, 1, Conv2dParams::new(1, 0), rng)?;
        let p2 = Conv2dParams::new(a.stride, 1).groups(a.cardinality);
        let conv2 = conv_kaiming(width, width, 3, p2, rng)?;
        let conv3 = conv_kaiming(width, out, 1, Conv2dParams::new(1, 0), rng)?;
        let mut bn3 = BatchNorm2d::new(out);
        if a.zero_init_last {
            bn3.weight = Tensor::zeros(&[out]);
        }
        let se = if a.se {
            Some(SeModule::new(out, rng)?)
        } else {
            None
        };
        let downsample = if a.stride != 1 || a.inplanes != out {
            let mut s = Sequential::new();
            s.push(conv_kaiming(
                a.inplanes,
                out,
                1,
                Conv2dParams::new(a.stride, 0),
                rng,
            )?);
            s.push(BatchNorm2d::new(out));
            Some(s)
        } else {
            None
        };
        Ok(Bottleneck {
            conv1,
            bn1: BatchNorm2d::new(width),
            conv2,
            bn2: BatchNorm2d::new(width),
            conv3,
            bn3,
            se,
            downsample,
            act: a.act,
            mode: Mode::Eval,
            folds: Default::default(),
        })
    }

    /// Forgets the cached eval-mode conv + batch-norm folds (after assigning weights directly).
    pub fn clear_folds(&mut self) {
        for f in &mut self.folds {
            f.clear();
        }
    }

    /// Output channels (`planes * 4`).
    pub fn out_channels(&self) -> usize {
        self.conv3.out_channels()
    }
}

impl Module for Bottleneck {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        // At inference each conv + batch norm (+ activation) is one fused convolution.
        let h = conv_bn(
            &self.conv1,
            &self.bn1,
            Some(self.act),
            x,
            self.mode,
            &self.folds[0],
        )?;
        let h = conv_bn(
            &self.conv2,
            &self.bn2,
            Some(self.act),
            &h,
            self.mode,
            &self.folds[1],
        )?;
        let mut h = conv_bn(&self.conv3, &self.bn3, None, &h, self.mode, &self.folds[2])?;
        if let Some(se) = &self.se {
            h = se.forward(&h)?;
        }
        let shortcut = match &self.downsample {
            Some(d) => d.forward(x)?,
            None => x.clone(),
        };
        // The residual join and ReLU as one op (same values and gradients as the two).
        if self.act == Act::Relu {
            return Ok(h.add_relu(&shortcut)?);
        }
        Ok(self.act.apply(&h.add(&shortcut)?))
    }

    fn visit(&self, prefix: &str, f: &mut dyn FnMut(&str, &Tensor, TensorKind)) {
        self.conv1.visit(&child(prefix, "conv1"), f);
        self.bn1.visit(&child(prefix, "bn1"), f);
        self.conv2.visit(&child(prefix, "conv2"), f);
        self.bn2.visit(&child(prefix, "bn2"), f);
        self.conv3.visit(&child(prefix, "conv3"), f);
        self.bn3.visit(&child(prefix, "bn3"), f);
        if let Some(se) = &self.se {
            se.visit(&child(prefix, "se"), f);
        }
        if let Some(d) = &self.downsample {
            d.visit(&child(prefix, "downsample"), f);
        }
    }

    fn visit_mut(&mut self, prefix: &str, f: &mut dyn FnMut(&str, &mut Tensor, TensorKind)) {
        self.clear_folds();
        self.conv1.visit_mut(&child(prefix, "conv1"), f);
        self.bn1.visit_mut(&child(prefix, "bn1"), f);
        self.conv2.visit_mut(&child(prefix, "conv2"), f);
        self.bn2.visit_mut(&child(prefix, "bn2"), f);
        self.conv3.visit_mut(&child(prefix, "conv3"), f);
        self.bn3.visit_mut(&child(prefix, "bn3"), f);
        if let Some(se) = &mut self.se {
            se.visit_mut(&child(prefix, "se"), f);
        }
        if let Some(d) = &mut self.downsample {
            d.visit_mut(&child(prefix, "downsample"), f);
        }
    }

    fn set_mode(&mut self, mode: Mode) {
        self.mode = mode;
        self.clear_folds();
        self.bn1.set_mode(mode);
        self.bn2.set_mode(mode);
        self.bn3.set_mode(mode);
        if let Some(d) = &mut self.downsample {
            d.set_mode(mode);
        }
    }
}
