//! The activation family, shared by the element-wise kernels and the fused GEMM / convolution
//! epilogues.
//!
//! Each activation has a scalar definition ([`Activation::apply_scalar`], evaluated in f64 in
//! [`reference`](mod@reference)), which is the test oracle and the `Isa::Scalar` path, and one
//! vector form written once over [`crate::simd::Simd`] (`vector.rs`: a zero-sized type per
//! activation with `apply`, used by the fused epilogues on registers before the store, so bias +
//! activation never cost an extra pass over memory, and `grad`, the backward). The slice API
//! ([`forward`], [`forward_inplace`], [`backward`] and the `_with` forms) lives in
//! [`slice`](mod@slice), dispatched through one table of entry points per ISA, and is
//! re-exported here.
//!
//! Definitions (PyTorch's, including the derivative conventions at the kinks):
//!
//! | activation | f(x) | f'(x) |
//! |---|---|---|
//! | identity | x | 1 |
//! | relu | max(x, 0) | 1 if x > 0 else 0 |
//! | relu6 | min(max(x, 0), 6) | 1 on (0, 6), else 0 |
//! | leaky_relu(a) | x if x > 0 else a x | 1 if x > 0 else a |
//! | sigmoid | 1 / (1 + e^-x) | s (1 - s) |
//! | tanh | tanh x | 1 - tanh^2 x |
//! | swish (SiLU) | x sigmoid(x) | s (1 + x (1 - s)) |
//! | hardsigmoid | relu6(x + 3) / 6 | 1/6 on (-3, 3), else 0 |
//! | hardswish | x relu6(x + 3) / 6 | 0 if x < -3, 1 if x > 3, (2x + 3)/6 on [-3, 3] |
//! | gelu (erf) | x Phi(x) = x (1 + erf(x / sqrt 2)) / 2 | Phi(x) + x phi(x) |
//! | gelu_tanh | x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))) / 2 | by the chain rule |
//!
//! References: ReLU6 (Howard et al., MobileNets, 2017; Sandler et al., MobileNetV2, 2018);
//! hard-sigmoid / hard-swish (Howard et al., "Searching for MobileNetV3", ICCV 2019); swish
//! (Ramachandran et al., 2017; SiLU: Elfwing et al., 2018); GELU (Hendrycks & Gimpel, 2016);
//! leaky ReLU (Maas et al., 2013). Vector exp: [`crate::exp`].

pub mod reference;
pub mod slice;
pub(crate) mod vector;

pub use slice::{
    backward, backward_with, forward, forward_inplace, forward_inplace_with, forward_with,
};

use crate::error::KernelError;

/// `erf(x) ~ x P(x^2) / Q(x^2)` for `|x| <= ERF_CLAMP` (erf is 1 in f32 beyond), used by the
/// vector GELU. Coefficients fitted for this crate (Lawson-weighted least squares of the
/// linearised relative error on 6000 Chebyshev nodes of [0, 3.92], in f64, then rounded to f32;
/// the same rational form as Eigen's and XLA's float erf). Approximation error 5.2e-8
/// relative; measured error of the f32 evaluation in `docs/kernels/activations.md`.
// The leading coefficient is fitted, not 2/sqrt(pi) (it differs in the last bit).
#[allow(clippy::approx_constant)]
pub(crate) const ERF_P: [f32; 7] = [
    1.128_379_1,
    0.199_925_5,
    0.050_573_457,
    0.003_701_645_2,
    0.000_141_850_86,
    -1.957_827_6e-6,
    1.992_407_7e-8,
];
pub(crate) const ERF_Q: [f32; 5] = [
    1.0,
    0.510_511_04,
    0.114_998_82,
    0.014_353_284,
    0.000_956_046_1,
];
pub(crate) const ERF_CLAMP: f32 = 3.92;
/// Measured maximum relative error of the vector erf (every ISA) against the f64 reference on
/// a dense grid of [-5, 5] (unit test in `vector.rs`).
#[cfg(test)]
pub(crate) const ERF_MAX_REL: f64 = 4e-7;
/// `sqrt(2 / pi)` and the cubic coefficient of the tanh-GELU.
pub(crate) const SQRT_2_OVER_PI: f32 = 0.797_884_6;
pub(crate) const GELU_C: f32 = 0.044_715;

/// An activation that can be applied element-wise or fused into a kernel epilogue.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub enum Activation {
    /// f(x) = x.
    #[default]
    Identity,
    /// f(x) = max(x, 0).
    Relu,
    /// f(x) = min(max(x, 0), 6).
    Relu6,
    /// f(x) = x for x > 0, `slope * x` otherwise (PyTorch's default slope is 0.01).
    LeakyRelu(f32),
    /// f(x) = 1 / (1 + e^-x).
    Sigmoid,
    /// f(x) = tanh(x).
    Tanh,
    /// f(x) = x * sigmoid(x) (SiLU).
    Swish,
    /// f(x) = relu6(x + 3) / 6 (PyTorch's definition).
    HardSigmoid,
    /// f(x) = x * relu6(x + 3) / 6.
    HardSwish,
    /// f(x) = x * Phi(x) = 0.5 x (1 + erf(x / sqrt 2)) (exact GELU).
    GeluErf,
    /// f(x) = 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))) (GELU, tanh approximation).
    GeluTanh,
}

impl Activation {
    /// Every activation (leaky ReLU with PyTorch's default slope 0.01), for tests and
    /// benchmarks.
    pub const ALL: &'static [Activation] = &[
        Activation::Identity,
        Activation::Relu,
        Activation::Relu6,
        Activation::LeakyRelu(0.01),
        Activation::Sigmoid,
        Activation::Tanh,
        Activation::Swish,
        Activation::HardSigmoid,
        Activation::HardSwish,
        Activation::GeluErf,
        Activation::GeluTanh,
    ];

    /// The other accepted spellings of [`Activation::from_name`] (besides the
    /// [`Activation::name`]s, and with `-` for `_` anywhere).
    pub const ALIASES: &'static [&'static str] = &[
        "none",
        "linear",
        "silu",
        "hard_sigmoid",
        "h_sigmoid",
        "hard_swish",
        "h_swish",
        "gelu_erf",
    ];

    /// A short lower-case name (`relu6`), as used by the CLI and benchmark output. Leaky ReLU
    /// is `leaky_relu` whatever its slope.
    pub fn name(self) -> &'static str {
        match self {
            Activation::Identity => "identity",
            Activation::Relu => "relu",
            Activation::Relu6 => "relu6",
            Activation::LeakyRelu(_) => "leaky_relu",
            Activation::Sigmoid => "sigmoid",
            Activation::Tanh => "tanh",
            Activation::Swish => "swish",
            Activation::HardSigmoid => "hardsigmoid",
            Activation::HardSwish => "hardswish",
            Activation::GeluErf => "gelu",
            Activation::GeluTanh => "gelu_tanh",
        }
    }

    /// Parses a name as printed by [`Activation::name`], case-insensitively, with `-` and `_`
    /// alike, plus the aliases in [`Activation::ALIASES`] (`silu`, `hard_swish`, `h-swish`,
    /// `gelu_erf`, ...). Leaky ReLU takes an optional slope: `leaky_relu` (0.01),
    /// `leaky_relu:0.2` or `leaky_relu(0.2)`. An unknown name is an error listing the valid
    /// ones. This is the one parser of activation names: the models crate and the command line
    /// use it.
    pub fn from_name(name: &str) -> Result<Activation, KernelError> {
        let lower = name.trim().to_ascii_lowercase();
        // Hyphens become underscores in the name only, not in a (possibly negative) slope.
        let split = lower.find([':', '(']).unwrap_or(lower.len());
        let s = format!("{}{}", lower[..split].replace('-', "_"), &lower[split..]);
        let err = |msg: String| KernelError::invalid("activation", msg);
        if let Some(rest) = s.strip_prefix("leaky_relu") {
            let arg = rest
                .strip_prefix(':')
                .or_else(|| rest.strip_prefix('(').and_then(|r| r.strip_suffix(')')));
            return match (rest.is_empty(), arg) {
                (true, _) => Ok(Activation::LeakyRelu(0.01)),
                (false, Some(a)) => match a.trim().parse::<f32>() {
                    Ok(v) if v.is_finite() => Ok(Activation::LeakyRelu(v)),
                    _ => Err(err(format!(
                        "{name:?}: the leaky_relu slope must be a finite number"
                    ))),
                },
                (false, None) => Err(err(format!(
                    "{name:?}: expected leaky_relu, leaky_relu:SLOPE or leaky_relu(SLOPE)"
                ))),
            };
        }
        Ok(match s.as_str() {
            "identity" | "none" | "linear" => Activation::Identity,
            "relu" => Activation::Relu,
            "relu6" => Activation::Relu6,
            "sigmoid" => Activation::Sigmoid,
            "tanh" => Activation::Tanh,
            "swish" | "silu" => Activation::Swish,
            "hardsigmoid" | "hard_sigmoid" | "h_sigmoid" => Activation::HardSigmoid,
            "hardswish" | "hard_swish" | "h_swish" => Activation::HardSwish,
            "gelu" | "gelu_erf" => Activation::GeluErf,
            "gelu_tanh" => Activation::GeluTanh,
            _ => {
                return Err(err(format!(
                    "unknown name {name:?}; expected one of {} (aliases: {}; leaky_relu takes \
                     a slope: leaky_relu:0.2)",
                    Activation::ALL
                        .iter()
                        .map(|a| a.name())
                        .collect::<Vec<_>>()
                        .join(", "),
                    Activation::ALIASES.join(", ")
                )))
            }
        })
    }

    /// The position of this activation in [`Activation::ALL`] (leaky ReLU whatever its slope).
    pub(crate) fn index(self) -> usize {
        match self {
            Activation::Identity => 0,
            Activation::Relu => 1,
            Activation::Relu6 => 2,
            Activation::LeakyRelu(_) => 3,
            Activation::Sigmoid => 4,
            Activation::Tanh => 5,
            Activation::Swish => 6,
            Activation::HardSigmoid => 7,
            Activation::HardSwish => 8,
            Activation::GeluErf => 9,
            Activation::GeluTanh => 10,
        }
    }

    /// The scalar definition: the reference every vector path is tested against (computed in
    /// f64 and rounded once). NaN in gives NaN out.
    #[inline]
    pub fn apply_scalar(self, x: f32) -> f32 {
        reference::forward(self, x as f64) as f32
    }

    /// The scalar derivative `f'(x)` (f64 inside, rounded once), with PyTorch's conventions at
    /// the kinks (see [`reference::derivative`]).
    #[inline]
    pub fn derivative_scalar(self, x: f32) -> f32 {
        reference::derivative(self, x as f64) as f32
    }

    /// The scalar backward `dy * f'(x)` (f64 inside, rounded once).
    #[inline]
    pub fn backward_scalar(self, x: f32, dy: f32) -> f32 {
        (dy as f64 * reference::derivative(self, x as f64)) as f32
    }
}

/// The AVX2 register form for fused epilogues written with raw intrinsics.
#[cfg(target_arch = "x86_64")]
#[doc(hidden)]
pub mod avx2 {
    use super::{vector::VecAct, Activation};
    use std::arch::x86_64::__m256;

    /// `act` on the 8 lanes of `v` (the generic vector form on AVX2).
    ///
    /// # Safety
    /// The CPU must support AVX2 and FMA.
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn apply(act: Activation, v: __m256) -> __m256 {
        // SAFETY: AVX2 + FMA are enabled here (caller's contract).
        unsafe { act.apply::<crate::simd::Avx2>(v) }
    }
}

/// The AVX-512 register form for fused epilogues written with raw intrinsics.
#[cfg(target_arch = "x86_64")]
#[doc(hidden)]
pub mod avx512 {
    use super::{vector::VecAct, Activation};
    use std::arch::x86_64::__m512;

    /// `act` on the 16 lanes of `v` (the generic vector form on AVX-512F).
    ///
    /// # Safety
    /// The CPU must support AVX-512F.
    #[inline]
    #[target_feature(enable = "avx512f")]
    pub unsafe fn apply(act: Activation, v: __m512) -> __m512 {
        // SAFETY: AVX-512F is enabled here (caller's contract).
        unsafe { act.apply::<crate::simd::Avx512>(v) }
    }
}

/// The portable (`wide`) register form for fused epilogues.
#[doc(hidden)]
pub mod portable {
    use super::{vector::VecAct, Activation};

    /// `act` on the 8 lanes of `v` (the generic vector form on `wide`).
    #[inline(always)]
    pub fn apply(act: Activation, v: wide::f32x8) -> wide::f32x8 {
        // SAFETY: the portable ISA runs anywhere.
        unsafe { act.apply::<crate::simd::Portable>(v) }
    }
}
