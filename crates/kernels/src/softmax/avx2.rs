//! AVX2 + FMA row kernels of softmax and log-softmax, forward and backward. The structure
//! (max; exp-store-sum; scale) and the special cases are described in [`super`].
#![cfg(target_arch = "x86_64")]

use crate::exp::avx2::{exp_flush_ps, exp_ps};
use std::arch::x86_64::*;

const W: usize = 8;

/// `-1` in the first 8 entries, `0` in the last 8: the mask of the first `len` lanes starts
/// at `8 - len`.
static TAIL: [i32; 16] = [-1, -1, -1, -1, -1, -1, -1, -1, 0, 0, 0, 0, 0, 0, 0, 0];

/// `0` in the first 8 entries, `-1` in the last 8: the mask of the last `len` lanes starts at
/// `len`.
static LAST: [i32; 16] = [0, 0, 0, 0, 0, 0, 0, 0, -1, -1, -1, -1, -1, -1, -1, -1];

/// The lane mask of the last `len <= W` lanes (as floats, for `and`).
#[inline]
#[target_feature(enable = "avx2,fma")]
fn last_mask(len: usize) -> __m256 {
    // SAFETY: len is in 0..=8, so the 8 loaded entries lie inside LAST.
    unsafe { _mm256_loadu_ps(LAST.as_ptr().add(len) as *const f32) }
}

/// The lane mask of the first `len < W` lanes.
#[inline]
#[target_feature(enable = "avx2,fma")]
fn tail_mask(len: usize) -> __m256i {
    // SAFETY: 8 - len is in 1..=8, so the 8 loaded entries lie inside TAIL.
    unsafe { _mm256_loadu_si256(TAIL.as_ptr().add(W - len) as *const __m256i) }
}

/// Loads `len < W` floats from `p` (masked: no access past them), filling the other lanes
/// with `fill`.
///
/// # Safety
/// `p` must be readable for `len` floats.
#[inline]
#[target_feature(enable = "avx2,fma")]
unsafe fn load_tail(p: *const f32, len: usize, fill: f32) -> __m256 {
    let m = tail_mask(len);
    // SAFETY: the masked load touches only the first `len` floats.
    let v = unsafe { _mm256_maskload_ps(p, m) };
    _mm256_blendv_ps(_mm256_set1_ps(fill), v, _mm256_castsi256_ps(m))
}

/// Stores the first `len < W` lanes of `v` at `p` (masked).
///
/// # Safety
/// `p` must be writable for `len` floats.
#[inline]
#[target_feature(enable = "avx2,fma")]
unsafe fn store_tail(p: *mut f32, len: usize, v: __m256) {
    // SAFETY: the masked store touches only the first `len` floats.
    unsafe { _mm256_maskstore_ps(p, tail_mask(len), v) }
}

/// Sum of the 8 lanes, in a fixed order.
#[inline]
#[target_feature(enable = "avx2,fma")]
fn hsum(v: __m256) -> f32 {
    let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps::<1>(v));
    let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    let s = _mm_add_ss(s, _mm_shuffle_ps::<0b01>(s, s));
    _mm_cvtss_f32(s)
}

/// Maximum of the 8 lanes.
#[inline]
#[target_feature(enable = "avx2,fma")]
fn hmax(v: __m256) -> f32 {
    let s = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps::<1>(v));
    let s = _mm_max_ps(s, _mm_movehl_ps(s, s));
    let s = _mm_max_ss(s, _mm_shuffle_ps::<0b01>(s, s));
    _mm_cvtss_f32(s)
}

/// Row maximum (NaN lanes may be skipped: a NaN still poisons the sum that follows).
///
/// # Safety
/// AVX2 + FMA; `x` readable for `n >= 1` floats.
#[inline]
#[target_feature(enable = "avx2,fma")]
unsafe fn row_max(x: *const f32, n: usize) -> f32 {
    let mut m = [_mm256_set1_ps(f32::NEG_INFINITY); 4];
    let mut i = 0;
    // SAFETY (loads): every access is below n.
    unsafe {
        while i + 4 * W <= n {
            for (k, mk) in m.iter_mut().enumerate() {
                *mk = _mm256_max_ps(*mk, _mm256_loadu_ps(x.add(i + k * W)));
            }
            i += 4 * W;
        }
        while i + W <= n {
            m[0] = _mm256_max_ps(m[0], _mm256_loadu_ps(x.add(i)));
            i += W;
        }
        if i < n {
            // Rows of at least W: re-read the last W floats (max is idempotent), no mask.
            let t = if n >= W {
                _mm256_loadu_ps(x.add(n - W))
            } else {
                load_tail(x.add(i), n - i, f32::NEG_INFINITY)
            };
            m[1] = _mm256_max_ps(m[1], t);
        }
    }
    hmax(_mm256_max_ps(
        _mm256_max_ps(m[0], m[1]),
        _mm256_max_ps(m[2], m[3]),
    ))
}

/// `y = e^(x - max)` for the row, returning the sum of `y` (two accumulators, fixed order).
///
/// # Safety
/// AVX2 + FMA; `x` readable and `y` writable for `n` floats.
#[inline]
#[target_feature(enable = "avx2,fma")]
unsafe fn exp_store_sum(x: *const f32, y: *mut f32, n: usize, max: f32) -> f32 {
    // One vector per step: a two-way unroll spills registers (16 ymm) and was ~8% slower.
    let vm = _mm256_set1_ps(max);
    let (mut s0, mut s1) = (_mm256_setzero_ps(), _mm256_setzero_ps());
    let mut i = 0;
    // SAFETY (loads and stores): every access is below n.
    unsafe {
        while i + W <= n {
            let e0 = exp_flush_ps(_mm256_sub_ps(_mm256_loadu_ps(x.add(i)), vm));
            _mm256_storeu_ps(y.add(i), e0);
            s0 = _mm256_add_ps(s0, e0);
            i += W;
        }
        if i < n && n >= W {
            // The last W floats again (overlapping the loop's last vector): the overlapped
            // lanes are stored again with the same values (x and y are distinct) and left out
            // of the sum by the mask. No masked load or store (slow on Zen).
            let e = exp_flush_ps(_mm256_sub_ps(_mm256_loadu_ps(x.add(n - W)), vm));
            _mm256_storeu_ps(y.add(n - W), e);
            s1 = _mm256_and_ps(last_mask(n - i), e);
        } else if i < n {
            let e = exp_flush_ps(_mm256_sub_ps(
                load_tail(x.add(i), n - i, f32::NEG_INFINITY),
                vm,
            ));
            store_tail(y.add(i), n - i, e);
            s1 = e;
        }
    }
    hsum(_mm256_add_ps(s0, s1))
}

/// `y[i] = y[i] * s + b` over the row.
///
/// # Safety
/// AVX2 + FMA; `y` readable and writable for `n` floats.
#[inline]
#[target_feature(enable = "avx2,fma")]
unsafe fn scale_shift(y: *mut f32, n: usize, s: f32, b: f32) {
    let (vs, vb) = (_mm256_set1_ps(s), _mm256_set1_ps(b));
    let mut i = 0;
    // SAFETY (loads and stores): every access is below n.
    unsafe {
        // Rows of at least W with a ragged end: the last W floats are transformed from their
        // original values first and stored after the loop, over the lanes it already wrote
        // (with the same values). No masked load or store.
        let last = (n >= W && !n.is_multiple_of(W))
            .then(|| _mm256_fmadd_ps(_mm256_loadu_ps(y.add(n - W)), vs, vb));
        while i + W <= n {
            _mm256_storeu_ps(y.add(i), _mm256_fmadd_ps(_mm256_loadu_ps(y.add(i)), vs, vb));
            i += W;
        }
        if let Some(t) = last {
            _mm256_storeu_ps(y.add(n - W), t);
        } else if i < n {
            store_tail(
                y.add(i),
                n - i,
                _mm256_fmadd_ps(load_tail(y.add(i), n - i, 0.0), vs, vb),
            );
        }
    }
}

/// Softmax of one row: `y = e^(x - max) / sum`.
///
/// # Safety
/// AVX2 + FMA; `y.len() == x.len() >= 1`.
#[target_feature(enable = "avx2,fma")]
pub(crate) unsafe fn softmax_row(x: &[f32], y: &mut [f32]) {
    let n = x.len();
    // SAFETY: both slices hold n floats.
    unsafe {
        let max = row_max(x.as_ptr(), n);
        if max == f32::NEG_INFINITY {
            y.fill(f32::NAN);
            return;
        }
        let sum = exp_store_sum(x.as_ptr(), y.as_mut_ptr(), n, max);
        scale_shift(y.as_mut_ptr(), n, 1.0 / sum, 0.0);
    }
}

/// Log-softmax of one row: `y = (x - max) - ln(sum e^(x - max))`; the first pass over `x`
/// finds the max, the second stores `x - max` into `y` while summing its exponentials, and a
/// last pass over `y` (still in cache) subtracts the log of the sum.
///
/// # Safety
/// AVX2 + FMA; `y.len() == x.len() >= 1`.
#[target_feature(enable = "avx2,fma")]
pub(crate) unsafe fn log_softmax_row(x: &[f32], y: &mut [f32]) {
    let n = x.len();
    // SAFETY: both slices hold n floats.
    unsafe {
        let max = row_max(x.as_ptr(), n);
        if max == f32::NEG_INFINITY {
            y.fill(f32::NAN);
            return;
        }
        let sum = shift_store_sum_exp(x.as_ptr(), y.as_mut_ptr(), n, max);
        let lse = (sum as f64).ln() as f32;
        scale_shift(y.as_mut_ptr(), n, 1.0, -lse);
    }
}

/// `y = x - max` for the row, returning `sum e^(x - max)` (two accumulators, fixed order).
///
/// # Safety
/// AVX2 + FMA; `x` readable and `y` writable for `n` floats.
#[inline]
#[target_feature(enable = "avx2,fma")]
unsafe fn shift_store_sum_exp(x: *const f32, y: *mut f32, n: usize, max: f32) -> f32 {
    let vm = _mm256_set1_ps(max);
    let (mut s0, mut s1) = (_mm256_setzero_ps(), _mm256_setzero_ps());
    let mut i = 0;
    // SAFETY (loads and stores): every access is below n.
    unsafe {
        while i + W <= n {
            let d0 = _mm256_sub_ps(_mm256_loadu_ps(x.add(i)), vm);
            _mm256_storeu_ps(y.add(i), d0);
            s0 = _mm256_add_ps(s0, exp_flush_ps(d0));
            i += W;
        }
        if i < n && n >= W {
            // As in `exp_store_sum`: the last W floats again, overlapped lanes masked out.
            let d = _mm256_sub_ps(_mm256_loadu_ps(x.add(n - W)), vm);
            _mm256_storeu_ps(y.add(n - W), d);
            s1 = _mm256_and_ps(last_mask(n - i), exp_flush_ps(d));
        } else if i < n {
            let d = _mm256_sub_ps(load_tail(x.add(i), n - i, f32::NEG_INFINITY), vm);
            store_tail(y.add(i), n - i, d);
            s1 = exp_flush_ps(d);
        }
    }
    hsum(_mm256_add_ps(s0, s1))
}

/// `sum a[i] * b[i]` (or `sum b[i]` when `a` is `None`) over `n` floats.
///
/// # Safety
/// AVX2 + FMA; the pointers readable for `n` floats.
#[inline]
#[target_feature(enable = "avx2,fma")]
unsafe fn dot(a: Option<*const f32>, b: *const f32, n: usize) -> f32 {
    let (mut s0, mut s1) = (_mm256_setzero_ps(), _mm256_setzero_ps());
    let one = _mm256_set1_ps(1.0);
    let mut i = 0;
    // SAFETY (loads): every access is below n.
    unsafe {
        let la = |p: usize| a.map_or(one, |a| _mm256_loadu_ps(a.add(p)));
        while i + 2 * W <= n {
            s0 = _mm256_fmadd_ps(la(i), _mm256_loadu_ps(b.add(i)), s0);
            s1 = _mm256_fmadd_ps(la(i + W), _mm256_loadu_ps(b.add(i + W)), s1);
            i += 2 * W;
        }
        if i + W <= n {
            s0 = _mm256_fmadd_ps(la(i), _mm256_loadu_ps(b.add(i)), s0);
            i += W;
        }
        if i < n && n >= W {
            // The last W floats (overlapping), with the lanes already summed masked out.
            let vb = _mm256_and_ps(last_mask(n - i), _mm256_loadu_ps(b.add(n - W)));
            s1 = _mm256_fmadd_ps(la(n - W), vb, s1);
        } else if i < n {
            let va = a.map_or(one, |a| load_tail(a.add(i), n - i, 0.0));
            s1 = _mm256_fmadd_ps(va, load_tail(b.add(i), n - i, 0.0), s1);
        }
    }
    hsum(_mm256_add_ps(s0, s1))
}

/// Softmax backward of one row: `dx = y * (dy - sum(dy * y))`.
///
/// # Safety
/// AVX2 + FMA; the three slices have the same length.
#[target_feature(enable = "avx2,fma")]
pub(crate) unsafe fn softmax_backward_row(y: &[f32], dy: &[f32], dx: &mut [f32]) {
    let n = y.len();
    // SAFETY: the three slices hold n floats.
    unsafe {
        let (yp, dp, op) = (y.as_ptr(), dy.as_ptr(), dx.as_mut_ptr());
        let vs = _mm256_set1_ps(dot(Some(dp), yp, n));
        let mut i = 0;
        while i + W <= n {
            let g = _mm256_sub_ps(_mm256_loadu_ps(dp.add(i)), vs);
            _mm256_storeu_ps(op.add(i), _mm256_mul_ps(_mm256_loadu_ps(yp.add(i)), g));
            i += W;
        }
        if i < n && n >= W {
            // The last W outputs again (dx is distinct from y and dy: same values).
            let g = _mm256_sub_ps(_mm256_loadu_ps(dp.add(n - W)), vs);
            _mm256_storeu_ps(
                op.add(n - W),
                _mm256_mul_ps(_mm256_loadu_ps(yp.add(n - W)), g),
            );
        } else if i < n {
            let g = _mm256_sub_ps(load_tail(dp.add(i), n - i, 0.0), vs);
            store_tail(
                op.add(i),
                n - i,
                _mm256_mul_ps(load_tail(yp.add(i), n - i, 0.0), g),
            );
        }
    }
}

/// Log-softmax backward of one row: `dx = dy - e^y * sum(dy)`.
///
/// # Safety
/// AVX2 + FMA; the three slices have the same length.
#[target_feature(enable = "avx2,fma")]
pub(crate) unsafe fn log_softmax_backward_row(y: &[f32], dy: &[f32], dx: &mut [f32]) {
    let n = y.len();
    // SAFETY: the three slices hold n floats.
    unsafe {
        let (yp, dp, op) = (y.as_ptr(), dy.as_ptr(), dx.as_mut_ptr());
        let vs = _mm256_set1_ps(dot(None, dp, n));
        let mut i = 0;
        while i + W <= n {
            let e = exp_ps(_mm256_loadu_ps(yp.add(i)));
            _mm256_storeu_ps(
                op.add(i),
                _mm256_fnmadd_ps(e, vs, _mm256_loadu_ps(dp.add(i))),
            );
            i += W;
        }
        if i < n && n >= W {
            // The last W outputs again (dx is distinct from y and dy: same values).
            let e = exp_ps(_mm256_loadu_ps(yp.add(n - W)));
            let v = _mm256_fnmadd_ps(e, vs, _mm256_loadu_ps(dp.add(n - W)));
            _mm256_storeu_ps(op.add(n - W), v);
        } else if i < n {
            let e = exp_ps(load_tail(yp.add(i), n - i, 0.0));
            let v = _mm256_fnmadd_ps(e, vs, load_tail(dp.add(i), n - i, 0.0));
            store_tail(op.add(i), n - i, v);
        }
    }
}
