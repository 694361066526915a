//! The fused attention core (`tessera_kernels::attention`) on every ISA path against the f64
//! oracle, forward (output and probabilities) and backward (the q, k and v gradients), over
//! odd token counts and several head counts and widths; bit-identity for 1 and 2 threads; and
//! the errors for bad slices.
//!
//! Error bound (normwise per output, `u = 2^-24`): each output is at most two chained f32
//! dot products of length `<= L + d` (GEMM accumulation, `k u` each) and a softmax
//! (`(L/2 + 8) u` relative); the backward adds the row sum of `dP P` (length `L`). With a
//! factor 4 for the chained products, `|got - want| <= 4 (2L + d + 8) u M`, where `M` is the
//! largest magnitude the computation passes through for that output: `max |want|` and, for the
//! gradients, the terms before cancellation (`max |dO| max |V| scale max|K|...`, bounded here
//! by the product of the input ranges).

use proptest::prelude::*;
use tessera_kernels::attention::{
    attention_backward_with, attention_forward_with, reference, AttentionShape,
};
use tessera_kernels::Isa;

mod common;

const U: f64 = 1.0 / (1u64 << 24) as f64;

fn data(n: usize, seed: u32, amp: f32) -> Vec<f32> {
    common::uniform(n, seed as u64, -amp, amp)
}

fn max_abs(v: &[f64]) -> f64 {
    v.iter().fold(0.0, |m, x| m.max(x.abs()))
}

/// Largest `|got - want|` over `got`, and where.
fn max_err(got: &[f32], want: &[f64]) -> (f64, usize) {
    assert_eq!(got.len(), want.len());
    got.iter()
        .zip(want)
        .enumerate()
        .map(|(i, (&g, &w))| ((g as f64 - w).abs(), i))
        .fold((0.0, 0), |a, b| if b.0 > a.0 { b } else { a })
}

fn bound(s: &AttentionShape, mag: f64) -> f64 {
    4.0 * (2 * s.tokens + s.head_dim + 8) as f64 * U * mag
}

fn run(isa: Isa, s: AttentionShape, scale: f32, seed: u32, amp: f32) {
    let qkv = data(s.qkv_len().unwrap(), seed, amp);
    let dout = data(s.out_len().unwrap(), seed ^ 0x5a5a, 1.0);
    let mut out = vec![f32::NAN; s.out_len().unwrap()];
    let mut probs = vec![f32::NAN; s.probs_len().unwrap()];
    attention_forward_with(isa, s, scale, &qkv, &mut out, &mut probs).unwrap();
    let (want_o, want_p) = reference::forward(&s, scale, &qkv);
    let (e, i) = max_err(&probs, &want_p);
    assert!(e <= bound(&s, 1.0), "{isa} {s:?} probs[{i}] off by {e:e}");
    let (e, i) = max_err(&out, &want_o);
    let tol = bound(&s, amp as f64);
    assert!(e <= tol, "{isa} {s:?} out[{i}] off by {e:e} > {tol:e}");

    let mut dqkv = vec![f32::NAN; qkv.len()];
    attention_backward_with(isa, s, scale, &qkv, &probs, &dout, &mut dqkv).unwrap();
    let want = reference::backward(&s, scale, &qkv, &dout);
    // The gradient terms before the softmax-backward cancellation: |dP| <= d amp, so
    // |dS| <= 2 d amp, |dQ|, |dK| <= scale L 2 d amp^2; |dV| <= L.
    let mag = max_abs(&want)
        .max((scale as f64) * 2.0 * (s.head_dim as f64) * (amp as f64).powi(2))
        .max(1.0);
    let (e, i) = max_err(&dqkv, &want);
    let tol = bound(&s, mag);
    assert!(
        e <= tol,
        "{isa} {s:?} dqkv[{i}] off by {e:e} > {tol:e} (max |want| {:e})",
        max_abs(&want)
    );
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn attention_matches_the_f64_oracle(
        n in 1usize..3,
        l in prop::sample::select(vec![1usize, 2, 5, 7, 17, 33, 50]),
        h in 1usize..4,
        d in prop::sample::select(vec![1usize, 3, 8, 16, 24, 64]),
        amp in prop::sample::select(vec![0.5f32, 1.0, 3.0]),
        seed in 0u32..1000,
    ) {
        let s = AttentionShape::new(n, l, h, d);
        let scale = 1.0 / (d as f32).sqrt();
        for isa in Isa::available() {
            run(isa, s, scale, seed, amp);
        }
    }
}

#[test]
fn attention_vit_sized_head_matches_the_oracle() {
    // One image, ViT's 197 tokens, 2 heads of 64.
    let s = AttentionShape::new(1, 197, 2, 64);
    for isa in Isa::available() {
        run(isa, s, 0.125, 7, 1.0);
    }
}

#[test]
fn attention_bit_identical_for_one_and_two_threads() {
    // Enough (image, head) tasks for every thread, and a single task whose forward rows are
    // split into units on 2 threads (not on 1).
    for s in [
        AttentionShape::new(2, 37, 3, 16),
        AttentionShape::new(1, 197, 1, 64),
    ] {
        bit_identical(s);
    }
}

fn bit_identical(s: AttentionShape) {
    let qkv = data(s.qkv_len().unwrap(), 3, 1.5);
    let dout = data(s.out_len().unwrap(), 4, 1.0);
    let go = |threads: usize| {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap();
        pool.install(|| {
            let isa = Isa::current().unwrap();
            let mut out = vec![0.0; s.out_len().unwrap()];
            let mut probs = vec![0.0; s.probs_len().unwrap()];
            attention_forward_with(isa, s, 0.25, &qkv, &mut out, &mut probs).unwrap();
            let mut dqkv = vec![0.0; qkv.len()];
            attention_backward_with(isa, s, 0.25, &qkv, &probs, &dout, &mut dqkv).unwrap();
            (out, probs, dqkv)
        })
    };
    let (a, b) = (go(1), go(2));
    let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
    assert_eq!(bits(&a.0), bits(&b.0));
    assert_eq!(bits(&a.1), bits(&b.1));
    assert_eq!(bits(&a.2), bits(&b.2));
}

#[test]
fn attention_bad_slices_are_errors_naming_the_sizes() {
    let s = AttentionShape::new(1, 4, 2, 3);
    let isa = Isa::current().unwrap();
    let qkv = vec![0.0; 4 * 18];
    let mut out = vec![0.0; 4 * 6];
    let mut probs = vec![0.0; 2 * 16];
    let e = attention_forward_with(isa, s, 1.0, &qkv[1..], &mut out, &mut probs).unwrap_err();
    assert!(e.to_string().contains("qkv has 71 elements"), "{e}");
    let e = attention_forward_with(isa, s, 1.0, &qkv, &mut out, &mut probs[..31]).unwrap_err();
    assert!(e.to_string().contains("probs has 31"), "{e}");
    let mut dqkv = vec![0.0; 4 * 18 + 1];
    let e = attention_backward_with(isa, s, 1.0, &qkv, &probs, &out, &mut dqkv).unwrap_err();
    assert!(
        e.to_string().contains("attention_backward") && e.to_string().contains("dqkv has 73"),
        "{e}"
    );
    let e =
        attention_backward_with(isa, s, 1.0, &qkv, &probs, &out[1..], &mut dqkv[1..]).unwrap_err();
    assert!(e.to_string().contains("dout has 23"), "{e}");
}

#[test]
fn attention_empty_batch_or_tokens_is_a_no_op() {
    let isa = Isa::current().unwrap();
    for s in [
        AttentionShape::new(0, 5, 2, 4),
        AttentionShape::new(3, 0, 2, 4),
    ] {
        attention_forward_with(isa, s, 1.0, &[], &mut [], &mut []).unwrap();
        attention_backward_with(isa, s, 1.0, &[], &[], &[], &mut []).unwrap();
    }
}
