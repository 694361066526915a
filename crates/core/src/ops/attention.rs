//! The fused multi-head self-attention core (Vaswani et al., 2017, eq. 1; timm's `Attention`):
//! from the packed qkv projection `[n, L, 3 h d]` straight to the merged heads `[n, L, h d]`,
//! `softmax(scale Q K^T) V` per (image, head), on `tessera_kernels::attention`.
//!
//! One op replaces the composed chain (reshape, permute, select, mul_scalar, matmul, softmax,
//! matmul, transpose, reshape) and its backward (two matmuls per product, the softmax backward,
//! the scaled copy, and the padded narrow/cat gradients of the q, k, v slices): Q, K, V are read
//! in place from the qkv buffer, the output is written with the heads already merged, and the
//! backward writes one `[n, L, 3 h d]` gradient directly. Saved: the (contiguous) qkv input and
//! the probabilities `[n, h, L, L]`. Profiled as one record `multi_head_attention` (and
//! `multi_head_attention.backward`).

use tessera_kernels::attention::{self as kernel, AttentionShape};

use crate::autograd::needs_grad;
use crate::error::{fmt_shape, Result, TensorError};
use crate::profile::{self, f32_bytes, Cost, OpInfo};
use crate::tensor::Tensor;

const OP: &str = "multi_head_attention";

fn kernel_err(e: tessera_kernels::KernelError) -> TensorError {
    TensorError::Kernel(e)
}

/// The attention sizes of a qkv tensor `[n, L, 3 h d]`, or a shape error naming the op.
fn attention_shape(qkv: &Tensor, heads: usize) -> Result<AttentionShape> {
    let s = qkv.shape();
    if heads == 0 {
        return Err(TensorError::shape(
            OP,
            format!("heads must be at least 1 (qkv {})", fmt_shape(s)),
        ));
    }
    if s.len() != 3 || !s[2].is_multiple_of(3 * heads) {
        return Err(TensorError::shape(
            OP,
            format!(
                "qkv must be [n, tokens, 3 * heads * head_dim] with heads = {heads}, got {}",
                fmt_shape(s)
            ),
        ));
    }
    Ok(AttentionShape::new(s[0], s[1], heads, s[2] / (3 * heads)))
}

/// Per score: the scaled product's multiply-adds are counted as MACs; the softmax costs about
/// 5 FLOPs per score (max, subtract, exp, sum, scale).
fn forward_cost(s: &AttentionShape) -> Cost {
    let macs = s.forward_macs();
    let scores = s.probs_len().unwrap_or(0);
    Cost {
        flops: 2 * macs + 5 * scores as u64,
        macs,
        bytes_read: f32_bytes(s.qkv_len().unwrap_or(0)),
        bytes_written: f32_bytes(s.out_len().unwrap_or(0) + scores),
    }
}

/// The backward: four products (twice the forward's MACs) and the softmax backward (4 FLOPs
/// per score); reads qkv, the probabilities and the output gradient, writes the qkv gradient.
fn backward_cost(s: &AttentionShape) -> Cost {
    let macs = 2 * s.forward_macs();
    let scores = s.probs_len().unwrap_or(0);
    let qkv = s.qkv_len().unwrap_or(0);
    Cost {
        flops: 2 * macs + 4 * scores as u64,
        macs,
        bytes_read: f32_bytes(qkv + scores + s.out_len().unwrap_or(0)),
        bytes_written: f32_bytes(qkv),
    }
}

fn attention_impl(qkv: &Tensor, heads: usize, scale: f32) -> Result<(Tensor, Tensor)> {
    let s = attention_shape(qkv, heads)?;
    let frame = profile::begin();
    let x = qkv.contiguous().detach();
    let (out_len, probs_len) = match (s.out_len(), s.probs_len()) {
        (Some(o), Some(p)) => (o, p),
        _ => {
            return Err(TensorError::shape(
                OP,
                format!("qkv {}: the output size overflows", fmt_shape(qkv.shape())),
            ))
        }
    };
    // The kernel writes every element of both (GEMM with beta = 0, softmax rows).
    let mut out = crate::pool::for_overwrite(out_len);
    let mut probs = crate::pool::for_overwrite(probs_len);
    kernel::attention_forward(s, scale, &x.data(), &mut out, &mut probs).map_err(kernel_err)?;
    profile::add_macs(s.forward_macs() as usize);
    let y = Tensor::from_contig(out, &[s.batch, s.tokens, s.dim()]);
    let p = Tensor::from_contig(probs, &[s.batch, s.heads, s.tokens, s.tokens]);
    if let Some(fr) = frame {
        fr.end_op(&y, || OpInfo {
            op: OP.into(),
            inputs: vec![qkv.shape().to_vec()],
            output: y.shape().to_vec(),
            cost: forward_cost(&s),
        });
    }
    if !needs_grad(&[qkv]) {
        return Ok((y, p));
    }
    let saved_p = p.clone();
    let y = y.record(OP, &[qkv], move |g| {
        let g = g.contiguous();
        let mut dqkv = crate::pool::for_overwrite(x.numel());
        kernel::attention_backward(s, scale, &x.data(), &saved_p.data(), &g.data(), &mut dqkv)
            .map_err(kernel_err)?;
        profile::add_macs(2 * s.forward_macs() as usize);
        profile::add_cost(|| backward_cost(&s));
        Ok(vec![Some(Tensor::from_contig(dqkv, x.shape()))])
    });
    Ok((y, p))
}

impl Tensor {
    /// Multi-head self-attention core on a packed qkv projection: `self` is `[n, L, 3 h d]`
    /// (timm's `qkv` Linear output: q heads, then k heads, then v heads along the last dim);
    /// returns `softmax(scale Q K^T) V` per (image, head) as `[n, L, h d]` with the heads
    /// merged token-major (what the `proj` Linear takes). Differentiable in `self`.
    ///
    /// Errors: `self` not rank 3, `heads == 0`, or a last dim not a multiple of `3 * heads`.
    pub fn multi_head_attention(&self, heads: usize, scale: f32) -> Result<Tensor> {
        Ok(attention_impl(self, heads, scale)?.0)
    }

    /// [`multi_head_attention`](Self::multi_head_attention) that also returns the attention
    /// probabilities `[n, h, L, L]` (each row sums to 1), the same buffer the backward uses,
    /// outside the graph (no gradient flows through them).
    pub fn multi_head_attention_with_probs(
        &self,
        heads: usize,
        scale: f32,
    ) -> Result<(Tensor, Tensor)> {
        attention_impl(self, heads, scale)
    }
}
