//! [`Simd`] on AVX2 + FMA: `__m256`, 8 lanes, masks as all-ones lanes of a `__m256`. Only
//! instantiated inside `#[target_feature(enable = "avx2,fma")]` functions.
#![cfg(target_arch = "x86_64")]

use super::Simd;
use std::arch::x86_64::*;

/// The AVX2 + FMA vector ISA.
#[derive(Clone, Copy)]
pub(crate) struct Avx2;

/// Lanes `0..n` set (all bits), the rest clear.
#[inline(always)]
unsafe fn first_lanes(n: usize) -> __m256i {
    // SAFETY: AVX2 is enabled in every caller (see the impl's SAFETY note).
    unsafe {
        _mm256_cmpgt_epi32(
            _mm256_set1_epi32(n as i32),
            _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7),
        )
    }
}

// SAFETY: only instantiated inside `#[target_feature(enable = "avx2,fma")]` functions, which
// the dispatch tables call only when the CPU supports AVX2 and FMA. Every method body below is
// an intrinsic of those features (each `unsafe` block relies on this note) plus, for loads and
// stores, the caller's pointer contract.
unsafe impl Simd for Avx2 {
    const L: usize = 8;
    const KEEP_EDGE_LOADS: bool = true;
    const FAST_LUT: bool = true;
    type V = __m256;
    type M = __m256;

    #[inline(always)]
    unsafe fn splat(x: f32) -> __m256 {
        // SAFETY: see the impl's SAFETY note.
        unsafe { _mm256_set1_ps(x) }
    }
    #[inline(always)]
    unsafe fn zero() -> __m256 {
        // SAFETY: see the impl's SAFETY note.
        unsafe { _mm256_setzero_ps() }
    }
    #[inline(always)]
    unsafe fn broadcast(p: *const f32) -> __m256 {
        // SAFETY: one readable float (caller); see the impl's SAFETY note.
        unsafe { _mm256_broadcast_ss(&*p) }
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
        // SAFETY: see the impl's SAFETY note.
        unsafe { _mm256_fmadd_ps(a, b, c) }
    }
    #[inline(always)]
    unsafe fn fnma(a: __m256, b: __m256, c: __m256) -> __m256 {
        // SAFETY: see the impl's SAFETY note.
        unsafe { _mm256_fnmadd_ps(a, b, c) }
    }
    #[inline(always)]
    unsafe fn mul(a: __m256, b: __m256) -> __m256 {
        // SAFETY: see the impl's SAFETY note.
        unsafe { _mm256_mul_ps(a, b) }
    }
    #[inline(always)]
    unsafe fn add(a: __m256, b: __m256) -> __m256 {
        // SAFETY: see the impl's SAFETY note.
        unsafe { _mm256_add_ps(a, b) }
    }
    #[inline(always)]
    unsafe fn sub(a: __m256, b: __m256) -> __m256 {
        // SAFETY: see the impl's SAFETY note.
        unsafe { _mm256_sub_ps(a, b) }
    }
    #[inline(always)]
    unsafe fn div(a: __m256, b: __m256) -> __m256 {
        // SAFETY: see the impl's SAFETY note.
        unsafe { _mm256_div_ps(a, b) }
    }
    #[inline(always)]
    unsafe fn min(a: __m256, b: __m256) -> __m256 {
        // SAFETY: see the impl's SAFETY note.
        unsafe { _mm256_min_ps(a, b) }
    }
    #[inline(always)]
    unsafe fn max(a: __m256, b: __m256) -> __m256 {
        // SAFETY: see the impl's SAFETY note.
        unsafe { _mm256_max_ps(a, b) }
    }
    #[inline(always)]
    unsafe fn and(a: __m256, mask: __m256) -> __m256 {
        // SAFETY: see the impl's SAFETY note.
        unsafe { _mm256_and_ps(a, mask) }
    }
    #[inline(always)]
    unsafe fn or(a: __m256, b: __m256) -> __m256 {
        // SAFETY: see the impl's SAFETY note.
        unsafe { _mm256_or_ps(a, b) }
    }
    #[inline(always)]
    unsafe fn andnot(a: __m256, b: __m256) -> __m256 {
        // SAFETY: see the impl's SAFETY note.
        unsafe { _mm256_andnot_ps(a, b) }
    }
    #[inline(always)]
    unsafe fn gt(a: __m256, b: __m256) -> __m256 {
        // SAFETY: see the impl's SAFETY note.
        unsafe { _mm256_cmp_ps::<_CMP_GT_OQ>(a, b) }
    }
    #[inline(always)]
    unsafe fn lt(a: __m256, b: __m256) -> __m256 {
        // SAFETY: see the impl's SAFETY note.
        unsafe { _mm256_cmp_ps::<_CMP_LT_OQ>(a, b) }
    }
    #[inline(always)]
    unsafe fn mask_and(a: __m256, b: __m256) -> __m256 {
        // SAFETY: see the impl's SAFETY note.
        unsafe { _mm256_and_ps(a, b) }
    }
    #[inline(always)]
    unsafe fn select(m: __m256, t: __m256, f: __m256) -> __m256 {
        // SAFETY: see the impl's SAFETY note.
        unsafe { _mm256_blendv_ps(f, t, m) }
    }
    #[inline(always)]
    unsafe fn keep(m: __m256, v: __m256) -> __m256 {
        // SAFETY: see the impl's SAFETY note.
        unsafe { _mm256_and_ps(m, v) }
    }
    #[inline(always)]
    unsafe fn clear(m: __m256, v: __m256) -> __m256 {
        // SAFETY: see the impl's SAFETY note.
        unsafe { _mm256_andnot_ps(m, v) }
    }
    #[inline(always)]
    unsafe fn select_sign(x: __m256, neg: __m256, pos: __m256) -> __m256 {
        // SAFETY: see the impl's SAFETY note. blendv reads only the sign bit of each lane.
        unsafe { _mm256_blendv_ps(pos, neg, x) }
    }
    #[inline(always)]
    unsafe fn reduce(v: __m256) -> f32 {
        // SAFETY: see the impl's SAFETY note.
        unsafe {
            let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps::<1>(v));
            let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
            let s = _mm_add_ss(s, _mm_shuffle_ps::<0b01>(s, s));
            _mm_cvtss_f32(s)
        }
    }
    #[inline(always)]
    unsafe fn reduce_max(v: __m256) -> f32 {
        // SAFETY: see the impl's SAFETY note.
        unsafe {
            let s = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps::<1>(v));
            let s = _mm_max_ps(s, _mm_movehl_ps(s, s));
            let s = _mm_max_ss(s, _mm_shuffle_ps::<0b01>(s, s));
            _mm_cvtss_f32(s)
        }
    }
    #[inline(always)]
    unsafe fn iadd(a: __m256, b: __m256) -> __m256 {
        // SAFETY: see the impl's SAFETY note.
        unsafe {
            _mm256_castsi256_ps(_mm256_add_epi32(
                _mm256_castps_si256(a),
                _mm256_castps_si256(b),
            ))
        }
    }
    #[inline(always)]
    unsafe fn isub(a: __m256, b: __m256) -> __m256 {
        // SAFETY: see the impl's SAFETY note.
        unsafe {
            _mm256_castsi256_ps(_mm256_sub_epi32(
                _mm256_castps_si256(a),
                _mm256_castps_si256(b),
            ))
        }
    }
    #[inline(always)]
    unsafe fn shl<const N: u32>(v: __m256) -> __m256 {
        // SAFETY: see the impl's SAFETY note. A constant count compiles to `vpslld imm`.
        unsafe {
            let n = _mm256_set1_epi32(N as i32);
            _mm256_castsi256_ps(_mm256_sllv_epi32(_mm256_castps_si256(v), n))
        }
    }
    #[inline(always)]
    unsafe fn sra<const N: u32>(v: __m256) -> __m256 {
        // SAFETY: see the impl's SAFETY note. A constant count compiles to `vpsrad imm`.
        unsafe {
            let n = _mm256_set1_epi32(N as i32);
            _mm256_castsi256_ps(_mm256_srav_epi32(_mm256_castps_si256(v), n))
        }
    }
    #[inline(always)]
    unsafe fn lut8(table: &[f32; 16], idx: __m256) -> __m256 {
        // SAFETY: see the impl's SAFETY note; the table holds 16 floats. vpermps uses the low
        // 3 bits of each index.
        unsafe {
            _mm256_permutevar8x32_ps(_mm256_loadu_ps(table.as_ptr()), _mm256_castps_si256(idx))
        }
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
    #[inline(always)]
    unsafe fn load_masked(p: *const f32, m: __m256) -> __m256 {
        // SAFETY: `vmaskmovps` neither reads nor faults on the lanes whose mask sign bit is
        // clear; the caller passes the others readable.
        unsafe { _mm256_maskload_ps(p, _mm256_castps_si256(m)) }
    }
    #[inline(always)]
    unsafe fn load_first_or(p: *const f32, n: usize, fill: f32) -> __m256 {
        // SAFETY: as `load_first`; the blend fills the lanes the mask left out.
        unsafe {
            let m = first_lanes(n);
            let v = _mm256_maskload_ps(p, m);
            _mm256_blendv_ps(_mm256_set1_ps(fill), v, _mm256_castsi256_ps(m))
        }
    }
    #[inline(always)]
    unsafe fn mask(lo: usize, hi: usize) -> __m256 {
        // SAFETY: see the impl's SAFETY note.
        unsafe { _mm256_castsi256_ps(_mm256_andnot_si256(first_lanes(lo), first_lanes(hi))) }
    }
    #[inline(always)]
    unsafe fn deinterleave(a: __m256, b: __m256) -> (__m256, __m256) {
        // SAFETY: see the impl's SAFETY note.
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
        // SAFETY: see the impl's SAFETY note.
        unsafe {
            // 64-bit blocks 0, 2, 1, 3 put e0 e1 e4 e5 | e2 e3 e6 e7 under the unpacks.
            let e = _mm256_castpd_ps(_mm256_permute4x64_pd::<0b11_01_10_00>(_mm256_castps_pd(e)));
            let o = _mm256_castpd_ps(_mm256_permute4x64_pd::<0b11_01_10_00>(_mm256_castps_pd(o)));
            (_mm256_unpacklo_ps(e, o), _mm256_unpackhi_ps(e, o))
        }
    }
    #[inline(always)]
    unsafe fn transpose(r: &mut [__m256]) {
        // SAFETY: see the impl's SAFETY note; r holds 8 vectors (the trait's contract). The
        // classic 8x8 transpose: unpack pairs, shuffle quads, swap 128-bit halves.
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
}
