//! AVX2 + FMA depthwise kernels: [`Simd`] on `__m256` (8 lanes), and the entry points that
//! instantiate the generic plane functions under `#[target_feature(enable = "avx2,fma")]`.

use super::blocked::{self, BlkGeom};
use super::blocked_grad::{self, BlkBwdGeom};
use super::plane;
use super::simd::{with_fixed_act, Fixed, Simd};
use super::{BwdGeom, FwdGeom};
use crate::activation::{avx2::apply, Activation};
use std::arch::x86_64::*;

#[derive(Clone, Copy)]
pub(super) struct Avx2;

// SAFETY: only instantiated inside the `#[target_feature(enable = "avx2,fma")]` functions
// below, which the dispatcher calls only when the CPU supports AVX2 and FMA.
unsafe impl Simd for Avx2 {
    const L: usize = 8;
    type V = __m256;
    #[inline(always)]
    unsafe fn splat(x: f32) -> __m256 {
        // SAFETY: the ISA is enabled (see the impl's SAFETY note).
        unsafe { _mm256_set1_ps(x) }
    }
    #[inline(always)]
    unsafe fn load(p: *const f32) -> __m256 {
        // SAFETY: the caller passes 8 readable floats.
        unsafe { _mm256_loadu_ps(p) }
    }
    #[inline(always)]
    unsafe fn store(p: *mut f32, v: __m256) {
        // SAFETY: the caller passes 8 writable floats.
        unsafe { _mm256_storeu_ps(p, v) }
    }
    #[inline(always)]
    unsafe fn fma(a: __m256, b: __m256, c: __m256) -> __m256 {
        // SAFETY: the ISA is enabled (see the impl's SAFETY note).
        unsafe { _mm256_fmadd_ps(a, b, c) }
    }
    #[inline(always)]
    unsafe fn mul(a: __m256, b: __m256) -> __m256 {
        // SAFETY: the ISA is enabled (see the impl's SAFETY note).
        unsafe { _mm256_mul_ps(a, b) }
    }
    #[inline(always)]
    unsafe fn add(a: __m256, b: __m256) -> __m256 {
        // SAFETY: the ISA is enabled (see the impl's SAFETY note).
        unsafe { _mm256_add_ps(a, b) }
    }
    #[inline(always)]
    unsafe fn and(a: __m256, mask: __m256) -> __m256 {
        // SAFETY: the ISA is enabled (see the impl's SAFETY note).
        unsafe { _mm256_and_ps(a, mask) }
    }
    #[inline(always)]
    unsafe fn act(a: Activation, v: __m256) -> __m256 {
        // SAFETY: AVX2 + FMA are enabled in every caller (see the impl's SAFETY note).
        unsafe { apply(a, v) }
    }
    #[inline(always)]
    unsafe fn reduce(v: __m256) -> f32 {
        // SAFETY: the ISA is enabled (see the impl's SAFETY note).
        unsafe {
            let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
            let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
            let s = _mm_add_ss(s, _mm_shuffle_ps(s, s, 1));
            _mm_cvtss_f32(s)
        }
    }
    #[inline(always)]
    unsafe fn prefetch(p: *const f32) {
        // SAFETY: a prefetch never faults, whatever the address.
        unsafe { _mm_prefetch::<_MM_HINT_T0>(p as *const i8) }
    }
    #[inline(always)]
    unsafe fn deinterleave(a: __m256, b: __m256) -> (__m256, __m256) {
        // SAFETY: the ISA is enabled (see the impl's SAFETY note).
        unsafe {
            // Per 128-bit lane: [a0 a2 b0 b2 | a4 a6 b4 b6], then 64-bit blocks 0, 2, 1, 3.
            let e = _mm256_shuffle_ps::<0b10_00_10_00>(a, b);
            let o = _mm256_shuffle_ps::<0b11_01_11_01>(a, b);
            (
                _mm256_castpd_ps(_mm256_permute4x64_pd::<0b11_01_10_00>(_mm256_castps_pd(e))),
                _mm256_castpd_ps(_mm256_permute4x64_pd::<0b11_01_10_00>(_mm256_castps_pd(o))),
            )
        }
    }
    #[inline(always)]
    unsafe fn interleave(e: __m256, o: __m256) -> (__m256, __m256) {
        // SAFETY: the ISA is enabled (see the impl's SAFETY note).
        unsafe {
            // 64-bit blocks 0, 2, 1, 3 put e0 e1 e4 e5 | e2 e3 e6 e7 under the unpacks.
            let e = _mm256_castpd_ps(_mm256_permute4x64_pd::<0b11_01_10_00>(_mm256_castps_pd(e)));
            let o = _mm256_castpd_ps(_mm256_permute4x64_pd::<0b11_01_10_00>(_mm256_castps_pd(o)));
            (_mm256_unpacklo_ps(e, o), _mm256_unpackhi_ps(e, o))
        }
    }
    #[inline(always)]
    unsafe fn transpose(r: &mut [__m256]) {
        // SAFETY: the ISA is enabled; r holds 8 vectors (the trait's contract). The classic
        // 8x8 transpose: unpack pairs, shuffle quads, swap 128-bit halves (24 shuffles).
        unsafe {
            let t0 = _mm256_unpacklo_ps(r[0], r[1]);
            let t1 = _mm256_unpackhi_ps(r[0], r[1]);
            let t2 = _mm256_unpacklo_ps(r[2], r[3]);
            let t3 = _mm256_unpackhi_ps(r[2], r[3]);
            let t4 = _mm256_unpacklo_ps(r[4], r[5]);
            let t5 = _mm256_unpackhi_ps(r[4], r[5]);
            let t6 = _mm256_unpacklo_ps(r[6], r[7]);
            let t7 = _mm256_unpackhi_ps(r[6], r[7]);
            let u0 = _mm256_shuffle_ps::<0x44>(t0, t2);
            let u1 = _mm256_shuffle_ps::<0xEE>(t0, t2);
            let u2 = _mm256_shuffle_ps::<0x44>(t1, t3);
            let u3 = _mm256_shuffle_ps::<0xEE>(t1, t3);
            let u4 = _mm256_shuffle_ps::<0x44>(t4, t6);
            let u5 = _mm256_shuffle_ps::<0xEE>(t4, t6);
            let u6 = _mm256_shuffle_ps::<0x44>(t5, t7);
            let u7 = _mm256_shuffle_ps::<0xEE>(t5, t7);
            r[0] = _mm256_permute2f128_ps::<0x20>(u0, u4);
            r[1] = _mm256_permute2f128_ps::<0x20>(u1, u5);
            r[2] = _mm256_permute2f128_ps::<0x20>(u2, u6);
            r[3] = _mm256_permute2f128_ps::<0x20>(u3, u7);
            r[4] = _mm256_permute2f128_ps::<0x31>(u0, u4);
            r[5] = _mm256_permute2f128_ps::<0x31>(u1, u5);
            r[6] = _mm256_permute2f128_ps::<0x31>(u2, u6);
            r[7] = _mm256_permute2f128_ps::<0x31>(u3, u7);
        }
    }
    #[inline(always)]
    unsafe fn store_first(p: *mut f32, v: __m256, n: usize) {
        // SAFETY: the mask enables lanes < n only; the caller passes n writable floats.
        unsafe { _mm256_maskstore_ps(p, first_lanes(n), v) }
    }
    #[inline(always)]
    unsafe fn load_first(p: *const f32, n: usize) -> __m256 {
        // SAFETY: the mask enables lanes < n only (others read as zero, never touched); the
        // caller passes n readable floats.
        unsafe { _mm256_maskload_ps(p, first_lanes(n)) }
    }
}

/// Lanes `0..n` set (all bits), the rest clear.
#[inline(always)]
unsafe fn first_lanes(n: usize) -> __m256i {
    const IDX: [i32; 8] = [0, 1, 2, 3, 4, 5, 6, 7];
    // SAFETY: AVX2 is enabled in every caller; IDX holds 8 integers.
    unsafe {
        _mm256_cmpgt_epi32(
            _mm256_set1_epi32(n as i32),
            _mm256_loadu_si256(IDX.as_ptr() as *const __m256i),
        )
    }
}

/// # Safety
/// See [`plane::forward`]; the CPU supports AVX2 and FMA.
#[target_feature(enable = "avx2,fma")]
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
    unsafe { with_fixed_act!(Avx2, act, plane::forward, (g, x, w, bias, act, y, scratch)) }
}

/// # Safety
/// See [`plane::backward_input`]; the CPU supports AVX2 and FMA.
#[target_feature(enable = "avx2,fma")]
pub(super) unsafe fn backward_input(
    g: &BwdGeom,
    w: &[f32],
    dy: &[f32],
    dx: &mut [f32],
    scratch: &mut [f32],
) {
    // SAFETY: forwarded contract.
    unsafe { plane::backward_input::<Fixed<Avx2, 0>>(g, w, dy, dx, scratch) }
}

/// # Safety
/// See [`plane::backward_weight`]; the CPU supports AVX2 and FMA.
#[allow(clippy::too_many_arguments)]
#[target_feature(enable = "avx2,fma")]
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
    unsafe { plane::backward_weight::<Fixed<Avx2, 0>>(g, n, x, xs, dy, dys, dw, scratch) }
}

/// # Safety
/// See [`blocked::forward_block`]; the CPU supports AVX2 and FMA.
#[allow(clippy::too_many_arguments)]
#[target_feature(enable = "avx2,fma")]
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
            Avx2,
            act,
            blocked::forward_block,
            (g, x, w, bias, act, y, scratch)
        )
    }
}

/// # Safety
/// See [`blocked_grad::backward_input_block`]; the CPU supports AVX2 and FMA.
#[target_feature(enable = "avx2,fma")]
pub(super) unsafe fn backward_input_blocked(
    g: &BlkBwdGeom,
    stride: (usize, usize),
    dy: &[*const f32; 16],
    w: &[f32],
    dx: &[*mut f32; 16],
    scratch: &mut [f32],
) {
    // SAFETY: forwarded contract.
    unsafe { blocked_grad::backward_input_block::<Avx2>(g, stride, dy, w, dx, scratch) }
}

/// # Safety
/// See [`blocked_grad::backward_weight_block`]; the CPU supports AVX2 and FMA.
#[allow(clippy::too_many_arguments)]
#[target_feature(enable = "avx2,fma")]
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
    unsafe { blocked_grad::backward_weight_block::<Avx2>(g, n, x, x_img, dy, dy_img, dw, scratch) }
}
