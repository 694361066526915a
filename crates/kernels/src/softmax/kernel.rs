//! The row kernels of softmax and log-softmax, forward and backward, written once over
//! [`Simd`]. Structure (max; exp-store-sum; rescale) and special cases: see [`super`].
//!
//! Ragged row ends: a row of at least `L` floats handles its last partial vector by redoing
//! the last `L` floats (overlapping the previous vector; stores of the same values, sums masked
//! to the new lanes), with no masked load or store (slow on Zen); only rows shorter than a
//! vector use the masked tails.

use crate::exp::vector::{exp, exp_flush};
use crate::simd::Simd;

/// Row maximum (NaN lanes may be skipped: a NaN still poisons the sum that follows).
///
/// # Safety
/// The CPU supports `S`; `x` readable for `n >= 1` floats.
#[inline(always)]
unsafe fn row_max<S: Simd>(x: *const f32, n: usize) -> f32 {
    let l = S::L;
    // SAFETY: every access is below n.
    unsafe {
        let mut m = [S::splat(f32::NEG_INFINITY); 4];
        let mut i = 0;
        while i + 4 * l <= n {
            for (k, mk) in m.iter_mut().enumerate() {
                *mk = S::max(*mk, S::load(x.add(i + k * l)));
            }
            i += 4 * l;
        }
        while i + l <= n {
            m[0] = S::max(m[0], S::load(x.add(i)));
            i += l;
        }
        if i < n {
            // Rows of at least L: re-read the last L floats (max is idempotent), no mask.
            let t = if n >= l {
                S::load(x.add(n - l))
            } else {
                S::load_first_or(x.add(i), n - i, f32::NEG_INFINITY)
            };
            m[1] = S::max(m[1], t);
        }
        S::reduce_max(S::max(S::max(m[0], m[1]), S::max(m[2], m[3])))
    }
}

/// (stored value, exponential) of a shifted input `d`: `(e^d, e^d)`, or `(d, e^d)` if `LOG`.
#[inline(always)]
unsafe fn step<S: Simd, const LOG: bool>(d: S::V) -> (S::V, S::V) {
    // SAFETY: lane arithmetic.
    let e = unsafe { exp_flush::<S>(d) };
    (if LOG { d } else { e }, e)
}

/// `y = e^(x - max)` for the row (`LOG`: `y = x - max`), returning `sum e^(x - max)` (two
/// accumulators, fixed order).
///
/// # Safety
/// The CPU supports `S`; `x` readable and `y` writable for `n` floats, apart.
#[inline(always)]
unsafe fn exp_store_sum<S: Simd, const LOG: bool>(
    x: *const f32,
    y: *mut f32,
    n: usize,
    max: f32,
) -> f32 {
    let l = S::L;
    // SAFETY: every access is below n.
    unsafe {
        let vm = S::splat(max);
        let (mut s0, mut s1) = (S::zero(), S::zero());
        let mut i = 0;
        while i + l <= n {
            let (v, e) = step::<S, LOG>(S::sub(S::load(x.add(i)), vm));
            S::store(y.add(i), v);
            s0 = S::add(s0, e);
            i += l;
        }
        if i < n && n >= l {
            // The last L floats again (overlapping the loop's last vector): the overlapped
            // lanes are stored again with the same values and left out of the sum.
            let (v, e) = step::<S, LOG>(S::sub(S::load(x.add(n - l)), vm));
            S::store(y.add(n - l), v);
            s1 = S::and(e, S::mask(l - (n - i), l));
        } else if i < n {
            let d = S::sub(S::load_first_or(x.add(i), n - i, f32::NEG_INFINITY), vm);
            let (v, e) = step::<S, LOG>(d);
            S::store_first(y.add(i), v, n - i);
            s1 = e;
        }
        S::reduce(S::add(s0, s1))
    }
}

/// `y[i] = y[i] * s + b` over the row.
///
/// # Safety
/// The CPU supports `S`; `y` readable and writable for `n` floats.
#[inline(always)]
unsafe fn scale_shift<S: Simd>(y: *mut f32, n: usize, s: f32, b: f32) {
    let l = S::L;
    // SAFETY: every access is below n.
    unsafe {
        let (vs, vb) = (S::splat(s), S::splat(b));
        // Rows of at least L with a ragged end: the last L floats are transformed from their
        // original values first and stored after the loop, over the lanes it already wrote
        // (with the same values).
        let ragged = n >= l && n % l != 0;
        let last = if ragged {
            S::fma(S::load(y.add(n - l)), vs, vb)
        } else {
            vs
        };
        let mut i = 0;
        while i + l <= n {
            S::store(y.add(i), S::fma(S::load(y.add(i)), vs, vb));
            i += l;
        }
        if ragged {
            S::store(y.add(n - l), last);
        } else if i < n {
            let v = S::fma(S::load_first(y.add(i), n - i), vs, vb);
            S::store_first(y.add(i), v, n - i);
        }
    }
}

/// Softmax (`LOG = false`) or log-softmax of one row.
///
/// # Safety
/// The CPU supports `S`; `x` readable and `y` writable for `n >= 1` floats, apart.
#[inline(always)]
pub(crate) unsafe fn forward_row<S: Simd, const LOG: bool>(x: *const f32, y: *mut f32, n: usize) {
    // SAFETY: both rows hold n floats.
    unsafe {
        let max = row_max::<S>(x, n);
        if max == f32::NEG_INFINITY {
            std::slice::from_raw_parts_mut(y, n).fill(f32::NAN);
            return;
        }
        let sum = exp_store_sum::<S, LOG>(x, y, n, max);
        if LOG {
            scale_shift::<S>(y, n, 1.0, -((sum as f64).ln() as f32));
        } else {
            scale_shift::<S>(y, n, 1.0 / sum, 0.0);
        }
    }
}

/// `L` floats of `a` at `p` if `DOT`, else ones.
#[inline(always)]
unsafe fn lhs<S: Simd, const DOT: bool>(a: *const f32, p: usize) -> S::V {
    // SAFETY: the caller's bounds (a is read only if DOT).
    unsafe {
        if DOT {
            S::load(a.add(p))
        } else {
            S::splat(1.0)
        }
    }
}

/// `sum a[i] * b[i]` (`DOT`) or `sum b[i]` over `n` floats.
///
/// # Safety
/// The CPU supports `S`; the pointers readable for `n` floats (`a` unused unless `DOT`).
#[inline(always)]
unsafe fn dot<S: Simd, const DOT: bool>(a: *const f32, b: *const f32, n: usize) -> f32 {
    let l = S::L;
    // SAFETY: every access is below n.
    unsafe {
        let one = S::splat(1.0);
        let (mut s0, mut s1) = (S::zero(), S::zero());
        let mut i = 0;
        while i + 2 * l <= n {
            s0 = S::fma(lhs::<S, DOT>(a, i), S::load(b.add(i)), s0);
            s1 = S::fma(lhs::<S, DOT>(a, i + l), S::load(b.add(i + l)), s1);
            i += 2 * l;
        }
        if i + l <= n {
            s0 = S::fma(lhs::<S, DOT>(a, i), S::load(b.add(i)), s0);
            i += l;
        }
        if i < n && n >= l {
            // The last L floats (overlapping), with the lanes already summed masked out.
            let vb = S::and(S::load(b.add(n - l)), S::mask(l - (n - i), l));
            s1 = S::fma(lhs::<S, DOT>(a, n - l), vb, s1);
        } else if i < n {
            let va = if DOT {
                S::load_first(a.add(i), n - i)
            } else {
                one
            };
            s1 = S::fma(va, S::load_first(b.add(i), n - i), s1);
        }
        S::reduce(S::add(s0, s1))
    }
}

/// The backward output of one lane vector: softmax `y (dy - s)`, log-softmax `dy - e^y s`.
#[inline(always)]
unsafe fn grad<S: Simd, const LOG: bool>(y: S::V, dy: S::V, s: S::V) -> S::V {
    // SAFETY: lane arithmetic.
    unsafe {
        if LOG {
            S::fnma(exp::<S>(y), s, dy)
        } else {
            S::mul(y, S::sub(dy, s))
        }
    }
}

/// Softmax backward (`LOG = false`, `dx = y (dy - sum(dy y))`) or log-softmax backward
/// (`dx = dy - e^y sum(dy)`) of one row.
///
/// # Safety
/// The CPU supports `S`; `y`, `dy` readable and `dx` writable for `n` floats, `dx` apart.
#[inline(always)]
pub(crate) unsafe fn backward_row<S: Simd, const LOG: bool>(
    y: *const f32,
    dy: *const f32,
    dx: *mut f32,
    n: usize,
) {
    let l = S::L;
    // SAFETY: every access is below n.
    unsafe {
        let vs = S::splat(if LOG {
            dot::<S, false>(dy, dy, n)
        } else {
            dot::<S, true>(dy, y, n)
        });
        let mut i = 0;
        while i + l <= n {
            let g = grad::<S, LOG>(S::load(y.add(i)), S::load(dy.add(i)), vs);
            S::store(dx.add(i), g);
            i += l;
        }
        if i < n && n >= l {
            // The last L outputs again (dx is apart from y and dy: same values).
            let g = grad::<S, LOG>(S::load(y.add(n - l)), S::load(dy.add(n - l)), vs);
            S::store(dx.add(n - l), g);
        } else if i < n {
            let k = n - i;
            let g = grad::<S, LOG>(S::load_first(y.add(i), k), S::load_first(dy.add(i), k), vs);
            S::store_first(dx.add(i), g, k);
        }
    }
}
