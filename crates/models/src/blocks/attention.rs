//! Multi-head self-attention as timm's `timm.layers.Attention` (Vaswani et al., "Attention Is
//! All You Need", 2017, eq. 1 and section 3.2.2; used by ViT, Dosovitskiy et al., 2021, eq. 5-7).
//!
//! For `x` `[n, L, D]` with `h` heads of width `d = D / h`:
//!
//! ```text
//! qkv = x W_qkv^T + b_qkv                            one GEMM, [n, L, 3D]          (attn.qkv)
//! o   = softmax(d^-1/2 Q K^T) V per (image, head)    Tensor::multi_head_attention, [n, L, D]
//! y   = o W_proj^T + b_proj                                                        (attn.proj)
//! ```
//!
//! The attention core is one fused op (`tessera_core::ops::attention`, see
//! `docs/attention.md`): it reads Q, K and V in place from the qkv output, writes the output
//! with the heads already merged (no head split or merge copies, no scaled copy of `q`), and
//! its backward writes the qkv gradient in one buffer. The attention probabilities
//! `[n, h, L, L]` are computed (and saved for the backward) anyway, so handing them out
//! ([`Attention::forward_with_probs`], the same op) costs one reference count; the plain
//! [`Module::forward`] drops them unless the backward needs them.
//!
//! timm's `q_norm`, `k_norm` and `norm` are `Identity` and its dropouts have rate 0 in ViT
//! (no weights), so they are omitted.

use crate::blocks::mlp::LinearInit;
use crate::error::{ModelError, Result};
use crate::layers::Linear;
use crate::module::{in_child, Module};
use crate::module_children;
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
    /// to 1: row `i` is how much token `i` attends to every token). The same fused op as
    /// [`Module::forward`], so the output is bit-identical to it; the probabilities are
    /// outside the graph.
    pub fn forward_with_probs(&self, x: &Tensor) -> Result<(Tensor, Tensor)> {
        let qkv = self.qkv_of(x)?;
        let (o, probs) = qkv.multi_head_attention_with_probs(self.num_heads, self.scale())?;
        Ok((in_child("proj", || self.proj.forward(&o))?, probs))
    }

    /// The qkv projection `[n, L, 3D]`, after checking that `x` is `[n, L, D]`.
    fn qkv_of(&self, x: &Tensor) -> Result<Tensor> {
        let dim = self.num_heads * self.head_dim;
        let s = x.shape();
        if s.len() != 3 || s[2] != dim {
            return Err(TensorError::shape(
                "attention",
                format!("expected input [n, tokens, {dim}], got {s:?}"),
            )
            .into());
        }
        in_child("qkv", || self.qkv.forward(x))
    }
}

impl Module for Attention {
    /// The plain forward: the attention probabilities are released after the op unless its
    /// backward keeps them.
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let o = self
            .qkv_of(x)?
            .multi_head_attention(self.num_heads, self.scale())?;
        in_child("proj", || self.proj.forward(&o))
    }

    module_children!("qkv" => qkv, "proj" => proj);
}
