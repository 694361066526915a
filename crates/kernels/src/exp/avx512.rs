//! AVX-512F forms of the shared `exp` (16 lanes): the full-range [`exp_ps`], the flushing
//! [`exp_flush_ps`] for arguments `<= 0`, and [`expm1_small_ps`] for tanh. Algorithm and error
//! bound: see [`crate::exp`].
#![cfg(target_arch = "x86_64")]

use super::*;
use std::arch::x86_64::*;

/// Reduction: returns `(n as i32 lanes, r)` with `x = n ln2 + r`.
#[inline]
#[target_feature(enable = "avx512f")]
fn reduce(x: __m512) -> (__m512i, __m512) {
    let magic = _mm512_set1_ps(MAGIC);
    let t = _mm512_fmadd_ps(x, _mm512_set1_ps(LOG2E), magic);
    let nf = _mm512_sub_ps(t, magic);
    let n = _mm512_sub_epi32(_mm512_castps_si512(t), _mm512_castps_si512(magic));
    let r = _mm512_fnmadd_ps(nf, _mm512_set1_ps(LN2_HI), x);
    let r = _mm512_fnmadd_ps(nf, _mm512_set1_ps(LN2_LO), r);
    (n, r)
}

/// Reduction for the flushing forms: returns `(2^n, r)` with `x = n ln2 + r`, valid where
/// `n` is in `[-126, 127]` (other lanes are garbage and must be masked by the caller).
#[inline]
#[target_feature(enable = "avx512f")]
fn reduce_scale(x: __m512) -> (__m512, __m512) {
    let magic = _mm512_set1_ps(MAGIC_BIASED);
    let t = _mm512_fmadd_ps(x, _mm512_set1_ps(LOG2E), magic);
    let nf = _mm512_sub_ps(t, magic);
    let s = _mm512_castsi512_ps(_mm512_slli_epi32::<23>(_mm512_castps_si512(t)));
    let r = _mm512_fnmadd_ps(nf, _mm512_set1_ps(LN2_HI), x);
    let r = _mm512_fnmadd_ps(nf, _mm512_set1_ps(LN2_LO), r);
    (s, r)
}

/// `g(r) = 1 + r P(r)`.
#[inline]
#[target_feature(enable = "avx512f")]
fn poly_g(r: __m512) -> __m512 {
    let q = _mm512_fmadd_ps(_mm512_set1_ps(C6), r, _mm512_set1_ps(C5));
    let q = _mm512_fmadd_ps(q, r, _mm512_set1_ps(C4));
    let q = _mm512_fmadd_ps(q, r, _mm512_set1_ps(C3));
    let q = _mm512_fmadd_ps(q, r, _mm512_set1_ps(C2));
    _mm512_fmadd_ps(q, r, _mm512_set1_ps(1.0))
}

/// `2^n` per lane for `n` in `[-126, 127]`.
#[inline]
#[target_feature(enable = "avx512f")]
fn pow2(n: __m512i) -> __m512 {
    _mm512_castsi512_ps(_mm512_slli_epi32::<23>(_mm512_add_epi32(
        n,
        _mm512_set1_epi32(127),
    )))
}

/// `e^x` per lane over the whole f32 range (subnormal results, `+inf` on overflow, NaN kept).
///
/// # Safety
/// The CPU must support AVX-512F.
#[inline]
#[target_feature(enable = "avx512f")]
pub unsafe fn exp_ps(x: __m512) -> __m512 {
    // minps/maxps return the second operand when one is NaN: NaN lanes pass the clamp.
    let x = _mm512_max_ps(
        _mm512_set1_ps(CLAMP_LO),
        _mm512_min_ps(_mm512_set1_ps(CLAMP_HI), x),
    );
    let (n, r) = reduce(x);
    let g = poly_g(r);
    let n1 = _mm512_srai_epi32::<1>(n);
    let n2 = _mm512_sub_epi32(n, n1);
    let s1 = pow2(n1);
    _mm512_mul_ps(_mm512_fmadd_ps(_mm512_mul_ps(r, s1), g, s1), pow2(n2))
}

/// `e^x` per lane for `x <= 0` (or NaN); results below `2^-126` (x < -87.3365, `-inf`) are
/// flushed to 0. Positive lanes above `88.3` are not supported (callers pass `-|x|` or
/// `x - max`).
///
/// # Safety
/// The CPU must support AVX-512F.
#[inline]
#[target_feature(enable = "avx512f")]
pub unsafe fn exp_flush_ps(x: __m512) -> __m512 {
    // Table form, as the AVX2 one (see the module docs of `crate::exp`): n = 8q + j,
    // s = 2^(q + j/8); the 16-entry tables repeat the 8 entries (vpermd uses the low 4 bits).
    const TABLE: ([i32; 16], [f32; 16]) = flush_table::<16>();
    let magic = _mm512_set1_ps(MAGIC);
    let t = _mm512_fmadd_ps(x, _mm512_set1_ps(8.0 * LOG2E), magic);
    let tb = _mm512_castps_si512(t);
    // SAFETY: the tables hold 16 entries each (unaligned loads).
    let (hi, lo) = unsafe {
        (
            _mm512_loadu_si512(TABLE.0.as_ptr() as *const __m512i),
            _mm512_loadu_ps(TABLE.1.as_ptr()),
        )
    };
    let s = _mm512_castsi512_ps(_mm512_add_epi32(
        _mm512_permutexvar_epi32(tb, hi),
        _mm512_slli_epi32::<20>(tb),
    ));
    let lo = _mm512_permutexvar_ps(tb, lo);
    let nf = _mm512_sub_ps(t, magic);
    let r = _mm512_fnmadd_ps(nf, _mm512_set1_ps(LN2_HI / 8.0), x);
    let r = _mm512_fnmadd_ps(nf, _mm512_set1_ps(LN2_LO / 8.0), r);
    let g = _mm512_fmadd_ps(
        _mm512_fmadd_ps(_mm512_set1_ps(Q3), r, _mm512_set1_ps(Q2)),
        r,
        _mm512_set1_ps(1.0),
    );
    let y = _mm512_fmadd_ps(s, _mm512_fmadd_ps(r, g, lo), s);
    // Lanes below the cut-off hold garbage exponent bits (or NaN for -inf): zero them.
    let tiny = _mm512_cmp_ps_mask::<_CMP_LT_OQ>(x, _mm512_set1_ps(FLUSH_BELOW));
    _mm512_mask_mov_ps(y, tiny, _mm512_setzero_ps())
}

/// `e^x - 1` per lane for `x` in `[-18, 0]` (or NaN), relatively accurate near 0.
///
/// # Safety
/// The CPU must support AVX-512F.
#[inline]
#[target_feature(enable = "avx512f")]
pub unsafe fn expm1_small_ps(x: __m512) -> __m512 {
    let (s, r) = reduce_scale(x);
    let g = poly_g(r);
    _mm512_fmadd_ps(
        _mm512_mul_ps(r, s),
        g,
        _mm512_sub_ps(s, _mm512_set1_ps(1.0)),
    )
}

/// `y = e^x` over slices of equal length.
///
/// # Safety
/// The CPU must support AVX-512F, and `y.len() == x.len()`.
#[target_feature(enable = "avx512f")]
pub(crate) unsafe fn exp_slice(x: &[f32], y: &mut [f32]) {
    let n = x.len().min(y.len());
    let mut i = 0;
    while i + 16 <= n {
        // SAFETY: i + 16 <= n, the length of both slices.
        unsafe {
            let v = _mm512_loadu_ps(x.as_ptr().add(i));
            _mm512_storeu_ps(y.as_mut_ptr().add(i), exp_ps(v));
        }
        i += 16;
    }
    if i < n {
        let mut buf = [0.0f32; 16];
        buf[..n - i].copy_from_slice(&x[i..n]);
        // SAFETY: buf holds 16 floats.
        let v = unsafe { exp_ps(_mm512_loadu_ps(buf.as_ptr())) };
        // SAFETY: buf holds 16 floats.
        unsafe { _mm512_storeu_ps(buf.as_mut_ptr(), v) };
        y[i..n].copy_from_slice(&buf[..n - i]);
    }
}
