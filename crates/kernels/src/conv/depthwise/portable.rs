//! Portable depthwise kernels: [`Simd`] on `wide::f32x8` (instructions chosen at compile
//! time), instantiating the same generic plane functions as the intrinsic paths.

use super::blocked::{self, BlkGeom};
use super::blocked_grad::{self, BlkBwdGeom};
use super::plane;
use super::simd::{with_fixed_act, Fixed, Simd};
use super::{BwdGeom, FwdGeom};
use crate::activation::{portable::apply, Activation};
use wide::f32x8;

#[derive(Clone, Copy)]
pub(super) struct Portable;

// SAFETY: `wide` compiles for any target; the only unsafe operations are the raw loads and
// stores, whose pointers the callers guarantee.
unsafe impl Simd for Portable {
    const L: usize = 8;
    type V = f32x8;
    #[inline(always)]
    unsafe fn splat(x: f32) -> f32x8 {
        f32x8::splat(x)
    }
    #[inline(always)]
    unsafe fn load(p: *const f32) -> f32x8 {
        // SAFETY: the caller passes 8 readable floats.
        f32x8::from(unsafe { std::ptr::read_unaligned(p as *const [f32; 8]) })
    }
    #[inline(always)]
    unsafe fn store(p: *mut f32, v: f32x8) {
        // SAFETY: the caller passes 8 writable floats.
        unsafe { std::ptr::write_unaligned(p as *mut [f32; 8], v.to_array()) }
    }
    #[inline(always)]
    unsafe fn fma(a: f32x8, b: f32x8, c: f32x8) -> f32x8 {
        a.mul_add(b, c)
    }
    #[inline(always)]
    unsafe fn mul(a: f32x8, b: f32x8) -> f32x8 {
        a * b
    }
    #[inline(always)]
    unsafe fn add(a: f32x8, b: f32x8) -> f32x8 {
        a + b
    }
    #[inline(always)]
    unsafe fn and(a: f32x8, mask: f32x8) -> f32x8 {
        a & mask
    }
    #[inline(always)]
    unsafe fn act(a: Activation, v: f32x8) -> f32x8 {
        apply(a, v)
    }
    #[inline(always)]
    unsafe fn reduce(v: f32x8) -> f32 {
        v.reduce_add()
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
    unsafe {
        with_fixed_act!(
            Portable,
            act,
            plane::forward,
            (g, x, w, bias, act, y, scratch)
        )
    }
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
    unsafe { plane::backward_input::<Fixed<Portable, 0>>(g, w, dy, dx, scratch) }
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
    unsafe { plane::backward_weight::<Fixed<Portable, 0>>(g, n, x, xs, dy, dys, dw, scratch) }
}

/// # Safety
/// See [`blocked::forward_block`]; the CPU supports `Portable`.
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
    unsafe {
        with_fixed_act!(
            Portable,
            act,
            blocked::forward_block,
            (g, x, w, bias, act, y, scratch)
        )
    }
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
    unsafe { blocked_grad::backward_input_block::<Portable>(g, stride, dy, w, dx, scratch) }
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
        blocked_grad::backward_weight_block::<Portable>(g, n, x, x_img, dy, dy_img, dw, scratch)
    }
}
