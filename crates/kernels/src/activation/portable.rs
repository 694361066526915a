//! Portable vector forms of the activations on the `wide` crate (8 lanes of f32): [`apply`]
//! for the forward and the fused epilogues, [`grad`] for the backward, and the slice loops.
//! Same formulas as `avx2.rs`, with separate multiply and add where that file uses FMA.

use super::{Activation, ERF_CLAMP, ERF_P, ERF_Q, GELU_C, SQRT_2_OVER_PI};
use crate::exp::portable::{exp_flush, expm1_small, load, store};
use wide::{f32x8, CmpGt, CmpLt};

type V = f32x8;

#[inline(always)]
fn splat(v: f32) -> V {
    f32x8::splat(v)
}
/// `-|v|`.
#[inline(always)]
fn neg_abs(v: V) -> V {
    v | splat(-0.0)
}
/// `mag` with the sign of `s` (`mag` non-negative).
#[inline(always)]
fn with_sign(mag: V, s: V) -> V {
    mag | (s & splat(-0.0))
}

/// `x` clamped to `[-c, c]`, NaN kept (fast_min/fast_max keep their second operand on NaN).
#[inline(always)]
fn clamp_abs(x: V, c: f32) -> V {
    splat(-c).fast_max(splat(c).fast_min(x))
}

#[inline(always)]
fn sigmoid_parts(x: V) -> (V, V, V) {
    let z = exp_flush(neg_abs(x));
    let d = splat(1.0) + z;
    (x.cmp_gt(f32x8::ZERO).blend(splat(1.0), z), d, z)
}

#[inline(always)]
fn erf(x: V) -> V {
    // fast_min maps to minps, which returns the second operand (here the NaN) on NaN.
    let a = splat(ERF_CLAMP).fast_min(x.abs());
    let t = a * a;
    let mut p = splat(ERF_P[ERF_P.len() - 1]);
    for &c in ERF_P.iter().rev().skip(1) {
        p = p * t + splat(c);
    }
    let mut q = splat(ERF_Q[ERF_Q.len() - 1]);
    for &c in ERF_Q.iter().rev().skip(1) {
        q = q * t + splat(c);
    }
    with_sign(splat(1.0).fast_min(a * p / q), x)
}

#[inline(always)]
fn tanh(x: V) -> V {
    let a = splat(9.0).fast_min(x.abs());
    let em = expm1_small(a * splat(-2.0));
    with_sign((f32x8::ZERO - em) / (splat(2.0) + em), x)
}

#[inline(always)]
fn gelu_w(x: V) -> V {
    let k = 2.0 * SQRT_2_OVER_PI;
    x * (x * x * splat(k * GELU_C) + splat(k))
}

#[inline(always)]
fn hardsigmoid(x: V) -> V {
    splat(6.0).fast_min(f32x8::ZERO.fast_max(x + splat(3.0))) * splat(1.0 / 6.0)
}

/// Applies `act` to the 8 lanes of `v`.
#[inline(always)]
pub fn apply(act: Activation, v: f32x8) -> f32x8 {
    let zero = f32x8::ZERO;
    match act {
        Activation::Identity => v,
        Activation::Relu => zero.fast_max(v),
        Activation::Relu6 => splat(6.0).fast_min(zero.fast_max(v)),
        Activation::LeakyRelu(a) => v.cmp_gt(zero).blend(v, v * splat(a)),
        Activation::Sigmoid => {
            let (num, d, _) = sigmoid_parts(v);
            num / d
        }
        Activation::Tanh => tanh(v),
        Activation::Swish => {
            let (num, d, _) = sigmoid_parts(v);
            v * num / d
        }
        Activation::HardSigmoid => hardsigmoid(v),
        Activation::HardSwish => v * hardsigmoid(v),
        Activation::GeluErf => {
            let e = erf(v * splat(std::f32::consts::FRAC_1_SQRT_2));
            v * splat(0.5) * (splat(1.0) + e)
        }
        Activation::GeluTanh => {
            let (num, d, _) = sigmoid_parts(gelu_w(clamp_abs(v, 12.0)));
            v * num / d
        }
    }
}

/// `dy * f'(x)` per lane, with PyTorch's conventions at the kinks (see [`super`]).
#[inline(always)]
pub fn grad(act: Activation, x: f32x8, dy: f32x8) -> f32x8 {
    let zero = f32x8::ZERO;
    let one = splat(1.0);
    match act {
        Activation::Identity => dy,
        Activation::Relu => x.cmp_gt(zero) & dy,
        Activation::Relu6 => x.cmp_gt(zero) & x.cmp_lt(splat(6.0)) & dy,
        Activation::LeakyRelu(a) => x.cmp_gt(zero).blend(dy, dy * splat(a)),
        Activation::Sigmoid => {
            let (_, d, z) = sigmoid_parts(x);
            dy * (z / (d * d))
        }
        Activation::Tanh => {
            let z = exp_flush(x.abs() * splat(-2.0));
            let d = one + z;
            dy * (splat(4.0) * z / (d * d))
        }
        Activation::Swish => {
            let x = clamp_abs(x, 100.0);
            let (num, d, z) = sigmoid_parts(x);
            let inner = x * x.cmp_gt(zero).blend(z, one) + d;
            dy * (num * inner / (d * d))
        }
        Activation::HardSigmoid => {
            x.cmp_gt(splat(-3.0)) & x.cmp_lt(splat(3.0)) & (dy * splat(1.0 / 6.0))
        }
        Activation::HardSwish => {
            let mid = x * splat(1.0 / 3.0) + splat(0.5);
            let g = x
                .cmp_lt(splat(-3.0))
                .blend(zero, x.cmp_gt(splat(3.0)).blend(one, mid));
            dy * g
        }
        Activation::GeluErf => {
            let e = erf(x * splat(std::f32::consts::FRAC_1_SQRT_2));
            let cdf = splat(0.5) * (one + e);
            let xc = clamp_abs(x, 100.0);
            let pdf = exp_flush(xc * xc * splat(-0.5)) * splat(0.398_942_3);
            dy * (xc * pdf + cdf)
        }
        Activation::GeluTanh => {
            let x = clamp_abs(x, 12.0);
            let (num, d, z) = sigmoid_parts(gelu_w(x));
            let k = 2.0 * SQRT_2_OVER_PI;
            let dw = x * x * splat(3.0 * k * GELU_C) + splat(k);
            dy * ((x * dw * z + num * d) / (d * d))
        }
    }
}

/// `y = f(x)` over slices of equal length.
pub(crate) fn forward_slice(act: Activation, x: &[f32], y: &mut [f32]) {
    for (xc, yc) in x.chunks(8).zip(y.chunks_mut(8)) {
        store(apply(act, load(xc)), yc);
    }
}

/// `x = f(x)` in place.
pub(crate) fn forward_inplace_slice(act: Activation, x: &mut [f32]) {
    for c in x.chunks_mut(8) {
        let v = apply(act, load(c));
        store(v, c);
    }
}

/// `dx = dy * f'(x)` over slices of equal length.
pub(crate) fn backward_slice(act: Activation, x: &[f32], dy: &[f32], dx: &mut [f32]) {
    for ((xc, dc), oc) in x.chunks(8).zip(dy.chunks(8)).zip(dx.chunks_mut(8)) {
        store(grad(act, load(xc), load(dc)), oc);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The vector erf against the f64 reference on a dense grid of [-5, 5]: relative error
    /// within `ERF_MAX_REL` (documented in `docs/kernels/activations.md`).
    #[test]
    fn erf_relative_error() {
        let mut worst = (0.0f64, 0.0f32);
        for i in -40_000..=40_000 {
            let x = i as f32 / 8000.0;
            let got = erf(splat(x)).to_array()[0] as f64;
            let want = super::super::reference::erf(x as f64);
            let rel = if want == 0.0 {
                got.abs()
            } else {
                ((got - want) / want).abs()
            };
            if rel > worst.0 {
                worst = (rel, x);
            }
        }
        println!(
            "portable erf: max relative error {:.3e} at x = {}",
            worst.0, worst.1
        );
        assert!(worst.0 <= super::super::ERF_MAX_REL, "{worst:?}");
    }
}
