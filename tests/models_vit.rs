//! The ViT family (crates/models/src/archs/vit.rs) against timm's `VisionTransformer`:
//! state_dict names and shapes, parameter counts, logits and attention maps of a small random
//! variant (fixtures written by `scripts/fixtures_vit.py`), override errors, attention capture,
//! initialisation, and multi-head attention against a naive reference (property test).
//!
//! Ignored (run with `cargo test --release --test models_vit -- --ignored --nocapture`):
//! `full_size_timm_checkpoints` (needs `python3 scripts/fixtures_vit.py --full DIR` and
//! `TESSERA_VIT_FULL_DIR=DIR`) and `vit_base_timing` (batch-1 inference time; set
//! `RAYON_NUM_THREADS`).

use proptest::prelude::*;
use std::path::PathBuf;
use tessera::core::{Rng, Tensor};
use tessera::models::archs::vit::{self, create_vit, VisionTransformer};
use tessera::models::blocks::attention::Attention;
use tessera::models::blocks::mlp::LinearInit;
use tessera::models::blocks::patch_embed::PatchEmbed;
use tessera::models::io::safetensors::{self, SafeTensors};
use tessera::models::module::{
    named_parameters, named_tensors, parameter_count, set_requires_grad,
};
use tessera::models::{create, weights, ModelError, Module, Overrides};

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/models")
        .join(name)
}

fn get(file: &SafeTensors, name: &str) -> Tensor {
    let t = &file.tensors[name];
    Tensor::from_slice(t.as_f32().expect("f32 tensor"), &t.shape).unwrap()
}

/// max |a - b| / max |b|.
fn rel_err(a: &Tensor, b: &Tensor) -> f32 {
    assert_eq!(a.shape(), b.shape());
    let (a, b) = (a.to_vec(), b.to_vec());
    let diff = a
        .iter()
        .zip(&b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max);
    let scale = b.iter().map(|v| v.abs()).fold(0.0, f32::max);
    diff / scale
}

fn small_overrides() -> Overrides {
    Overrides {
        img_size: Some(32),
        patch_size: Some(8),
        embed_dim: Some(48),
        depth: Some(2),
        num_heads: Some(3),
        num_classes: Some(10),
        ..Default::default()
    }
}

fn small_variant() -> VisionTransformer {
    let mut m = create_vit("vit_tiny_patch16_224", &small_overrides(), 0).unwrap();
    weights::load(&mut m, fixture("vit_small_variant.safetensors")).unwrap();
    m
}

#[test]
fn small_variant_matches_timm_logits_and_attention() {
    let io = safetensors::read(fixture("vit_small_variant_io.safetensors")).unwrap();
    let (x, want) = (get(&io, "input"), get(&io, "logits"));

    // Through the zoo, as a `dyn Model`.
    let mut m = create("vit_tiny_patch16_224", &small_overrides(), 0).unwrap();
    weights::load(&mut *m, fixture("vit_small_variant.safetensors")).unwrap();
    assert_eq!(m.input_chw(), [3, 32, 32]);
    assert_eq!(m.num_classes(), 10);
    let y = m.forward(&x).unwrap();
    let e = rel_err(&y, &want);
    println!("small variant: logits relative error {e:.2e}");
    assert!(e <= 1e-4, "logits relative error {e}");

    let v = small_variant();
    let (y2, maps) = v.forward_with_attention(&x).unwrap();
    assert_eq!(y2.to_vec(), y.to_vec(), "capture changes the logits");
    assert_eq!(maps.len(), 2);
    for (i, a) in maps.iter().enumerate() {
        let want = get(&io, &format!("attn.{i}"));
        assert_eq!(a.shape(), &[2, 3, 17, 17]);
        let e = rel_err(a, &want);
        println!("small variant: attention map {i} relative error {e:.2e}");
        assert!(e <= 1e-4, "attention map {i}: relative error {e}");
    }
}

#[test]
fn results_do_not_depend_on_thread_count() {
    let io = safetensors::read(fixture("vit_small_variant_io.safetensors")).unwrap();
    let x = get(&io, "input");
    let m = small_variant();
    let run = |threads| {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap();
        pool.install(|| m.forward(&x).unwrap().to_vec())
    };
    assert_eq!(run(1), run(2));
}

#[test]
fn state_dict_keys_and_shapes_are_timms() {
    let text = std::fs::read_to_string(fixture("vit_tiny_patch16_224.keys.txt")).unwrap();
    let want: Vec<(String, Vec<usize>)> = text
        .lines()
        .map(|l| {
            let (name, shape) = l.split_once(' ').unwrap();
            (
                name.to_string(),
                shape.split('x').map(|s| s.parse().unwrap()).collect(),
            )
        })
        .collect();
    let m = create("vit_tiny_patch16_224", &Overrides::default(), 0).unwrap();
    let got: Vec<(String, Vec<usize>)> = named_tensors(&*m)
        .into_iter()
        .map(|(n, t, _)| (n, t.shape().to_vec()))
        .collect();
    assert_eq!(got.len(), 152);
    assert_eq!(
        got, want,
        "same keys, shapes and order as timm's state_dict"
    );
}

#[test]
fn parameter_counts_equal_timms() {
    for (name, count) in [
        ("vit_tiny_patch16_224", 5_717_416),
        ("vit_small_patch16_224", 22_050_664),
        ("vit_base_patch16_224", 86_567_656),
        // tessera presets (timm with the same overrides gives the same counts)
        ("vit_digits", 202_186),
        ("vit_cifar", 1_205_898),
    ] {
        let m = create(name, &Overrides::default(), 0).unwrap();
        assert_eq!(parameter_count(&*m), count, "{name}");
        assert_eq!(m.arch(), name);
    }
    assert_eq!(vit::NAMES.len(), 5);
    for name in vit::NAMES {
        assert!(tessera::models::zoo::names().contains(name), "{name}");
    }
}

#[test]
fn presets_run_on_their_images() {
    for (name, chw) in [("vit_digits", [1, 8, 8]), ("vit_cifar", [3, 32, 32])] {
        let m = create(name, &Overrides::default(), 3).unwrap();
        assert_eq!(m.input_chw(), chw, "{name}");
        let x = Tensor::randn(&[2, chw[0], chw[1], chw[2]], 5);
        let mut stages = Vec::new();
        let y = m
            .forward_stages(&x, &mut |s, t| {
                stages.push((s.to_string(), t.shape().to_vec()))
            })
            .unwrap();
        assert_eq!(y.shape(), &[2, 10]);
        assert!(y.to_vec().iter().all(|v| v.is_finite()));
        let depth = if name == "vit_digits" { 4 } else { 6 };
        let (d, tokens) = if name == "vit_digits" {
            (64, 17)
        } else {
            (128, 65)
        };
        assert_eq!(stages.len(), depth + 3, "{stages:?}");
        assert_eq!(stages[0], ("patch_embed".to_string(), vec![2, tokens, d]));
        for i in 0..depth {
            assert_eq!(stages[i + 1], (format!("blocks.{i}"), vec![2, tokens, d]));
        }
        assert_eq!(stages[depth + 1], ("norm".to_string(), vec![2, tokens, d]));
        assert_eq!(stages[depth + 2], ("head".to_string(), vec![2, 10]));
        assert_eq!(y.to_vec(), m.forward(&x).unwrap().to_vec());
    }
}

#[test]
fn headless_model_returns_the_class_token_features() {
    let o = Overrides {
        num_classes: Some(0),
        ..Default::default()
    };
    let m = create_vit("vit_digits", &o, 1).unwrap();
    assert!(m.head.is_none());
    let x = Tensor::randn(&[3, 1, 8, 8], 2);
    let y = m.forward(&x).unwrap();
    assert_eq!(y.shape(), &[3, 64]);
    let feats = m.forward_features(&x).unwrap();
    assert_eq!(feats.shape(), &[3, 17, 64]);
    assert_eq!(y.to_vec(), feats.select(1, 0).unwrap().to_vec());
}

fn config_error(arch: &str, o: Overrides) -> String {
    match create(arch, &o, 0) {
        Err(ModelError::Config(m)) => m,
        Err(e) => panic!("{arch} {o:?}: not a config error: {e}"),
        Ok(_) => panic!("{arch} {o:?}: built"),
    }
}

#[test]
fn invalid_overrides_are_config_errors() {
    let e = config_error(
        "vit_base_patch16_224",
        Overrides {
            img_size: Some(230),
            ..Default::default()
        },
    );
    assert!(
        e.contains("vit_base_patch16_224")
            && e.contains("img_size 230 is not divisible by patch_size 16"),
        "{e}"
    );
    let e = config_error(
        "vit_tiny_patch16_224",
        Overrides {
            num_heads: Some(5),
            ..Default::default()
        },
    );
    assert!(
        e.contains("embed_dim 192 is not divisible by num_heads 5"),
        "{e}"
    );
    let zero = |f: fn(&mut Overrides)| {
        let mut o = Overrides::default();
        f(&mut o);
        o
    };
    for (field, o) in [
        ("img_size", zero(|o| o.img_size = Some(0))),
        ("patch_size", zero(|o| o.patch_size = Some(0))),
        ("in_chans", zero(|o| o.in_chans = Some(0))),
        ("embed_dim", zero(|o| o.embed_dim = Some(0))),
        ("depth", zero(|o| o.depth = Some(0))),
        ("num_heads", zero(|o| o.num_heads = Some(0))),
    ] {
        let e = config_error("vit_digits", o);
        assert!(
            e.contains(&format!("{field} must be positive")),
            "{field}: {e}"
        );
    }
    for r in [0.0, -1.0, f32::NAN, f32::INFINITY, 0.001] {
        let e = config_error(
            "vit_digits",
            Overrides {
                mlp_ratio: Some(r),
                ..Default::default()
            },
        );
        assert!(e.contains("mlp_ratio"), "{r}: {e}");
    }
    let e = config_error(
        "vit_digits",
        Overrides {
            act: Some("nope".into()),
            ..Default::default()
        },
    );
    assert!(e.contains("nope"), "{e}");
}

#[test]
fn valid_overrides_change_the_shapes() {
    let o = Overrides {
        img_size: Some(12),
        patch_size: Some(3),
        in_chans: Some(2),
        num_classes: Some(7),
        embed_dim: Some(30),
        depth: Some(1),
        num_heads: Some(5),
        mlp_ratio: Some(2.5),
        act: None,
    };
    let m = create_vit("vit_base_patch16_224", &o, 0).unwrap();
    assert_eq!(m.pos_embed.shape(), &[1, 17, 30]);
    assert_eq!(m.blocks.len(), 1);
    assert_eq!(m.blocks[0].mlp.fc1.weight.shape(), &[75, 30]);
    assert_eq!(m.blocks[0].attn.head_dim(), 6);
    let y = m.forward(&Tensor::randn(&[1, 2, 12, 12], 0)).unwrap();
    assert_eq!(y.shape(), &[1, 7]);
}

#[test]
fn wrong_input_shape_is_an_error() {
    let m = create("vit_digits", &Overrides::default(), 0).unwrap();
    for shape in [
        vec![1, 1, 8, 9],
        vec![1, 3, 8, 8],
        vec![1, 8, 8],
        vec![1, 1, 16, 16],
    ] {
        let e = m.forward(&Tensor::zeros(&shape)).unwrap_err();
        assert!(matches!(e, ModelError::Tensor(_)), "{shape:?}: {e}");
        let text = e.to_string();
        assert!(
            text.contains("patch_embed") && text.contains(&format!("{shape:?}")),
            "{text}"
        );
    }
    assert!(matches!(
        create("vit_huge", &Overrides::default(), 0),
        Err(ModelError::Config(_))
    ));
}

#[test]
fn attention_capture_is_optional_and_rows_are_distributions() {
    let mut m = create_vit("vit_digits", &Overrides::default(), 4).unwrap();
    let x = Tensor::randn(&[2, 1, 8, 8], 9);
    let plain = m.forward(&x).unwrap().to_vec();
    assert!(m.take_attention().is_empty(), "captured with the flag off");

    let (y, maps) = m.forward_with_attention(&x).unwrap();
    assert_eq!(y.to_vec(), plain);
    assert_eq!(maps.len(), 4);
    for a in &maps {
        assert_eq!(a.shape(), &[2, 4, 17, 17]);
        let v = a.contiguous().to_vec();
        for row in v.chunks(17) {
            assert!(row.iter().all(|&p| (0.0..=1.0).contains(&p)));
            let s: f32 = row.iter().sum();
            assert!((s - 1.0).abs() < 1e-5, "row sums to {s}");
        }
    }

    m.capture_attention = true;
    assert_eq!(m.forward(&x).unwrap().to_vec(), plain);
    let kept = m.take_attention();
    assert_eq!(kept.len(), 4);
    for (a, b) in kept.iter().zip(&maps) {
        assert_eq!(a.to_vec(), b.to_vec());
    }
    assert!(m.take_attention().is_empty(), "take clears the store");
}

#[test]
fn initialisation_follows_timm() {
    let m = create_vit("vit_small_patch16_224", &Overrides::default(), 11).unwrap();
    let std = |t: &Tensor| {
        let v = t.to_vec();
        let mean = v.iter().map(|&x| x as f64).sum::<f64>() / v.len() as f64;
        (v.iter().map(|&x| (x as f64 - mean).powi(2)).sum::<f64>() / v.len() as f64).sqrt()
    };
    assert!(
        (std(&m.pos_embed) - 0.02).abs() < 0.001,
        "{}",
        std(&m.pos_embed)
    );
    assert!(std(&m.cls_token) < 1e-5 && std(&m.cls_token) > 0.0);
    let b = &m.blocks[3];
    for l in [&b.attn.qkv, &b.attn.proj, &b.mlp.fc1, &b.mlp.fc2] {
        assert!((std(&l.weight) - 0.02).abs() < 0.001, "{}", std(&l.weight));
        assert!(l.bias.as_ref().unwrap().to_vec().iter().all(|&v| v == 0.0));
    }
    assert!(b.norm1.weight.to_vec().iter().all(|&v| v == 1.0));
    assert!(m.norm.bias.to_vec().iter().all(|&v| v == 0.0));
    // The patch convolution keeps PyTorch's default U(-1/sqrt(fan_in), 1/sqrt(fan_in)).
    let w = m.patch_embed.proj.weight.to_vec();
    let bound = 1.0 / ((3 * 16 * 16) as f32).sqrt();
    assert!(w.iter().all(|v| v.abs() <= bound));
    assert!(w.iter().any(|v| v.abs() > 0.9 * bound));
    // Seeded: the same seed gives the same weights, another seed others.
    let a = create_vit("vit_digits", &Overrides::default(), 5).unwrap();
    let a2 = create_vit("vit_digits", &Overrides::default(), 5).unwrap();
    let c = create_vit("vit_digits", &Overrides::default(), 6).unwrap();
    assert_eq!(a.pos_embed.to_vec(), a2.pos_embed.to_vec());
    assert_ne!(a.pos_embed.to_vec(), c.pos_embed.to_vec());
}

#[test]
fn every_parameter_gets_a_gradient() {
    let mut m = create_vit("vit_digits", &Overrides::default(), 8).unwrap();
    // Non-trivial LayerNorm affines and biases, so no gradient is zero by symmetry.
    m.visit_mut("", &mut |_, t, _| {
        let noise = Tensor::randn(t.shape(), t.numel() as u64).mul_scalar(0.1);
        *t = t.add(&noise).unwrap();
    });
    set_requires_grad(&mut m, true);
    let x = Tensor::randn(&[3, 1, 8, 8], 3);
    let loss = m
        .forward(&x)
        .unwrap()
        .cross_entropy(&[1, 4, 9], 0.0)
        .unwrap();
    loss.backward().unwrap();
    let mut n = 0;
    for (name, p) in named_parameters(&m) {
        let g = p.grad().unwrap_or_else(|| panic!("{name}: no gradient"));
        assert_eq!(g.shape(), p.shape(), "{name}");
        let g = g.to_vec();
        assert!(g.iter().all(|v| v.is_finite()), "{name}");
        assert!(g.iter().any(|&v| v != 0.0), "{name}: all zero");
        n += 1;
    }
    assert_eq!(n, 4 + 4 * 12 + 4);
}

/// Naive multi-head self-attention in f64 loops, as the paper writes it.
fn naive_attention(att: &Attention, x: &Tensor) -> Vec<f64> {
    let (n, l, dim) = (x.shape()[0], x.shape()[1], x.shape()[2]);
    let (h, d) = (att.num_heads(), att.head_dim());
    let xv = x.to_vec();
    let lin = |w: &Tensor, b: &Tensor, inp: &[f64], rows: usize| -> Vec<f64> {
        let (o, i) = (w.shape()[0], w.shape()[1]);
        let (wv, bv) = (w.to_vec(), b.to_vec());
        let mut out = vec![0.0; rows * o];
        for r in 0..rows {
            for j in 0..o {
                let mut s = bv[j] as f64;
                for k in 0..i {
                    s += inp[r * i + k] * wv[j * i + k] as f64;
                }
                out[r * o + j] = s;
            }
        }
        out
    };
    let xin: Vec<f64> = xv.iter().map(|&v| v as f64).collect();
    let qkv = lin(&att.qkv.weight, att.qkv.bias.as_ref().unwrap(), &xin, n * l);
    let mut merged = vec![0.0; n * l * dim];
    for b in 0..n {
        for hh in 0..h {
            let at = |t: usize, which: usize, c: usize| {
                qkv[(b * l + t) * 3 * dim + which * dim + hh * d + c]
            };
            for i in 0..l {
                let scores: Vec<f64> = (0..l)
                    .map(|j| {
                        (0..d).map(|c| at(i, 0, c) * at(j, 1, c)).sum::<f64>() / (d as f64).sqrt()
                    })
                    .collect();
                let m = scores.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                let e: Vec<f64> = scores.iter().map(|s| (s - m).exp()).collect();
                let z: f64 = e.iter().sum();
                for c in 0..d {
                    merged[(b * l + i) * dim + hh * d + c] =
                        (0..l).map(|j| e[j] / z * at(j, 2, c)).sum::<f64>();
                }
            }
        }
    }
    lin(
        &att.proj.weight,
        att.proj.bias.as_ref().unwrap(),
        &merged,
        n * l,
    )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, failure_persistence: None, ..ProptestConfig::default() })]
    #[test]
    fn attention_matches_naive_reference(
        n in 1usize..3, l in 1usize..12, h in 1usize..4, d in 1usize..9, seed in 0u64..1000
    ) {
        let dim = h * d;
        let mut rng = Rng::new(seed);
        let att = Attention::new(dim, h, true, LinearInit::PyTorch, &mut rng).unwrap();
        let x = Tensor::randn(&[n, l, dim], seed + 1);
        let y = att.forward(&x).unwrap();
        prop_assert_eq!(y.shape(), &[n, l, dim]);
        let want = naive_attention(&att, &x);
        let scale = want.iter().fold(0.0f64, |m, v| m.max(v.abs())).max(1e-6);
        let err = y.to_vec().iter().zip(&want).fold(0.0f64, |m, (a, b)| m.max((*a as f64 - b).abs()));
        prop_assert!(err / scale < 1e-5, "relative error {}", err / scale);
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 16, failure_persistence: None, ..ProptestConfig::default() })]
    /// The patch-row GEMM equals timm's `proj(x).flatten(2).transpose(1, 2)` on the conv path.
    #[test]
    fn patch_embed_equals_strided_convolution(
        n in 1usize..3, c in 1usize..4, p in 1usize..5, g in 1usize..4, d in 1usize..9, seed in 0u64..1000
    ) {
        let pe = PatchEmbed::new(p * g, p, c, d, &mut Rng::new(seed)).unwrap();
        let x = Tensor::randn(&[n, c, p * g, p * g], seed + 1);
        let y = pe.forward(&x).unwrap();
        let want = pe.proj.forward(&x).unwrap().flatten(2, 3).unwrap().transpose(1, 2).unwrap();
        prop_assert_eq!(y.shape(), &[n, g * g, d]);
        let err = rel_err(&y, &want);
        prop_assert!(err < 1e-5, "relative error {}", err);
    }
}

#[test]
#[ignore = "needs full-size checkpoints: python3 scripts/fixtures_vit.py --full DIR; TESSERA_VIT_FULL_DIR=DIR"]
fn full_size_timm_checkpoints() {
    let dir = PathBuf::from(std::env::var("TESSERA_VIT_FULL_DIR").expect("TESSERA_VIT_FULL_DIR"));
    for name in [
        "vit_tiny_patch16_224",
        "vit_small_patch16_224",
        "vit_base_patch16_224",
    ] {
        let mut m = create(name, &Overrides::default(), 0).unwrap();
        weights::load(&mut *m, dir.join(format!("{name}.safetensors"))).unwrap();
        let io = safetensors::read(dir.join(format!("{name}_io.safetensors"))).unwrap();
        let y = m.forward(&get(&io, "input")).unwrap();
        let e = rel_err(&y, &get(&io, "logits"));
        println!("{name}: logits relative error {e:.2e}");
        assert!(e <= 1e-4, "{name}: {e}");
    }
}

#[test]
#[ignore = "timing, not a test: RAYON_NUM_THREADS=1|2 [TESSERA_VIT_ITERS=5] cargo test --release --test models_vit -- --ignored --nocapture vit_base_timing"]
fn vit_base_timing() {
    let m = create("vit_base_patch16_224", &Overrides::default(), 0).unwrap();
    let x = Tensor::randn(&[1, 3, 224, 224], 0);
    m.forward(&x).unwrap(); // warm up
    let iters: usize = std::env::var("TESSERA_VIT_ITERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5);
    let mut times = Vec::new();
    for _ in 0..iters.max(1) {
        let t = std::time::Instant::now();
        m.forward(&x).unwrap();
        times.push(t.elapsed().as_secs_f64() * 1e3);
    }
    times.sort_by(f64::total_cmp);
    println!(
        "vit_base_patch16_224 batch 1, {} threads: median {:.1} ms, min {:.1} ms",
        rayon::current_num_threads(),
        times[times.len() / 2],
        times[0]
    );
}

#[test]
#[ignore = "timing, not a test: RAYON_NUM_THREADS=1|2 cargo test --release --test models_vit -- --ignored --nocapture vit_base_op_breakdown"]
fn vit_base_op_breakdown() {
    // One ViT-B/16 block's ops at batch 1 (197 tokens, D 768, 12 heads), each timed alone
    // (median of 5), times the 12 blocks.
    let m = create_vit(
        "vit_base_patch16_224",
        &Overrides {
            depth: Some(1),
            ..Default::default()
        },
        0,
    )
    .unwrap();
    let b = &m.blocks[0];
    let x = Tensor::randn(&[1, 197, 768], 1);
    let h = b.mlp.fc1.forward(&x).unwrap();
    let qkv = b
        .attn
        .qkv
        .forward(&x)
        .unwrap()
        .reshape(&[1, 197, 3, 12, 64])
        .unwrap()
        .permute(&[2, 0, 3, 1, 4])
        .unwrap();
    let (q, k, v) = (
        qkv.select(0, 0).unwrap().contiguous(),
        qkv.select(0, 1).unwrap(),
        qkv.select(0, 2).unwrap(),
    );
    let kt = k.transpose(2, 3).unwrap();
    let scores = q.matmul(&kt).unwrap();
    let probs = scores.softmax(3).unwrap();
    let o = probs.matmul(&v).unwrap();
    let img = Tensor::randn(&[1, 3, 224, 224], 2);
    let time = |name: &str, f: &dyn Fn() -> Tensor| {
        f();
        let mut t: Vec<f64> = (0..5)
            .map(|_| {
                let s = std::time::Instant::now();
                std::hint::black_box(f());
                s.elapsed().as_secs_f64() * 1e3
            })
            .collect();
        t.sort_by(f64::total_cmp);
        println!("{name:<28} {:8.2} ms x12 = {:8.1} ms", t[2], 12.0 * t[2]);
    };
    println!("{} threads", rayon::current_num_threads());
    time("layer_norm [197,768]", &|| b.norm1.forward(&x).unwrap());
    time("linear qkv 768->2304", &|| b.attn.qkv.forward(&x).unwrap());
    time("q * scale", &|| qkv.select(0, 0).unwrap().mul_scalar(0.125));
    time("q k^T [12,197,64]x[64,197]", &|| q.matmul(&kt).unwrap());
    time("softmax [12,197,197]", &|| scores.softmax(3).unwrap());
    time("probs v", &|| probs.matmul(&v).unwrap());
    time("merge heads (copy)", &|| {
        o.transpose(1, 2).unwrap().reshape(&[1, 197, 768]).unwrap()
    });
    time("linear proj 768->768", &|| b.attn.proj.forward(&x).unwrap());
    time("residual add", &|| x.add(&x).unwrap());
    time("linear fc1 768->3072", &|| b.mlp.fc1.forward(&x).unwrap());
    time("gelu [197,3072]", &|| h.gelu());
    time("linear fc2 3072->768", &|| b.mlp.fc2.forward(&h).unwrap());
    time("patch_embed (once)", &|| {
        m.patch_embed.forward(&img).unwrap()
    });
}
