//! Layer normalisation over the last dimension of `[rows, d]` (Ba, Kiros & Hinton, "Layer
//! Normalization", 2016), following PyTorch's `torch.nn.LayerNorm` (biased variance):
//!
//! ```text
//! forward:  mean = E[x],  rstd = 1 / sqrt(E[(x - mean)^2] + eps),  y = (x - mean) * rstd * gamma + beta
//! backward: xhat = (x - mean) * rstd,  g = dy * gamma
//!           dx = rstd * (g - E[g] - xhat * E[g * xhat])                       (per row)
//!           dgamma = sum_rows dy * xhat,  dbeta = sum_rows dy
//! ```
//! Rows run in parallel (the forward's row kernel, over [`crate::simd::Simd`], in
//! `layer_kernel.rs`); `dgamma` / `dbeta` are reduced in parallel over column blocks, each
//! summing the rows in order, so the result does not depend on the thread count.

use super::{check_eps, check_len, check_opt, checked_len, layer_kernel, PAR_MIN};
use crate::error::KernelError;
use crate::isa::{Isa, Tables};
use crate::parallel::{for_each_chunk_mut, SharedMut};
use crate::simd::tables;
use rayon::prelude::*;

fn shape(rows: usize, d: usize) -> impl Fn() -> String {
    move || format!("x [{rows}, {d}]")
}

/// The forward row kernel of one ISA (see [`layer_kernel::forward_rows`]).
type FwdFn =
    unsafe fn(*const f32, usize, usize, *const f32, *const f32, f32, *mut f32, *mut f32, *mut f32);

macro_rules! layer_norm_kernels {
    ($S:ty $(, $feat:literal)?) => {{
        #[allow(clippy::too_many_arguments)]
        $(#[target_feature(enable = $feat)])?
        unsafe fn fwd(
            x: *const f32,
            rows: usize,
            d: usize,
            gamma: *const f32,
            beta: *const f32,
            eps: f32,
            y: *mut f32,
            mean: *mut f32,
            rstd: *mut f32,
        ) {
            // SAFETY: the table is used only on a CPU that supports the ISA; forwarded
            // contract.
            unsafe { layer_kernel::forward_rows::<$S>(x, rows, d, gamma, beta, eps, y, mean, rstd) }
        }
        fwd as FwdFn
    }};
}

static TABLES: Tables<FwdFn> = tables!(FwdFn, layer_norm_kernels);

/// Normalises each row of `x` (`[rows, d]`) into `y`, and stores each row's mean and
/// `1 / sqrt(var + eps)` in `mean`, `rstd` (`[rows]`) for the backward pass. `gamma`, `beta`
/// are `[d]` (default 1 and 0). Rows run in parallel when the tensor is large, each with the
/// vector kernel of [`Isa::current`]. Errors: wrong lengths, `d == 0`, a bad `eps`.
#[allow(clippy::too_many_arguments)]
pub fn layer_norm_forward(
    x: &[f32],
    rows: usize,
    d: usize,
    gamma: Option<&[f32]>,
    beta: Option<&[f32]>,
    eps: f32,
    y: &mut [f32],
    mean: &mut [f32],
    rstd: &mut [f32],
) -> Result<(), KernelError> {
    let f = *TABLES.current()?;
    forward(f, x, rows, d, gamma, beta, eps, y, mean, rstd)
}

/// [`layer_norm_forward`] on the kernel of `isa` (to compare the ISA paths). Errors as
/// [`layer_norm_forward`], and an ISA this CPU lacks.
#[allow(clippy::too_many_arguments)]
pub fn layer_norm_forward_with(
    isa: Isa,
    x: &[f32],
    rows: usize,
    d: usize,
    gamma: Option<&[f32]>,
    beta: Option<&[f32]>,
    eps: f32,
    y: &mut [f32],
    mean: &mut [f32],
    rstd: &mut [f32],
) -> Result<(), KernelError> {
    let f = *TABLES.get(isa)?;
    forward(f, x, rows, d, gamma, beta, eps, y, mean, rstd)
}

#[allow(clippy::too_many_arguments)]
fn forward(
    f: FwdFn,
    x: &[f32],
    rows: usize,
    d: usize,
    gamma: Option<&[f32]>,
    beta: Option<&[f32]>,
    eps: f32,
    y: &mut [f32],
    mean: &mut [f32],
    rstd: &mut [f32],
) -> Result<(), KernelError> {
    const OP: &str = "layer_norm_forward";
    let sh = shape(rows, d);
    let len = checked_len(OP, &sh, &[rows, d])?;
    check_len(OP, &sh, "x", x.len(), len)?;
    check_len(OP, &sh, "y", y.len(), len)?;
    check_len(OP, &sh, "mean", mean.len(), rows)?;
    check_len(OP, &sh, "rstd", rstd.len(), rows)?;
    check_opt(OP, &sh, "gamma", gamma.map(<[f32]>::len), d)?;
    check_opt(OP, &sh, "beta", beta.map(<[f32]>::len), d)?;
    check_eps(OP, eps)?;
    if d == 0 {
        return Err(KernelError::invalid(
            OP,
            format!("{}: cannot normalise rows of length 0", sh()),
        ));
    }
    let (mp, rp) = (SharedMut(mean.as_mut_ptr()), SharedMut(rstd.as_mut_ptr()));
    // About 16 tasks of whole rows when large (the rows do not depend on the cut).
    let rows_per_task = if len >= PAR_MIN {
        rows.div_ceil(16).max(1)
    } else {
        rows.max(1)
    };
    for_each_chunk_mut(y, rows_per_task * d, |k, part| {
        let r0 = k * rows_per_task;
        let g = gamma.map_or(std::ptr::null(), <[f32]>::as_ptr);
        let b = beta.map_or(std::ptr::null(), <[f32]>::as_ptr);
        // SAFETY: the table's ISA was checked; rows r0.. of x (rows * d floats) match `part`
        // (whole rows of y), mean and rstd hold `rows` floats of which this task alone writes
        // rows r0..r0 + part.len() / d; gamma and beta hold d floats where given.
        unsafe {
            f(
                x.as_ptr().add(r0 * d),
                part.len() / d,
                d,
                g,
                b,
                eps,
                part.as_mut_ptr(),
                mp.get().add(r0),
                rp.get().add(r0),
            )
        }
    });
    Ok(())
}

/// The gradients of [`layer_norm_forward`] given its saved `mean` and `rstd`: `dx`
/// (overwritten), and `dgamma`, `dbeta` (`[d]`, overwritten) when given.
#[allow(clippy::too_many_arguments)]
pub fn layer_norm_backward(
    x: &[f32],
    dy: &[f32],
    rows: usize,
    d: usize,
    gamma: Option<&[f32]>,
    mean: &[f32],
    rstd: &[f32],
    dx: &mut [f32],
    dgamma: Option<&mut [f32]>,
    dbeta: Option<&mut [f32]>,
) -> Result<(), KernelError> {
    const OP: &str = "layer_norm_backward";
    let sh = shape(rows, d);
    let len = checked_len(OP, &sh, &[rows, d])?;
    check_len(OP, &sh, "x", x.len(), len)?;
    check_len(OP, &sh, "dy", dy.len(), len)?;
    check_len(OP, &sh, "dx", dx.len(), len)?;
    check_len(OP, &sh, "mean", mean.len(), rows)?;
    check_len(OP, &sh, "rstd", rstd.len(), rows)?;
    check_opt(OP, &sh, "gamma", gamma.map(<[f32]>::len), d)?;
    check_opt(OP, &sh, "dgamma", dgamma.as_ref().map(|v| v.len()), d)?;
    check_opt(OP, &sh, "dbeta", dbeta.as_ref().map(|v| v.len()), d)?;
    if d == 0 {
        return Err(KernelError::invalid(
            OP,
            format!("{}: cannot normalise rows of length 0", sh()),
        ));
    }
    // One pass: rows in fixed blocks of ROWS (the same blocks for any thread count); each
    // block writes its rows of dx and its partial sums of dgamma (dy * xhat) and dbeta (dy),
    // which are then added block by block in order.
    const ROWS: usize = 32;
    let blocks = rows.div_ceil(ROWS);
    let mut partial = vec![0.0f32; blocks * 2 * d];
    let ones;
    let gamma = match gamma {
        Some(g) => g,
        None => {
            ones = vec![1.0f32; d];
            &ones
        }
    };
    let block = |(b, (dxb, part)): (usize, (&mut [f32], &mut [f32]))| {
        let (pg, pb) = part.split_at_mut(d);
        for (i, out) in dxb.chunks_mut(d).enumerate() {
            let r = b * ROWS + i;
            let (m, s) = (mean[r], rstd[r]);
            let (xr, dr) = (&x[r * d..(r + 1) * d], &dy[r * d..(r + 1) * d]);
            // out <- xhat first, then the two row means, then dx in place.
            for (o, &v) in out.iter_mut().zip(xr) {
                *o = (v - m) * s;
            }
            for (((g, bb), &xh), &dv) in pg.iter_mut().zip(pb.iter_mut()).zip(out.iter()).zip(dr) {
                *g += dv * xh;
                *bb += dv;
            }
            let mut sg = [0.0f32; 8];
            let mut sgx = [0.0f32; 8];
            for ((xh, dv), w) in out.chunks(8).zip(dr.chunks(8)).zip(gamma.chunks(8)) {
                for k in 0..xh.len() {
                    let g = dv[k] * w[k];
                    sg[k] += g;
                    sgx[k] += g * xh[k];
                }
            }
            let mg = sg.iter().sum::<f32>() / d as f32;
            let mgx = sgx.iter().sum::<f32>() / d as f32;
            for ((o, &dv), &w) in out.iter_mut().zip(dr).zip(gamma) {
                *o = s * (dv * w - mg - *o * mgx);
            }
        }
    };
    if len >= PAR_MIN {
        dx.par_chunks_mut(ROWS * d)
            .zip(partial.par_chunks_mut(2 * d))
            .enumerate()
            .for_each(block);
    } else {
        dx.chunks_mut(ROWS * d)
            .zip(partial.chunks_mut(2 * d))
            .enumerate()
            .for_each(block);
    }
    if dgamma.is_none() && dbeta.is_none() {
        return Ok(());
    }
    let mut dg = vec![0.0f32; d];
    let mut db = vec![0.0f32; d];
    for part in partial.chunks(2 * d) {
        let (pg, pb) = part.split_at(d);
        dg.iter_mut().zip(pg).for_each(|(a, b)| *a += b);
        db.iter_mut().zip(pb).for_each(|(a, b)| *a += b);
    }
    if let Some(out) = dgamma {
        out.copy_from_slice(&dg);
    }
    if let Some(out) = dbeta {
        out.copy_from_slice(&db);
    }
    Ok(())
}
