//! softmax and log_softmax over any dim, fused, with hand-written backward.
//!
//! The reduced dim is brought last (a transpose view, then one copy when that is not already
//! contiguous), the rows go through `tessera_kernels::softmax` (max-subtracted, SIMD exp,
//! parallel over rows), and the result is handed back as a view with the dims in their original order.
//! Saved: the output only. Backward per row: softmax `dx = y ⊙ (dy - Σ dy⊙y)`;
//! log_softmax `dx = dy - exp(y) Σ dy`.

use tessera_kernels::softmax;

use crate::autograd::needs_grad;
use crate::error::{check_dim, Result, TensorError};
use crate::ops::elementwise_info;
use crate::profile::{self, f32_bytes, Cost};
use crate::tensor::Tensor;

/// `x` with `dim` moved last, as a contiguous buffer.
fn rows_last(x: &Tensor, dim: usize) -> Result<Tensor> {
    let last = x.rank() - 1;
    Ok(x.detach().transpose(dim, last)?.contiguous())
}

fn softmax_impl(x: &Tensor, dim: usize, log: bool) -> Result<Tensor> {
    let name = if log { "log_softmax" } else { "softmax" };
    check_dim(name, dim, x.shape())?;
    let frame = profile::begin();
    let last = x.rank() - 1;
    let kerr = TensorError::Kernel;
    let xr = rows_last(x, dim)?;
    let d = xr.shape()[last];
    let mut out = crate::pool::for_overwrite(xr.numel());
    if d > 0 {
        let f = if log {
            softmax::log_softmax
        } else {
            softmax::softmax
        };
        f(&xr.data(), &mut out, d).map_err(kerr)?;
    }
    let yr = Tensor::from_contig(out, xr.shape());
    let y = yr.transpose(dim, last)?;
    if let Some(fr) = frame {
        // Per element: max, subtract, exp, sum, scale (log_softmax: max, subtract, exp, sum,
        // subtract the log).
        fr.end_op(&y, || elementwise_info(name, &[x], &y, 5));
    }
    if !needs_grad(&[x]) {
        return Ok(y);
    }
    Ok(y.record(name, &[x], move |g| {
        let gr = rows_last(g, dim)?;
        let mut dx = crate::pool::for_overwrite(gr.numel());
        if d > 0 {
            let f = if log {
                softmax::log_softmax_backward
            } else {
                softmax::softmax_backward
            };
            f(&yr.data(), &gr.data(), &mut dx, d).map_err(kerr)?;
            // Per element: the row dot product (2) and the update (2); reads y and dy.
            profile::add_cost(|| Cost {
                flops: 4 * dx.len() as u64,
                macs: 0,
                bytes_read: f32_bytes(2 * dx.len()),
                bytes_written: f32_bytes(dx.len()),
            });
        }
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
