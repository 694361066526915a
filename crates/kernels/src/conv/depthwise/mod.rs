//! Depthwise convolution (`groups == c_in`, any channel multiplier): one small filter per
//! plane. Currently the f64 reference; the SIMD kernels land next.

use super::{reference, Conv2dShape};
use crate::activation::Activation;
use crate::error::KernelError;
use crate::isa::Isa;

pub(crate) fn forward(
    _isa: Isa,
    s: &Conv2dShape,
    x: &[f32],
    w: &[f32],
    bias: Option<&[f32]>,
    act: Activation,
    y: &mut [f32],
) -> Result<(), KernelError> {
    reference::conv2d_forward(s, x, w, bias, act, y);
    Ok(())
}

pub(crate) fn backward_input(
    _isa: Isa,
    s: &Conv2dShape,
    w: &[f32],
    dy: &[f32],
    dx: &mut [f32],
) -> Result<(), KernelError> {
    reference::conv2d_backward_input(s, w, dy, dx);
    Ok(())
}

pub(crate) fn backward_weight(
    _isa: Isa,
    s: &Conv2dShape,
    x: &[f32],
    dy: &[f32],
    dw: &mut [f32],
) -> Result<(), KernelError> {
    reference::conv2d_backward_weight(s, x, dy, dw);
    Ok(())
}
