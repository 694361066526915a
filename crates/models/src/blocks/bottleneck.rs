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
use crate::layers::{Activation, BatchNorm2d, Conv2d, ConvBnAct};
use crate::module::{in_child, Module};
use crate::module_children;
use tessera_core::ops::conv::Conv2dParams;
use tessera_core::{Rng, Tensor};

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
    pub act: Activation,
    /// Zero the `bn3` scale at initialisation (timm's `zero_init_last`, on by default).
    pub zero_init_last: bool,
}

/// timm's `Bottleneck` (without anti-aliasing, drop-block or drop-path).
pub struct Bottleneck {
    /// `conv1` / `bn1` / act.
    pub c1: ConvBnAct,
    /// `conv2` / `bn2` / act (the 3x3, with the stride).
    pub c2: ConvBnAct,
    /// `conv3` / `bn3` (the activation comes after the residual join).
    pub c3: ConvBnAct,
    /// Squeeze-and-excitation (`se.fc1`, `se.fc2`), SE-ResNet only.
    pub se: Option<SeModule>,
    /// `downsample.0` (1x1 conv, stride) and `downsample.1` (batch norm) on the shortcut.
    pub downsample: Option<ConvBnAct>,
    /// Activation after `bn1`, `bn2` and the residual join.
    pub act: Activation,
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
            let conv = conv_kaiming(a.inplanes, out, 1, Conv2dParams::new(a.stride, 0), rng)?;
            let names = ["downsample.0", "downsample.1"];
            Some(ConvBnAct::new(conv, BatchNorm2d::new(out), None, names))
        } else {
            None
        };
        let act = Some(a.act);
        Ok(Bottleneck {
            c1: ConvBnAct::new(conv1, BatchNorm2d::new(width), act, ["conv1", "bn1"]),
            c2: ConvBnAct::new(conv2, BatchNorm2d::new(width), act, ["conv2", "bn2"]),
            c3: ConvBnAct::new(conv3, bn3, None, ["conv3", "bn3"]),
            se,
            downsample,
            act: a.act,
        })
    }

    /// Output channels (`planes * 4`).
    pub fn out_channels(&self) -> usize {
        self.c3.out_channels()
    }
}

impl Module for Bottleneck {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        // At inference each conv + batch norm (+ activation) is one fused convolution.
        let h = self.c3.forward(&self.c2.forward(&self.c1.forward(x)?)?)?;
        let shortcut = match &self.downsample {
            Some(d) => d.forward(x)?,
            None => x.clone(),
        };
        if let Some(se) = &self.se {
            // The gate, the scale and the residual join with one rounding.
            return in_child("se", || se.forward_join(&h, &shortcut, self.act));
        }
        // The residual join and ReLU as one op (same values and gradients as the two).
        if self.act == Activation::Relu {
            return Ok(h.add_relu(&shortcut)?);
        }
        Ok(h.add(&shortcut)?.activate(self.act))
    }

    module_children!("" => c1, "" => c2, "" => c3, "se" => se, "" => downsample);
}
