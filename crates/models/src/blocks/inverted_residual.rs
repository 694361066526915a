//! The two residual blocks of timm's EfficientNet / MobileNet family
//! (`timm.models._efficientnet_blocks`):
//!
//! - [`InvertedResidual`] (Sandler et al., "MobileNetV2: Inverted Residuals and Linear
//!   Bottlenecks", CVPR 2018): 1x1 expansion `conv_pw`/`bn1`/act, depthwise `conv_dw`/`bn2`/act,
//!   optional `se`, linear 1x1 projection `conv_pwl`/`bn3` (no activation: the linear
//!   bottleneck), residual when the stride is 1 and the channels match.
//! - [`DepthwiseSeparable`] (the expansion-1 block): `conv_dw`/`bn1`/act, optional `se`,
//!   `conv_pw`/`bn2` (no activation), residual as above.
//!
//! Each conv + batch norm (+ act) is one [`ConvBnAct`], folded at inference.

use crate::error::Result;
use crate::layers::ConvBnAct;
use crate::module::{in_child, Module};
use crate::module_children;
use tessera_core::Tensor;

use super::squeeze_excite::SqueezeExcite;

/// The inverted residual (MBConv) block.
pub struct InvertedResidual {
    /// `conv_pw` / `bn1` / act: the 1x1 expansion.
    pub pw: ConvBnAct,
    /// `conv_dw` / `bn2` / act: the depthwise convolution.
    pub dw: ConvBnAct,
    /// Squeeze-and-excitation after the depthwise convolution (`se`), if any.
    pub se: Option<SqueezeExcite>,
    /// `conv_pwl` / `bn3`: the linear 1x1 projection.
    pub pwl: ConvBnAct,
    /// Whether the input is added to the output (stride 1, same channels).
    pub has_skip: bool,
}

impl Module for InvertedResidual {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let mut h = self.dw.forward(&self.pw.forward(x)?)?;
        if let Some(se) = &self.se {
            h = in_child("se", || se.forward(&h))?;
        }
        h = self.pwl.forward(&h)?;
        if self.has_skip {
            h = h.add(x)?;
        }
        Ok(h)
    }

    module_children!("" => pw, "" => dw, "se" => se, "" => pwl);
}

/// The depthwise-separable block (an inverted residual without expansion).
pub struct DepthwiseSeparable {
    /// `conv_dw` / `bn1` / act.
    pub dw: ConvBnAct,
    /// Squeeze-and-excitation after the depthwise convolution (`se`), if any.
    pub se: Option<SqueezeExcite>,
    /// `conv_pw` / `bn2` (no activation).
    pub pw: ConvBnAct,
    /// Whether the input is added to the output (stride 1, same channels).
    pub has_skip: bool,
}

impl Module for DepthwiseSeparable {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let mut h = self.dw.forward(x)?;
        if let Some(se) = &self.se {
            h = in_child("se", || se.forward(&h))?;
        }
        h = self.pw.forward(&h)?;
        if self.has_skip {
            h = h.add(x)?;
        }
        Ok(h)
    }

    module_children!("" => dw, "se" => se, "" => pw);
}
