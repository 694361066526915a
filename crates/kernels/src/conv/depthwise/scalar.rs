//! Scalar depthwise kernels: [`Simd`] with one lane (`f32`), the same loop nest as the vector
//! paths in plain Rust. The test oracle is the f64 loop in `conv::reference`.

use super::blocked::{self, BlkGeom};
use super::blocked_grad::{self, BlkBwdGeom};
use super::plane;
use super::simd::Simd;
use super::{BwdGeom, FwdGeom};
use crate::activation::Activation;

#[derive(Clone, Copy)]
pub(super) struct Scalar;

// SAFETY: plain Rust for any target; the only unsafe operations are the raw loads and
// stores, whose pointers the callers guarantee.
unsafe impl Simd for Scalar {
    const L: usize = 1;
    type V = f32;
    #[inline(always)]
    unsafe fn splat(x: f32) -> f32 {
        x
    }
    #[inline(always)]
    unsafe fn load(p: *const f32) -> f32 {
        // SAFETY: the caller passes 1 readable float.
        unsafe { p.read() }
    }
    #[inline(always)]
    unsafe fn store(p: *mut f32, v: f32) {
        // SAFETY: the caller passes 1 writable float.
        unsafe { p.write(v) }
    }
    #[inline(always)]
    unsafe fn fma(a: f32, b: f32, c: f32) -> f32 {
        // Multiply then add, as the reference loops do (no software fma).
        a * b + c
    }
    #[inline(always)]
    unsafe fn mul(a: f32, b: f32) -> f32 {
        a * b
    }
    #[inline(always)]
    unsafe fn add(a: f32, b: f32) -> f32 {
        a + b
    }
    #[inline(always)]
    unsafe fn and(a: f32, mask: f32) -> f32 {
        f32::from_bits(a.to_bits() & mask.to_bits())
    }
    #[inline(always)]
    unsafe fn act(a: Activation, v: f32) -> f32 {
        a.apply_scalar(v)
    }
    #[inline(always)]
    unsafe fn reduce(v: f32) -> f32 {
        v
    }
}

/// # Safety
/// See [`plane::forward`].
pub(super) unsafe fn forward(
    g: &FwdGeom,
    x: &[f32],
    w: &[f32],
    bias: f32,
    act: Activation,
    y: &mut [f32],
    scratch: &mut [f32],
) {
    // SAFETY: forwarded contract.
    unsafe { plane::forward::<Scalar>(g, x, w, bias, act, y, scratch) }
}

/// # Safety
/// See [`plane::backward_input`].
pub(super) unsafe fn backward_input(
    g: &BwdGeom,
    w: &[f32],
    dy: &[f32],
    dx: &mut [f32],
    scratch: &mut [f32],
) {
    // SAFETY: forwarded contract.
    unsafe { plane::backward_input::<Scalar>(g, w, dy, dx, scratch) }
}

/// # Safety
/// See [`plane::backward_weight`].
#[allow(clippy::too_many_arguments)]
pub(super) unsafe fn backward_weight(
    g: &FwdGeom,
    n: usize,
    x: &[f32],
    xs: usize,
    dy: &[f32],
    dys: usize,
    dw: &mut [f32],
    scratch: &mut [f32],
) {
    // SAFETY: forwarded contract.
    unsafe { plane::backward_weight::<Scalar>(g, n, x, xs, dy, dys, dw, scratch) }
}

/// # Safety
/// See [`blocked::forward_block`]; the CPU supports any target.
#[allow(clippy::too_many_arguments)]
pub(super) unsafe fn forward_blocked(
    g: &BlkGeom,
    x: &[*const f32; 16],
    w: &[f32],
    bias: Option<&[f32]>,
    act: Activation,
    y: &mut [f32],
    scratch: &mut [f32],
) {
    // SAFETY: forwarded contract.
    unsafe { blocked::forward_block::<Scalar>(g, x, w, bias, act, y, scratch) }
}

/// # Safety
/// See [`blocked_grad::backward_input_block`]; any CPU.
pub(super) unsafe fn backward_input_blocked(
    g: &BlkBwdGeom,
    stride: (usize, usize),
    dy: &[*const f32; 16],
    w: &[f32],
    dx: &[*mut f32; 16],
    scratch: &mut [f32],
) {
    // SAFETY: forwarded contract.
    unsafe { blocked_grad::backward_input_block::<Scalar>(g, stride, dy, w, dx, scratch) }
}

/// # Safety
/// See [`blocked_grad::backward_weight_block`]; any CPU.
#[allow(clippy::too_many_arguments)]
pub(super) unsafe fn backward_weight_blocked(
    g: &BlkGeom,
    n: usize,
    x: &[*const f32; 16],
    x_img: usize,
    dy: *const f32,
    dy_img: usize,
    dw: &mut [f32],
    scratch: &mut [f32],
) {
    // SAFETY: forwarded contract.
    unsafe {
        blocked_grad::backward_weight_block::<Scalar>(g, n, x, x_img, dy, dy_img, dw, scratch)
    }
}
