//! Scalar form of the shared `exp` algorithm (see the module docs of [`crate::exp`]): the same
//! reduction, polynomial and scaling as the vector forms, with separate multiply and add, so it
//! is bit-identical to the portable form. Used as the `Isa::Scalar` path and by scalar tails.

use super::*;

/// Reduction: returns `(n, r)` with `x = n ln2 + r`.
#[inline(always)]
fn reduce(x: f32) -> (i32, f32) {
    let t = x * LOG2E + MAGIC;
    let nf = t - MAGIC;
    let n = (t.to_bits() as i32).wrapping_sub(MAGIC.to_bits() as i32);
    let r = x - nf * LN2_HI;
    let r = r - nf * LN2_LO;
    (n, r)
}

/// Reduction for the flushing forms: `(2^n, r)`, valid where `n` is in `[-126, 127]`.
#[inline(always)]
fn reduce_scale(x: f32) -> (f32, f32) {
    let t = x * LOG2E + MAGIC_BIASED;
    let nf = t - MAGIC_BIASED;
    let s = f32::from_bits(t.to_bits() << 23);
    let r = x - nf * LN2_HI;
    let r = r - nf * LN2_LO;
    (s, r)
}

/// `g(r) = 1 + r P(r)`, so that `e^r = 1 + r g(r)`.
#[inline(always)]
fn poly_g(r: f32) -> f32 {
    let q = C6 * r + C5;
    let q = q * r + C4;
    let q = q * r + C3;
    let q = q * r + C2;
    q * r + 1.0
}

/// `2^n` for `n` in `[-126, 127]`.
#[inline(always)]
fn pow2(n: i32) -> f32 {
    f32::from_bits((n.wrapping_add(127) as u32) << 23)
}

/// Maximum in the order of `maxps(a, x)`: returns `x` when either is NaN.
#[inline(always)]
pub(crate) fn max_keep(a: f32, x: f32) -> f32 {
    if a > x {
        a
    } else {
        x
    }
}

/// Minimum in the order of `minps(a, x)`: returns `x` when either is NaN.
#[inline(always)]
pub(crate) fn min_keep(a: f32, x: f32) -> f32 {
    if a < x {
        a
    } else {
        x
    }
}

/// `e^x` over the whole f32 range (subnormal results, overflow to `+inf`, NaN kept).
#[inline]
pub fn exp(x: f32) -> f32 {
    let x = max_keep(CLAMP_LO, min_keep(CLAMP_HI, x));
    let (n, r) = reduce(x);
    let g = poly_g(r);
    let n1 = n >> 1;
    let n2 = n - n1;
    let s1 = pow2(n1);
    (r * s1 * g + s1) * pow2(n2)
}

/// `e^x` for `x <= 0` (or NaN); results below `2^-126` (x < -87.3365) are flushed to 0.
#[inline]
pub fn exp_flush(x: f32) -> f32 {
    // Below the cut-off the exponent arithmetic wraps (and -inf gives NaN); the flush below
    // replaces those lanes, as the vector forms do with a mask.
    let (s, r) = reduce_scale(x);
    let g = poly_g(r);
    let y = r * s * g + s;
    if x < FLUSH_BELOW {
        0.0
    } else {
        y
    }
}

/// `e^x - 1` for `x` in `[-18, 0]` (or NaN), accurate in relative terms near 0: with
/// `e^x = s (1 + r g)`, `e^x - 1 = (s - 1) + (s r) g` where `s - 1` is exact.
#[inline]
pub fn expm1_small(x: f32) -> f32 {
    let (s, r) = reduce_scale(x);
    let g = poly_g(r);
    r * s * g + (s - 1.0)
}
