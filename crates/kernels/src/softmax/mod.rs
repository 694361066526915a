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
//! bit-identical for any thread count. The row kernels are written once over
//! [`crate::simd::Simd`] (`kernel.rs`), so the `Isa::Scalar` path is the same algorithm with
//! one lane; [`reference`](mod@reference) holds the f64 oracle the tests use.

mod kernel;
pub mod reference;

use crate::error::KernelError;
use crate::isa::{Isa, Tables};
use crate::simd::tables;
use rayon::prelude::*;

/// Rows `x[r * row_len..]` to `y[r * row_len..]` for `r < rows` (forward: `y = f(x)`;
/// backward: the same with `x = (y, dy)`).
type FwdFn = unsafe fn(*const f32, *mut f32, usize, usize);
type BwdFn = unsafe fn(*const f32, *const f32, *mut f32, usize, usize);

/// The softmax family's entry points for one ISA (`[softmax, log_softmax]` each).
struct SoftmaxKernels {
    forward: [FwdFn; 2],
    backward: [BwdFn; 2],
}

macro_rules! softmax_kernels {
    ($S:ty $(, $feat:literal)?) => {{
        $(#[target_feature(enable = $feat)])?
        unsafe fn fwd<const LOG: bool>(x: *const f32, y: *mut f32, rows: usize, n: usize) {
            for r in 0..rows {
                // SAFETY: the table is used only on a CPU that supports the ISA; the caller
                // passes rows * n floats at x and y, apart.
                unsafe { kernel::forward_row::<$S, LOG>(x.add(r * n), y.add(r * n), n) }
            }
        }
        $(#[target_feature(enable = $feat)])?
        unsafe fn bwd<const LOG: bool>(
            y: *const f32,
            dy: *const f32,
            dx: *mut f32,
            rows: usize,
            n: usize,
        ) {
            for r in 0..rows {
                let o = r * n;
                // SAFETY: as in `fwd`, for y, dy and dx.
                unsafe { kernel::backward_row::<$S, LOG>(y.add(o), dy.add(o), dx.add(o), n) }
            }
        }
        SoftmaxKernels {
            forward: [fwd::<false>, fwd::<true>],
            backward: [bwd::<false>, bwd::<true>],
        }
    }};
}

static TABLES: Tables<SoftmaxKernels> = tables!(SoftmaxKernels, softmax_kernels);

/// Below this many elements a call stays on the calling thread.
const PAR_MIN: usize = 1 << 15;
/// Target elements per parallel task (whole rows).
const PAR_TASK: usize = 1 << 14;

/// Index into the tables' pairs.
const SOFTMAX: usize = 0;
const LOG_SOFTMAX: usize = 1;

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
    check("softmax", row_len, &[("x", x.len()), ("y", y.len())])?;
    forward_rows(TABLES.current()?.forward[SOFTMAX], x, y, row_len);
    Ok(())
}

/// Log-softmax over rows: `y = x - ln(sum(e^x))` per row.
pub fn log_softmax(x: &[f32], y: &mut [f32], row_len: usize) -> Result<(), KernelError> {
    check("log_softmax", row_len, &[("x", x.len()), ("y", y.len())])?;
    forward_rows(TABLES.current()?.forward[LOG_SOFTMAX], x, y, row_len);
    Ok(())
}

/// Softmax backward: `dx = y * (dy - sum(dy * y))` per row, `y` the softmax output.
pub fn softmax_backward(
    y: &[f32],
    dy: &[f32],
    dx: &mut [f32],
    row_len: usize,
) -> Result<(), KernelError> {
    let lens = [("y", y.len()), ("dy", dy.len()), ("dx", dx.len())];
    check("softmax_backward", row_len, &lens)?;
    backward_rows(TABLES.current()?.backward[SOFTMAX], y, dy, dx, row_len);
    Ok(())
}

/// Log-softmax backward: `dx = dy - exp(y) * sum(dy)` per row, `y` the log-softmax output.
pub fn log_softmax_backward(
    y: &[f32],
    dy: &[f32],
    dx: &mut [f32],
    row_len: usize,
) -> Result<(), KernelError> {
    let lens = [("y", y.len()), ("dy", dy.len()), ("dx", dx.len())];
    check("log_softmax_backward", row_len, &lens)?;
    backward_rows(TABLES.current()?.backward[LOG_SOFTMAX], y, dy, dx, row_len);
    Ok(())
}

/// [`softmax`] on the given path (an error if the CPU lacks it).
pub fn softmax_with(isa: Isa, x: &[f32], y: &mut [f32], row_len: usize) -> Result<(), KernelError> {
    let k = TABLES.get(isa)?;
    check("softmax", row_len, &[("x", x.len()), ("y", y.len())])?;
    forward_rows(k.forward[SOFTMAX], x, y, row_len);
    Ok(())
}

/// [`log_softmax`] on the given path.
pub fn log_softmax_with(
    isa: Isa,
    x: &[f32],
    y: &mut [f32],
    row_len: usize,
) -> Result<(), KernelError> {
    let k = TABLES.get(isa)?;
    check("log_softmax", row_len, &[("x", x.len()), ("y", y.len())])?;
    forward_rows(k.forward[LOG_SOFTMAX], x, y, row_len);
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
    let k = TABLES.get(isa)?;
    let lens = [("y", y.len()), ("dy", dy.len()), ("dx", dx.len())];
    check("softmax_backward", row_len, &lens)?;
    backward_rows(k.backward[SOFTMAX], y, dy, dx, row_len);
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
    let k = TABLES.get(isa)?;
    let lens = [("y", y.len()), ("dy", dy.len()), ("dx", dx.len())];
    check("log_softmax_backward", row_len, &lens)?;
    backward_rows(k.backward[LOG_SOFTMAX], y, dy, dx, row_len);
    Ok(())
}

fn forward_rows(f: FwdFn, x: &[f32], y: &mut [f32], row_len: usize) {
    let run = |xs: &[f32], ys: &mut [f32]| {
        // SAFETY: `f` is from the table of a checked ISA; `check` made both lengths equal and
        // a multiple of row_len >= 1; x and y are distinct slices.
        unsafe { f(xs.as_ptr(), ys.as_mut_ptr(), xs.len() / row_len, row_len) }
    };
    match rows_per_task(x.len(), row_len) {
        Some(r) => x
            .par_chunks(r * row_len)
            .zip(y.par_chunks_mut(r * row_len))
            .for_each(|(xs, ys)| run(xs, ys)),
        None => run(x, y),
    }
}

fn backward_rows(f: BwdFn, y: &[f32], dy: &[f32], dx: &mut [f32], row_len: usize) {
    let run = |ys: &[f32], ds: &[f32], os: &mut [f32]| {
        // SAFETY: as in `forward_rows`, for the three slices.
        unsafe {
            f(
                ys.as_ptr(),
                ds.as_ptr(),
                os.as_mut_ptr(),
                ys.len() / row_len,
                row_len,
            )
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
