//! Layer normalisation over the last dimension of `[rows, d]` (Ba, Kiros & Hinton, "Layer
//! Normalization", 2016), following PyTorch's `torch.nn.LayerNorm` (biased variance):
//!
//! ```text
//! forward:  mean = E[x],  rstd = 1 / sqrt(E[(x - mean)^2] + eps),  y = (x - mean) * rstd * gamma + beta
//! backward: xhat = (x - mean) * rstd,  g = dy * gamma
//!           dx = rstd * (g - E[g] - xhat * E[g * xhat])                       (per row)
//!           dgamma = sum_rows dy * xhat,  dbeta = sum_rows dy
//! ```
//! Rows run in parallel; `dgamma` / `dbeta` are reduced in parallel over column blocks, each
//! summing the rows in order, so the result does not depend on the thread count.

use super::{check_eps, check_len, check_opt, checked_len, sum_and_sq, PAR_MIN};
use crate::error::KernelError;
use crate::parallel::for_each_chunk_mut;
use rayon::prelude::*;

fn shape(rows: usize, d: usize) -> impl Fn() -> String {
    move || format!("x [{rows}, {d}]")
}

/// Runs `f(row, out_row)` over the rows of `out` (`d` wide), in parallel when large.
fn per_row<F>(out: &mut [f32], d: usize, f: F)
where
    F: Fn(usize, &mut [f32]) + Sync,
{
    if d == 0 {
        return;
    }
    if out.len() >= PAR_MIN {
        // Through `for_each_task`: inside an awake region (a compiled plan) the rows go to the
        // spinning workers.
        for_each_chunk_mut(out, d, f);
    } else {
        out.chunks_mut(d).enumerate().for_each(|(r, o)| f(r, o));
    }
}

/// Normalises each row of `x` (`[rows, d]`) into `y`, and stores each row's mean and
/// `1 / sqrt(var + eps)` in `mean`, `rstd` (`[rows]`) for the backward pass. `gamma`, `beta`
/// are `[d]` (default 1 and 0). Errors: wrong lengths, `d == 0`, a bad `eps`.
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
    // Statistics first (cheap, per row), then the affine pass.
    for (r, (mu, rs)) in mean.iter_mut().zip(rstd.iter_mut()).enumerate() {
        let row = &x[r * d..(r + 1) * d];
        let m = sum_and_sq(row, 0.0).0 / d as f32;
        let v = sum_and_sq(row, m).1 / d as f32;
        *mu = m;
        *rs = 1.0 / (v + eps).sqrt();
    }
    let (mean, rstd) = (&*mean, &*rstd);
    per_row(y, d, |r, out| {
        let (m, s) = (mean[r], rstd[r]);
        let row = &x[r * d..(r + 1) * d];
        match (gamma, beta) {
            (Some(g), Some(b)) => {
                for (((o, &v), &g), &b) in out.iter_mut().zip(row).zip(g).zip(b) {
                    *o = (v - m) * s * g + b;
                }
            }
            (Some(g), None) => {
                for ((o, &v), &g) in out.iter_mut().zip(row).zip(g) {
                    *o = (v - m) * s * g;
                }
            }
            (None, Some(b)) => {
                for ((o, &v), &b) in out.iter_mut().zip(row).zip(b) {
                    *o = (v - m) * s + b;
                }
            }
            (None, None) => {
                for (o, &v) in out.iter_mut().zip(row) {
                    *o = (v - m) * s;
                }
            }
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
