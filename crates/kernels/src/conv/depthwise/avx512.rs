//! AVX-512F depthwise kernels: [`Simd`] on `__m512` (16 lanes), and the entry points that
//! instantiate the generic plane functions under `#[target_feature(enable = "avx512f")]`.
//! Mirrors `avx2.rs`; untested on the AVX2-only development host.

use super::blocked::{self, BlkGeom};
use super::blocked_grad::{self, BlkBwdGeom};
use super::plane;
use super::simd::{with_fixed_act, Fixed, Simd};
use super::{BwdGeom, FwdGeom};
use crate::activation::{avx512::apply, Activation};
use std::arch::x86_64::*;

#[derive(Clone, Copy)]
pub(super) struct Avx512;

// SAFETY: only instantiated inside the `#[target_feature(enable = "avx512f")]` functions
// below, which the dispatcher calls only when the CPU supports AVX-512F.
unsafe impl Simd for Avx512 {
    const L: usize = 16;
    type V = __m512;
    #[inline(always)]
    unsafe fn splat(x: f32) -> __m512 {
        // SAFETY: the ISA is enabled (see the impl's SAFETY note).
        unsafe { _mm512_set1_ps(x) }
    }
    #[inline(always)]
    unsafe fn load(p: *const f32) -> __m512 {
        // SAFETY: the caller passes 8 readable floats.
        unsafe { _mm512_loadu_ps(p) }
    }
    #[inline(always)]
    unsafe fn store(p: *mut f32, v: __m512) {
        // SAFETY: the caller passes 8 writable floats.
        unsafe { _mm512_storeu_ps(p, v) }
    }
    #[inline(always)]
    unsafe fn fma(a: __m512, b: __m512, c: __m512) -> __m512 {
        // SAFETY: the ISA is enabled (see the impl's SAFETY note).
        unsafe { _mm512_fmadd_ps(a, b, c) }
    }
    #[inline(always)]
    unsafe fn mul(a: __m512, b: __m512) -> __m512 {
        // SAFETY: the ISA is enabled (see the impl's SAFETY note).
        unsafe { _mm512_mul_ps(a, b) }
    }
    #[inline(always)]
    unsafe fn add(a: __m512, b: __m512) -> __m512 {
        // SAFETY: the ISA is enabled (see the impl's SAFETY note).
        unsafe { _mm512_add_ps(a, b) }
    }
    #[inline(always)]
    unsafe fn and(a: __m512, mask: __m512) -> __m512 {
        // SAFETY: the ISA is enabled (see the impl's SAFETY note).
        unsafe {
            _mm512_castsi512_ps(_mm512_and_si512(
                _mm512_castps_si512(a),
                _mm512_castps_si512(mask),
            ))
        }
    }
    #[inline(always)]
    unsafe fn act(a: Activation, v: __m512) -> __m512 {
        // SAFETY: AVX-512F is enabled in every caller (see the impl's SAFETY note).
        unsafe { apply(a, v) }
    }
    #[inline(always)]
    unsafe fn reduce(v: __m512) -> f32 {
        // SAFETY: the ISA is enabled (see the impl's SAFETY note).
        unsafe { _mm512_reduce_add_ps(v) }
    }
    #[inline(always)]
    unsafe fn prefetch(p: *const f32) {
        // SAFETY: a prefetch never faults, whatever the address.
        unsafe { _mm_prefetch::<_MM_HINT_T0>(p as *const i8) }
    }
    #[inline(always)]
    unsafe fn deinterleave(a: __m512, b: __m512) -> (__m512, __m512) {
        // SAFETY: the ISA is enabled (see the impl's SAFETY note).
        unsafe {
            let ie = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
            let io = _mm512_setr_epi32(1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31);
            (
                _mm512_permutex2var_ps(a, ie, b),
                _mm512_permutex2var_ps(a, io, b),
            )
        }
    }
    #[inline(always)]
    unsafe fn interleave(e: __m512, o: __m512) -> (__m512, __m512) {
        // SAFETY: the ISA is enabled (see the impl's SAFETY note).
        unsafe {
            let lo = _mm512_setr_epi32(0, 16, 1, 17, 2, 18, 3, 19, 4, 20, 5, 21, 6, 22, 7, 23);
            let hi =
                _mm512_setr_epi32(8, 24, 9, 25, 10, 26, 11, 27, 12, 28, 13, 29, 14, 30, 15, 31);
            (
                _mm512_permutex2var_ps(e, lo, o),
                _mm512_permutex2var_ps(e, hi, o),
            )
        }
    }
    #[inline(always)]
    unsafe fn store_first(p: *mut f32, v: __m512, n: usize) {
        // SAFETY: the mask enables lanes < n only; the caller passes n writable floats.
        unsafe { _mm512_mask_storeu_ps(p, ((1u32 << n) - 1) as __mmask16, v) }
    }
    #[inline(always)]
    unsafe fn load_first(p: *const f32, n: usize) -> __m512 {
        // SAFETY: the mask enables lanes < n only (others zero, never touched); the caller
        // passes n readable floats.
        unsafe { _mm512_maskz_loadu_ps(((1u32 << n) - 1) as __mmask16, p) }
    }
}

/// # Safety
/// See [`plane::forward`]; the CPU supports AVX-512F.
#[target_feature(enable = "avx512f")]
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
            Avx512,
            act,
            plane::forward,
            (g, x, w, bias, act, y, scratch)
        )
    }
}

/// # Safety
/// See [`plane::backward_input`]; the CPU supports AVX-512F.
#[target_feature(enable = "avx512f")]
pub(super) unsafe fn backward_input(
    g: &BwdGeom,
    w: &[f32],
    dy: &[f32],
    dx: &mut [f32],
    scratch: &mut [f32],
) {
    // SAFETY: forwarded contract.
    unsafe { plane::backward_input::<Fixed<Avx512, 0>>(g, w, dy, dx, scratch) }
}

/// # Safety
/// See [`plane::backward_weight`]; the CPU supports AVX-512F.
#[allow(clippy::too_many_arguments)]
#[target_feature(enable = "avx512f")]
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
    unsafe { plane::backward_weight::<Fixed<Avx512, 0>>(g, n, x, xs, dy, dys, dw, scratch) }
}

/// # Safety
/// See [`blocked::forward_block`]; the CPU supports AVX-512F.
#[allow(clippy::too_many_arguments)]
#[target_feature(enable = "avx512f")]
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
            Avx512,
            act,
            blocked::forward_block,
            (g, x, w, bias, act, y, scratch)
        )
    }
}

/// # Safety
/// See [`blocked_grad::backward_input_block`]; the CPU supports AVX-512F.
#[target_feature(enable = "avx512f")]
pub(super) unsafe fn backward_input_blocked(
    g: &BlkBwdGeom,
    stride: (usize, usize),
    dy: &[*const f32; 16],
    w: &[f32],
    dx: &[*mut f32; 16],
    scratch: &mut [f32],
) {
    // SAFETY: forwarded contract.
    unsafe { blocked_grad::backward_input_block::<Avx512>(g, stride, dy, w, dx, scratch) }
}

/// # Safety
/// See [`blocked_grad::backward_weight_block`]; the CPU supports AVX-512F.
#[allow(clippy::too_many_arguments)]
#[target_feature(enable = "avx512f")]
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
        blocked_grad::backward_weight_block::<Avx512>(g, n, x, x_img, dy, dy_img, dw, scratch)
    }
}
