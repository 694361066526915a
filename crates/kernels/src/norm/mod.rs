//! Batch normalisation (Ioffe & Szegedy, 2015) over NCHW tensors seen as `[n, c, hw]`, and
//! layer normalisation (Ba, Kiros & Hinton, 2016) over `[rows, d]`, forward and backward, with
//! PyTorch's formulas (`torch.nn.BatchNorm2d`: biased batch variance for normalisation,
//! `y = (x - mean) / sqrt(var + eps) * gamma + beta`; `torch.nn.LayerNorm` over the last dim).
//!
//! Every entry point checks its lengths and returns a [`KernelError`] naming the op and the
//! shape. The loops are written to auto-vectorise (eight independent partial sums, fused
//! `x * scale + shift` passes) and run in parallel over channels / rows / planes; every
//! reduction runs in a fixed order, so results do not depend on the thread count.
//! [`mod@reference`] holds the naive f64 oracles the tests compare with.

mod batch;
mod batch_act;
pub mod fold;
mod layer;
mod layer_kernel;
pub mod reference;

pub use batch::{
    batch_norm_backward, batch_norm_backward_reduced, batch_norm_forward, batch_norm_stats,
    batch_norm_stats_reduced, Reduce,
};
pub use batch_act::{
    batch_norm_act_backward, batch_norm_act_backward_reduced, batch_norm_act_backward_with,
    batch_norm_act_forward, batch_norm_act_forward_with,
};
pub use layer::{layer_norm_backward, layer_norm_forward, layer_norm_forward_with};

use crate::error::KernelError;

/// Work (elements) below which a kernel stays on the calling thread.
pub(crate) const PAR_MIN: usize = 1 << 15;

/// Checks `len == want`, naming the op, the tensor and the shape otherwise.
pub(crate) fn check_len(
    op: &'static str,
    shape: &dyn Fn() -> String,
    name: &str,
    len: usize,
    want: usize,
) -> Result<(), KernelError> {
    if len == want {
        Ok(())
    } else {
        Err(KernelError::invalid(
            op,
            format!("{}: {name} has {len} elements, expected {want}", shape()),
        ))
    }
}

/// Checks an optional per-feature parameter's length.
pub(crate) fn check_opt(
    op: &'static str,
    shape: &dyn Fn() -> String,
    name: &str,
    v: Option<usize>,
    want: usize,
) -> Result<(), KernelError> {
    match v {
        Some(len) => check_len(op, shape, name, len, want),
        None => Ok(()),
    }
}

/// `eps` must be finite and non-negative.
pub(crate) fn check_eps(op: &'static str, eps: f32) -> Result<(), KernelError> {
    if eps.is_finite() && eps >= 0.0 {
        Ok(())
    } else {
        Err(KernelError::invalid(
            op,
            format!("eps must be finite and >= 0, got {eps}"),
        ))
    }
}

/// Product of extents, or an error naming the op if it overflows.
pub(crate) fn checked_len(
    op: &'static str,
    shape: &dyn Fn() -> String,
    dims: &[usize],
) -> Result<usize, KernelError> {
    dims.iter()
        .try_fold(1usize, |a, &b| a.checked_mul(b))
        .ok_or_else(|| KernelError::invalid(op, format!("{}: size overflows", shape())))
}

/// `(sum v, sum v^2 about `centre`)` with eight partial sums (auto-vectorised, fixed order).
#[inline]
pub(crate) fn sum_and_sq(v: &[f32], centre: f32) -> (f32, f32) {
    let mut s = [0.0f32; 8];
    let mut q = [0.0f32; 8];
    let chunks = v.chunks_exact(8);
    let rem = chunks.remainder();
    for c in chunks {
        for i in 0..8 {
            let d = c[i] - centre;
            s[i] += c[i];
            q[i] += d * d;
        }
    }
    let (mut s0, mut q0) = (fold8(&s), fold8(&q));
    for &r in rem {
        s0 += r;
        q0 += (r - centre) * (r - centre);
    }
    (s0, q0)
}

/// `(sum a, sum a * b)` with eight partial sums.
#[inline]
pub(crate) fn sum_and_dot(a: &[f32], b: &[f32]) -> (f32, f32) {
    let mut s = [0.0f32; 8];
    let mut d = [0.0f32; 8];
    let n = a.len().min(b.len());
    let (a, b) = (&a[..n], &b[..n]);
    let ca = a.chunks_exact(8);
    let cb = b.chunks_exact(8);
    let (ra, rb) = (ca.remainder(), cb.remainder());
    for (x, y) in ca.zip(cb) {
        for i in 0..8 {
            s[i] += x[i];
            d[i] += x[i] * y[i];
        }
    }
    let (mut s0, mut d0) = (fold8(&s), fold8(&d));
    for (x, y) in ra.iter().zip(rb) {
        s0 += x;
        d0 += x * y;
    }
    (s0, d0)
}

#[inline]
fn fold8(v: &[f32; 8]) -> f32 {
    ((v[0] + v[4]) + (v[1] + v[5])) + ((v[2] + v[6]) + (v[3] + v[7]))
}
