//! The exp forms, written once over [`Simd`]: the full-range [`exp`], the flushing
//! [`exp_flush`] (arguments `<= 0`, results below `2^-126` flushed to 0) and
//! [`expm1_small`] (for tanh). Algorithm, constants and error bound: see [`crate::exp`].
//!
//! Where [`Simd::FAST_LUT`] (AVX2, AVX-512) the flushing form is the table variant
//! (XNNPACK's `lut8_p3`); elsewhere (portable, scalar) the degree-6 polynomial, whose
//! operations match the scalar form's one for one.

use super::*;
use crate::simd::Simd;

/// The table variant's `2^(j/8)` bit patterns as floats, repeated for 16 lanes (see
/// [`flush_table`]).
const LUT_HI: [f32; 16] = {
    let t = flush_table::<16>().0;
    let mut out = [0.0f32; 16];
    let mut k = 0;
    while k < 16 {
        out[k] = f32::from_bits(t[k] as u32);
        k += 1;
    }
    out
};
/// The roundings of the table entries, repeated for 16 lanes.
const LUT_LO: [f32; 16] = flush_table::<16>().1;

/// A lane whose bit pattern is the integer `i`.
#[inline(always)]
unsafe fn int<S: Simd>(i: i32) -> S::V {
    // SAFETY: forwarded (splat only builds a register).
    unsafe { S::splat(f32::from_bits(i as u32)) }
}

/// Reduction: returns `(n as i32 bit patterns, r)` with `x = n ln2 + r`.
#[inline(always)]
unsafe fn reduce<S: Simd>(x: S::V) -> (S::V, S::V) {
    // SAFETY: lane arithmetic only; the caller runs on S's ISA.
    unsafe {
        let magic = S::splat(MAGIC);
        let t = S::fma(x, S::splat(LOG2E), magic);
        let nf = S::sub(t, magic);
        let n = S::isub(t, magic);
        let r = S::fnma(nf, S::splat(LN2_HI), x);
        (n, S::fnma(nf, S::splat(LN2_LO), r))
    }
}

/// Reduction for the flushing forms: `(2^n, r)` with `x = n ln2 + r`, valid where `n` is in
/// `[-126, 127]` (other lanes are garbage and must be masked by the caller).
#[inline(always)]
unsafe fn reduce_scale<S: Simd>(x: S::V) -> (S::V, S::V) {
    // SAFETY: lane arithmetic only.
    unsafe {
        let magic = S::splat(MAGIC_BIASED);
        let t = S::fma(x, S::splat(LOG2E), magic);
        let nf = S::sub(t, magic);
        let s = S::shl::<23>(t);
        let r = S::fnma(nf, S::splat(LN2_HI), x);
        (s, S::fnma(nf, S::splat(LN2_LO), r))
    }
}

/// `g(r) = 1 + r P(r)`, so that `e^r = 1 + r g(r)`.
#[inline(always)]
unsafe fn poly_g<S: Simd>(r: S::V) -> S::V {
    // SAFETY: lane arithmetic only.
    unsafe {
        let q = S::fma(S::splat(C6), r, S::splat(C5));
        let q = S::fma(q, r, S::splat(C4));
        let q = S::fma(q, r, S::splat(C3));
        let q = S::fma(q, r, S::splat(C2));
        S::fma(q, r, S::splat(1.0))
    }
}

/// `2^n` per lane for `n` (integer bit patterns) in `[-126, 127]`.
#[inline(always)]
unsafe fn pow2<S: Simd>(n: S::V) -> S::V {
    // SAFETY: lane arithmetic only.
    unsafe { S::shl::<23>(S::iadd(n, int::<S>(127))) }
}

/// `e^x` per lane over the whole f32 range (subnormal results, `+inf` on overflow, NaN kept).
///
/// # Safety
/// The CPU supports `S`.
#[inline(always)]
pub(crate) unsafe fn exp<S: Simd>(x: S::V) -> S::V {
    // SAFETY: lane arithmetic only.
    unsafe {
        // min/max return the second operand when one is NaN: NaN lanes pass the clamp.
        let x = S::max(S::splat(CLAMP_LO), S::min(S::splat(CLAMP_HI), x));
        let (n, r) = reduce::<S>(x);
        let g = poly_g::<S>(r);
        let n1 = S::sra::<1>(n);
        let n2 = S::isub(n, n1);
        let s1 = pow2::<S>(n1);
        S::mul(S::fma(S::mul(r, s1), g, s1), pow2::<S>(n2))
    }
}

/// `e^x` per lane for `x <= 0` (or NaN); results below `2^-126` (x < -87.3365, `-inf`) are
/// flushed to 0. Positive lanes above `88.3` are not supported (callers pass `-|x|` or
/// `x - max`).
///
/// # Safety
/// The CPU supports `S`.
#[inline(always)]
pub(crate) unsafe fn exp_flush<S: Simd>(x: S::V) -> S::V {
    // SAFETY: lane arithmetic only.
    unsafe {
        let y = if S::FAST_LUT {
            // Table form: n = 8q + j, s = 2^(q + j/8) from the table plus exponent bits, and
            // the table entry's rounding `lo` added back inside the last FMA.
            let magic = S::splat(MAGIC);
            let t = S::fma(x, S::splat(8.0 * LOG2E), magic);
            let s = S::iadd(S::lut8(&LUT_HI, t), S::shl::<20>(t));
            let lo = S::lut8(&LUT_LO, t);
            let nf = S::sub(t, magic);
            let r = S::fnma(nf, S::splat(LN2_HI / 8.0), x);
            let r = S::fnma(nf, S::splat(LN2_LO / 8.0), r);
            let g = S::fma(S::fma(S::splat(Q3), r, S::splat(Q2)), r, S::splat(1.0));
            S::fma(s, S::fma(r, g, lo), s)
        } else {
            let (s, r) = reduce_scale::<S>(x);
            S::fma(S::mul(r, s), poly_g::<S>(r), s)
        };
        // Lanes below the cut-off hold garbage exponent bits (or NaN for -inf): zero them.
        S::clear(S::lt(x, S::splat(FLUSH_BELOW)), y)
    }
}

/// `e^x - 1` per lane for `x` in `[-18, 0]` (or NaN), relatively accurate near 0: with
/// `e^x = s (1 + r g)`, `e^x - 1 = (s - 1) + (s r) g` where `s - 1` is exact.
///
/// # Safety
/// The CPU supports `S`.
#[inline(always)]
pub(crate) unsafe fn expm1_small<S: Simd>(x: S::V) -> S::V {
    // SAFETY: lane arithmetic only.
    unsafe {
        let (s, r) = reduce_scale::<S>(x);
        S::fma(S::mul(r, s), poly_g::<S>(r), S::sub(s, S::splat(1.0)))
    }
}

/// [`exp_flush`] if `FLUSH`, else [`exp`].
#[inline(always)]
unsafe fn form<S: Simd, const FLUSH: bool>(v: S::V) -> S::V {
    // SAFETY: lane arithmetic only.
    unsafe {
        if FLUSH {
            exp_flush::<S>(v)
        } else {
            exp::<S>(v)
        }
    }
}

/// `y[i] = f(x[i])` for `i < n` with `f` [`exp_flush`] if `FLUSH`, else [`exp`]: full vectors,
/// then one masked tail. (No closures in the generic bodies: a closure is compiled without the
/// caller's target features, so the intrinsics inside would not inline.)
///
/// # Safety
/// The CPU supports `S`; `x` readable and `y` writable for `n` floats.
#[inline(always)]
pub(crate) unsafe fn exp_slice<S: Simd, const FLUSH: bool>(x: *const f32, y: *mut f32, n: usize) {
    let mut i = 0;
    // SAFETY: every access is below n.
    unsafe {
        while i + S::L <= n {
            S::store(y.add(i), form::<S, FLUSH>(S::load(x.add(i))));
            i += S::L;
        }
        if i < n {
            let v = form::<S, FLUSH>(S::load_first(x.add(i), n - i));
            S::store_first(y.add(i), v, n - i);
        }
    }
}
