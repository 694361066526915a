//! Scalar reference definitions of the activations and their derivatives, evaluated in f64:
//! the oracle every vector path is tested against (and the `Isa::Scalar` path).
//!
//! `erf` / `erfc` in f64 (Rust's std has neither):
//! - `|x| < 3`: the everywhere-positive series of Abramowitz & Stegun, *Handbook of
//!   Mathematical Functions* (1964), eq. 7.1.6:
//!   `erf x = (2/sqrt(pi)) e^(-x^2) sum_{n>=0} 2^n x^(2n+1) / (1*3*...*(2n+1))`. All terms are
//!   positive, so there is no cancellation; relative error about 1e-15.
//! - `x >= 3`: the continued fraction of A&S eq. 7.1.14 for `erfc`,
//!   `sqrt(pi) e^(x^2) erfc x = 1/(x+ (1/2)/(x+ 1/(x+ (3/2)/(x+ 2/(x+ ...)))))`, evaluated
//!   bottom-up from depth 120; relative error about 1e-15 (checked against published values in
//!   `tests/activation_reference.rs`).
//!
//! Far below the f32 rounding error (~6e-8), so the f32 result of the reference is correctly
//! rounded in all but rare ties.

use super::Activation;
use std::f64::consts::PI;

const FRAC_2_SQRT_PI: f64 = std::f64::consts::FRAC_2_SQRT_PI;
/// `sqrt(2 / pi)`, the GELU tanh-approximation constant.
const SQRT_2_OVER_PI: f64 = 0.797_884_560_802_865_4;
/// The cubic coefficient of the GELU tanh approximation (Hendrycks & Gimpel, 2016).
const GELU_C: f64 = 0.044_715;

/// The error function in f64 (see the module docs for the method and its accuracy).
pub fn erf(x: f64) -> f64 {
    if x.is_nan() {
        return x;
    }
    let a = x.abs();
    let v = if a < 3.0 {
        erf_series(a)
    } else {
        1.0 - erfc_cf(a)
    };
    v.copysign(x)
}

/// The complementary error function `1 - erf(x)` in f64, accurate in relative terms for large
/// positive `x` too.
pub fn erfc(x: f64) -> f64 {
    if x.is_nan() {
        return x;
    }
    if x < 0.0 {
        2.0 - erfc(-x)
    } else if x < 3.0 {
        1.0 - erf_series(x)
    } else {
        erfc_cf(x)
    }
}

/// A&S 7.1.6 for `0 <= x < 3`.
fn erf_series(x: f64) -> f64 {
    let x2 = x * x;
    let mut term = x;
    let mut sum = x;
    let mut n = 0.0;
    // Terms grow while 2x^2 > 2n+3 and then fall geometrically; 200 bounds x < 3 comfortably.
    for _ in 0..200 {
        term *= 2.0 * x2 / (2.0 * n + 3.0);
        sum += term;
        n += 1.0;
        if term < sum * 1e-17 {
            break;
        }
    }
    FRAC_2_SQRT_PI * (-x2).exp() * sum
}

/// A&S 7.1.14 for `x >= 3`.
fn erfc_cf(x: f64) -> f64 {
    if x > 27.0 {
        return 0.0; // below the smallest f64 subnormal
    }
    let mut f = x;
    for k in (1..=120).rev() {
        f = x + (k as f64 * 0.5) / f;
    }
    (-x * x).exp() / (PI.sqrt() * f)
}

/// The standard normal CDF `Phi(x)`, accurate in relative terms in both tails.
fn phi_cdf(x: f64) -> f64 {
    0.5 * erfc(-x * std::f64::consts::FRAC_1_SQRT_2)
}

/// `sigmoid(x)` and `sigmoid(-x) = 1 - sigmoid(x)`, both without cancellation.
fn sigmoid_pair(x: f64) -> (f64, f64) {
    let z = (-x.abs()).exp();
    let d = 1.0 + z;
    if x >= 0.0 {
        (1.0 / d, z / d)
    } else {
        (z / d, 1.0 / d)
    }
}

/// `f(x)` in f64.
pub fn forward(act: Activation, x: f64) -> f64 {
    if x.is_nan() {
        return x;
    }
    match act {
        Activation::Identity => x,
        Activation::Relu => x.max(0.0),
        Activation::Relu6 => x.clamp(0.0, 6.0),
        Activation::LeakyRelu(a) => {
            if x > 0.0 {
                x
            } else {
                a as f64 * x
            }
        }
        Activation::Sigmoid => sigmoid_pair(x).0,
        Activation::Tanh => x.tanh(),
        Activation::Swish => x * sigmoid_pair(x).0,
        Activation::HardSigmoid => (x + 3.0).clamp(0.0, 6.0) / 6.0,
        Activation::HardSwish => x * (x + 3.0).clamp(0.0, 6.0) / 6.0,
        Activation::GeluErf => x * phi_cdf(x),
        Activation::GeluTanh => {
            // 0.5 x (1 + tanh(u)) = x sigmoid(2u), without cancellation for x < 0.
            let u = SQRT_2_OVER_PI * (x + GELU_C * x * x * x);
            x * sigmoid_pair(2.0 * u).0
        }
    }
}

/// `f'(x)` in f64, with PyTorch's conventions at the kinks: relu'(0) = 0; relu6' = 0 at 0 and
/// 6; leaky_relu'(0) = slope; hardsigmoid' = 1/6 on (-3, 3) only; hardswish' = 0 below -3, 1
/// above 3 and `(2x + 3) / 6` on [-3, 3]. NaN in gives NaN out, except for the piecewise
/// linear activations whose derivative is a comparison (NaN compares false: 0, or the slope).
pub fn derivative(act: Activation, x: f64) -> f64 {
    match act {
        Activation::Identity => 1.0,
        Activation::Relu => f64::from(u8::from(x > 0.0)),
        Activation::Relu6 => f64::from(u8::from(x > 0.0 && x < 6.0)),
        Activation::LeakyRelu(a) => {
            if x > 0.0 {
                1.0
            } else {
                a as f64
            }
        }
        Activation::HardSigmoid => {
            if x > -3.0 && x < 3.0 {
                1.0 / 6.0
            } else {
                0.0
            }
        }
        Activation::HardSwish => {
            if x < -3.0 {
                0.0
            } else if x > 3.0 {
                1.0
            } else {
                (2.0 * x + 3.0) / 6.0
            }
        }
        _ if x.is_nan() => x,
        // The smooth derivatives reach their limits (0 or 1, exactly in f64) long before
        // 1e4; clamping keeps inf * 0 out of the formulas below.
        _ if x.is_infinite() => derivative(act, x.clamp(-1e4, 1e4)),
        Activation::Sigmoid => {
            let (s, sm) = sigmoid_pair(x);
            s * sm
        }
        Activation::Tanh => {
            let z = (-2.0 * x.abs()).exp();
            4.0 * z / ((1.0 + z) * (1.0 + z))
        }
        Activation::Swish => {
            let (s, sm) = sigmoid_pair(x);
            s * (1.0 + x * sm)
        }
        Activation::GeluErf => {
            let pdf = (-0.5 * x * x).exp() / (2.0 * PI).sqrt();
            phi_cdf(x) + x * pdf
        }
        Activation::GeluTanh => {
            let w = 2.0 * SQRT_2_OVER_PI * (x + GELU_C * x * x * x);
            let dw = 2.0 * SQRT_2_OVER_PI * (1.0 + 3.0 * GELU_C * x * x);
            let (s, sm) = sigmoid_pair(w);
            s + x * dw * s * sm
        }
    }
}
