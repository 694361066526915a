//! The fused multi-head attention op (`Tensor::multi_head_attention`) against the composed
//! ops it replaces (reshape, permute, select, mul_scalar, matmul, softmax, matmul, transpose,
//! reshape): forward, probabilities and the qkv gradient, over odd token counts (1, 5, 17,
//! 197) and several head counts and widths, contiguous or strided input; a finite-difference
//! gradient check; bit-identity for 1 and 2 threads; shape errors.
//!
//! Tolerance (normwise, `u = 2^-24`): the two computations round differently (the scale is
//! applied to q before the product in the composed chain, as the GEMM's alpha in the fused
//! op; the GEMMs may block differently), each within the f32 error of two chained dot
//! products of length `<= L + d` and a softmax, so `|fused - composed| <= 8 (2L + d + 8) u M`
//! with `M` the largest magnitude of the result (at least 1, the scale of the probabilities).

use proptest::prelude::*;
use tessera::core::{gradcheck, GradcheckOptions, Tensor};

const U: f64 = 1.0 / (1u64 << 24) as f64;

/// The composed chain of the pre-fusion `Attention`: `(out [n, L, h d], probs [n, h, L, L])`.
fn composed(qkv: &Tensor, h: usize, scale: f32) -> (Tensor, Tensor) {
    let s = qkv.shape().to_vec();
    let (n, l, d) = (s[0], s[1], s[2] / (3 * h));
    let t = qkv
        .reshape(&[n, l, 3, h, d])
        .unwrap()
        .permute(&[2, 0, 3, 1, 4])
        .unwrap();
    let q = t.select(0, 0).unwrap().mul_scalar(scale);
    let k = t.select(0, 1).unwrap();
    let v = t.select(0, 2).unwrap();
    let p = q
        .matmul(&k.transpose(2, 3).unwrap())
        .unwrap()
        .softmax(3)
        .unwrap();
    let o = p.matmul(&v).unwrap();
    let o = o.transpose(1, 2).unwrap().reshape(&[n, l, h * d]).unwrap();
    (o, p)
}

fn close(what: &str, got: &[f32], want: &[f32], l: usize, d: usize) {
    assert_eq!(got.len(), want.len(), "{what}: lengths");
    let mag = want.iter().fold(1.0f64, |m, &x| m.max(x.abs() as f64));
    let tol = 8.0 * (2 * l + d + 8) as f64 * U * mag;
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        assert!(
            ((g - w) as f64).abs() <= tol,
            "{what}[{i}]: fused {g:e}, composed {w:e} (tol {tol:e})"
        );
    }
}

/// A qkv leaf `[n, L, 3 h d]` with values in [-amp, amp); `strided` builds it as the transpose
/// of a `[n, 3 h d, L]` leaf (non-contiguous input).
fn qkv_leaf(n: usize, l: usize, c: usize, seed: u64, amp: f32, strided: bool) -> (Tensor, Tensor) {
    let (shape, tr) = if strided {
        (vec![n, c, l], true)
    } else {
        (vec![n, l, c], false)
    };
    let leaf = Tensor::rand_uniform(&shape, -amp, amp, seed).requires_grad_(true);
    let x = if tr {
        leaf.transpose(1, 2).unwrap()
    } else {
        leaf.clone()
    };
    (leaf, x)
}

/// Forward, probabilities and the qkv gradient of the fused op against the composed chain.
fn check(n: usize, l: usize, h: usize, d: usize, seed: u64, amp: f32, strided: bool) {
    let scale = 1.0 / (d as f32).sqrt();
    let c = 3 * h * d;
    let (leaf_a, xa) = qkv_leaf(n, l, c, seed, amp, strided);
    let (leaf_b, xb) = qkv_leaf(n, l, c, seed, amp, strided);
    let (fo, fp) = xa.multi_head_attention_with_probs(h, scale).unwrap();
    let (co, cp) = composed(&xb, h, scale);
    assert_eq!(fo.shape(), &[n, l, h * d]);
    assert_eq!(fp.shape(), &[n, h, l, l]);
    assert!(!fp.requires_grad());
    close("out", &fo.to_vec(), &co.to_vec(), l, d);
    close("probs", &fp.to_vec(), &cp.to_vec(), l, d);
    let w = Tensor::rand_uniform(&[n, l, h * d], -1.0, 1.0, seed ^ 0x77);
    fo.mul(&w).unwrap().sum_all().backward().unwrap();
    co.mul(&w).unwrap().sum_all().backward().unwrap();
    let (ga, gb) = (leaf_a.grad().unwrap(), leaf_b.grad().unwrap());
    assert_eq!(ga.shape(), leaf_a.shape());
    close("dqkv", &ga.to_vec(), &gb.to_vec(), l, d);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(40))]

    #[test]
    fn attention_op_matches_composed_ops(
        n in 1usize..3,
        l in prop::sample::select(vec![1usize, 2, 5, 9, 17]),
        h in 1usize..4,
        d in prop::sample::select(vec![1usize, 2, 4, 8, 16]),
        amp in prop::sample::select(vec![0.5f32, 1.0, 2.5]),
        strided in any::<bool>(),
        seed in any::<u64>(),
    ) {
        check(n, l, h, d, seed, amp, strided);
    }
}

#[test]
fn attention_op_matches_composed_ops_at_vit_tokens() {
    // 197 tokens (ViT-B/16 at 224^2), 3 heads of 64 (ViT-Ti), one image.
    check(1, 197, 3, 64, 11, 1.0, false);
    check(2, 197, 2, 16, 12, 2.0, true);
}

#[test]
fn attention_op_passes_a_finite_difference_check() {
    let x = Tensor::rand_uniform(&[2, 5, 3 * 2 * 3], -1.0, 1.0, 5).requires_grad_(true);
    let r = gradcheck(
        |t| t[0].multi_head_attention(2, 0.6),
        &[x],
        &GradcheckOptions::default(),
    )
    .unwrap();
    assert_eq!(r.checked, 2 * 5 * 18);
}

#[test]
fn attention_op_is_bit_identical_for_one_and_two_threads() {
    let run = |threads: usize| {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap();
        pool.install(|| {
            let x = Tensor::rand_uniform(&[2, 17, 3 * 4 * 8], -1.5, 1.5, 9).requires_grad_(true);
            let (y, p) = x.multi_head_attention_with_probs(4, 0.35).unwrap();
            let w = Tensor::rand_uniform(y.shape(), -1.0, 1.0, 10);
            y.mul(&w).unwrap().sum_all().backward().unwrap();
            let bits = |t: &Tensor| t.to_vec().iter().map(|v| v.to_bits()).collect::<Vec<_>>();
            (bits(&y), bits(&p), bits(&x.grad().unwrap()))
        })
    };
    assert_eq!(run(1), run(2));
}

#[test]
fn attention_op_without_probs_equals_with_probs() {
    let x = Tensor::rand_uniform(&[1, 7, 18], -1.0, 1.0, 3);
    let a = x.multi_head_attention(3, 0.5).unwrap();
    let (b, p) = x.multi_head_attention_with_probs(3, 0.5).unwrap();
    assert_eq!(a.to_vec(), b.to_vec());
    for row in p.to_vec().chunks(7) {
        let s: f32 = row.iter().sum();
        assert!((s - 1.0).abs() < 1e-5, "row sums to {s}");
    }
}

#[test]
fn attention_op_bad_shapes_are_errors() {
    let e = Tensor::zeros(&[4, 18])
        .multi_head_attention(2, 1.0)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("multi_head_attention") && e.contains("[4, 18]"),
        "{e}"
    );
    let e = Tensor::zeros(&[1, 4, 20])
        .multi_head_attention(2, 1.0)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("multi_head_attention") && e.contains("[1, 4, 20]") && e.contains("heads = 2"),
        "{e}"
    );
    let e = Tensor::zeros(&[1, 4, 18])
        .multi_head_attention(0, 1.0)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("multi_head_attention") && e.contains("heads must be at least 1"),
        "{e}"
    );
}

#[test]
fn attention_op_on_empty_batch_gives_empty_output() {
    let x = Tensor::zeros(&[0, 5, 12]).requires_grad_(true);
    let y = x.multi_head_attention(2, 1.0).unwrap();
    assert_eq!(y.shape(), &[0, 5, 4]);
    y.sum_all().backward().unwrap();
    assert_eq!(x.grad().unwrap().shape(), &[0, 5, 12]);
}
