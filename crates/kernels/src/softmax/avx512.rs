//! AVX-512F row kernels of softmax and log-softmax, forward and backward. The structure
//! (max; exp-store-sum; scale) and the special cases are described in [`super`].
//! Mirrors `avx2.rs` (untested on the development host, which lacks AVX-512).
#![cfg(target_arch = "x86_64")]

use crate::exp::avx512::{exp_flush_ps, exp_ps};
use std::arch::x86_64::*;

const W: usize = 16;

/// Loads `len < W` floats from `p` (masked: no access past them), filling the other lanes
/// with `fill`.
///
/// # Safety
/// `p` must be readable for `len` floats.
#[inline]
#[target_feature(enable = "avx512f")]
unsafe fn load_tail(p: *const f32, len: usize, fill: f32) -> __m512 {
    let k = ((1u32 << len) - 1) as __mmask16;
    // SAFETY: the masked load touches only the first `len` floats.
    unsafe { _mm512_mask_loadu_ps(_mm512_set1_ps(fill), k, p) }
}

/// Stores the first `len < W` lanes of `v` at `p` (masked).
///
/// # Safety
/// `p` must be writable for `len` floats.
#[inline]
#[target_feature(enable = "avx512f")]
unsafe fn store_tail(p: *mut f32, len: usize, v: __m512) {
    let k = ((1u32 << len) - 1) as __mmask16;
    // SAFETY: the masked store touches only the first `len` floats.
    unsafe { _mm512_mask_storeu_ps(p, k, v) }
}

/// Sum of the 16 lanes, in the fixed order of `_mm512_reduce_add_ps`.
#[inline]
#[target_feature(enable = "avx512f")]
fn hsum(v: __m512) -> f32 {
    _mm512_reduce_add_ps(v)
}

/// Maximum of the 16 lanes.
#[inline]
#[target_feature(enable = "avx512f")]
fn hmax(v: __m512) -> f32 {
    _mm512_reduce_max_ps(v)
}

/// Row maximum (NaN lanes may be skipped: a NaN still poisons the sum that follows).
///
/// # Safety
/// AVX-512F; `x` readable for `n >= 1` floats.
#[inline]
#[target_feature(enable = "avx512f")]
unsafe fn row_max(x: *const f32, n: usize) -> f32 {
    let mut m = [_mm512_set1_ps(f32::NEG_INFINITY); 4];
    let mut i = 0;
    // SAFETY (loads): every access is below n.
    unsafe {
        while i + 4 * W <= n {
            for (k, mk) in m.iter_mut().enumerate() {
                *mk = _mm512_max_ps(*mk, _mm512_loadu_ps(x.add(i + k * W)));
            }
            i += 4 * W;
        }
        while i + W <= n {
            m[0] = _mm512_max_ps(m[0], _mm512_loadu_ps(x.add(i)));
            i += W;
        }
        if i < n {
            m[1] = _mm512_max_ps(m[1], load_tail(x.add(i), n - i, f32::NEG_INFINITY));
        }
    }
    hmax(_mm512_max_ps(
        _mm512_max_ps(m[0], m[1]),
        _mm512_max_ps(m[2], m[3]),
    ))
}

/// `y = e^(x - max)` for the row, returning the sum of `y` (two accumulators, fixed order).
///
/// # Safety
/// AVX-512F; `x` readable and `y` writable for `n` floats.
#[inline]
#[target_feature(enable = "avx512f")]
unsafe fn exp_store_sum(x: *const f32, y: *mut f32, n: usize, max: f32) -> f32 {
    // One vector per step: a two-way unroll spills registers (16 ymm) and was ~8% slower.
    let vm = _mm512_set1_ps(max);
    let (mut s0, mut s1) = (_mm512_setzero_ps(), _mm512_setzero_ps());
    let mut i = 0;
    // SAFETY (loads and stores): every access is below n.
    unsafe {
        while i + W <= n {
            let e0 = exp_flush_ps(_mm512_sub_ps(_mm512_loadu_ps(x.add(i)), vm));
            _mm512_storeu_ps(y.add(i), e0);
            s0 = _mm512_add_ps(s0, e0);
            i += W;
        }
        if i < n {
            let e = exp_flush_ps(_mm512_sub_ps(
                load_tail(x.add(i), n - i, f32::NEG_INFINITY),
                vm,
            ));
            store_tail(y.add(i), n - i, e);
            s1 = _mm512_add_ps(s1, e);
        }
    }
    hsum(_mm512_add_ps(s0, s1))
}

/// `y[i] = y[i] * s + b` over the row.
///
/// # Safety
/// AVX-512F; `y` readable and writable for `n` floats.
#[inline]
#[target_feature(enable = "avx512f")]
unsafe fn scale_shift(y: *mut f32, n: usize, s: f32, b: f32) {
    let (vs, vb) = (_mm512_set1_ps(s), _mm512_set1_ps(b));
    let mut i = 0;
    // SAFETY (loads and stores): every access is below n.
    unsafe {
        while i + W <= n {
            _mm512_storeu_ps(y.add(i), _mm512_fmadd_ps(_mm512_loadu_ps(y.add(i)), vs, vb));
            i += W;
        }
        if i < n {
            store_tail(
                y.add(i),
                n - i,
                _mm512_fmadd_ps(load_tail(y.add(i), n - i, 0.0), vs, vb),
            );
        }
    }
}

/// Softmax of one row: `y = e^(x - max) / sum`.
///
/// # Safety
/// AVX-512F; `y.len() == x.len() >= 1`.
#[target_feature(enable = "avx512f")]
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
/// AVX-512F; `y.len() == x.len() >= 1`.
#[target_feature(enable = "avx512f")]
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
/// AVX-512F; `x` readable and `y` writable for `n` floats.
#[inline]
#[target_feature(enable = "avx512f")]
unsafe fn shift_store_sum_exp(x: *const f32, y: *mut f32, n: usize, max: f32) -> f32 {
    let vm = _mm512_set1_ps(max);
    let (mut s0, mut s1) = (_mm512_setzero_ps(), _mm512_setzero_ps());
    let mut i = 0;
    // SAFETY (loads and stores): every access is below n.
    unsafe {
        while i + W <= n {
            let d0 = _mm512_sub_ps(_mm512_loadu_ps(x.add(i)), vm);
            _mm512_storeu_ps(y.add(i), d0);
            s0 = _mm512_add_ps(s0, exp_flush_ps(d0));
            i += W;
        }
        if i < n {
            let d = _mm512_sub_ps(load_tail(x.add(i), n - i, f32::NEG_INFINITY), vm);
            store_tail(y.add(i), n - i, d);
            s1 = _mm512_add_ps(s1, exp_flush_ps(d));
        }
    }
    hsum(_mm512_add_ps(s0, s1))
}

/// `sum a[i] * b[i]` (or `sum b[i]` when `a` is `None`) over `n` floats.
///
/// # Safety
/// AVX-512F; the pointers readable for `n` floats.
#[inline]
#[target_feature(enable = "avx512f")]
unsafe fn dot(a: Option<*const f32>, b: *const f32, n: usize) -> f32 {
    let (mut s0, mut s1) = (_mm512_setzero_ps(), _mm512_setzero_ps());
    let one = _mm512_set1_ps(1.0);
    let mut i = 0;
    // SAFETY (loads): every access is below n.
    unsafe {
        let la = |p: usize| a.map_or(one, |a| _mm512_loadu_ps(a.add(p)));
        while i + 2 * W <= n {
            s0 = _mm512_fmadd_ps(la(i), _mm512_loadu_ps(b.add(i)), s0);
            s1 = _mm512_fmadd_ps(la(i + W), _mm512_loadu_ps(b.add(i + W)), s1);
            i += 2 * W;
        }
        if i + W <= n {
            s0 = _mm512_fmadd_ps(la(i), _mm512_loadu_ps(b.add(i)), s0);
            i += W;
        }
        if i < n {
            let va = a.map_or(one, |a| load_tail(a.add(i), n - i, 0.0));
            s1 = _mm512_fmadd_ps(va, load_tail(b.add(i), n - i, 0.0), s1);
        }
    }
    hsum(_mm512_add_ps(s0, s1))
}

/// Softmax backward of one row: `dx = y * (dy - sum(dy * y))`.
///
/// # Safety
/// AVX-512F; the three slices have the same length.
#[target_feature(enable = "avx512f")]
pub(crate) unsafe fn softmax_backward_row(y: &[f32], dy: &[f32], dx: &mut [f32]) {
    let n = y.len();
    // SAFETY: the three slices hold n floats.
    unsafe {
        let (yp, dp, op) = (y.as_ptr(), dy.as_ptr(), dx.as_mut_ptr());
        let vs = _mm512_set1_ps(dot(Some(dp), yp, n));
        let mut i = 0;
        while i + W <= n {
            let g = _mm512_sub_ps(_mm512_loadu_ps(dp.add(i)), vs);
            _mm512_storeu_ps(op.add(i), _mm512_mul_ps(_mm512_loadu_ps(yp.add(i)), g));
            i += W;
        }
        if i < n {
            let g = _mm512_sub_ps(load_tail(dp.add(i), n - i, 0.0), vs);
            store_tail(
                op.add(i),
                n - i,
                _mm512_mul_ps(load_tail(yp.add(i), n - i, 0.0), g),
            );
        }
    }
}

/// Log-softmax backward of one row: `dx = dy - e^y * sum(dy)`.
///
/// # Safety
/// AVX-512F; the three slices have the same length.
#[target_feature(enable = "avx512f")]
pub(crate) unsafe fn log_softmax_backward_row(y: &[f32], dy: &[f32], dx: &mut [f32]) {
    let n = y.len();
    // SAFETY: the three slices hold n floats.
    unsafe {
        let (yp, dp, op) = (y.as_ptr(), dy.as_ptr(), dx.as_mut_ptr());
        let vs = _mm512_set1_ps(dot(None, dp, n));
        let mut i = 0;
        while i + W <= n {
            let e = exp_ps(_mm512_loadu_ps(yp.add(i)));
            _mm512_storeu_ps(
                op.add(i),
                _mm512_fnmadd_ps(e, vs, _mm512_loadu_ps(dp.add(i))),
            );
            i += W;
        }
        if i < n {
            let e = exp_ps(load_tail(yp.add(i), n - i, 0.0));
            let v = _mm512_fnmadd_ps(e, vs, load_tail(dp.add(i), n - i, 0.0));
            store_tail(op.add(i), n - i, v);
        }
    }
}
