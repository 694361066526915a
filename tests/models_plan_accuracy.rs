//! The float64 reference of a plan (`Model::plan_reference`, `Plan::accuracy`, behind
//! `tessera accuracy`):
//!
//! - the oracle: on the committed float64 fixtures of `tests/models_accuracy.rs` (timm run in
//!   float64 by `scripts/fixtures_accuracy.py`, logits stored as `hi + lo`, ~48 bits), the
//!   reference's logits must equal timm's float64 eval logits within 1e-10 relative, for the
//!   four families (ViT, MobileNetV2, MobileNetV3, SE-ResNet);
//! - on random weights with random batch-norm statistics (every block variant, as
//!   `tests/models_plan.rs`), the float32 plan and the eager float32 forward must be within
//!   1e-4 relative of the reference logits, every step's error finite and the plan's output
//!   the one `Plan::run` returns.

use std::path::{Path, PathBuf};
use tessera::core::{no_grad, Rng, Tensor};
use tessera::models::archs::resnet::{build_config, ResNetConfig};
use tessera::models::io::safetensors::{self, SafeTensors};
use tessera::models::io::{npy, Values};
use tessera::models::{create, weights, Mode, Model, Overrides, TensorKind};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/accuracy")
}

fn read_f32(p: &Path) -> Tensor {
    let a = npy::read(p).unwrap_or_else(|e| panic!("{e}"));
    match a.values {
        Values::F32(v) => Tensor::from_vec(v, &a.shape).unwrap(),
        Values::I64(_) => panic!("{}: expected float32", p.display()),
    }
}

fn get<'a>(t: &'a SafeTensors, name: &str) -> &'a [f32] {
    t.tensors
        .get(name)
        .unwrap_or_else(|| panic!("the truth file has no {name:?}"))
        .as_f32()
        .expect("f32")
}

fn shape4(x: &Tensor) -> [usize; 4] {
    x.shape().try_into().expect("an NCHW input")
}

/// `max |a - b| / max |b|`.
fn rel64(a: &[f64], b: &[f64]) -> f64 {
    assert_eq!(a.len(), b.len());
    let d = a
        .iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f64::max);
    d / b.iter().map(|y| y.abs()).fold(0.0, f64::max)
}

fn widen(v: &[f32]) -> Vec<f64> {
    v.iter().map(|&x| f64::from(x)).collect()
}

/// The reference's eval logits on fixture `case` against timm's float64 logits.
fn oracle(case: &str, mut model: Box<dyn Model>) {
    let dir = fixtures();
    weights::load(
        model.as_mut(),
        dir.join(format!("{case}.weights.safetensors")),
    )
    .unwrap();
    model.set_mode(Mode::Eval);
    let truth = safetensors::read(dir.join(format!("{case}.truth.safetensors"))).unwrap();
    let x = read_f32(&dir.join(format!("{case}.input.npy")));
    let (hi, lo) = (get(&truth, "eval.logits"), get(&truth, "eval.logits.lo"));
    let want: Vec<f64> = hi
        .iter()
        .zip(lo)
        .map(|(&h, &l)| f64::from(h) + f64::from(l))
        .collect();
    let _g = no_grad();
    let mut plan = model.plan_reference(shape4(&x)).unwrap();
    let acc = plan.accuracy(&x.to_vec()).unwrap();
    let e = rel64(&acc.reference, &want);
    let e32 = rel64(&widen(&acc.output), &want);
    println!(
        "{case}: f64 reference vs timm float64 {e:.2e}, f32 plan {e32:.2e} (reported {:.2e})",
        acc.logits_rel()
    );
    assert!(e <= 1e-10, "{case}: reference vs timm float64: {e:e}");
    // The report's own logits error is the plan's against this (exact) reference.
    assert!((acc.logits_rel() - rel64(&widen(&acc.output), &acc.reference)).abs() < 1e-12);
    assert!(e32 < 1e-5, "{case}: f32 plan vs timm float64: {e32:e}");
}

fn classes10() -> Overrides {
    Overrides {
        num_classes: Some(10),
        ..Default::default()
    }
}

#[test]
fn vit_reference_is_timm_float64() {
    let o = Overrides {
        img_size: Some(32),
        patch_size: Some(8),
        embed_dim: Some(48),
        depth: Some(4),
        num_heads: Some(3),
        num_classes: Some(10),
        ..Default::default()
    };
    oracle("vit", create("vit_tiny_patch16_224", &o, 0).unwrap());
}

#[test]
fn mobilenetv2_reference_is_timm_float64() {
    oracle(
        "mobilenetv2",
        create("mobilenetv2_035", &classes10(), 0).unwrap(),
    );
}

#[test]
fn mobilenetv3_reference_is_timm_float64() {
    oracle(
        "mobilenetv3",
        create("mobilenetv3_small_050", &classes10(), 0).unwrap(),
    );
}

#[test]
fn seresnet_reference_is_timm_float64() {
    let cfg = ResNetConfig {
        layers: vec![2, 2, 2, 2],
        channels: vec![8, 16, 32, 64],
        se: true,
        num_classes: 10,
        ..ResNetConfig::for_arch("seresnet50").unwrap()
    };
    oracle(
        "seresnet",
        Box::new(build_config("seresnet_small", &cfg, 0).unwrap()),
    );
}

/// Random batch-norm statistics and affine parameters (timm's init makes the fold trivial).
fn randomize_norms(m: &mut dyn Model, seed: u64) {
    let mut rng = Rng::new(seed);
    m.visit_mut("", &mut |name, t, _kind: TensorKind| {
        let bn = name.contains("bn") || name.contains("downsample.1");
        let n = t.numel();
        let vals: Option<Vec<f32>> = if name.ends_with("running_var") {
            Some((0..n).map(|_| 0.5 + rng.uniform()).collect())
        } else if name.ends_with("running_mean") || (bn && name.ends_with(".bias")) {
            Some((0..n).map(|_| rng.uniform() * 0.4 - 0.2).collect())
        } else if bn && name.ends_with(".weight") {
            Some((0..n).map(|_| 0.5 + rng.uniform()).collect())
        } else {
            None
        };
        if let Some(v) = vals {
            *t = Tensor::from_vec(v, t.shape()).unwrap();
        }
    });
    m.set_mode(Mode::Eval);
}

/// The plan and the eager forward against the reference on random weights, batch 2.
fn check(arch: &str, o: &Overrides) {
    let mut m = create(arch, o, 5).unwrap();
    randomize_norms(m.as_mut(), 9);
    let [c, h, w] = m.input_chw();
    let x = Tensor::randn(&[2, c, h, w], 3);
    let _g = no_grad();
    let eager = widen(&m.forward(&x).unwrap().to_vec());
    let mut plan = m.plan_reference([2, c, h, w]).unwrap();
    assert!(plan.has_reference());
    let acc = plan.accuracy(&x.to_vec()).unwrap();
    assert_eq!(acc.steps.len(), plan.len(), "{arch}: one row per step");
    for (i, s) in acc.steps.iter().enumerate() {
        assert!(
            s.rel.is_finite() && s.local.is_finite() && s.rel_in.is_finite(),
            "{arch} step {i} {} {}: {s:?}",
            s.kind,
            s.detail
        );
        assert!(s.rel < 1e-4, "{arch} step {i} {}: {s:?}", s.kind);
        assert!(s.local < 1e-4, "{arch} step {i} {}: {s:?}", s.kind);
        // Only convolutions carry a folded batch norm: every depthwise one, and the 1x1
        // projections with the residual join fused (dense ones otherwise apply it as an
        // epilogue scale); the folded f64 network's error is the fold's (none in a ViT).
        let conv = matches!(s.kind, "conv" | "pointwise" | "depthwise");
        assert!(s.fold.is_none() || conv, "{arch} step {i}: {s:?}");
        if s.kind == "depthwise" {
            assert!(s.fold.is_some(), "{arch} step {i}: {s:?}");
        }
        assert!(
            s.fold.unwrap_or(0.0) < 1e-5 && s.fold_net < 1e-4,
            "{arch} {i}: {s:?}"
        );
        if arch.starts_with("vit") {
            assert_eq!(s.fold_net, 0.0, "{arch} step {i}: {s:?}");
        }
    }
    assert!(acc.steps[0].rel_in == 0.0, "{arch}: the image is exact");
    let e_plan = acc.logits_rel();
    let e_eager = rel64(&eager, &acc.reference);
    println!("{arch}: plan {e_plan:.2e}, eager {e_eager:.2e} vs the f64 reference");
    assert!(e_plan > 0.0 && e_plan < 1e-4, "{arch}: plan {e_plan:e}");
    assert!(e_eager < 1e-4, "{arch}: eager {e_eager:e}");
    // The accuracy run's plan output is what `run` returns.
    let y = plan.run(&x.to_vec()).unwrap().to_vec();
    assert_eq!(y, acc.output, "{arch}");
}

#[test]
fn plans_match_their_reference_on_every_family() {
    let small = |img| Overrides {
        img_size: Some(img),
        num_classes: Some(10),
        ..Overrides::default()
    };
    check("mobilenetv2_050", &small(64));
    check("mobilenetv3_large_100", &small(64));
    check("mobilenetv3_small_100", &small(64));
    check("resnet50", &small(32));
    check("seresnet50", &small(32));
    let tiny = Overrides {
        img_size: Some(64),
        depth: Some(3),
        num_classes: Some(10),
        ..Overrides::default()
    };
    check("vit_tiny_patch16_224", &tiny);
    for arch in [
        "mobilenetv2_digits",
        "mobilenetv3_digits",
        "resnet_digits",
        "seresnet_digits",
        "vit_digits",
    ] {
        check(arch, &Overrides::default());
    }
}

#[test]
fn a_normal_plan_has_no_reference() {
    let m = create("mobilenetv3_digits", &Overrides::default(), 0).unwrap();
    let [c, h, w] = m.input_chw();
    let mut plan = m.plan([1, c, h, w]).unwrap();
    assert!(!plan.has_reference());
    let err = plan
        .accuracy(&vec![0.0; c * h * w])
        .unwrap_err()
        .to_string();
    assert!(err.contains("plan_reference"), "{err}");
    let mut plan = m.plan_reference([1, c, h, w]).unwrap();
    let err = plan.accuracy(&[0.0; 3]).unwrap_err().to_string();
    assert!(err.contains("input has 3 values"), "{err}");
}

/// Full-size SE-ResNet-101 (eval 1x3x224x224): the reference against timm float64, with the
/// fixture of `python3 scripts/fixtures_accuracy.py --only-full --full DIR`.
#[test]
#[ignore = "needs TESSERA_ACCURACY_FULL (scripts/fixtures_accuracy.py --full DIR)"]
fn seresnet101_full_size_reference_is_timm_float64() {
    let Some(dir) = std::env::var_os("TESSERA_ACCURACY_FULL") else {
        println!("skipped: set TESSERA_ACCURACY_FULL (see tests/models_accuracy.rs)");
        return;
    };
    let dir = PathBuf::from(dir);
    let mut m = create("seresnet101", &Overrides::default(), 0).unwrap();
    weights::load(m.as_mut(), dir.join("seresnet101.weights.safetensors")).unwrap();
    m.set_mode(Mode::Eval);
    let truth = safetensors::read(dir.join("seresnet101.truth.safetensors")).unwrap();
    let x = read_f32(&dir.join("seresnet101.eval_input.npy"));
    let (hi, lo) = (get(&truth, "eval.logits"), get(&truth, "eval.logits.lo"));
    let want: Vec<f64> = hi
        .iter()
        .zip(lo)
        .map(|(&h, &l)| f64::from(h) + f64::from(l))
        .collect();
    let _g = no_grad();
    let eager = widen(&m.forward(&x).unwrap().to_vec());
    let mut plan = m.plan_reference(shape4(&x)).unwrap();
    let acc = plan.accuracy(&x.to_vec()).unwrap();
    let e = rel64(&acc.reference, &want);
    println!(
        "seresnet101: f64 reference vs timm float64 {e:.2e}; f32 plan {:.2e}, eager {:.2e} \
         against timm float64",
        rel64(&widen(&acc.output), &want),
        rel64(&eager, &want)
    );
    assert!(e <= 1e-10, "reference vs timm float64: {e:e}");
}
