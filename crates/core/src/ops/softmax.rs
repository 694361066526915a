//! softmax and log_softmax over any dim, fused, with hand-written backward.
//!
//! The reduced dim is brought last (a transpose view, then one copy when that is not already
//! contiguous), every row is processed with the max-subtracted form (`exp(x - max)`, summed in
//! f64), and the result is handed back as a view with the dims in their original order.
//! Saved: the output only. Backward per row: softmax `dx = y ⊙ (dy - Σ dy⊙y)`;
//! log_softmax `dx = dy - exp(y) Σ dy`.
//!
//! These row loops live in core until `tessera_kernels::softmax` lands in main; the contract
//! (contiguous rows, `row_len`) is the same, so switching is local to this file.

use rayon::prelude::*;

use crate::autograd::needs_grad;
use crate::error::{check_dim, Result};
use crate::tensor::Tensor;

/// `x` with `dim` moved last, as a contiguous buffer.
fn rows_last(x: &Tensor, dim: usize) -> Result<Tensor> {
    let last = x.rank() - 1;
    Ok(x.detach().transpose(dim, last)?.contiguous())
}

/// Applies `f(in_row, out_row)` to each row of the contiguous `[.., d]` tensors.
fn per_row(
    inputs: &[&[f32]],
    d: usize,
    n: usize,
    f: impl Fn(&[&[f32]], &mut [f32]) + Sync,
) -> Vec<f32> {
    let mut out = vec![0.0f32; n];
    if d == 0 {
        return out;
    }
    let run = |(r, o): (usize, &mut [f32])| {
        let rows: Vec<&[f32]> = inputs.iter().map(|s| &s[r * d..(r + 1) * d]).collect();
        f(&rows, o)
    };
    if n >= super::PAR_MIN {
        out.par_chunks_mut(d).enumerate().for_each(run);
    } else {
        out.chunks_mut(d).enumerate().for_each(run);
    }
    out
}

fn softmax_row(x: &[f32], y: &mut [f32], log: bool) {
    let m = x.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let m = if m.is_finite() { m } else { 0.0 };
    let sum: f64 = x.iter().map(|&v| ((v - m) as f64).exp()).sum();
    if log {
        let lse = m as f64 + sum.ln();
        for (o, &v) in y.iter_mut().zip(x) {
            *o = (v as f64 - lse) as f32;
        }
    } else {
        let inv = 1.0 / sum;
        for (o, &v) in y.iter_mut().zip(x) {
            *o = (((v - m) as f64).exp() * inv) as f32;
        }
    }
}

fn softmax_impl(x: &Tensor, dim: usize, log: bool) -> Result<Tensor> {
    let name = if log { "log_softmax" } else { "softmax" };
    check_dim(name, dim, x.shape())?;
    let last = x.rank() - 1;
    let xr = rows_last(x, dim)?;
    let d = xr.shape()[last];
    let xd = xr.data();
    let out = per_row(&[&xd], d, xr.numel(), |r, o| softmax_row(r[0], o, log));
    let yr = Tensor::from_contig(out, xr.shape());
    let y = yr.transpose(dim, last)?;
    if !needs_grad(&[x]) {
        return Ok(y);
    }
    Ok(y.record(name, &[x], move |g| {
        let gr = rows_last(g, dim)?;
        let (gd, yd) = (gr.data(), yr.data());
        let dx = per_row(&[&gd, &yd], d, gr.numel(), |r, o| {
            let (dy, y) = (r[0], r[1]);
            if log {
                let s: f64 = dy.iter().map(|&v| v as f64).sum();
                for i in 0..o.len() {
                    o[i] = (dy[i] as f64 - (y[i] as f64).exp() * s) as f32;
                }
            } else {
                let s: f64 = dy.iter().zip(y).map(|(&a, &b)| a as f64 * b as f64).sum();
                for i in 0..o.len() {
                    o[i] = (y[i] as f64 * (dy[i] as f64 - s)) as f32;
                }
            }
        });
        let dxr = Tensor::from_contig(dx, gr.shape());
        Ok(vec![Some(dxr.transpose(dim, last)?.contiguous())])
    }))
}

impl Tensor {
    /// `exp(x_i) / Σ_j exp(x_j)` along `dim`.
    pub fn softmax(&self, dim: usize) -> Result<Tensor> {
        softmax_impl(self, dim, false)
    }

    /// `x_i - log Σ_j exp(x_j)` along `dim`.
    pub fn log_softmax(&self, dim: usize) -> Result<Tensor> {
        softmax_impl(self, dim, true)
    }
}
