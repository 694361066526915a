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
//! The flushing form on AVX2 and AVX-512 (`exp_flush_ps`, inside sigmoid, swish, GELU and
//! softmax) uses a cheaper table variant of the same idea (XNNPACK's `lut8_p3`): `n =
//! round(8 x log2(e))`, `r = x - n ln2/8` (`|r| <= ln2/16`), `2^(n/8)` from an 8-entry table of
//! `2^(j/8)` (one `vpermps`) plus exponent bits, `e^r ~ 1 + r (1 + r (Q2 + Q3 r))`, and the
//! rounding of the table entry added back inside the final FMA:
//! `e^x = fma(s, fma(r, g, lo_j), s)`. Three fewer FMA-unit operations per vector (7 instead
//! of 10), measured 0.9908 ulp max over every f32 of [-87.33654, 0] (the bound is the same
//! [`MAX_ULP`]). The portable and scalar flushing forms keep the polynomial above.
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

pub(crate) mod vector;

use crate::error::KernelError;
use crate::isa::{Isa, Tables};
use crate::simd::tables;
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
/// `2^(j/8)` for `j` in `0..8`, rounded to f32: the table of the AVX2 / AVX-512 flushing form
/// (see [`flush_table`]).
pub(crate) const EXP2_EIGHTHS: [f32; 8] = [
    1.0,
    1.090_507_7,
    1.189_207_1,
    1.296_839_6,
    std::f32::consts::SQRT_2,
    1.542_210_8,
    1.681_792_9,
    1.834_008_1,
];
/// `(2^(j/8) - EXP2_EIGHTHS[j]) / EXP2_EIGHTHS[j]`: the rounding of each table entry, added back
/// inside the last FMA so that the table costs no accuracy (computed with 40-digit decimals).
pub(crate) const EXP2_EIGHTHS_LO: [f32; 8] = [
    0.0,
    -1.199_215_7e-8,
    3.193_418e-8,
    -3.099_072e-8,
    1.711_427e-8,
    5.233_334e-9,
    -1.471_960_5e-8,
    -6.128_259_7e-9,
];
/// Coefficients of the table form's `e^r ~ 1 + r + Q2 r^2 + Q3 r^3` on `|r| <= 1.02 ln2 / 16`
/// (Lawson-weighted least squares of the relative error on 4001 Chebyshev nodes, f64, then
/// rounded to f32): approximation error 2.8e-8 relative.
pub(crate) const Q2: f32 = 0.500_066_8;
pub(crate) const Q3: f32 = 0.166_668_88;

/// The bits of the table for `vpermps`: entry `j` is `bits(2^(j/8)) - (j << 20)`, so that adding
/// `bits(t) << 20` (which carries `n = 8q + j` as `q << 23` plus `j << 20`) gives `2^(q + j/8)`
/// exactly (XNNPACK's `lut8` trick). `lanes` is 8 (AVX2) or 16 (AVX-512, entries repeat: bit 3
/// of `n` lands in the exponent).
pub(crate) const fn flush_table<const L: usize>() -> ([i32; L], [f32; L]) {
    let mut hi = [0i32; L];
    let mut lo = [0f32; L];
    let mut k = 0;
    while k < L {
        let j = k % 8;
        hi[k] = (EXP2_EIGHTHS[j].to_bits() as i32).wrapping_sub((j as i32) << 20);
        lo[k] = EXP2_EIGHTHS_LO[j];
        k += 1;
    }
    (hi, lo)
}

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

/// A slice form: `y[i] = f(x[i])` for `i < n`.
type SliceFn = unsafe fn(*const f32, *mut f32, usize);

/// The exp family's entry points for one ISA.
struct ExpKernels {
    exp: SliceFn,
    exp_flush: SliceFn,
}

macro_rules! exp_kernels {
    ($S:ty $(, $feat:literal)?) => {{
        $(#[target_feature(enable = $feat)])?
        unsafe fn exp(x: *const f32, y: *mut f32, n: usize) {
            // SAFETY: the table is used only on a CPU that supports the ISA; the caller
            // passes n floats at x and y.
            unsafe { vector::exp_slice::<$S, false>(x, y, n) }
        }
        $(#[target_feature(enable = $feat)])?
        unsafe fn exp_flush(x: *const f32, y: *mut f32, n: usize) {
            // SAFETY: as above.
            unsafe { vector::exp_slice::<$S, true>(x, y, n) }
        }
        ExpKernels { exp, exp_flush }
    }};
}

static TABLES: Tables<ExpKernels> = tables!(ExpKernels, exp_kernels);

/// `y[i] = e^x[i]` with the path [`Isa::current`] picks.
pub fn exp(x: &[f32], y: &mut [f32]) -> Result<(), KernelError> {
    run(TABLES.current()?.exp, x, y)
}

/// `y[i] = e^x[i]` on the given path (an error if the CPU lacks it or the lengths differ).
///
/// Large slices are split into fixed chunks run on the rayon pool; the result does not depend
/// on the thread count (each element is computed independently).
pub fn exp_with(isa: Isa, x: &[f32], y: &mut [f32]) -> Result<(), KernelError> {
    run(TABLES.get(isa)?.exp, x, y)
}

/// The flushing form inside the activations and softmax, as a slice kernel on the given path:
/// `y[i] = e^x[i]` for `x[i] <= 0` (or NaN), results below `2^-126` (x < -87.3365, `-inf`)
/// flushed to 0. Positive arguments above `88.3` are outside its contract (garbage, not UB).
pub fn exp_flush_with(isa: Isa, x: &[f32], y: &mut [f32]) -> Result<(), KernelError> {
    run(TABLES.get(isa)?.exp_flush, x, y)
}

fn run(f: SliceFn, x: &[f32], y: &mut [f32]) -> Result<(), KernelError> {
    if x.len() != y.len() {
        return Err(KernelError::invalid(
            "exp",
            format!("x has {} elements but y has {}", x.len(), y.len()),
        ));
    }
    let serial = |x: &[f32], y: &mut [f32]| {
        // SAFETY: `f` comes from the table of a checked ISA; both slices hold x.len() floats.
        unsafe { f(x.as_ptr(), y.as_mut_ptr(), x.len()) }
    };
    if x.len() <= PAR_CHUNK {
        serial(x, y);
    } else {
        x.par_chunks(PAR_CHUNK)
            .zip(y.par_chunks_mut(PAR_CHUNK))
            .for_each(|(xc, yc)| serial(xc, yc));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The table of the AVX2 / AVX-512 flushing form: `T_j (1 + lo_j)` is `2^(j/8)` to far
    /// below an f32 ulp, and the bit trick's entries decode back to `T_j`.
    #[test]
    fn flush_table_reproduces_powers_of_two() {
        let (hi, lo) = flush_table::<16>();
        for k in 0..16 {
            let j = k % 8;
            let t = f32::from_bits((hi[k] as u32).wrapping_add((j as u32) << 20));
            assert_eq!(t, EXP2_EIGHTHS[j]);
            let want = 2f64.powf(j as f64 / 8.0);
            let got = t as f64 * (1.0 + lo[k] as f64);
            assert!(
                ((got - want) / want).abs() < 1e-14,
                "j = {j}: {got} vs {want}"
            );
        }
    }
}
