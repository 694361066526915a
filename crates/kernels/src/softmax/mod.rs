//! Softmax and log-softmax over the rows of a dense `[rows, row_len]` array (the last
//! dimension), forward and backward.
//!
//! Forward, per row (the "three passes in two" of XNNPACK's softmax, Dukhan & Ablavatski,
//! "The Two-Pass Softmax Algorithm", 2020, section 2): (1) the row maximum; (2) `e^(x - max)`
//! stored into `y` while summing it (log-softmax stores `x - max` and sums its exponentials);
//! then a cheap rescale of `y`, which is still in L1/L2 (`y *= 1/sum`, or `y -= ln(sum)`). So
//! `x` is read twice and each exponential is computed once. Subtracting the max makes every
//! exponent `<= 0`: no overflow for any finite input, and the shared flushing exp
//! ([`crate::exp`]) is exact enough that entries below `e^-87.3` count as 0.
//!
//! Special rows (documented behaviour, tested):
//! - entries equal to `-inf` (masked) get probability 0 (log-probability `-inf`);
//! - a row whose entries are all `-inf` gives NaN everywhere (as PyTorch does: the
//!   distribution is undefined);
//! - a row containing NaN or `+inf` gives NaN everywhere (as PyTorch does);
//! - rows of length 1 give 1 (log-softmax 0).
//!
//! Backward (`y` is the forward output): softmax `dx = y (dy - sum(dy y))`; log-softmax
//! `dx = dy - e^y sum(dy)`; one reduction pass and one output pass per row.
//!
//! Rows are independent, so large inputs are split into groups of whole rows on the rayon
//! pool; each row is always computed by the same code in the same order, so the result is
//! bit-identical for any thread count. The `Isa::Scalar` path runs the same algorithm with the
//! scalar exp; [`reference`](mod@reference) holds the f64 oracle the tests use.

#[cfg(target_arch = "x86_64")]
mod avx2;
#[cfg(target_arch = "x86_64")]
mod avx512;
mod portable;
pub mod reference;
mod scalar;

use crate::error::KernelError;
use crate::isa::Isa;
use rayon::prelude::*;

/// Below this many elements a call stays on the calling thread.
const PAR_MIN: usize = 1 << 15;
/// Target elements per parallel task (whole rows).
const PAR_TASK: usize = 1 << 14;

#[derive(Clone, Copy)]
enum Op {
    Softmax,
    LogSoftmax,
}

#[derive(Clone, Copy)]
enum BackOp {
    Softmax,
    LogSoftmax,
}

fn check(op: &'static str, row_len: usize, lens: &[(&str, usize)]) -> Result<(), KernelError> {
    if row_len == 0 {
        return Err(KernelError::invalid(op, "row_len must be at least 1"));
    }
    let n = lens[0].1;
    if let Some(&(name, l)) = lens.iter().find(|&&(_, l)| l != n) {
        return Err(KernelError::invalid(
            op,
            format!("{name} has {l} elements but {} has {n}", lens[0].0),
        ));
    }
    if !n.is_multiple_of(row_len) {
        return Err(KernelError::invalid(
            op,
            format!(
                "{} has {n} elements, not a multiple of row_len = {row_len}",
                lens[0].0
            ),
        ));
    }
    Ok(())
}

/// Rows per parallel task, or `None` to stay serial.
fn rows_per_task(n: usize, row_len: usize) -> Option<usize> {
    (n >= PAR_MIN && rayon::current_num_threads() > 1).then(|| (PAR_TASK / row_len).max(1))
}

/// Softmax over rows of `row_len`: `y = e^x / sum(e^x)` per row, with the path
/// [`Isa::current`] picks.
pub fn softmax(x: &[f32], y: &mut [f32], row_len: usize) -> Result<(), KernelError> {
    softmax_with(Isa::current()?, x, y, row_len)
}

/// Log-softmax over rows: `y = x - ln(sum(e^x))` per row.
pub fn log_softmax(x: &[f32], y: &mut [f32], row_len: usize) -> Result<(), KernelError> {
    log_softmax_with(Isa::current()?, x, y, row_len)
}

/// Softmax backward: `dx = y * (dy - sum(dy * y))` per row, `y` the softmax output.
pub fn softmax_backward(
    y: &[f32],
    dy: &[f32],
    dx: &mut [f32],
    row_len: usize,
) -> Result<(), KernelError> {
    softmax_backward_with(Isa::current()?, y, dy, dx, row_len)
}

/// Log-softmax backward: `dx = dy - exp(y) * sum(dy)` per row, `y` the log-softmax output.
pub fn log_softmax_backward(
    y: &[f32],
    dy: &[f32],
    dx: &mut [f32],
    row_len: usize,
) -> Result<(), KernelError> {
    log_softmax_backward_with(Isa::current()?, y, dy, dx, row_len)
}

/// [`softmax`] on the given path (an error if the CPU lacks it).
pub fn softmax_with(isa: Isa, x: &[f32], y: &mut [f32], row_len: usize) -> Result<(), KernelError> {
    let isa = isa.check()?;
    check("softmax", row_len, &[("x", x.len()), ("y", y.len())])?;
    forward_rows(isa, Op::Softmax, x, y, row_len);
    Ok(())
}

/// [`log_softmax`] on the given path.
pub fn log_softmax_with(
    isa: Isa,
    x: &[f32],
    y: &mut [f32],
    row_len: usize,
) -> Result<(), KernelError> {
    let isa = isa.check()?;
    check("log_softmax", row_len, &[("x", x.len()), ("y", y.len())])?;
    forward_rows(isa, Op::LogSoftmax, x, y, row_len);
    Ok(())
}

/// [`softmax_backward`] on the given path.
pub fn softmax_backward_with(
    isa: Isa,
    y: &[f32],
    dy: &[f32],
    dx: &mut [f32],
    row_len: usize,
) -> Result<(), KernelError> {
    let isa = isa.check()?;
    let lens = [("y", y.len()), ("dy", dy.len()), ("dx", dx.len())];
    check("softmax_backward", row_len, &lens)?;
    backward_rows(isa, BackOp::Softmax, y, dy, dx, row_len);
    Ok(())
}

/// [`log_softmax_backward`] on the given path.
pub fn log_softmax_backward_with(
    isa: Isa,
    y: &[f32],
    dy: &[f32],
    dx: &mut [f32],
    row_len: usize,
) -> Result<(), KernelError> {
    let isa = isa.check()?;
    let lens = [("y", y.len()), ("dy", dy.len()), ("dx", dx.len())];
    check("log_softmax_backward", row_len, &lens)?;
    backward_rows(isa, BackOp::LogSoftmax, y, dy, dx, row_len);
    Ok(())
}

fn forward_rows(isa: Isa, op: Op, x: &[f32], y: &mut [f32], row_len: usize) {
    let run = |xs: &[f32], ys: &mut [f32]| {
        for (xr, yr) in xs.chunks_exact(row_len).zip(ys.chunks_exact_mut(row_len)) {
            forward_row(isa, op, xr, yr);
        }
    };
    match rows_per_task(x.len(), row_len) {
        Some(r) => x
            .par_chunks(r * row_len)
            .zip(y.par_chunks_mut(r * row_len))
            .for_each(|(xs, ys)| run(xs, ys)),
        None => run(x, y),
    }
}

fn forward_row(isa: Isa, op: Op, x: &[f32], y: &mut [f32]) {
    match (isa, op) {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: `isa` passed `Isa::check` (AVX-512F present); rows have equal length >= 1.
        (Isa::Avx512, Op::Softmax) => unsafe { avx512::softmax_row(x, y) },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: as above.
        (Isa::Avx512, Op::LogSoftmax) => unsafe { avx512::log_softmax_row(x, y) },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: `isa` passed `Isa::check` (AVX2 + FMA present); rows have equal length >= 1.
        (Isa::Avx2, Op::Softmax) => unsafe { avx2::softmax_row(x, y) },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: as above.
        (Isa::Avx2, Op::LogSoftmax) => unsafe { avx2::log_softmax_row(x, y) },
        (Isa::Portable, Op::Softmax) => portable::softmax_row(x, y),
        (Isa::Portable, Op::LogSoftmax) => portable::log_softmax_row(x, y),
        (_, Op::Softmax) => scalar::softmax_row(x, y),
        (_, Op::LogSoftmax) => scalar::log_softmax_row(x, y),
    }
}

fn backward_rows(isa: Isa, op: BackOp, y: &[f32], dy: &[f32], dx: &mut [f32], row_len: usize) {
    let run = |ys: &[f32], ds: &[f32], os: &mut [f32]| {
        let rows = ys
            .chunks_exact(row_len)
            .zip(ds.chunks_exact(row_len))
            .zip(os.chunks_exact_mut(row_len));
        for ((yr, dr), or) in rows {
            backward_row(isa, op, yr, dr, or);
        }
    };
    match rows_per_task(y.len(), row_len) {
        Some(r) => y
            .par_chunks(r * row_len)
            .zip(dy.par_chunks(r * row_len))
            .zip(dx.par_chunks_mut(r * row_len))
            .for_each(|((ys, ds), os)| run(ys, ds, os)),
        None => run(y, dy, dx),
    }
}

fn backward_row(isa: Isa, op: BackOp, y: &[f32], dy: &[f32], dx: &mut [f32]) {
    match (isa, op) {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: `isa` passed `Isa::check` (AVX-512F present); the rows have equal length.
        (Isa::Avx512, BackOp::Softmax) => unsafe { avx512::softmax_backward_row(y, dy, dx) },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: as above.
        (Isa::Avx512, BackOp::LogSoftmax) => unsafe { avx512::log_softmax_backward_row(y, dy, dx) },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: `isa` passed `Isa::check` (AVX2 + FMA present); the rows have equal length.
        (Isa::Avx2, BackOp::Softmax) => unsafe { avx2::softmax_backward_row(y, dy, dx) },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: as above.
        (Isa::Avx2, BackOp::LogSoftmax) => unsafe { avx2::log_softmax_backward_row(y, dy, dx) },
        (Isa::Portable, BackOp::Softmax) => portable::softmax_backward_row(y, dy, dx),
        (Isa::Portable, BackOp::LogSoftmax) => portable::log_softmax_backward_row(y, dy, dx),
        (_, BackOp::Softmax) => scalar::softmax_backward_row(y, dy, dx),
        (_, BackOp::LogSoftmax) => scalar::log_softmax_backward_row(y, dy, dx),
    }
}
