//! Gradient parity with PyTorch (`tessera_models::grads`): for a small variant of each family
//! (ViT, MobileNetV2, MobileNetV3, SE-ResNet) one training-mode forward (batch statistics in
//! batch norm, no dropout), the mean cross-entropy and one backward must give timm's loss,
//! logits and the gradient of EVERY parameter, under the same names, at <= 1e-3 relative error
//! (max |diff| / max |reference| per tensor). Fixtures: `scripts/fixtures_grads.py` (weights
//! reused from `tests/fixtures/models/`). Also the input checks and that the model is left as
//! it was found.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use tessera::core::{no_grad, Tensor};
use tessera::models::archs::resnet::{build_config, ResNetConfig};
use tessera::models::grads::{self, Gradients};
use tessera::models::io::safetensors::{self, SafeTensors};
use tessera::models::io::{npy, Values};
use tessera::models::module::{named_parameters, named_tensors};
use tessera::models::{create, weights, Model, ModelError, Module, Overrides};

const TOL: f32 = 1e-3;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

fn read_input(case: &str) -> Tensor {
    let p = root().join(format!("grads/{case}.input.npy"));
    let a = npy::read(&p).unwrap();
    match a.values {
        Values::F32(v) => Tensor::from_vec(v, &a.shape).unwrap(),
        Values::I64(_) => panic!("{}: expected float32", p.display()),
    }
}

fn read_labels(case: &str) -> Vec<i64> {
    let p = root().join(format!("grads/{case}.labels.npy"));
    let a = npy::read(&p).unwrap();
    match a.values {
        Values::I64(v) => v,
        Values::F32(_) => panic!("{}: expected int64", p.display()),
    }
}

fn expected(case: &str) -> SafeTensors {
    safetensors::read(root().join(format!("grads/{case}.grads.safetensors"))).unwrap()
}

fn values<'a>(file: &'a SafeTensors, name: &str) -> (&'a [usize], &'a [f32]) {
    let t = file
        .tensors
        .get(name)
        .unwrap_or_else(|| panic!("reference has no {name:?}"));
    (&t.shape, t.as_f32().expect("f32"))
}

fn max_abs(v: &[f32]) -> f32 {
    v.iter().fold(0f32, |m, x| m.max(x.abs()))
}

/// max |a - b| / max |b|.
fn rel_err(a: &[f32], b: &[f32]) -> f32 {
    rel_err_scaled(a, b, max_abs(b))
}

/// max |a - b| / scale.
fn rel_err_scaled(a: &[f32], b: &[f32], scale: f32) -> f32 {
    assert_eq!(a.len(), b.len());
    let diff = a.iter().zip(b).fold(0f32, |m, (x, y)| m.max((x - y).abs()));
    if scale == 0.0 {
        diff
    } else {
        diff / scale
    }
}

/// The scale of the relative error of gradient `name`: max |reference|, except for a bias
/// whose gradient is ZERO in exact arithmetic. That is the case of every batch-norm shift
/// whose output reaches the loss only through another training-mode batch norm (MobileNet's
/// linear-bottleneck `bn3`, the depthwise-separable block's `bn2`): a per-channel constant
/// added before `conv -> batch norm` is removed by the batch mean, so `d loss / d bias = 0`,
/// and both PyTorch and tessera return rounding noise of the sum `sum(dy)` (about 1e-7 of
/// the gradients around it), whose ratio means nothing. Such a tensor (reference below 1e-4
/// of its sibling `weight` gradient) is measured against the sibling `weight` gradient of the
/// same layer: a sum over the same `dy` terms, so the scale of that rounding noise. The
/// tolerance stays 1e-3; a non-zero gradient where the reference is zero still fails.
fn scale_of(want: &SafeTensors, name: &str, reference: &[f32]) -> (f32, bool) {
    let own = max_abs(reference);
    if let Some(prefix) = name.strip_suffix("bias") {
        if let Some(w) = want.tensors.get(&format!("{prefix}weight")) {
            let sibling = max_abs(w.as_f32().expect("f32"));
            if own < 1e-4 * sibling {
                return (sibling, true);
            }
        }
    }
    (own, false)
}

/// Compares loss, logits and every gradient of `got` with the reference of `case`; returns the
/// worst gradient error and its tensor.
fn check(case: &str, got: &Gradients, zero_expected: fn(&str) -> bool) -> (f32, String) {
    let want = expected(case);
    let (shape, loss) = values(&want, "loss");
    assert!(
        shape.is_empty(),
        "{case}: loss is a scalar in the reference"
    );
    let e_loss = rel_err(&[got.loss], loss);
    let (shape, logits) = values(&want, "logits");
    assert_eq!(got.logits.shape(), shape, "{case}: logits shape");
    let e_logits = rel_err(&got.logits.to_vec(), logits);
    // The same set of names (the reference has `loss` and `logits` besides the gradients).
    let ours: BTreeSet<&str> = got.grads.iter().map(|(n, _)| n.as_str()).collect();
    let theirs: BTreeSet<&str> = want
        .tensors
        .keys()
        .map(|k| k.as_str())
        .filter(|k| *k != "loss" && *k != "logits")
        .collect();
    assert_eq!(ours, theirs, "{case}: gradient names differ from timm's");
    assert_eq!(ours.len(), got.grads.len(), "{case}: duplicate names");
    let mut worst = (0f32, String::new());
    let (mut zeros, mut worst_zero) = (0, 0f32);
    let mut failures = Vec::new();
    for (name, g) in &got.grads {
        let (shape, reference) = values(&want, name);
        assert_eq!(g.shape(), shape, "{case}: shape of the gradient of {name}");
        let (scale, zero) = scale_of(&want, name, reference);
        let e = rel_err_scaled(&g.to_vec(), reference, scale);
        if zero {
            assert!(
                zero_expected(name),
                "{case}: the gradient of {name} is zero in the reference, which the \
                 architecture does not explain"
            );
            zeros += 1;
            worst_zero = worst_zero.max(e);
        } else if e > worst.0 || worst.1.is_empty() {
            worst = (e, name.clone());
        }
        if e.is_nan() || e > TOL {
            failures.push(format!("{name}: {e:.3e}"));
        }
    }
    println!(
        "{case}: loss {:.6} (rel err {e_loss:.2e}), logits rel err {e_logits:.2e}, {} gradients, \
         worst {:.2e} ({}); {zeros} exactly-zero batch-norm shift gradients, worst {worst_zero:.2e} \
         of their weight gradient",
        got.loss,
        got.grads.len(),
        worst.0,
        worst.1
    );
    assert!(e_loss <= TOL, "{case}: loss relative error {e_loss:e}");
    assert!(
        e_logits <= TOL,
        "{case}: logits relative error {e_logits:e}"
    );
    assert!(
        failures.is_empty(),
        "{case}: gradients above {TOL:e}: {}",
        failures.join(", ")
    );
    worst
}

/// Batch-norm shifts whose gradient is zero in exact arithmetic (see [`scale_of`]): in
/// MobileNetV2 and V3 the linear bottleneck's `bn3` and the first, depthwise-separable block's
/// `bn2` (no activation after them; every path from them to the loss crosses another
/// `conv -> training-mode batch norm`).
fn mobilenet_zero(name: &str) -> bool {
    name.ends_with(".bn3.bias") || name == "blocks.0.0.bn2.bias"
}

fn no_zero(_: &str) -> bool {
    false
}

fn run_case(
    case: &str,
    model: &mut dyn Model,
    weights_file: &str,
    zero_expected: fn(&str) -> bool,
) -> (f32, String) {
    weights::load(model, root().join("models").join(weights_file)).unwrap();
    let x = read_input(case);
    let labels = read_labels(case);
    let got = grads::compute(model, &x, &labels).unwrap();
    check(case, &got, zero_expected)
}

fn classes10() -> Overrides {
    Overrides {
        num_classes: Some(10),
        ..Default::default()
    }
}

#[test]
fn vit_gradients_match_timm() {
    let o = Overrides {
        img_size: Some(32),
        patch_size: Some(8),
        embed_dim: Some(48),
        depth: Some(2),
        num_heads: Some(3),
        num_classes: Some(10),
        ..Default::default()
    };
    let mut m = create("vit_tiny_patch16_224", &o, 0).unwrap();
    run_case("vit", m.as_mut(), "vit_small_variant.safetensors", no_zero);
}

#[test]
fn mobilenetv2_gradients_match_timm() {
    let mut m = create("mobilenetv2_035", &classes10(), 0).unwrap();
    run_case(
        "mobilenetv2",
        m.as_mut(),
        "mobilenetv2_035.safetensors",
        mobilenet_zero,
    );
}

#[test]
fn mobilenetv3_gradients_match_timm() {
    let mut m = create("mobilenetv3_small_050", &classes10(), 0).unwrap();
    run_case(
        "mobilenetv3",
        m.as_mut(),
        "mobilenetv3_small_050.safetensors",
        mobilenet_zero,
    );
}

fn seresnet_small() -> impl Model {
    let cfg = ResNetConfig {
        layers: vec![1, 2, 1, 1],
        channels: vec![4, 8, 16, 32],
        se: true,
        in_chans: 2,
        num_classes: 10,
        ..ResNetConfig::for_arch("seresnet50").unwrap()
    };
    build_config("seresnet_small", &cfg, 0).unwrap()
}

#[test]
fn seresnet_gradients_match_timm() {
    let mut m = seresnet_small();
    run_case("seresnet", &mut m, "seresnet_small.safetensors", no_zero);
}

/// The model comes back as it was: same parameter and buffer values (running statistics
/// included), eval mode (same eval logits), parameters' own gradient slots untouched; a second
/// call gives the same result (nothing accumulated).
#[test]
fn the_model_is_left_as_it_was() {
    let mut m = seresnet_small();
    weights::load(&mut m, root().join("models/seresnet_small.safetensors")).unwrap();
    let x = read_input("seresnet");
    let labels = read_labels("seresnet");
    let before: Vec<(String, Vec<f32>)> = named_tensors(&m)
        .into_iter()
        .map(|(n, t, _)| (n, t.to_vec()))
        .collect();
    let eval_before = {
        let _g = no_grad();
        m.forward(&x).unwrap().to_vec()
    };
    let a = grads::compute(&mut m, &x, &labels).unwrap();
    let b = grads::compute(&mut m, &x, &labels).unwrap();
    let after: Vec<(String, Vec<f32>)> = named_tensors(&m)
        .into_iter()
        .map(|(n, t, _)| (n, t.to_vec()))
        .collect();
    assert_eq!(before, after, "parameters or running statistics changed");
    let eval_after = {
        let _g = no_grad();
        m.forward(&x).unwrap().to_vec()
    };
    assert_eq!(eval_before, eval_after, "not back in eval mode");
    for (n, p) in named_parameters(&m) {
        assert!(!p.requires_grad() && p.grad().is_none(), "{n}");
    }
    assert_eq!(a.loss, b.loss);
    for ((na, ga), (nb, gb)) in a.grads.iter().zip(&b.grads) {
        assert_eq!(na, nb);
        assert_eq!(ga.to_vec(), gb.to_vec(), "{na}: second call differs");
    }
    // The names come in state_dict (visiting) order.
    let order: Vec<String> = named_parameters(&m).into_iter().map(|(n, _)| n).collect();
    let got: Vec<String> = a.grads.iter().map(|(n, _)| n.clone()).collect();
    assert_eq!(order, got);
}

fn config_error(r: Result<Gradients, ModelError>) -> String {
    match r {
        Err(e @ ModelError::Config(_)) => e.to_string(),
        Err(e) => panic!("expected a configuration error, got {e}"),
        Ok(_) => panic!("expected an error"),
    }
}

#[test]
fn bad_inputs_and_labels_are_clear_errors() {
    let mut m = create("mobilenetv3_small_050", &classes10(), 0).unwrap();
    let x = Tensor::randn(&[2, 3, 32, 32], 1);
    let e = config_error(grads::compute(m.as_mut(), &x, &[1]));
    assert!(
        e.contains("1 labels for a batch of 2") && e.contains("[2, 3, 32, 32]"),
        "{e}"
    );
    let e = config_error(grads::compute(m.as_mut(), &x, &[1, 10]));
    assert!(
        e.contains("label 10 (index 1)") && e.contains("num_classes 10"),
        "{e}"
    );
    let e = config_error(grads::compute(m.as_mut(), &x, &[-1, 0]));
    assert!(e.contains("label -1 (index 0)"), "{e}");
    let e = config_error(grads::compute(
        m.as_mut(),
        &Tensor::randn(&[2, 1, 32, 32], 1),
        &[0, 0],
    ));
    assert!(
        e.contains("[2, 1, 32, 32]") && e.contains("[N, 3, H, W]"),
        "{e}"
    );
    let e = config_error(grads::compute(
        m.as_mut(),
        &Tensor::randn(&[3, 32, 32], 1),
        &[0, 0, 0],
    ));
    assert!(e.contains("[3, 32, 32]"), "{e}");
    // A ViT takes only its configured size: the forward's error comes back with the shape.
    let o = Overrides {
        img_size: Some(32),
        patch_size: Some(8),
        embed_dim: Some(48),
        depth: Some(1),
        num_heads: Some(3),
        num_classes: Some(10),
        ..Default::default()
    };
    let mut v = create("vit_tiny_patch16_224", &o, 0).unwrap();
    let e = config_error(grads::compute(
        v.as_mut(),
        &Tensor::randn(&[2, 3, 40, 40], 1),
        &[0, 1],
    ));
    assert!(
        e.contains("[2, 3, 40, 40]") && e.contains("[N, 3, 32, 32]"),
        "{e}"
    );
    // The model still works after the errors.
    assert!(grads::compute(v.as_mut(), &Tensor::randn(&[2, 3, 32, 32], 1), &[0, 1]).is_ok());
}
