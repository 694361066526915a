//! Anomaly detection names where NaN or infinity first appears: the stage of the forward pass,
//! or the parameter whose gradient the backward pass made non-finite. Its own file: the switch
//! is process-wide.

use tessera::core::Tensor;
use tessera::models::anomaly::{self, check_gradients, forward_checked};
use tessera::models::data::digits_split;
use tessera::models::train::{TrainConfig, Trainer};
use tessera::models::{create, Model, ModelError, Overrides, TensorKind};

/// `vit_digits` with every element of `param` set to `v`.
fn poisoned(param: &str, v: f32) -> Box<dyn Model> {
    let mut m = create("vit_digits", &Overrides::default(), 0).unwrap();
    m.visit_mut("", &mut |name, t, _| {
        if name == param {
            *t = Tensor::full(t.shape(), v);
        }
    });
    m
}

#[test]
fn forward_names_the_first_stage_and_backward_the_parameter() {
    let x = Tensor::rand(&[2, 1, 8, 8], 1);
    let m = poisoned("blocks.2.mlp.fc1.weight", f32::INFINITY);
    let e = forward_checked(m.as_ref(), &x).unwrap_err().to_string();
    assert!(e.contains("stage blocks.2 "), "{e}");
    let clean = create("vit_digits", &Overrides::default(), 0).unwrap();
    let bad = Tensor::full(&[1, 1, 8, 8], f32::NAN);
    let e = forward_checked(clean.as_ref(), &bad)
        .unwrap_err()
        .to_string();
    assert!(e.contains("input"), "{e}");
    forward_checked(clean.as_ref(), &x).unwrap();

    // A huge weight overflows only in the backward pass: the gradient check names it.
    let mut m = poisoned("head.bias", 0.0);
    tessera::models::module::set_requires_grad(m.as_mut(), true);
    let y = m.forward(&x).unwrap();
    y.mul_scalar(f32::MAX)
        .sum_all()
        .mul_scalar(f32::MAX)
        .backward()
        .unwrap();
    let e = check_gradients(m.as_ref()).unwrap_err().to_string();
    assert!(e.contains("gradient of head."), "{e}");
    let mut params = 0;
    m.visit("", &mut |_, _, k| {
        params += (k == TensorKind::Parameter) as usize
    });
    assert!(params > 0);
}

#[test]
fn the_training_loop_stops_at_the_first_anomaly_when_enabled() {
    let (train, test) = digits_split().unwrap();
    let train = train.subset(&(0..16).collect::<Vec<_>>());
    let test = test.subset(&[0, 1]);
    let mut m = poisoned("blocks.1.attn.qkv.weight", f32::NAN);
    let cfg = TrainConfig {
        epochs: 1,
        batch: 8,
        ..TrainConfig::default()
    };
    anomaly::set_enabled(true);
    let mut t = Trainer::new(cfg, m.as_mut(), train.len()).unwrap();
    let r = t.run_epoch(m.as_mut(), &train, &test, &mut |_| {});
    anomaly::set_enabled(false);
    match r {
        Err(ModelError::Anomaly(msg)) => assert!(msg.contains("stage blocks.1 "), "{msg}"),
        other => panic!("expected an anomaly, got {other:?}"),
    }
}
