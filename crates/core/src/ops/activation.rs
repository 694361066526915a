//! Activations: relu, relu6, leaky relu, sigmoid, tanh, silu, hardsigmoid, hardswish, gelu.
//!
//! Definitions follow PyTorch's `torch.nn.functional`: hardsigmoid `relu6(x + 3) / 6` and
//! hardswish `x * hardsigmoid(x)` (Howard et al., "Searching for MobileNetV3", 2019); gelu
//! `x * Phi(x)` and its tanh approximation (Hendrycks & Gimpel, 2016). Sigmoid and tanh save
//! their output (`s(1-s)`, `1-t^2`); the others save their input. `erf` is evaluated through
//! `erfc` with the Chebyshev fit of Numerical Recipes (fractional error < 1.2e-7 everywhere),
//! in f64, so gelu's left tail stays accurate in relative terms.

use crate::ops::elementwise::{unary, Saved};
use crate::tensor::Tensor;

/// Complementary error function, fractional error below 1.2e-7 (Numerical Recipes, `erfcc`).
pub fn erfc(x: f64) -> f64 {
    let z = x.abs();
    let t = 1.0 / (1.0 + 0.5 * z);
    let r = t
        * (-z * z - 1.265_512_23
            + t * (1.000_023_68
                + t * (0.374_091_96
                    + t * (0.096_784_18
                        + t * (-0.186_288_06
                            + t * (0.278_868_07
                                + t * (-1.135_203_98
                                    + t * (1.488_515_87
                                        + t * (-0.822_152_23 + t * 0.170_872_77)))))))))
            .exp();
    if x >= 0.0 {
        r
    } else {
        2.0 - r
    }
}

fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + (-x).exp())
}

const SQRT_2_OVER_PI: f32 = 0.797_884_6;
const GELU_C: f32 = 0.044_715;

fn gelu_erf(x: f32) -> f32 {
    (0.5 * x as f64 * erfc(-(x as f64) * std::f64::consts::FRAC_1_SQRT_2)) as f32
}

fn gelu_erf_grad(x: f32) -> f32 {
    let xd = x as f64;
    let cdf = 0.5 * erfc(-xd * std::f64::consts::FRAC_1_SQRT_2);
    let pdf = (-0.5 * xd * xd).exp() / (2.0 * std::f64::consts::PI).sqrt();
    (cdf + xd * pdf) as f32
}

fn gelu_tanh(x: f32) -> f32 {
    0.5 * x * (1.0 + (SQRT_2_OVER_PI * (x + GELU_C * x * x * x)).tanh())
}

fn gelu_tanh_grad(x: f32) -> f32 {
    let u = SQRT_2_OVER_PI * (x + GELU_C * x * x * x);
    let t = u.tanh();
    0.5 * (1.0 + t) + 0.5 * x * (1.0 - t * t) * SQRT_2_OVER_PI * (1.0 + 3.0 * GELU_C * x * x)
}

impl Tensor {
    /// `max(x, 0)` (gradient 0 at 0).
    pub fn relu(&self) -> Tensor {
        unary(
            "relu",
            self,
            |x| x.max(0.0),
            Saved::Input,
            |x| {
                if x > 0.0 {
                    1.0
                } else {
                    0.0
                }
            },
        )
    }

    /// `min(max(x, 0), 6)`.
    pub fn relu6(&self) -> Tensor {
        unary(
            "relu6",
            self,
            |x| x.clamp(0.0, 6.0),
            Saved::Input,
            |x| {
                if x > 0.0 && x < 6.0 {
                    1.0
                } else {
                    0.0
                }
            },
        )
    }

    /// `x` for `x > 0`, `slope * x` otherwise.
    pub fn leaky_relu(&self, slope: f32) -> Tensor {
        unary(
            "leaky_relu",
            self,
            move |x| if x > 0.0 { x } else { slope * x },
            Saved::Input,
            move |x| if x > 0.0 { 1.0 } else { slope },
        )
    }

    /// `1 / (1 + e^-x)`.
    pub fn sigmoid(&self) -> Tensor {
        unary("sigmoid", self, sigmoid, Saved::Output, |s| s * (1.0 - s))
    }

    /// Hyperbolic tangent.
    pub fn tanh(&self) -> Tensor {
        unary("tanh", self, f32::tanh, Saved::Output, |t| 1.0 - t * t)
    }

    /// `x * sigmoid(x)` (also called swish).
    pub fn silu(&self) -> Tensor {
        unary(
            "silu",
            self,
            |x| x * sigmoid(x),
            Saved::Input,
            |x| {
                let s = sigmoid(x);
                s * (1.0 + x * (1.0 - s))
            },
        )
    }

    /// Same as [`Tensor::silu`].
    pub fn swish(&self) -> Tensor {
        self.silu()
    }

    /// `relu6(x + 3) / 6`.
    pub fn hardsigmoid(&self) -> Tensor {
        unary(
            "hardsigmoid",
            self,
            |x| (x + 3.0).clamp(0.0, 6.0) / 6.0,
            Saved::Input,
            |x| if x > -3.0 && x < 3.0 { 1.0 / 6.0 } else { 0.0 },
        )
    }

    /// `x * relu6(x + 3) / 6`.
    pub fn hardswish(&self) -> Tensor {
        unary(
            "hardswish",
            self,
            |x| x * (x + 3.0).clamp(0.0, 6.0) / 6.0,
            Saved::Input,
            |x| {
                if x <= -3.0 {
                    0.0
                } else if x >= 3.0 {
                    1.0
                } else {
                    (2.0 * x + 3.0) / 6.0
                }
            },
        )
    }

    /// `x * Phi(x)` with the exact normal CDF (PyTorch `gelu(approximate='none')`).
    pub fn gelu(&self) -> Tensor {
        unary("gelu", self, gelu_erf, Saved::Input, gelu_erf_grad)
    }

    /// The tanh approximation of gelu (PyTorch `gelu(approximate='tanh')`).
    pub fn gelu_tanh(&self) -> Tensor {
        unary("gelu_tanh", self, gelu_tanh, Saved::Input, gelu_tanh_grad)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn erfc_values() {
        // erf(0.5) = 0.5204998778, erfc(2) = 0.004677734981
        assert!((1.0 - erfc(0.5) - 0.520_499_877_8).abs() < 1e-7);
        assert!((erfc(2.0) / 0.004_677_734_981 - 1.0).abs() < 2e-7);
        assert!((erfc(-1.0) - 1.842_700_792_9).abs() < 1e-7);
    }
}
