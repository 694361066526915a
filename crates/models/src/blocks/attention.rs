//! Multi-head self-attention as timm's `timm.layers.Attention` (Vaswani et al., "Attention Is
//! All You Need", 2017, eq. 1 and section 3.2.2; used by ViT, Dosovitskiy et al., 2021, eq. 5-7).
//!
//! For `x` `[n, L, D]` with `h` heads of width `d = D / h`:
//!
//! ```text
//! qkv   = x W_qkv^T + b_qkv                         one GEMM, [n, L, 3D]       (attn.qkv)
//! q,k,v = qkv.reshape(n, L, 3, h, d).permute(2, 0, 3, 1, 4)    three views [n, h, L, d]
//! a     = softmax((q * d^-1/2) k^T, last dim)       batched GEMM on a transposed view of k
//! o     = a v                                        batched GEMM on a strided view of v
//! y     = o.transpose(1, 2).reshape(n, L, D) W_proj^T + b_proj                   (attn.proj)
//! ```
//!
//! Copies beyond the GEMM outputs: `q * d^-1/2` (one `[n, h, L, d]` pass, cheaper than scaling
//! the `[n, h, L, L]` scores) and the head merge before `proj` (the batched GEMM writes
//! `[n, h, L, d]`; `proj` needs `[n, L, h d]`). `k` and `v` are read in place from the qkv
//! output through their strides. The attention probabilities `a` are a tensor of the forward
//! anyway, so handing them out ([`Attention::forward_with_probs`]) costs one reference count;
//! the plain [`Module::forward`] releases them (and the scores) right after `a v`.
//!
//! timm's `q_norm`, `k_norm` and `norm` are `Identity` and its dropouts have rate 0 in ViT
//! (no weights), so they are omitted.

use crate::blocks::mlp::LinearInit;
use crate::error::{ModelError, Result};
use crate::layers::Linear;
use crate::module::{child, Mode, Module, TensorKind};
use tessera_core::{Rng, Tensor, TensorError};

/// Multi-head self-attention with a fused qkv projection.
pub struct Attention {
    /// `D -> 3D` (q, k, v stacked in that order along the output).
    pub qkv: Linear,
    /// `D -> D`, applied to the merged heads.
    pub proj: Linear,
    num_heads: usize,
    head_dim: usize,
}

impl Attention {
    /// `num_heads` heads over width `dim`; `qkv_bias` as timm's flag (true in ViT). Errors on
    /// zero sizes or a width not divisible by the number of heads.
    pub fn new(
        dim: usize,
        num_heads: usize,
        qkv_bias: bool,
        init: LinearInit,
        rng: &mut Rng,
    ) -> Result<Self> {
        if dim == 0 || num_heads == 0 {
            return Err(ModelError::config(format!(
                "attention: embed_dim {dim} and num_heads {num_heads} must be positive"
            )));
        }
        if !dim.is_multiple_of(num_heads) {
            return Err(ModelError::config(format!(
                "attention: embed_dim {dim} is not divisible by num_heads {num_heads}"
            )));
        }
        Ok(Attention {
            qkv: init.linear(dim, 3 * dim, qkv_bias, rng),
            proj: init.linear(dim, dim, true, rng),
            num_heads,
            head_dim: dim / num_heads,
        })
    }

    /// Number of heads.
    pub fn num_heads(&self) -> usize {
        self.num_heads
    }

    /// Width of one head (`D / heads`).
    pub fn head_dim(&self) -> usize {
        self.head_dim
    }

    /// The scale of the scores, `head_dim^-1/2`.
    pub fn scale(&self) -> f32 {
        1.0 / (self.head_dim as f32).sqrt()
    }

    /// The output `[n, L, D]` and the attention probabilities `[n, heads, L, L]` (each row sums
    /// to 1: row `i` is how much token `i` attends to every token).
    pub fn forward_with_probs(&self, x: &Tensor) -> Result<(Tensor, Tensor)> {
        let (probs, v) = self.probs_and_values(x)?;
        let o = probs.matmul(&v)?; // [n, h, L, d]
        Ok((self.project(&o)?, probs))
    }

    /// The attention probabilities `[n, h, L, L]` and the values `[n, h, L, d]` (a strided view
    /// of the qkv output). The scores are a temporary, released once the softmax has read them.
    fn probs_and_values(&self, x: &Tensor) -> Result<(Tensor, Tensor)> {
        let dim = self.num_heads * self.head_dim;
        let s = x.shape();
        if s.len() != 3 || s[2] != dim {
            return Err(TensorError::shape(
                "attention",
                format!("expected input [n, tokens, {dim}], got {s:?}"),
            )
            .into());
        }
        let (n, l, h, d) = (s[0], s[1], self.num_heads, self.head_dim);
        let qkv = self
            .qkv
            .forward(x)?
            .reshape(&[n, l, 3, h, d])?
            .permute(&[2, 0, 3, 1, 4])?; // [3, n, h, L, d], a view
        let q = qkv.select(0, 0)?.mul_scalar(self.scale());
        let k = qkv.select(0, 1)?;
        let v = qkv.select(0, 2)?;
        let probs = q.matmul(&k.transpose(2, 3)?)?.softmax(3)?; // [n, h, L, L]
        Ok((probs, v))
    }

    /// Merges the heads of `o` `[n, h, L, d]` and applies `proj`.
    fn project(&self, o: &Tensor) -> Result<Tensor> {
        let s = o.shape();
        let merged = o.transpose(1, 2)?.reshape(&[s[0], s[2], s[1] * s[3]])?;
        self.proj.forward(&merged)
    }
}

impl Module for Attention {
    /// The plain forward: the probabilities are released right after `a v`, so no
    /// `[n, h, L, L]` tensor is held across the output projection.
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let (probs, v) = self.probs_and_values(x)?;
        let o = probs.matmul(&v)?;
        drop(probs);
        self.project(&o)
    }

    fn visit(&self, prefix: &str, f: &mut dyn FnMut(&str, &Tensor, TensorKind)) {
        self.qkv.visit(&child(prefix, "qkv"), f);
        self.proj.visit(&child(prefix, "proj"), f);
    }

    fn visit_mut(&mut self, prefix: &str, f: &mut dyn FnMut(&str, &mut Tensor, TensorKind)) {
        self.qkv.visit_mut(&child(prefix, "qkv"), f);
        self.proj.visit_mut(&child(prefix, "proj"), f);
    }

    fn set_mode(&mut self, _mode: Mode) {}
}
