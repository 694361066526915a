//! Portable forms of the shared `exp` on `wide::f32x8`: the same operations as the scalar form
//! (separate multiply and add, no FMA), so the two are bit-identical. Algorithm and error bound:
//! see [`crate::exp`].

use super::*;
use wide::{f32x8, i32x8, CmpLt};

#[inline(always)]
pub(crate) fn to_bits(v: f32x8) -> i32x8 {
    // SAFETY: f32x8 and i32x8 are both plain 32-byte vectors of 8 lanes (bytemuck::Pod);
    // every bit pattern is valid for both.
    unsafe { std::mem::transmute::<f32x8, i32x8>(v) }
}

#[inline(always)]
pub(crate) fn from_bits(v: i32x8) -> f32x8 {
    // SAFETY: as in `to_bits`.
    unsafe { std::mem::transmute::<i32x8, f32x8>(v) }
}

#[inline(always)]
fn reduce(x: f32x8) -> (i32x8, f32x8) {
    let magic = f32x8::splat(MAGIC);
    let t = x * f32x8::splat(LOG2E) + magic;
    let nf = t - magic;
    let n = to_bits(t) - to_bits(magic);
    let r = x - nf * f32x8::splat(LN2_HI);
    let r = r - nf * f32x8::splat(LN2_LO);
    (n, r)
}

/// Reduction for the flushing forms: `(2^n, r)`, valid where `n` is in `[-126, 127]`.
#[inline(always)]
fn reduce_scale(x: f32x8) -> (f32x8, f32x8) {
    let magic = f32x8::splat(MAGIC_BIASED);
    let t = x * f32x8::splat(LOG2E) + magic;
    let nf = t - magic;
    let s = from_bits(to_bits(t) << 23);
    let r = x - nf * f32x8::splat(LN2_HI);
    let r = r - nf * f32x8::splat(LN2_LO);
    (s, r)
}

#[inline(always)]
fn poly_g(r: f32x8) -> f32x8 {
    let q = f32x8::splat(C6) * r + f32x8::splat(C5);
    let q = q * r + f32x8::splat(C4);
    let q = q * r + f32x8::splat(C3);
    let q = q * r + f32x8::splat(C2);
    q * r + f32x8::ONE
}

#[inline(always)]
fn pow2(n: i32x8) -> f32x8 {
    from_bits((n + i32x8::splat(127)) << 23)
}

/// `e^x` per lane over the whole f32 range (subnormal results, `+inf` on overflow, NaN kept).
#[inline(always)]
pub fn exp(x: f32x8) -> f32x8 {
    // fast_max/fast_min map to maxps/minps, which return the second operand on NaN.
    let x = f32x8::splat(CLAMP_LO).fast_max(f32x8::splat(CLAMP_HI).fast_min(x));
    let (n, r) = reduce(x);
    let g = poly_g(r);
    let n1 = n >> 1;
    let n2 = n - n1;
    let s1 = pow2(n1);
    (r * s1 * g + s1) * pow2(n2)
}

/// `e^x` per lane for `x <= 0` (or NaN); results below `2^-126` are flushed to 0.
#[inline(always)]
pub fn exp_flush(x: f32x8) -> f32x8 {
    let (s, r) = reduce_scale(x);
    let g = poly_g(r);
    let y = r * s * g + s;
    x.cmp_lt(f32x8::splat(FLUSH_BELOW)).blend(f32x8::ZERO, y)
}

/// `e^x - 1` per lane for `x` in `[-18, 0]` (or NaN), relatively accurate near 0.
#[inline(always)]
pub fn expm1_small(x: f32x8) -> f32x8 {
    let (s, r) = reduce_scale(x);
    let g = poly_g(r);
    r * s * g + (s - f32x8::ONE)
}

#[inline(always)]
pub(crate) fn load(x: &[f32]) -> f32x8 {
    let mut a = [0.0f32; 8];
    let k = x.len().min(8);
    a[..k].copy_from_slice(&x[..k]);
    f32x8::from(a)
}

#[inline(always)]
pub(crate) fn store(v: f32x8, y: &mut [f32]) {
    let k = y.len().min(8);
    y[..k].copy_from_slice(&v.to_array()[..k]);
}

/// `y = e^x` over slices of equal length.
pub(crate) fn exp_slice(x: &[f32], y: &mut [f32]) {
    for (xc, yc) in x.chunks(8).zip(y.chunks_mut(8)) {
        store(exp(load(xc)), yc);
    }
}
