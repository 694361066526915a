//! Attention maps of a Vision Transformer: the class token's attention over the patch grid, per
//! layer and head, and **attention rollout** (Abnar & Zuidema, "Quantifying Attention Flow in
//! Transformers", ACL 2020, section 3).
//!
//! The input is what [`VisionTransformer::forward_with_attention`] (or `capture_attention` +
//! [`VisionTransformer::take_attention`]) returns: one tensor `[n, heads, L, L]` per block, `L =
//! N + 1` tokens (token 0 is the class token), each row a probability distribution.
//!
//! Rollout, as in the paper and its reference code (`samiraabnar/attention_flow`):
//!
//! ```text
//! A_l      = mean over heads of layer l's attention      (or one head: Heads::One(h))
//! Â_l      = (1 - α) A_l + α I                           α = 0.5 in the paper (ROLLOUT_RESIDUAL)
//! Â_l      = Â_l / rowsum(Â_l)                            a no-op for softmax rows; kept as the paper
//! R        = Â_{K-1} · ... · Â_1 · Â_0                    [n, L, L]
//! ```
//!
//! The identity term stands for the residual connection around each attention (the token's own
//! value passes through unchanged); `α = 0.5` weighs it as much as the attention, the paper's
//! choice. Row 0 of `R` is how much each input token contributes to the class token at the last
//! layer; [`cls_to_patches`] drops its column 0 (the class token's own input slot) and folds the
//! rest into the `[grid_h, grid_w]` patch grid. Heads are combined by the mean, the paper's
//! choice (some implementations use the max or drop the lowest values: not done here). Every
//! function keeps the batch dimension: image `i` of the batch is row `i` of every result.
//!
//! [`VisionTransformer::forward_with_attention`]: crate::archs::vit::VisionTransformer::forward_with_attention
//! [`VisionTransformer::take_attention`]: crate::archs::vit::VisionTransformer::take_attention

use crate::archs::vit::VisionTransformer;
use crate::error::Result;
use tessera_core::{no_grad, Tensor, TensorError};

/// The weight of the identity (the residual connection) in rollout, `Â = 0.5 A + 0.5 I`, as in
/// Abnar & Zuidema (2020).
pub const ROLLOUT_RESIDUAL: f32 = 0.5;

/// Which heads a map shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Heads {
    /// The mean over all heads.
    Mean,
    /// One head (0-based).
    One(usize),
}

/// Checks that `attn` is `[n, heads, L, L]` with `n, heads, L >= 1`; returns its shape.
fn check_map(op: &'static str, what: &str, attn: &Tensor) -> Result<[usize; 4]> {
    let s = attn.shape();
    if s.len() != 4 || s[2] != s[3] || s.contains(&0) {
        return Err(TensorError::shape(
            op,
            format!("{what}: expected attention probabilities [n, heads, L, L] (all sizes >= 1), got {s:?}"),
        )
        .into());
    }
    Ok([s[0], s[1], s[2], s[3]])
}

/// One `[n, L, L]` map from `attn` `[n, heads, L, L]`: the mean over heads or one head. Errors
/// on another shape or a head out of range (naming the valid range).
pub fn combine_heads(attn: &Tensor, heads: Heads) -> Result<Tensor> {
    combine(attn, heads, "combine_heads", "attention")
}

fn combine(attn: &Tensor, heads: Heads, op: &'static str, what: &str) -> Result<Tensor> {
    let [_, h, _, _] = check_map(op, what, attn)?;
    let _g = no_grad();
    match heads {
        Heads::Mean => Ok(attn.mean(&[1], false)?),
        Heads::One(i) if i < h => Ok(attn.select(1, i)?.contiguous()),
        Heads::One(i) => Err(TensorError::arg(
            op,
            format!(
                "{what}: head {i} is out of range: the maps have {h} heads (0..={})",
                h - 1
            ),
        )
        .into()),
    }
}

/// Attention rollout of the layers `maps` (in forward order, each `[n, heads, L, L]`):
/// `R = Â_{K-1} ... Â_0` with `Â_l = rownorm((1 - residual) A_l + residual I)` and `A_l` the
/// heads of layer `l` combined by `heads` (see the module docs). Returns `[n, L, L]`.
///
/// Errors: no layers, maps of different shapes or not `[n, heads, L, L]`, a head out of range,
/// `residual` outside `[0, 1]`, negative or non-finite probabilities, or a row that sums to 0.
pub fn attention_rollout(maps: &[Tensor], heads: Heads, residual: f32) -> Result<Tensor> {
    const OP: &str = "attention_rollout";
    let first = maps
        .first()
        .ok_or_else(|| TensorError::arg(OP, "no attention maps (a ViT has at least one block)"))?;
    let shape = check_map(OP, "layer 0", first)?;
    if !(0.0..=1.0).contains(&residual) {
        return Err(TensorError::arg(
            OP,
            format!("the residual weight must be in [0, 1], got {residual}"),
        )
        .into());
    }
    let l = shape[2];
    let _g = no_grad();
    let mut eye = vec![0.0f32; l * l];
    eye.iter_mut().step_by(l + 1).for_each(|v| *v = residual);
    let eye = Tensor::from_vec(eye, &[1, l, l])?;
    // Â_i = rownorm((1 - residual) A_i + residual I) for layer i.
    let augmented = |i: usize, m: &Tensor| -> Result<Tensor> {
        let what = format!("layer {i}");
        let s = check_map(OP, &what, m)?;
        if s != shape {
            return Err(TensorError::shape(
                OP,
                format!("{what} has shape {s:?}, layer 0 {shape:?}: the maps must come from one forward"),
            )
            .into());
        }
        let a = combine(m, heads, OP, &what)?;
        if a.to_vec().iter().any(|v| !(v.is_finite() && *v >= 0.0)) {
            return Err(TensorError::arg(
                OP,
                format!("{what}: the attention has negative or non-finite entries"),
            )
            .into());
        }
        let aug = a.mul_scalar(1.0 - residual).add(&eye)?;
        let sums = aug.sum(&[2], true)?;
        if sums.to_vec().iter().any(|&v| v <= 0.0) {
            return Err(TensorError::arg(
                OP,
                format!("{what}: a row sums to 0 (with residual weight {residual})"),
            )
            .into());
        }
        Ok(aug.div(&sums)?)
    };
    let mut rollout = augmented(0, first)?;
    for (i, m) in maps.iter().enumerate().skip(1) {
        rollout = augmented(i, m)?.matmul(&rollout)?;
    }
    Ok(rollout)
}

/// The class token's row of `m` (`[n, L, L]`, e.g. one layer's [`combine_heads`] or the
/// [`attention_rollout`]) without its own column, folded into the patch grid: `[n, grid_h,
/// grid_w]`, patch `(r, c)` at token `1 + r * grid_w + c` (timm's `flatten(2)` order). Errors
/// unless `L = 1 + grid_h * grid_w`.
pub fn cls_to_patches(m: &Tensor, grid: [usize; 2]) -> Result<Tensor> {
    const OP: &str = "cls_to_patches";
    let s = m.shape();
    let [gh, gw] = grid;
    if s.len() != 3 || s[1] != s[2] || s[0] == 0 || s[1] != 1 + gh * gw {
        return Err(TensorError::shape(
            OP,
            format!(
                "expected a token map [n, L, L] with L = 1 + {gh} * {gw} = {} (class token + patch grid), got {s:?}",
                1 + gh * gw
            ),
        )
        .into());
    }
    let _g = no_grad();
    let row = m.select(1, 0)?.narrow(1, 1, gh * gw)?; // [n, N]
    Ok(row.contiguous().reshape(&[s[0], gh, gw])?)
}

/// The patch grid `[grid_h, grid_w]` of a ViT (`img_size / patch_size` both ways).
pub fn patch_grid(vit: &VisionTransformer) -> [usize; 2] {
    let c = vit.config();
    let g = c.img_size / c.patch_size;
    [g, g]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::archs::vit::create_vit;
    use crate::error::ModelError;
    use crate::zoo::Overrides;

    /// A row-stochastic `[n, h, L, L]` map from random logits.
    fn random_map(n: usize, h: usize, l: usize, seed: u64) -> Tensor {
        Tensor::randn(&[n, h, l, l], seed).softmax(3).unwrap()
    }

    fn close(a: &[f32], b: &[f32], tol: f32) -> bool {
        a.len() == b.len() && a.iter().zip(b).all(|(x, y)| (x - y).abs() <= tol)
    }

    fn row_sums(t: &Tensor) -> Vec<f32> {
        let l = *t.shape().last().unwrap();
        t.contiguous()
            .to_vec()
            .chunks(l)
            .map(|r| r.iter().sum())
            .collect()
    }

    #[test]
    fn combine_heads_means_or_selects() {
        let a = random_map(2, 3, 5, 1);
        let mean = combine_heads(&a, Heads::Mean).unwrap();
        assert_eq!(mean.shape(), [2, 5, 5]);
        let v = a.to_vec();
        let m = mean.to_vec();
        for b in 0..2 {
            for ij in 0..25 {
                let want: f32 = (0..3).map(|h| v[(b * 3 + h) * 25 + ij]).sum::<f32>() / 3.0;
                assert!((m[b * 25 + ij] - want).abs() < 1e-6);
            }
        }
        let one = combine_heads(&a, Heads::One(2)).unwrap();
        assert_eq!(one.to_vec()[..25], v[2 * 25..3 * 25]);
        assert!(row_sums(&mean).iter().all(|s| (s - 1.0).abs() < 1e-5));
        let e = combine_heads(&a, Heads::One(3)).unwrap_err().to_string();
        assert!(e.contains("head 3") && e.contains("0..=2"), "{e}");
        let e = combine_heads(&Tensor::zeros(&[2, 5, 5]), Heads::Mean).unwrap_err();
        assert!(e.to_string().contains("[2, 5, 5]"), "{e}");
    }

    #[test]
    fn rollout_of_identity_attention_is_identity() {
        let l = 4;
        let mut eye = vec![0.0; 2 * l * l];
        for h in 0..2 {
            for i in 0..l {
                eye[h * l * l + i * l + i] = 1.0;
            }
        }
        let a = Tensor::from_vec(eye, &[1, 2, l, l]).unwrap();
        for heads in [Heads::Mean, Heads::One(1)] {
            for res in [0.0, 0.5, 1.0] {
                let r = attention_rollout(&[a.clone(), a.clone(), a.clone()], heads, res).unwrap();
                assert_eq!(r.shape(), [1, l, l]);
                let want: Vec<f32> = (0..l * l)
                    .map(|k| if k % (l + 1) == 0 { 1.0 } else { 0.0 })
                    .collect();
                assert_eq!(r.to_vec(), want);
            }
        }
    }

    #[test]
    fn rollout_matches_a_hand_computed_two_layer_example() {
        // Two tokens, one head. A0 = [[.5 .5] [.2 .8]], A1 = [[.9 .1] [.4 .6]].
        // Â0 = .5 A0 + .5 I = [[.75 .25] [.1 .9]]; Â1 = [[.95 .05] [.2 .8]].
        // R = Â1 Â0 = [[.95*.75 + .05*.1, .95*.25 + .05*.9], [.2*.75 + .8*.1, .2*.25 + .8*.9]]
        //           = [[.7175 .2825] [.23 .77]].
        let a0 = Tensor::from_vec(vec![0.5, 0.5, 0.2, 0.8], &[1, 1, 2, 2]).unwrap();
        let a1 = Tensor::from_vec(vec![0.9, 0.1, 0.4, 0.6], &[1, 1, 2, 2]).unwrap();
        let r = attention_rollout(&[a0.clone(), a1.clone()], Heads::Mean, 0.5).unwrap();
        assert!(
            close(&r.to_vec(), &[0.7175, 0.2825, 0.23, 0.77], 1e-6),
            "{:?}",
            r.to_vec()
        );
        // Order matters: the later layer multiplies from the left.
        let swapped = attention_rollout(&[a1, a0], Heads::Mean, 0.5).unwrap();
        assert!(!close(&swapped.to_vec(), &r.to_vec(), 1e-3));
    }

    #[test]
    fn rollout_rows_are_distributions_and_batches_are_independent() {
        let maps: Vec<Tensor> = (0..3).map(|i| random_map(3, 4, 6, 10 + i)).collect();
        for heads in [Heads::Mean, Heads::One(0), Heads::One(3)] {
            let r = attention_rollout(&maps, heads, ROLLOUT_RESIDUAL).unwrap();
            assert_eq!(r.shape(), [3, 6, 6]);
            assert!(r.to_vec().iter().all(|&p| p >= 0.0));
            assert!(row_sums(&r).iter().all(|s| (s - 1.0).abs() < 1e-5));
            // Image 1 of the batch on its own gives row 1 of the batched result.
            let one: Vec<Tensor> = maps.iter().map(|m| m.narrow(0, 1, 1).unwrap()).collect();
            let r1 = attention_rollout(&one, heads, ROLLOUT_RESIDUAL).unwrap();
            assert_eq!(
                r1.to_vec(),
                r.narrow(0, 1, 1).unwrap().contiguous().to_vec()
            );
        }
    }

    #[test]
    fn rollout_rejects_bad_input() {
        let a = random_map(1, 2, 5, 3);
        let err = |r: Result<Tensor>| r.unwrap_err().to_string();
        assert!(err(attention_rollout(&[], Heads::Mean, 0.5)).contains("no attention maps"));
        let e = err(attention_rollout(
            &[a.clone(), random_map(1, 2, 4, 1)],
            Heads::Mean,
            0.5,
        ));
        assert!(e.contains("layer 1") && e.contains("[1, 2, 4, 4]"), "{e}");
        let e = err(attention_rollout(
            std::slice::from_ref(&a),
            Heads::One(2),
            0.5,
        ));
        assert!(e.contains("head 2") && e.contains("0..=1"), "{e}");
        let e = err(attention_rollout(
            std::slice::from_ref(&a),
            Heads::Mean,
            1.5,
        ));
        assert!(e.contains("[0, 1]"), "{e}");
        let e = err(attention_rollout(&[a.mul_scalar(-1.0)], Heads::Mean, 0.5));
        assert!(e.contains("negative"), "{e}");
        let e = err(attention_rollout(
            &[Tensor::zeros(&[1, 2, 5, 5])],
            Heads::Mean,
            0.0,
        ));
        assert!(e.contains("sums to 0"), "{e}");
        let e = err(attention_rollout(
            &[Tensor::zeros(&[2, 5, 5])],
            Heads::Mean,
            0.5,
        ));
        assert!(e.contains("[n, heads, L, L]"), "{e}");
    }

    #[test]
    fn cls_row_folds_into_the_grid() {
        // L = 1 + 2 * 3: token 1 + r * 3 + c is patch (r, c); token 0 is dropped.
        let l = 7;
        let v: Vec<f32> = (0..2 * l * l).map(|i| i as f32).collect();
        let m = Tensor::from_vec(v, &[2, l, l]).unwrap();
        let g = cls_to_patches(&m, [2, 3]).unwrap();
        assert_eq!(g.shape(), [2, 2, 3]);
        let want: Vec<f32> = [1, 2, 3, 4, 5, 6]
            .iter()
            .map(|&j| j as f32)
            .chain([1, 2, 3, 4, 5, 6].iter().map(|&j| (l * l + j) as f32))
            .collect();
        assert_eq!(g.to_vec(), want);
        let e = cls_to_patches(&m, [3, 3]).unwrap_err().to_string();
        assert!(
            e.contains("L = 1 + 3 * 3 = 10") && e.contains("[2, 7, 7]"),
            "{e}"
        );
    }

    #[test]
    fn maps_of_a_vit_digits_forward() {
        let vit = create_vit("vit_digits", &Overrides::default(), 1).unwrap();
        let x = Tensor::randn(&[2, 1, 8, 8], 2);
        let (_, maps) = vit.forward_with_attention(&x).unwrap();
        assert_eq!(maps.len(), 4);
        assert!(maps.iter().all(|m| m.shape() == [2, 4, 17, 17]));
        let grid = patch_grid(&vit);
        assert_eq!(grid, [4, 4]);
        let r = attention_rollout(&maps, Heads::Mean, ROLLOUT_RESIDUAL).unwrap();
        let g = cls_to_patches(&r, grid).unwrap();
        assert_eq!(g.shape(), [2, 4, 4]);
        // The class token's rollout row sums to 1 over all 17 tokens, so the patches get < 1.
        for img in g.to_vec().chunks(16) {
            let s: f32 = img.iter().sum();
            assert!(s > 0.0 && s < 1.0, "{s}");
        }
        let layer = cls_to_patches(&combine_heads(&maps[3], Heads::One(1)).unwrap(), grid).unwrap();
        assert_eq!(layer.shape(), [2, 4, 4]);
    }

    #[test]
    fn non_vit_architectures_are_rejected_by_name() {
        let e = create_vit("mobilenetv2_100", &Overrides::default(), 0)
            .err()
            .expect("not a ViT");
        assert!(matches!(e, ModelError::Config(_)));
        assert!(e.to_string().contains("vit_digits"), "{e}");
    }
}
