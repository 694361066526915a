//! The plan of a Vision Transformer (pre-norm blocks, class token, token pooling):
//!
//! ```text
//! patches [n, N, c p p]  --GEMM (+ bias)-->  t[:, 1:]      t[:, 0] = cls; t += pos
//! per block:  ln = LN1(t);  qkv = ln Wqkv^T + b           [n, L, 3D]  (the kernel's layout)
//!             o  = attention(qkv)                          [n, L, D]   (heads merged)
//!             t  = o Wproj^T + t + b                       (residual as GEMM beta = 1)
//!             ln = LN2(t);  h = gelu(ln Wfc1^T + b);  t = h Wfc2^T + t + b
//! logits = head(LN(t[:, 0]))                               (only the class rows normalised)
//! ```

use super::arena::Buf;
use super::builder::{pack_transposed, PlanBuilder};
use super::reference::{f64s, RefOp, RefStep};
use super::steps::{RowLayout, Step};
use super::Plan;
use crate::archs::vit::{VisionTransformer, LN_EPS};
use crate::error::{ModelError, Result};
use crate::layers::LayerNorm;
use tessera_core::kernels::attention::AttentionShape;
use tessera_core::kernels::Activation;

fn layer_norm(b: &mut PlanBuilder, x: Buf, rows: usize, ln: &LayerNorm) -> Result<Buf> {
    let d = ln.weight.shape()[0];
    let y = b.buffer(&[rows, d])?;
    let mean = b.buffer(&[rows])?;
    let rstd = b.buffer(&[rows])?;
    let step = Step::LayerNorm {
        x,
        y,
        rows,
        d,
        gamma: ln.weight.data().into_owned(),
        beta: ln.bias.data().into_owned(),
        eps: ln.eps,
        mean,
        rstd,
    };
    b.step(step, || RefOp::layer_norm(ln, rows, x, y));
    Ok(y)
}

/// Builds the plan of `vit` for `n` images (with its float64 reference when `reference`).
pub(crate) fn plan_vit(
    vit: &VisionTransformer,
    shape: [usize; 4],
    reference: bool,
) -> Result<Plan> {
    let cfg = vit.config();
    let [n, c, h, w] = shape;
    if n == 0 || c != cfg.in_chans || h != cfg.img_size || w != cfg.img_size {
        return Err(ModelError::config(format!(
            "plan: {} takes [n >= 1, {}, {2}, {2}], got {shape:?}",
            "ViT", cfg.in_chans, cfg.img_size
        )));
    }
    let _ = LN_EPS;
    let (mut b, x) = if reference {
        PlanBuilder::new_reference(shape)?
    } else {
        PlanBuilder::new(shape)?
    };
    let (p, g, d) = (cfg.patch_size, cfg.img_size / cfg.patch_size, cfg.embed_dim);
    let (np, l) = (g * g, g * g + 1);
    let rows = n * l;
    // Patch embedding straight into token rows 1.. of each image.
    let patches = b.buffer(&[n, np, c * p * p])?;
    let (xb, cpp) = (x.buf, c * p * p);
    b.step(
        Step::Patchify {
            x: xb,
            y: patches,
            n,
            c,
            g,
            p,
        },
        || RefStep {
            shape: vec![n, np, cpp],
            op: RefOp::Patchify {
                x: xb,
                y: patches,
                n,
                c,
                g,
                p,
            },
        },
    );
    let t = b.buffer(&[n, l, d])?;
    let pw = vit.patch_embed.proj.weight.data();
    let pb = vit
        .patch_embed
        .proj
        .bias
        .as_ref()
        .map(|t| t.data().into_owned());
    let layout = RowLayout {
        off: d,
        seg: np,
        seg_stride: l * d,
    };
    let step = Step::Linear {
        w: pack_transposed(&pw, d, cpp)?,
        bias: pb.clone(),
        act: Activation::Identity,
        rows: n * np,
        x: patches,
        y: t,
        y_layout: layout,
        accumulate: false,
        threads: 0,
    };
    b.step(step, || {
        let id = Activation::Identity;
        let mut r = RefStep::linear(
            &pw,
            cpp,
            d,
            pb.as_deref(),
            id,
            n * np,
            patches,
            t,
            layout,
            false,
        );
        r.shape = vec![n, l, d];
        r
    });
    let (cls_t, pos_t) = (vit.cls_token.data(), vit.pos_embed.data());
    let step = Step::ClassAndPosition {
        t,
        n,
        tokens: l,
        cls: cls_t.to_vec(),
        pos: pos_t.to_vec(),
    };
    b.step(step, || RefStep {
        shape: vec![n, l, d],
        op: RefOp::ClassAndPosition {
            t,
            n,
            tokens: l,
            cls: f64s(&cls_t),
            pos: f64s(&pos_t),
        },
    });
    let heads = cfg.num_heads;
    let shape_a = AttentionShape {
        batch: n,
        tokens: l,
        heads,
        head_dim: d / heads,
    };
    for blk in &vit.blocks {
        let ln = layer_norm(&mut b, t, rows, &blk.norm1)?;
        let qkv = b.linear(ln, rows, &blk.attn.qkv, Activation::Identity, None)?;
        let out = b.buffer(&[rows, d])?;
        let probs = b.buffer(&[n, heads, l, l])?;
        let step = Step::Attention {
            shape: shape_a,
            scale: blk.attn.scale(),
            qkv,
            out,
            probs,
        };
        b.step(step, || RefStep {
            shape: vec![n, l, d],
            op: RefOp::Attention {
                n,
                tokens: l,
                heads,
                d: d / heads,
                qkv,
                out,
            },
        });
        b.linear(out, rows, &blk.attn.proj, Activation::Identity, Some(t))?;
        let ln = layer_norm(&mut b, t, rows, &blk.norm2)?;
        let hid = b.linear(ln, rows, &blk.mlp.fc1, blk.mlp.act, None)?;
        b.linear(hid, rows, &blk.mlp.fc2, Activation::Identity, Some(t))?;
    }
    let cls = b.buffer(&[n, d])?;
    let class_rows = Step::ClassRows {
        x: t,
        y: cls,
        n,
        tokens: l,
        d,
    };
    b.step(class_rows, || RefStep {
        shape: vec![n, d],
        op: RefOp::ClassRows {
            x: t,
            y: cls,
            n,
            tokens: l,
            d,
        },
    });
    let pooled = layer_norm(&mut b, cls, n, &vit.norm)?;
    match &vit.head {
        Some(head) => {
            let y = b.linear(pooled, n, head, Activation::Identity, None)?;
            b.finish(y, vec![n, head.out_features()])
        }
        None => b.finish(pooled, vec![n, d]),
    }
}
