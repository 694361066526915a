//! The vector forms of the activations, written once over [`Simd`]: one zero-sized type per
//! activation (leaky ReLU carries its slope) implementing [`VecAct`], so a kernel generic over
//! `A: VecAct` compiles its activation into the loop with no runtime `match` (the fused GEMM,
//! convolution and batch-norm epilogues and the slice loops of [`super::slice`]).
//! [`Activation`] itself implements [`VecAct`] with a `match`, for bodies that take the
//! activation at run time. Formulas and accuracy: see [`super`] and
//! `docs/kernels/activations.md`; the exp they share: [`crate::exp`].

use super::{Activation, ERF_CLAMP, ERF_P, ERF_Q, GELU_C, SQRT_2_OVER_PI};
use crate::exp::vector::{exp_flush, expm1_small};
use crate::simd::Simd;

/// An activation as a type: its forward and backward on a vector of any ISA.
pub(crate) trait VecAct: Copy + Send + Sync + 'static {
    /// The activation of this type for the runtime value `act` (a zero-sized type ignores
    /// it; leaky ReLU takes its slope).
    fn of(act: Activation) -> Self;
    /// `f(v)` per lane.
    ///
    /// # Safety
    /// The CPU supports `S`.
    unsafe fn apply<S: Simd>(self, v: S::V) -> S::V;
    /// `dy * f'(x)` per lane, with PyTorch's conventions at the kinks (see [`super`]).
    ///
    /// # Safety
    /// The CPU supports `S`.
    unsafe fn grad<S: Simd>(self, x: S::V, dy: S::V) -> S::V;
}

/// The zero-sized activation types (and leaky ReLU's slope).
pub(crate) mod kind {
    /// f(x) = x.
    #[derive(Clone, Copy)]
    pub(crate) struct Identity;
    /// f(x) = max(x, 0).
    #[derive(Clone, Copy)]
    pub(crate) struct Relu;
    /// f(x) = min(max(x, 0), 6).
    #[derive(Clone, Copy)]
    pub(crate) struct Relu6;
    /// f(x) = x for x > 0, slope * x otherwise.
    #[derive(Clone, Copy)]
    pub(crate) struct LeakyRelu(pub f32);
    /// f(x) = 1 / (1 + e^-x).
    #[derive(Clone, Copy)]
    pub(crate) struct Sigmoid;
    /// f(x) = tanh x.
    #[derive(Clone, Copy)]
    pub(crate) struct Tanh;
    /// f(x) = x sigmoid(x).
    #[derive(Clone, Copy)]
    pub(crate) struct Swish;
    /// f(x) = relu6(x + 3) / 6.
    #[derive(Clone, Copy)]
    pub(crate) struct HardSigmoid;
    /// f(x) = x relu6(x + 3) / 6.
    #[derive(Clone, Copy)]
    pub(crate) struct HardSwish;
    /// f(x) = x Phi(x).
    #[derive(Clone, Copy)]
    pub(crate) struct GeluErf;
    /// The tanh approximation of GELU.
    #[derive(Clone, Copy)]
    pub(crate) struct GeluTanh;
}
use kind::*;

// ---- shared pieces (each `unsafe` block: lane arithmetic on the caller's ISA) ----

/// `-|v|`.
#[inline(always)]
unsafe fn neg_abs<S: Simd>(v: S::V) -> S::V {
    // SAFETY: lane arithmetic.
    unsafe { S::or(v, S::splat(-0.0)) }
}

/// `mag` with the sign of `s` (`mag` non-negative).
#[inline(always)]
unsafe fn with_sign<S: Simd>(mag: S::V, s: S::V) -> S::V {
    // SAFETY: lane arithmetic.
    unsafe { S::or(mag, S::and(s, S::splat(-0.0))) }
}

/// `x` clamped to `[-c, c]`, NaN kept (min/max return their second operand on NaN).
#[inline(always)]
unsafe fn clamp_abs<S: Simd>(x: S::V, c: f32) -> S::V {
    // SAFETY: lane arithmetic.
    unsafe { S::max(S::splat(-c), S::min(S::splat(c), x)) }
}

/// `(num, d, z)` with `z = e^-|x|`, `d = 1 + z` and `num = x > 0 ? 1 : z`, so that
/// `sigmoid(x) = num / d` and `sigmoid(-x) = (1 + z - num) / d`, both without cancellation.
#[inline(always)]
unsafe fn sigmoid_parts<S: Simd>(x: S::V) -> (S::V, S::V, S::V) {
    // SAFETY: lane arithmetic.
    unsafe {
        let one = S::splat(1.0);
        let z = exp_flush::<S>(neg_abs::<S>(x));
        // On the sign bit, not a compare: x = +0 picks 1 where `x > 0` would pick z = e^0 = 1
        // (the same value); a NaN lane is NaN through d either way.
        (S::select_sign(x, z, one), S::add(one, z), z)
    }
}

#[inline(always)]
unsafe fn erf<S: Simd>(x: S::V) -> S::V {
    // SAFETY: lane arithmetic.
    unsafe {
        let a = S::min(S::splat(ERF_CLAMP), S::abs(x));
        let t = S::mul(a, a);
        let mut p = S::splat(ERF_P[ERF_P.len() - 1]);
        for &c in ERF_P.iter().rev().skip(1) {
            p = S::fma(p, t, S::splat(c));
        }
        let mut q = S::splat(ERF_Q[ERF_Q.len() - 1]);
        for &c in ERF_Q.iter().rev().skip(1) {
            q = S::fma(q, t, S::splat(c));
        }
        let e = S::min(S::splat(1.0), S::div(S::mul(a, p), q));
        with_sign::<S>(e, x)
    }
}

#[inline(always)]
unsafe fn tanh<S: Simd>(x: S::V) -> S::V {
    // SAFETY: lane arithmetic.
    unsafe {
        let a = S::min(S::splat(9.0), S::abs(x));
        let em = expm1_small::<S>(S::mul(a, S::splat(-2.0)));
        // tanh|x| = -expm1(-2|x|) / (2 + expm1(-2|x|)).
        let t = S::div(S::sub(S::zero(), em), S::add(S::splat(2.0), em));
        with_sign::<S>(t, x)
    }
}

/// `w = 2 sqrt(2/pi) (x + c x^3)`, the sigmoid argument of the tanh-GELU.
#[inline(always)]
unsafe fn gelu_w<S: Simd>(x: S::V) -> S::V {
    let k = 2.0 * SQRT_2_OVER_PI;
    // SAFETY: lane arithmetic.
    unsafe { S::mul(x, S::fma(S::mul(x, x), S::splat(k * GELU_C), S::splat(k))) }
}

#[inline(always)]
unsafe fn hardsigmoid<S: Simd>(x: S::V) -> S::V {
    // SAFETY: lane arithmetic.
    unsafe {
        let c = S::min(S::splat(6.0), S::max(S::zero(), S::add(x, S::splat(3.0))));
        S::mul(c, S::splat(1.0 / 6.0))
    }
}

/// Implements [`VecAct`] for a zero-sized activation type from its two lane formulas, written
/// over the ISA `S` (the generic parameter the macro declares).
macro_rules! vec_act {
    ($t:ty, |$v:ident| $fwd:expr, |$gx:ident, $gdy:ident| $bwd:expr) => {
        impl VecAct for $t {
            #[inline(always)]
            fn of(_: Activation) -> Self {
                Self
            }
            #[inline(always)]
            unsafe fn apply<S: Simd>(self, $v: S::V) -> S::V {
                // SAFETY: lane arithmetic on the caller's ISA.
                unsafe { $fwd }
            }
            #[inline(always)]
            unsafe fn grad<S: Simd>(self, $gx: S::V, $gdy: S::V) -> S::V {
                // SAFETY: lane arithmetic on the caller's ISA.
                unsafe { $bwd }
            }
        }
    };
}

impl VecAct for Identity {
    #[inline(always)]
    fn of(_: Activation) -> Self {
        Identity
    }
    #[inline(always)]
    unsafe fn apply<S: Simd>(self, v: S::V) -> S::V {
        v
    }
    #[inline(always)]
    unsafe fn grad<S: Simd>(self, _x: S::V, dy: S::V) -> S::V {
        dy
    }
}
// max/min return the second operand when one is NaN: NaN propagates.
vec_act!(Relu, |v| S::max(S::zero(), v), |x, dy| S::keep(
    S::gt(x, S::zero()),
    dy
));
vec_act!(
    Relu6,
    |v| S::min(S::splat(6.0), S::max(S::zero(), v)),
    |x, dy| S::keep(
        S::mask_and(S::gt(x, S::zero()), S::lt(x, S::splat(6.0))),
        dy
    )
);
vec_act!(
    Sigmoid,
    |v| {
        let (num, d, _) = sigmoid_parts::<S>(v);
        S::div(num, d)
    },
    |x, dy| {
        // s (1 - s) = z / d^2.
        let (_, d, z) = sigmoid_parts::<S>(x);
        S::mul(dy, S::div(z, S::mul(d, d)))
    }
);
vec_act!(Tanh, |v| tanh::<S>(v), |x, dy| {
    // 1 - tanh^2 = 4z / (1 + z)^2 with z = e^-2|x|.
    let z = exp_flush::<S>(S::mul(S::abs(x), S::splat(-2.0)));
    let d = S::add(S::splat(1.0), z);
    S::mul(dy, S::div(S::mul(S::splat(4.0), z), S::mul(d, d)))
});
vec_act!(
    Swish,
    |v| {
        let (num, d, _) = sigmoid_parts::<S>(v);
        S::div(S::mul(v, num), d)
    },
    |x, dy| {
        // s (1 + x (1 - s)) = num (d + x num') / d^2, num' = x > 0 ? z : 1.
        // f' is exactly 1 (0) in f32 beyond x = 100 (-100): clamping avoids inf * 0.
        let x = clamp_abs::<S>(x, 100.0);
        let (num, d, z) = sigmoid_parts::<S>(x);
        let inner = S::fma(x, S::select(S::gt(x, S::zero()), z, S::splat(1.0)), d);
        S::mul(dy, S::div(S::mul(num, inner), S::mul(d, d)))
    }
);
vec_act!(HardSigmoid, |v| hardsigmoid::<S>(v), |x, dy| {
    let inside = S::mask_and(S::gt(x, S::splat(-3.0)), S::lt(x, S::splat(3.0)));
    S::keep(inside, S::mul(dy, S::splat(1.0 / 6.0)))
});
vec_act!(HardSwish, |v| S::mul(v, hardsigmoid::<S>(v)), |x, dy| {
    let mid = S::fma(x, S::splat(1.0 / 3.0), S::splat(0.5));
    let g = S::select(S::gt(x, S::splat(3.0)), S::splat(1.0), mid);
    S::mul(dy, S::clear(S::lt(x, S::splat(-3.0)), g))
});
vec_act!(
    GeluErf,
    |v| {
        let e = erf::<S>(S::mul(v, S::splat(std::f32::consts::FRAC_1_SQRT_2)));
        S::mul(S::mul(v, S::splat(0.5)), S::add(S::splat(1.0), e))
    },
    |x, dy| {
        // Phi(x) + x phi(x); beyond |x| = 100 the second term is exactly 0.
        let e = erf::<S>(S::mul(x, S::splat(std::f32::consts::FRAC_1_SQRT_2)));
        let cdf = S::mul(S::splat(0.5), S::add(S::splat(1.0), e));
        let xc = clamp_abs::<S>(x, 100.0);
        let x2h = S::mul(S::mul(xc, xc), S::splat(-0.5));
        let pdf = S::mul(exp_flush::<S>(x2h), S::splat(0.398_942_3));
        S::mul(dy, S::fma(xc, pdf, cdf))
    }
);
vec_act!(
    GeluTanh,
    |v| {
        // Beyond |x| = 12 the sigmoid is exactly 0 or 1 in f32; clamping keeps x^3 finite.
        let (num, d, _) = sigmoid_parts::<S>(gelu_w::<S>(clamp_abs::<S>(v, 12.0)));
        S::div(S::mul(v, num), d)
    },
    |x, dy| {
        // s(w) + x w' s(w) s(-w) = (num d + x w' z) / d^2; f' is exactly 1 (0) in f32
        // beyond x = 12 (-12).
        let x = clamp_abs::<S>(x, 12.0);
        let (num, d, z) = sigmoid_parts::<S>(gelu_w::<S>(x));
        let k = 2.0 * SQRT_2_OVER_PI;
        let dw = S::fma(S::mul(x, x), S::splat(3.0 * k * GELU_C), S::splat(k));
        let top = S::fma(S::mul(x, dw), z, S::mul(num, d));
        S::mul(dy, S::div(top, S::mul(d, d)))
    }
);

impl VecAct for LeakyRelu {
    #[inline(always)]
    fn of(act: Activation) -> Self {
        match act {
            Activation::LeakyRelu(s) => LeakyRelu(s),
            _ => LeakyRelu(0.01),
        }
    }
    #[inline(always)]
    unsafe fn apply<S: Simd>(self, v: S::V) -> S::V {
        // SAFETY: lane arithmetic on the caller's ISA.
        unsafe { S::select(S::gt(v, S::zero()), v, S::mul(v, S::splat(self.0))) }
    }
    #[inline(always)]
    unsafe fn grad<S: Simd>(self, x: S::V, dy: S::V) -> S::V {
        // SAFETY: lane arithmetic on the caller's ISA.
        unsafe { S::select(S::gt(x, S::zero()), dy, S::mul(dy, S::splat(self.0))) }
    }
}

/// Calls `$body` with `$a` bound to the zero-sized type of `$act` (a value of it), once per
/// activation: the one place that turns the runtime [`Activation`] into a type.
macro_rules! with_kind {
    ($act:expr, $a:ident => $body:expr) => {{
        use $crate::activation::vector::kind;
        match $act {
            Activation::Identity => {
                let $a = kind::Identity;
                $body
            }
            Activation::Relu => {
                let $a = kind::Relu;
                $body
            }
            Activation::Relu6 => {
                let $a = kind::Relu6;
                $body
            }
            Activation::LeakyRelu(s) => {
                let $a = kind::LeakyRelu(s);
                $body
            }
            Activation::Sigmoid => {
                let $a = kind::Sigmoid;
                $body
            }
            Activation::Tanh => {
                let $a = kind::Tanh;
                $body
            }
            Activation::Swish => {
                let $a = kind::Swish;
                $body
            }
            Activation::HardSigmoid => {
                let $a = kind::HardSigmoid;
                $body
            }
            Activation::HardSwish => {
                let $a = kind::HardSwish;
                $body
            }
            Activation::GeluErf => {
                let $a = kind::GeluErf;
                $body
            }
            Activation::GeluTanh => {
                let $a = kind::GeluTanh;
                $body
            }
        }
    }};
}

pub(crate) use with_kind;

/// The runtime activation as a [`VecAct`]: one `match` per vector (for bodies that are not
/// specialised per activation).
impl VecAct for Activation {
    #[inline(always)]
    fn of(act: Activation) -> Self {
        act
    }
    #[inline(always)]
    unsafe fn apply<S: Simd>(self, v: S::V) -> S::V {
        // SAFETY: forwarded.
        with_kind!(self, a => unsafe { a.apply::<S>(v) })
    }
    #[inline(always)]
    unsafe fn grad<S: Simd>(self, x: S::V, dy: S::V) -> S::V {
        // SAFETY: forwarded.
        with_kind!(self, a => unsafe { a.grad::<S>(x, dy) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::isa::Isa;

    /// The vector erf on every ISA the host has, against the f64 reference on a dense grid of
    /// [-5, 5]: relative error within `ERF_MAX_REL` (documented in
    /// `docs/kernels/activations.md`).
    #[inline(always)]
    unsafe fn worst_erf<S: Simd>() -> (f64, f32) {
        let mut worst = (0.0f64, 0.0f32);
        for i in -40_000..=40_000 {
            let x = i as f32 / 8000.0;
            let mut out = [0.0f32; 16];
            // SAFETY: out holds 16 >= L floats; the caller runs on S's ISA.
            unsafe { S::store(out.as_mut_ptr(), erf::<S>(S::splat(x))) };
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
        worst
    }

    crate::simd::on_isa!(worst_erf_on, worst_erf, (f64, f32));

    #[test]
    fn erf_relative_error() {
        for isa in Isa::available() {
            let worst = worst_erf_on(isa);
            println!(
                "{isa} erf: max relative error {:.3e} at x = {}",
                worst.0, worst.1
            );
            assert!(worst.0 <= super::super::ERF_MAX_REL, "{isa}: {worst:?}");
        }
    }
}
