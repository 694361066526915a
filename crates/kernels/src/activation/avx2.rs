//! AVX2 + FMA vector forms of the activations (8 lanes of f32): [`apply`] for the forward (and
//! the fused epilogues), [`grad`] for the backward, and the slice loops behind
//! [`super::slice`]. Formulas and accuracy: see [`super`] and `docs/kernels/activations.md`;
//! the exp they share: [`crate::exp`]. The AVX-512 file mirrors this one line for line.
#![cfg(target_arch = "x86_64")]

use super::{Activation, ERF_CLAMP, ERF_P, ERF_Q, GELU_C, SQRT_2_OVER_PI};
use crate::exp::avx2::{exp_flush_ps, expm1_small_ps};
use std::arch::x86_64::*;

type V = __m256;
type M = __m256;
const LANES: usize = 8;

// ---- lane helpers (the AVX-512 file implements the same names on mask registers) ----

#[inline]
#[target_feature(enable = "avx2,fma")]
fn splat(v: f32) -> V {
    _mm256_set1_ps(v)
}
#[inline]
#[target_feature(enable = "avx2,fma")]
fn gt(a: V, b: V) -> M {
    _mm256_cmp_ps::<_CMP_GT_OQ>(a, b)
}
#[inline]
#[target_feature(enable = "avx2,fma")]
fn lt(a: V, b: V) -> M {
    _mm256_cmp_ps::<_CMP_LT_OQ>(a, b)
}
#[inline]
#[target_feature(enable = "avx2,fma")]
fn and_m(a: M, b: M) -> M {
    _mm256_and_ps(a, b)
}
/// `m ? t : f` per lane.
#[inline]
#[target_feature(enable = "avx2,fma")]
fn sel(m: M, t: V, f: V) -> V {
    _mm256_blendv_ps(f, t, m)
}
/// `m ? v : 0` per lane.
#[inline]
#[target_feature(enable = "avx2,fma")]
fn keep(m: M, v: V) -> V {
    _mm256_and_ps(m, v)
}
/// `m ? 0 : v` per lane.
#[inline]
#[target_feature(enable = "avx2,fma")]
fn drop_m(m: M, v: V) -> V {
    _mm256_andnot_ps(m, v)
}
#[inline]
#[target_feature(enable = "avx2,fma")]
fn abs(v: V) -> V {
    _mm256_andnot_ps(splat(-0.0), v)
}
/// `-|v|`.
#[inline]
#[target_feature(enable = "avx2,fma")]
fn neg_abs(v: V) -> V {
    _mm256_or_ps(splat(-0.0), v)
}
/// `mag` with the sign of `s` (`mag` non-negative).
#[inline]
#[target_feature(enable = "avx2,fma")]
fn with_sign(mag: V, s: V) -> V {
    _mm256_or_ps(mag, _mm256_and_ps(s, splat(-0.0)))
}

// ---- shared pieces ----

/// `x` clamped to `[-c, c]`, NaN kept (min/max return their second operand on NaN).
#[inline]
#[target_feature(enable = "avx2,fma")]
fn clamp_abs(x: V, c: f32) -> V {
    _mm256_max_ps(splat(-c), _mm256_min_ps(splat(c), x))
}

/// `(num, d, z)` with `z = e^-|x|`, `d = 1 + z` and `num = x > 0 ? 1 : z`, so that
/// `sigmoid(x) = num / d` and `sigmoid(-x) = (1 + z - num) / d`, both without cancellation.
#[inline]
#[target_feature(enable = "avx2,fma")]
fn sigmoid_parts(x: V) -> (V, V, V) {
    // SAFETY: this function's target features are the ones exp_flush_ps needs.
    let z = unsafe { exp_flush_ps(neg_abs(x)) };
    let d = _mm256_add_ps(splat(1.0), z);
    // blendv reads only the sign bit of x: no compare. x = +0 picks 1 where `x > 0` would pick
    // z = e^0 = 1 (the same value); a NaN lane is NaN through d either way.
    (_mm256_blendv_ps(splat(1.0), z, x), d, z)
}

#[inline]
#[target_feature(enable = "avx2,fma")]
fn erf(x: V) -> V {
    let a = _mm256_min_ps(splat(ERF_CLAMP), abs(x));
    let t = _mm256_mul_ps(a, a);
    let mut p = splat(ERF_P[ERF_P.len() - 1]);
    for &c in ERF_P.iter().rev().skip(1) {
        p = _mm256_fmadd_ps(p, t, splat(c));
    }
    let mut q = splat(ERF_Q[ERF_Q.len() - 1]);
    for &c in ERF_Q.iter().rev().skip(1) {
        q = _mm256_fmadd_ps(q, t, splat(c));
    }
    let e = _mm256_min_ps(splat(1.0), _mm256_div_ps(_mm256_mul_ps(a, p), q));
    with_sign(e, x)
}

#[inline]
#[target_feature(enable = "avx2,fma")]
fn tanh(x: V) -> V {
    let a = _mm256_min_ps(splat(9.0), abs(x));
    // SAFETY: this function's target features are the ones expm1_small_ps needs.
    let em = unsafe { expm1_small_ps(_mm256_mul_ps(a, splat(-2.0))) };
    // tanh|x| = -expm1(-2|x|) / (2 + expm1(-2|x|)).
    let t = _mm256_div_ps(
        _mm256_sub_ps(_mm256_setzero_ps(), em),
        _mm256_add_ps(splat(2.0), em),
    );
    with_sign(t, x)
}

/// `w = 2 sqrt(2/pi) (x + c x^3)`, the sigmoid argument of the tanh-GELU.
#[inline]
#[target_feature(enable = "avx2,fma")]
fn gelu_w(x: V) -> V {
    let x2 = _mm256_mul_ps(x, x);
    let k = 2.0 * SQRT_2_OVER_PI;
    _mm256_mul_ps(x, _mm256_fmadd_ps(x2, splat(k * GELU_C), splat(k)))
}

#[inline]
#[target_feature(enable = "avx2,fma")]
fn hardsigmoid(x: V) -> V {
    let c = _mm256_min_ps(
        splat(6.0),
        _mm256_max_ps(_mm256_setzero_ps(), _mm256_add_ps(x, splat(3.0))),
    );
    _mm256_mul_ps(c, splat(1.0 / 6.0))
}

/// Applies `act` to the 8 lanes of `v`.
///
/// # Safety
/// The CPU must support AVX2 and FMA (the caller is a `#[target_feature(enable = "avx2,fma")]`
/// kernel selected by [`crate::isa`]).
#[inline]
#[target_feature(enable = "avx2,fma")]
pub unsafe fn apply(act: Activation, v: __m256) -> __m256 {
    let zero = _mm256_setzero_ps();
    match act {
        Activation::Identity => v,
        // maxps/minps return the second operand when one is NaN: NaN propagates.
        Activation::Relu => _mm256_max_ps(zero, v),
        Activation::Relu6 => _mm256_min_ps(splat(6.0), _mm256_max_ps(zero, v)),
        Activation::LeakyRelu(a) => sel(gt(v, zero), v, _mm256_mul_ps(v, splat(a))),
        Activation::Sigmoid => {
            let (num, d, _) = sigmoid_parts(v);
            _mm256_div_ps(num, d)
        }
        Activation::Tanh => tanh(v),
        Activation::Swish => {
            let (num, d, _) = sigmoid_parts(v);
            _mm256_div_ps(_mm256_mul_ps(v, num), d)
        }
        Activation::HardSigmoid => hardsigmoid(v),
        Activation::HardSwish => _mm256_mul_ps(v, hardsigmoid(v)),
        Activation::GeluErf => {
            let e = erf(_mm256_mul_ps(v, splat(std::f32::consts::FRAC_1_SQRT_2)));
            _mm256_mul_ps(_mm256_mul_ps(v, splat(0.5)), _mm256_add_ps(splat(1.0), e))
        }
        Activation::GeluTanh => {
            // Beyond |x| = 12 the sigmoid is exactly 0 or 1 in f32; clamping keeps x^3 finite.
            let (num, d, _) = sigmoid_parts(gelu_w(clamp_abs(v, 12.0)));
            _mm256_div_ps(_mm256_mul_ps(v, num), d)
        }
    }
}

/// `dy * f'(x)` per lane, with PyTorch's conventions at the kinks (see [`super`]).
///
/// # Safety
/// The CPU must support AVX2 and FMA.
#[inline]
#[target_feature(enable = "avx2,fma")]
pub unsafe fn grad(act: Activation, x: __m256, dy: __m256) -> __m256 {
    let zero = _mm256_setzero_ps();
    let one = splat(1.0);
    match act {
        Activation::Identity => dy,
        Activation::Relu => keep(gt(x, zero), dy),
        Activation::Relu6 => keep(and_m(gt(x, zero), lt(x, splat(6.0))), dy),
        Activation::LeakyRelu(a) => sel(gt(x, zero), dy, _mm256_mul_ps(dy, splat(a))),
        Activation::Sigmoid => {
            // s (1 - s) = z / d^2.
            let (_, d, z) = sigmoid_parts(x);
            _mm256_mul_ps(dy, _mm256_div_ps(z, _mm256_mul_ps(d, d)))
        }
        Activation::Tanh => {
            // 1 - tanh^2 = 4z / (1 + z)^2 with z = e^-2|x|.
            // SAFETY: this function's target features are the ones exp_flush_ps needs.
            let z = unsafe { exp_flush_ps(_mm256_mul_ps(abs(x), splat(-2.0))) };
            let d = _mm256_add_ps(one, z);
            let g = _mm256_div_ps(_mm256_mul_ps(splat(4.0), z), _mm256_mul_ps(d, d));
            _mm256_mul_ps(dy, g)
        }
        Activation::Swish => {
            // s (1 + x (1 - s)) = num (d + x num') / d^2, num' = x > 0 ? z : 1.
            // f' is exactly 1 (0) in f32 beyond x = 100 (-100): clamping avoids inf * 0.
            let x = clamp_abs(x, 100.0);
            let (num, d, z) = sigmoid_parts(x);
            let inner = _mm256_fmadd_ps(x, sel(gt(x, zero), z, one), d);
            let g = _mm256_div_ps(_mm256_mul_ps(num, inner), _mm256_mul_ps(d, d));
            _mm256_mul_ps(dy, g)
        }
        Activation::HardSigmoid => {
            let inside = and_m(gt(x, splat(-3.0)), lt(x, splat(3.0)));
            keep(inside, _mm256_mul_ps(dy, splat(1.0 / 6.0)))
        }
        Activation::HardSwish => {
            let mid = _mm256_fmadd_ps(x, splat(1.0 / 3.0), splat(0.5));
            let g = drop_m(lt(x, splat(-3.0)), sel(gt(x, splat(3.0)), one, mid));
            _mm256_mul_ps(dy, g)
        }
        Activation::GeluErf => {
            // Phi(x) + x phi(x); beyond |x| = 100 the second term is exactly 0.
            let e = erf(_mm256_mul_ps(x, splat(std::f32::consts::FRAC_1_SQRT_2)));
            let cdf = _mm256_mul_ps(splat(0.5), _mm256_add_ps(one, e));
            let xc = clamp_abs(x, 100.0);
            let x2h = _mm256_mul_ps(_mm256_mul_ps(xc, xc), splat(-0.5));
            // SAFETY: this function's target features are the ones exp_flush_ps needs.
            let pdf = _mm256_mul_ps(unsafe { exp_flush_ps(x2h) }, splat(0.398_942_3));
            _mm256_mul_ps(dy, _mm256_fmadd_ps(xc, pdf, cdf))
        }
        Activation::GeluTanh => {
            // s(w) + x w' s(w) s(-w) = (num d + x w' z) / d^2; f' is exactly 1 (0) in f32
            // beyond x = 12 (-12).
            let x = clamp_abs(x, 12.0);
            let (num, d, z) = sigmoid_parts(gelu_w(x));
            let k = 2.0 * SQRT_2_OVER_PI;
            let dw = _mm256_fmadd_ps(_mm256_mul_ps(x, x), splat(3.0 * k * GELU_C), splat(k));
            let top = _mm256_fmadd_ps(_mm256_mul_ps(x, dw), z, _mm256_mul_ps(num, d));
            _mm256_mul_ps(dy, _mm256_div_ps(top, _mm256_mul_ps(d, d)))
        }
    }
}

// ---- slice loops: one monomorphic loop per activation ----

#[inline]
#[target_feature(enable = "avx2,fma")]
unsafe fn map1<F: Fn(V) -> V>(x: *const f32, y: *mut f32, n: usize, f: F) {
    let mut i = 0;
    while i + LANES <= n {
        // SAFETY: the caller guarantees n readable floats at x and n writable at y.
        unsafe { _mm256_storeu_ps(y.add(i), f(_mm256_loadu_ps(x.add(i)))) };
        i += LANES;
    }
    if i < n {
        let mut buf = [0.0f32; LANES];
        // SAFETY: n - i < LANES floats remain at x + i and y + i; buf holds LANES.
        unsafe {
            std::ptr::copy_nonoverlapping(x.add(i), buf.as_mut_ptr(), n - i);
            _mm256_storeu_ps(buf.as_mut_ptr(), f(_mm256_loadu_ps(buf.as_ptr())));
            std::ptr::copy_nonoverlapping(buf.as_ptr(), y.add(i), n - i);
        }
    }
}

#[inline]
#[target_feature(enable = "avx2,fma")]
unsafe fn map2<F: Fn(V, V) -> V>(x: *const f32, dy: *const f32, dx: *mut f32, n: usize, f: F) {
    let mut i = 0;
    while i + LANES <= n {
        // SAFETY: the caller guarantees n readable floats at x and dy and n writable at dx.
        unsafe {
            let v = f(_mm256_loadu_ps(x.add(i)), _mm256_loadu_ps(dy.add(i)));
            _mm256_storeu_ps(dx.add(i), v);
        }
        i += LANES;
    }
    if i < n {
        let (mut bx, mut bd) = ([0.0f32; LANES], [0.0f32; LANES]);
        // SAFETY: n - i < LANES floats remain at each pointer + i; the buffers hold LANES.
        unsafe {
            std::ptr::copy_nonoverlapping(x.add(i), bx.as_mut_ptr(), n - i);
            std::ptr::copy_nonoverlapping(dy.add(i), bd.as_mut_ptr(), n - i);
            let v = f(_mm256_loadu_ps(bx.as_ptr()), _mm256_loadu_ps(bd.as_ptr()));
            _mm256_storeu_ps(bx.as_mut_ptr(), v);
            std::ptr::copy_nonoverlapping(bx.as_ptr(), dx.add(i), n - i);
        }
    }
}

macro_rules! per_activation {
    ($act:expr, $a:ident => $body:expr) => {
        match $act {
            Activation::Identity => {
                let $a = Activation::Identity;
                $body
            }
            Activation::Relu => {
                let $a = Activation::Relu;
                $body
            }
            Activation::Relu6 => {
                let $a = Activation::Relu6;
                $body
            }
            Activation::LeakyRelu(s) => {
                let $a = Activation::LeakyRelu(s);
                $body
            }
            Activation::Sigmoid => {
                let $a = Activation::Sigmoid;
                $body
            }
            Activation::Tanh => {
                let $a = Activation::Tanh;
                $body
            }
            Activation::Swish => {
                let $a = Activation::Swish;
                $body
            }
            Activation::HardSigmoid => {
                let $a = Activation::HardSigmoid;
                $body
            }
            Activation::HardSwish => {
                let $a = Activation::HardSwish;
                $body
            }
            Activation::GeluErf => {
                let $a = Activation::GeluErf;
                $body
            }
            Activation::GeluTanh => {
                let $a = Activation::GeluTanh;
                $body
            }
        }
    };
}

/// `y[i] = f(x[i])` for `i < n`; `x` and `y` may be the same pointer (in place).
///
/// # Safety
/// The CPU must support AVX2 and FMA; `x` must be readable and `y` writable for `n` floats;
/// if the ranges overlap they must be identical.
#[target_feature(enable = "avx2,fma")]
pub(crate) unsafe fn forward_raw(act: Activation, x: *const f32, y: *mut f32, n: usize) {
    // Each arm binds a constant activation, so `apply`'s match folds away inside the loop.
    // SAFETY: forwarded caller contract; the closures only call AVX2 code.
    per_activation!(act, a => unsafe { map1(x, y, n, |v| apply(a, v)) })
}

/// `dx[i] = dy[i] * f'(x[i])` for `i < n`.
///
/// # Safety
/// The CPU must support AVX2 and FMA; `x`, `dy` readable and `dx` writable for `n` floats; `dx`
/// may equal `dy` or `x` but not partially overlap them.
#[target_feature(enable = "avx2,fma")]
pub(crate) unsafe fn backward_raw(
    act: Activation,
    x: *const f32,
    dy: *const f32,
    dx: *mut f32,
    n: usize,
) {
    // SAFETY: forwarded caller contract; the closures only call AVX2 code.
    per_activation!(act, a => unsafe { map2(x, dy, dx, n, |v, d| grad(a, v, d)) })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// As the portable test: the AVX2 erf within `ERF_MAX_REL` relative on [-5, 5].
    #[test]
    fn erf_relative_error() {
        if !crate::isa::Isa::Avx2.is_supported() {
            return;
        }
        let mut worst = (0.0f64, 0.0f32);
        for i in -40_000..=40_000 {
            let x = i as f32 / 8000.0;
            let mut out = [0.0f32; 8];
            // SAFETY: AVX2 + FMA checked above; `out` holds 8 floats.
            unsafe { _mm256_storeu_ps(out.as_mut_ptr(), erf(splat(x))) };
            let want = super::super::reference::erf(x as f64);
            let rel = if want == 0.0 {
                (out[0] as f64).abs()
            } else {
                ((out[0] as f64 - want) / want).abs()
            };
            if rel > worst.0 {
                worst = (rel, x);
            }
        }
        println!(
            "avx2 erf: max relative error {:.3e} at x = {}",
            worst.0, worst.1
        );
        assert!(worst.0 <= super::super::ERF_MAX_REL, "{worst:?}");
    }
}
