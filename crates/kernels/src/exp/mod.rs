//! Vectorised `exp` shared by sigmoid, swish, tanh, GELU and softmax.
//!
//! Algorithm (Cody & Waite range reduction, as in Cephes `expf` and XNNPACK's `exp` kernels):
//!
//! 1. `n = round(x * log2(e))`, computed with the "magic bias" trick: adding `1.5 * 2^23` to
//!    `x * log2(e)` rounds it to an integer that also sits in the low mantissa bits, so the
//!    integer `n` is one integer subtraction away (no float-to-int conversion).
//! 2. `r = x - n * ln2`, with `ln2` split into `LN2_HI + LN2_LO` (`LN2_HI` has 9 significant
//!    bits, so `n * LN2_HI` is exact for `|n| <= 2^15`), leaving `|r| <= ln2 / 2` (a hair more
//!    when the rounding in step 1 is inexact).
//! 3. `e^r = 1 + r * g(r)` with `g(r) = 1 + r * P(r)` and `P` a degree-4 polynomial whose
//!    coefficients were fitted here for minimax relative error on `|r| <= 1.02 * ln2 / 2`
//!    (Lawson-weighted least squares on 4001 Chebyshev nodes, in f64; approximation error
//!    5.7e-9 relative, far below one f32 ulp).
//! 4. `e^x = 2^n * e^r`, evaluated as `fma(r * s, g, s)` with `s = 2^n` built from the exponent
//!    bits; one rounding at the end. The full-range form splits the scale into
//!    `2^n1 * 2^n2` (`n1 = n >> 1`) so that `n = 128` (x in (88.38, 88.72]) and the subnormal
//!    results (x < -87.34) come out right, rounded once.
//!
//! Special values of [`exp`] (the full-range form): NaN -> NaN, `x > 88.7228` -> `+inf`,
//! `-inf` -> 0, results below `2^-126` are correctly scaled subnormals and `x < -103.97`
//! rounds to 0. The cheaper `exp_flush` form used inside other kernels (arguments `<= 0`:
//! `-|x|`, `x - max`) flushes results below `2^-126` (x < -87.3365) to zero.
//!
//! Measured error (exhaustive over every f32 in [-88, 88], against `f64::exp`, test
//! `exp_exhaustive` in `crates/kernels/tests/exp_exhaustive.rs`): see [`MAX_ULP`] and
//! `docs/kernels/activations.md`. The AVX2 / AVX-512 forms use FMA; the portable and scalar
//! forms use separate multiply and add (the same operations in the same order, so those two
//! are bit-identical to each other).

#[cfg(target_arch = "x86_64")]
pub mod avx2;
#[cfg(target_arch = "x86_64")]
pub mod avx512;
pub mod portable;
pub mod scalar;

use crate::error::KernelError;
use crate::isa::Isa;
use rayon::prelude::*;

/// `log2(e)` rounded to f32.
pub(crate) const LOG2E: f32 = std::f32::consts::LOG2_E;
/// `1.5 * 2^23`: adding it rounds a float of magnitude < 2^22 to an integer.
pub(crate) const MAGIC: f32 = 12_582_912.0;
/// `1.5 * 2^23 + 127`: the same rounding, with the exponent bias already added, so the low
/// mantissa bits of the sum are `n + 127` and `2^n` is one shift away (XNNPACK's trick; used by
/// the flushing forms, whose `n` stays in `[-126, 127]` wherever the result is kept).
pub(crate) const MAGIC_BIASED: f32 = 12_583_039.0;
/// High part of `ln 2` (9 significant bits: `n * LN2_HI` is exact).
pub(crate) const LN2_HI: f32 = 0.693_359_4;
/// Low part of `ln 2`: `LN2_HI + LN2_LO = ln 2` to about 1e-11.
pub(crate) const LN2_LO: f32 = -2.121_944_4e-4;
/// Coefficients of `P(r)` in `e^r = 1 + r (1 + r P(r))`, lowest degree first.
pub(crate) const C2: f32 = 0.499_999_94;
pub(crate) const C3: f32 = 0.166_665_09;
pub(crate) const C4: f32 = 0.041_668_527;
pub(crate) const C5: f32 = 0.008_370_135;
pub(crate) const C6: f32 = 0.001_381_166;
/// The full-range form clamps its argument to `[CLAMP_LO, CLAMP_HI]`: `e^-104` rounds to 0
/// and `e^89` overflows to `+inf`, and the scale exponents stay in range.
pub(crate) const CLAMP_LO: f32 = -104.0;
pub(crate) const CLAMP_HI: f32 = 89.0;
/// `ln(2^-126)`: below it the flushing form returns 0.
pub(crate) const FLUSH_BELOW: f32 = -87.336_54;

/// Maximum error of [`exp`] in units in the last place of the exact result, over every f32 in
/// `[-88, 88]`, for every ISA path (measured exhaustively; see the module docs). The
/// tests check this bound on a strided subset in the normal suite and exhaustively behind
/// `#[ignore]`.
pub const MAX_ULP: f64 = 1.2;

/// Elements per parallel task: below this a call stays on the calling thread.
const PAR_CHUNK: usize = 1 << 16;

/// `y[i] = e^x[i]` with the path [`Isa::current`] picks.
pub fn exp(x: &[f32], y: &mut [f32]) -> Result<(), KernelError> {
    exp_with(Isa::current()?, x, y)
}

/// `y[i] = e^x[i]` on the given path (an error if the CPU lacks it or the lengths differ).
///
/// Large slices are split into fixed chunks run on the rayon pool; the result does not depend
/// on the thread count (each element is computed independently).
pub fn exp_with(isa: Isa, x: &[f32], y: &mut [f32]) -> Result<(), KernelError> {
    let isa = isa.check()?;
    if x.len() != y.len() {
        return Err(KernelError::invalid(
            "exp",
            format!("x has {} elements but y has {}", x.len(), y.len()),
        ));
    }
    if x.len() <= PAR_CHUNK {
        exp_serial(isa, x, y);
    } else {
        x.par_chunks(PAR_CHUNK)
            .zip(y.par_chunks_mut(PAR_CHUNK))
            .for_each(|(xc, yc)| exp_serial(isa, xc, yc));
    }
    Ok(())
}

fn exp_serial(isa: Isa, x: &[f32], y: &mut [f32]) {
    debug_assert_eq!(x.len(), y.len());
    match isa {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: `isa` passed `Isa::check`, so the CPU supports AVX-512F; lengths are equal.
        Isa::Avx512 => unsafe { avx512::exp_slice(x, y) },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: `isa` passed `Isa::check`, so the CPU supports AVX2 and FMA; lengths equal.
        Isa::Avx2 => unsafe { avx2::exp_slice(x, y) },
        Isa::Portable => portable::exp_slice(x, y),
        _ => {
            for (o, &v) in y.iter_mut().zip(x) {
                *o = scalar::exp(v);
            }
        }
    }
}
