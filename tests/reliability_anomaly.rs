//! Anomaly detection names the first op that made NaN or infinity and the module (layer) it
//! ran in, forward and backward, for NaN injected at a known place; the module paths the
//! models record are their parameters' names. Its own file: the switch is process-wide.

use std::collections::BTreeSet;
use tessera::core::{profile, Tensor};
use tessera::models::anomaly::{self, check_gradients, forward_checked, Watch};
use tessera::models::data::digits_split;
use tessera::models::module::set_requires_grad;
use tessera::models::train::{TrainConfig, Trainer};
use tessera::models::{create, Mode, Model, ModelError, Overrides, TensorKind};

/// `arch` with each named parameter set to its value.
fn poisoned(arch: &str, params: &[(&str, f32)]) -> Box<dyn Model> {
    let mut m = create(arch, &Overrides::default(), 0).unwrap();
    let mut found = 0;
    m.visit_mut("", &mut |name, t, _| {
        if let Some((_, v)) = params.iter().find(|(p, _)| *p == name) {
            *t = Tensor::full(t.shape(), *v);
            found += 1;
        }
    });
    assert_eq!(found, params.len(), "{arch}: {params:?}");
    m
}

/// `vit_digits` whose forward is finite but whose backward overflows in one op: the MLP of
/// block 0 computes exactly zero (fc1 maps everything to -100, and gelu(-100) = 0), so fc2
/// weights scaled up to `f32::MAX / 2` are harmless forward, while fc2's backward, the output
/// gradient times those weights, overflows. A head scaled by 1,000 makes that gradient large.
fn overflows_backward_only() -> Box<dyn Model> {
    let mut m = poisoned(
        "vit_digits",
        &[
            ("blocks.0.mlp.fc1.weight", 0.0),
            ("blocks.0.mlp.fc1.bias", -100.0),
        ],
    );
    m.visit_mut("", &mut |name, t, _| match name {
        "blocks.0.mlp.fc2.weight" => {
            let max = t.data().iter().fold(0.0f32, |a, v| a.max(v.abs()));
            *t = t.mul_scalar(1.0 / max).mul_scalar(0.5 * f32::MAX);
        }
        "head.weight" => *t = t.mul_scalar(1e3),
        _ => {}
    });
    m
}

fn input() -> Tensor {
    Tensor::rand(&[2, 1, 8, 8], 1)
}

/// A message of `r`, which must be an anomaly.
fn anomaly_message<T: std::fmt::Debug>(r: tessera::models::Result<T>) -> String {
    match r {
        Err(ModelError::Anomaly(m)) => m,
        other => panic!("expected an anomaly, got {other:?}"),
    }
}

#[test]
fn forward_names_the_op_and_module_of_the_first_non_finite_value() {
    let x = input();
    // A NaN weight: the projection that reads it.
    let m = poisoned("vit_digits", &[("blocks.1.attn.qkv.weight", f32::NAN)]);
    let e = anomaly_message(forward_checked(m.as_ref(), &x));
    assert!(
        e.starts_with(
            "forward: op linear in module blocks.1.attn.qkv (stage blocks.1) of vit_digits"
        ),
        "{e}"
    );
    assert!(
        e.contains("NaN") && e.contains("output shape [2, 17, 192]"),
        "{e}"
    );
    // An op that overflows on finite inputs: a layer norm scaled by f32::MAX.
    let m = poisoned("vit_digits", &[("blocks.2.norm2.weight", f32::MAX)]);
    let e = anomaly_message(forward_checked(m.as_ref(), &x));
    assert!(
        e.starts_with("forward: op layer_norm in module blocks.2.norm2 (stage blocks.2)"),
        "{e}"
    );
    // A convolution: eval mode folds batch norm and activation into it, training runs it alone.
    let mut m = poisoned(
        "mobilenetv2_digits",
        &[("blocks.1.0.conv_pw.weight", f32::NAN)],
    );
    let e = anomaly_message(forward_checked(m.as_ref(), &input()));
    assert!(
        e.starts_with("forward: op conv2d+relu6 in module blocks.1.0.conv_pw (stage blocks.1)"),
        "{e}"
    );
    m.set_mode(Mode::Train);
    set_requires_grad(m.as_mut(), true);
    let e = anomaly_message(forward_checked(m.as_ref(), &input()));
    assert!(
        e.starts_with("forward: op conv2d in module blocks.1.0.conv_pw (stage blocks.1)"),
        "{e}"
    );
    // The input itself, and a clean model.
    let clean = create("vit_digits", &Overrides::default(), 0).unwrap();
    let e = anomaly_message(forward_checked(
        clean.as_ref(),
        &Tensor::full(&[1, 1, 8, 8], f32::NAN),
    ));
    assert!(
        e.starts_with("the input of vit_digits is not finite: 64 NaN"),
        "{e}"
    );
    let y = forward_checked(clean.as_ref(), &x).unwrap();
    assert_eq!(y.shape(), &[2, 10]);
}

#[test]
fn backward_names_the_rule_and_the_forward_op_and_module_it_belongs_to() {
    let mut m = overflows_backward_only();
    set_requires_grad(m.as_mut(), true);
    m.set_mode(Mode::Train);
    let watch = Watch::start();
    let logits = watch.forward(m.as_ref(), &input()).unwrap();
    assert!(logits.data().iter().all(|v| v.is_finite()));
    let loss = logits.cross_entropy(&[3, 7], 0.0).unwrap();
    assert!(loss.item().unwrap().is_finite());
    loss.backward().unwrap();
    let e = anomaly_message(watch.finish(m.arch()));
    assert!(
        e.starts_with(
            "backward: linear.backward of op linear in module blocks.0.mlp.fc2 (stage blocks.0) \
             of vit_digits is the first to return non-finite gradients"
        ),
        "{e}"
    );
    assert!(
        e.contains("for inputs of shapes [[34, 256], [64, 256], [64]]"),
        "{e}"
    );
    // The parameter-level check sees the result: fc1's gradients, reached through fc2.
    let e = anomaly_message(check_gradients(m.as_ref()));
    assert!(e.contains("the gradient of blocks.0.mlp.fc1."), "{e}");
}

#[test]
fn the_training_loop_stops_at_the_first_anomaly_when_enabled() {
    let (train, test) = digits_split().unwrap();
    let train = train.subset(&(0..16).collect::<Vec<_>>());
    let test = test.subset(&[0, 1]);
    let cfg = TrainConfig {
        epochs: 1,
        batch: 8,
        ..TrainConfig::default()
    };
    let run = |m: &mut Box<dyn Model>| {
        let mut t = Trainer::new(cfg.clone(), m.as_mut(), train.len()).unwrap();
        t.run_epoch(m.as_mut(), &train, &test, &mut |_| {})
    };
    anomaly::set_enabled(true);
    let forward = run(&mut poisoned(
        "vit_digits",
        &[("blocks.1.attn.qkv.weight", f32::NAN)],
    ));
    let backward = run(&mut overflows_backward_only());
    let clean = run(&mut create("vit_digits", &Overrides::default(), 0).unwrap());
    anomaly::set_enabled(false);
    let e = anomaly_message(forward);
    assert!(
        e.starts_with("epoch 1 step 1: forward: op linear in module blocks.1.attn.qkv"),
        "{e}"
    );
    let e = anomaly_message(backward);
    assert!(
        e.starts_with(
            "epoch 1 step 1: backward: linear.backward of op linear in module blocks.0.mlp.fc2"
        ),
        "{e}"
    );
    assert!(clean.unwrap().train_loss.is_finite());
}

/// Every op records the module path of the parameters it uses: each parameter's module (its
/// name without the last part) is the module of some recorded op, forward and backward, and
/// every recorded module is a prefix of some parameter's name.
#[test]
fn recorded_module_paths_are_the_parameter_names() {
    for arch in [
        "vit_digits",
        "mobilenetv2_digits",
        "mobilenetv3_digits",
        "resnet_digits",
        "seresnet_digits",
    ] {
        let mut m = create(arch, &Overrides::default(), 0).unwrap();
        m.set_mode(Mode::Train);
        set_requires_grad(m.as_mut(), true);
        let mut params = BTreeSet::new();
        m.visit("", &mut |name, _, kind| {
            if kind == TensorKind::Parameter {
                params.insert(name.rsplit_once('.').map_or("", |(p, _)| p).to_string());
            }
        });
        let (r, prof) = profile::record(|| {
            let y = m.forward(&input())?;
            y.cross_entropy(&[1, 2], 0.0)?.backward()?;
            Ok::<_, ModelError>(())
        });
        r.unwrap();
        for phase in [profile::Phase::Forward, profile::Phase::Backward] {
            let seen: BTreeSet<&str> = prof
                .records
                .iter()
                .filter(|r| r.phase == phase)
                .map(|r| r.module.as_str())
                .collect();
            for p in &params {
                assert!(
                    seen.contains(p.as_str()),
                    "{arch} {phase:?}: no op in {p:?}"
                );
            }
            for s in &seen {
                assert!(
                    s.is_empty()
                        || params
                            .iter()
                            .any(|p| p == s || p.starts_with(&format!("{s}."))),
                    "{arch} {phase:?}: {s:?} is no module"
                );
            }
        }
    }
}
