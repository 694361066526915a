//! [`Simd`] on AVX-512F: `__m512`, 16 lanes, masks in `__mmask16` registers (compares,
//! selects and tails are masked instructions). Only instantiated inside
//! `#[target_feature(enable = "avx512f")]` functions.
#![cfg(target_arch = "x86_64")]

use super::Simd;
use std::arch::x86_64::*;

/// The AVX-512F vector ISA.
#[derive(Clone, Copy)]
pub(crate) struct Avx512;

/// The mask of lanes `0..n` (`n <= 16`).
#[inline(always)]
fn first_lanes(n: usize) -> __mmask16 {
    ((1u32 << n) - 1) as __mmask16
}

#[inline(always)]
unsafe fn bits(v: __m512) -> __m512i {
    // SAFETY: a register reinterpretation (AVX-512F enabled in every caller).
    unsafe { _mm512_castps_si512(v) }
}

#[inline(always)]
unsafe fn float(v: __m512i) -> __m512 {
    // SAFETY: a register reinterpretation (AVX-512F enabled in every caller).
    unsafe { _mm512_castsi512_ps(v) }
}

// SAFETY: only instantiated inside `#[target_feature(enable = "avx512f")]` functions, which
// the dispatch tables call only when the CPU supports AVX-512F. Every method body below is an
// intrinsic of that feature (each `unsafe` block relies on this note) plus, for loads and
// stores, the caller's pointer contract.
unsafe impl Simd for Avx512 {
    const L: usize = 16;
    const FAST_LUT: bool = true;
    const FAST_MASKED_LOAD: bool = true;
    const VREGS: usize = 32;
    type V = __m512;
    type M = __mmask16;

    #[inline(always)]
    unsafe fn splat(x: f32) -> __m512 {
        // SAFETY: see the impl's SAFETY note.
        unsafe { _mm512_set1_ps(x) }
    }
    #[inline(always)]
    unsafe fn zero() -> __m512 {
        // SAFETY: see the impl's SAFETY note.
        unsafe { _mm512_setzero_ps() }
    }
    #[inline(always)]
    unsafe fn load(p: *const f32) -> __m512 {
        // SAFETY: the caller passes 16 readable floats.
        unsafe { _mm512_loadu_ps(p) }
    }
    #[inline(always)]
    unsafe fn store(p: *mut f32, v: __m512) {
        // SAFETY: the caller passes 16 writable floats.
        unsafe { _mm512_storeu_ps(p, v) }
    }
    #[inline(always)]
    unsafe fn fma(a: __m512, b: __m512, c: __m512) -> __m512 {
        // SAFETY: see the impl's SAFETY note.
        unsafe { _mm512_fmadd_ps(a, b, c) }
    }
    #[inline(always)]
    unsafe fn fnma(a: __m512, b: __m512, c: __m512) -> __m512 {
        // SAFETY: see the impl's SAFETY note.
        unsafe { _mm512_fnmadd_ps(a, b, c) }
    }
    #[inline(always)]
    unsafe fn mul(a: __m512, b: __m512) -> __m512 {
        // SAFETY: see the impl's SAFETY note.
        unsafe { _mm512_mul_ps(a, b) }
    }
    #[inline(always)]
    unsafe fn add(a: __m512, b: __m512) -> __m512 {
        // SAFETY: see the impl's SAFETY note.
        unsafe { _mm512_add_ps(a, b) }
    }
    #[inline(always)]
    unsafe fn sub(a: __m512, b: __m512) -> __m512 {
        // SAFETY: see the impl's SAFETY note.
        unsafe { _mm512_sub_ps(a, b) }
    }
    #[inline(always)]
    unsafe fn div(a: __m512, b: __m512) -> __m512 {
        // SAFETY: see the impl's SAFETY note.
        unsafe { _mm512_div_ps(a, b) }
    }
    #[inline(always)]
    unsafe fn min(a: __m512, b: __m512) -> __m512 {
        // SAFETY: see the impl's SAFETY note.
        unsafe { _mm512_min_ps(a, b) }
    }
    #[inline(always)]
    unsafe fn max(a: __m512, b: __m512) -> __m512 {
        // SAFETY: see the impl's SAFETY note.
        unsafe { _mm512_max_ps(a, b) }
    }
    #[inline(always)]
    unsafe fn and(a: __m512, mask: __m512) -> __m512 {
        // SAFETY: see the impl's SAFETY note (AVX-512F has integer logic ops only).
        unsafe { float(_mm512_and_si512(bits(a), bits(mask))) }
    }
    #[inline(always)]
    unsafe fn or(a: __m512, b: __m512) -> __m512 {
        // SAFETY: see the impl's SAFETY note.
        unsafe { float(_mm512_or_si512(bits(a), bits(b))) }
    }
    #[inline(always)]
    unsafe fn andnot(a: __m512, b: __m512) -> __m512 {
        // SAFETY: see the impl's SAFETY note.
        unsafe { float(_mm512_andnot_si512(bits(a), bits(b))) }
    }
    #[inline(always)]
    unsafe fn abs(v: __m512) -> __m512 {
        // SAFETY: see the impl's SAFETY note.
        unsafe { _mm512_abs_ps(v) }
    }
    #[inline(always)]
    unsafe fn gt(a: __m512, b: __m512) -> __mmask16 {
        // SAFETY: see the impl's SAFETY note.
        unsafe { _mm512_cmp_ps_mask::<_CMP_GT_OQ>(a, b) }
    }
    #[inline(always)]
    unsafe fn lt(a: __m512, b: __m512) -> __mmask16 {
        // SAFETY: see the impl's SAFETY note.
        unsafe { _mm512_cmp_ps_mask::<_CMP_LT_OQ>(a, b) }
    }
    #[inline(always)]
    unsafe fn mask_and(a: __mmask16, b: __mmask16) -> __mmask16 {
        a & b
    }
    #[inline(always)]
    unsafe fn select(m: __mmask16, t: __m512, f: __m512) -> __m512 {
        // SAFETY: see the impl's SAFETY note.
        unsafe { _mm512_mask_blend_ps(m, f, t) }
    }
    #[inline(always)]
    unsafe fn keep(m: __mmask16, v: __m512) -> __m512 {
        // SAFETY: see the impl's SAFETY note.
        unsafe { _mm512_maskz_mov_ps(m, v) }
    }
    #[inline(always)]
    unsafe fn clear(m: __mmask16, v: __m512) -> __m512 {
        // SAFETY: see the impl's SAFETY note.
        unsafe { _mm512_maskz_mov_ps(!m, v) }
    }
    #[inline(always)]
    unsafe fn select_sign(x: __m512, neg: __m512, pos: __m512) -> __m512 {
        // SAFETY: see the impl's SAFETY note. The sign bit as a signed-integer compare.
        unsafe {
            let m = _mm512_cmplt_epi32_mask(bits(x), _mm512_setzero_si512());
            _mm512_mask_blend_ps(m, pos, neg)
        }
    }
    #[inline(always)]
    unsafe fn reduce(v: __m512) -> f32 {
        // SAFETY: see the impl's SAFETY note.
        unsafe { _mm512_reduce_add_ps(v) }
    }
    #[inline(always)]
    unsafe fn reduce_max(v: __m512) -> f32 {
        // SAFETY: see the impl's SAFETY note.
        unsafe { _mm512_reduce_max_ps(v) }
    }
    #[inline(always)]
    unsafe fn iadd(a: __m512, b: __m512) -> __m512 {
        // SAFETY: see the impl's SAFETY note.
        unsafe { float(_mm512_add_epi32(bits(a), bits(b))) }
    }
    #[inline(always)]
    unsafe fn isub(a: __m512, b: __m512) -> __m512 {
        // SAFETY: see the impl's SAFETY note.
        unsafe { float(_mm512_sub_epi32(bits(a), bits(b))) }
    }
    #[inline(always)]
    unsafe fn shl<const N: u32>(v: __m512) -> __m512 {
        // SAFETY: see the impl's SAFETY note.
        unsafe { float(_mm512_slli_epi32::<N>(bits(v))) }
    }
    #[inline(always)]
    unsafe fn sra<const N: u32>(v: __m512) -> __m512 {
        // SAFETY: see the impl's SAFETY note.
        unsafe { float(_mm512_srai_epi32::<N>(bits(v))) }
    }
    #[inline(always)]
    unsafe fn lut8(table: &[f32; 16], idx: __m512) -> __m512 {
        // SAFETY: see the impl's SAFETY note; the table holds 16 floats. vpermps uses the low
        // 4 bits of each index; the table repeats its 8 entries, so bit 3 does not matter.
        unsafe { _mm512_permutexvar_ps(bits(idx), _mm512_loadu_ps(table.as_ptr())) }
    }
    #[inline(always)]
    unsafe fn prefetch(p: *const f32) {
        // SAFETY: a prefetch never faults, whatever the address.
        unsafe { _mm_prefetch::<_MM_HINT_T0>(p as *const i8) }
    }
    #[inline(always)]
    unsafe fn prefetch_l2(p: *const f32) {
        // SAFETY: a prefetch never faults, whatever the address.
        unsafe { _mm_prefetch::<_MM_HINT_T1>(p as *const i8) }
    }
    #[inline(always)]
    unsafe fn store_first(p: *mut f32, v: __m512, n: usize) {
        // SAFETY: the mask enables lanes < n only; the caller passes n writable floats.
        unsafe { _mm512_mask_storeu_ps(p, first_lanes(n), v) }
    }
    #[inline(always)]
    unsafe fn load_first(p: *const f32, n: usize) -> __m512 {
        // SAFETY: the mask enables lanes < n only (others zero, never touched); the caller
        // passes n readable floats.
        unsafe { _mm512_maskz_loadu_ps(first_lanes(n), p) }
    }
    #[inline(always)]
    unsafe fn lane_range(lo: usize, hi: usize) -> __mmask16 {
        first_lanes(hi) & !first_lanes(lo)
    }
    #[inline(always)]
    unsafe fn load_masked(p: *const f32, m: __mmask16) -> __m512 {
        // SAFETY: masked-off lanes are neither read nor faulted on (AVX-512 fault
        // suppression); the caller passes the lanes of `m` readable.
        unsafe { _mm512_maskz_loadu_ps(m, p) }
    }
    #[inline(always)]
    unsafe fn load_first_or(p: *const f32, n: usize, fill: f32) -> __m512 {
        // SAFETY: as `load_first`, the other lanes taken from `fill`.
        unsafe { _mm512_mask_loadu_ps(_mm512_set1_ps(fill), first_lanes(n), p) }
    }
    #[inline(always)]
    unsafe fn mask(lo: usize, hi: usize) -> __m512 {
        // SAFETY: see the impl's SAFETY note.
        unsafe {
            let m = first_lanes(hi) & !first_lanes(lo);
            float(_mm512_maskz_set1_epi32(m, -1))
        }
    }
    #[inline(always)]
    unsafe fn deinterleave(a: __m512, b: __m512) -> (__m512, __m512) {
        // SAFETY: see the impl's SAFETY note.
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
        // SAFETY: see the impl's SAFETY note.
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
    unsafe fn transpose(r: &mut [__m512]) {
        // SAFETY: see the impl's SAFETY note; r holds 16 vectors (the trait's contract).
        // The 16x16 transpose in four shuffle stages (64 shuffles): 32-bit pairs, 64-bit
        // pairs (u[4g + c] holds, in 128-bit lane k, column 4k + c of rows 4g..4g + 4), then
        // 128-bit blocks twice.
        unsafe {
            let mut t = [_mm512_setzero_ps(); 16];
            for i in 0..8 {
                t[2 * i] = _mm512_unpacklo_ps(r[2 * i], r[2 * i + 1]);
                t[2 * i + 1] = _mm512_unpackhi_ps(r[2 * i], r[2 * i + 1]);
            }
            let pd = |v: __m512| _mm512_castps_pd(v);
            let ps = |v: __m512d| _mm512_castpd_ps(v);
            let mut u = [_mm512_setzero_ps(); 16];
            for g in 0..4 {
                let (a, b, c, d) = (t[4 * g], t[4 * g + 1], t[4 * g + 2], t[4 * g + 3]);
                u[4 * g] = ps(_mm512_unpacklo_pd(pd(a), pd(c)));
                u[4 * g + 1] = ps(_mm512_unpackhi_pd(pd(a), pd(c)));
                u[4 * g + 2] = ps(_mm512_unpacklo_pd(pd(b), pd(d)));
                u[4 * g + 3] = ps(_mm512_unpackhi_pd(pd(b), pd(d)));
            }
            for c in 0..4 {
                let ve = _mm512_shuffle_f32x4::<0x88>(u[c], u[4 + c]);
                let vo = _mm512_shuffle_f32x4::<0xdd>(u[c], u[4 + c]);
                let we = _mm512_shuffle_f32x4::<0x88>(u[8 + c], u[12 + c]);
                let wo = _mm512_shuffle_f32x4::<0xdd>(u[8 + c], u[12 + c]);
                r[c] = _mm512_shuffle_f32x4::<0x88>(ve, we);
                r[4 + c] = _mm512_shuffle_f32x4::<0x88>(vo, wo);
                r[8 + c] = _mm512_shuffle_f32x4::<0xdd>(ve, we);
                r[12 + c] = _mm512_shuffle_f32x4::<0xdd>(vo, wo);
            }
        }
    }
}
