//! Optimizers against PyTorch trajectories (`scripts/optim_fixtures.py`), schedules, clipping
//! and optimizer state round trips.

use std::collections::BTreeMap;
use tessera::core::{Rng, Tensor};
use tessera::models::layers::Linear;
use tessera::models::module::{named_parameters, set_requires_grad};
use tessera::models::optim::{clip_grad_norm, AdamW, LrSchedule, Optimizer, Sgd};
use tessera::models::Module;

fn fixture() -> BTreeMap<String, Vec<f32>> {
    let text = include_str!("fixtures/optim/torch_optim.txt");
    text.lines()
        .map(|l| {
            let mut it = l.split_whitespace();
            let k = it.next().unwrap().to_string();
            (k, it.map(|v| v.parse::<f64>().unwrap() as f32).collect())
        })
        .collect()
}

fn layer(f: &BTreeMap<String, Vec<f32>>) -> Linear {
    let mut l = Linear::new(3, 2, true, &mut Rng::new(0));
    l.weight = Tensor::from_slice(&f["w0"], &[2, 3])
        .unwrap()
        .requires_grad_(true);
    l.bias = Some(
        Tensor::from_slice(&f["b0"], &[2])
            .unwrap()
            .requires_grad_(true),
    );
    l
}

/// Gives the layer's parameters the gradients `gw`, `gb` (loss = sum(w * gw) + sum(b * gb)).
fn set_grads(l: &Linear, gw: &[f32], gb: &[f32]) {
    let gw = Tensor::from_slice(gw, &[2, 3]).unwrap();
    let gb = Tensor::from_slice(gb, &[2]).unwrap();
    let loss = l
        .weight
        .mul(&gw)
        .unwrap()
        .sum_all()
        .add(&l.bias.as_ref().unwrap().mul(&gb).unwrap().sum_all())
        .unwrap();
    loss.backward().unwrap();
}

fn assert_close(got: &[f32], want: &[f32], what: &str) {
    for (g, w) in got.iter().zip(want) {
        assert!(
            (g - w).abs() <= 2e-6 * (1.0 + w.abs()),
            "{what}: {got:?} vs {want:?}"
        );
    }
}

#[test]
fn sgd_nesterov_matches_pytorch() {
    let f = fixture();
    let mut l = layer(&f);
    let mut opt = Sgd::new(0.9, true, 0.05).unwrap();
    for i in 0..4 {
        set_grads(&l, &f[&format!("gw{i}")], &f[&format!("gb{i}")]);
        opt.step(&mut l, 0.1, 1.0).unwrap();
        assert_close(
            &l.weight.to_vec(),
            &f[&format!("sgd_w{i}")],
            &format!("sgd weight step {i}"),
        );
        assert_close(
            &l.bias.as_ref().unwrap().to_vec(),
            &f[&format!("sgd_b{i}")],
            &format!("sgd bias step {i}"),
        );
        assert!(l.weight.grad().is_none(), "a step clears the gradient");
    }
}

#[test]
fn adamw_with_clipping_matches_pytorch() {
    let f = fixture();
    let mut l = layer(&f);
    let mut opt = AdamW::new(0.9, 0.999, 1e-8, 0.05).unwrap();
    for i in 0..4 {
        set_grads(&l, &f[&format!("gw{i}")], &f[&format!("gb{i}")]);
        let (_, scale) = clip_grad_norm(&l, 1.0);
        opt.step(&mut l, 0.01, scale).unwrap();
        assert_close(
            &l.weight.to_vec(),
            &f[&format!("adamw_w{i}")],
            &format!("adamw weight step {i}"),
        );
        assert_close(
            &l.bias.as_ref().unwrap().to_vec(),
            &f[&format!("adamw_b{i}")],
            &format!("adamw bias step {i}"),
        );
    }
}

#[test]
fn optimizer_state_round_trip_continues_identically() {
    let f = fixture();
    let (mut a, mut b) = (layer(&f), layer(&f));
    let mut oa = AdamW::new(0.9, 0.999, 1e-8, 0.05).unwrap();
    for i in 0..2 {
        set_grads(&a, &f[&format!("gw{i}")], &f[&format!("gb{i}")]);
        oa.step(&mut a, 0.01, 1.0).unwrap();
    }
    // Copy the model and the optimizer state into fresh objects, then take two more steps each.
    b.weight = a.weight.detach().requires_grad_(true);
    b.bias = Some(a.bias.as_ref().unwrap().detach().requires_grad_(true));
    let mut ob = AdamW::new(0.9, 0.999, 1e-8, 0.05).unwrap();
    ob.load_state(&oa.state()).unwrap();
    assert!(Sgd::new(0.9, false, 0.0)
        .unwrap()
        .load_state(&oa.state())
        .is_err());
    for i in 2..4 {
        set_grads(&a, &f[&format!("gw{i}")], &f[&format!("gb{i}")]);
        set_grads(&b, &f[&format!("gw{i}")], &f[&format!("gb{i}")]);
        oa.step(&mut a, 0.01, 1.0).unwrap();
        ob.step(&mut b, 0.01, 1.0).unwrap();
    }
    for ((_, x), (_, y)) in named_parameters(&a).into_iter().zip(named_parameters(&b)) {
        assert_eq!(x.to_vec(), y.to_vec());
    }
}

#[test]
fn schedules() {
    let c = LrSchedule::Cosine {
        warmup: 10,
        total: 110,
        min_lr: 0.0,
    };
    assert!((c.lr(1.0, 0) - 0.1).abs() < 1e-6);
    assert!((c.lr(1.0, 9) - 1.0).abs() < 1e-6);
    assert!((c.lr(1.0, 10) - 1.0).abs() < 1e-6);
    assert!((c.lr(1.0, 60) - 0.5).abs() < 1e-6);
    assert!(c.lr(1.0, 109) < 0.001);
    assert_eq!(c.lr(1.0, 500), 0.0);
    let s = LrSchedule::Step {
        every: 30,
        gamma: 0.1,
    };
    assert!(
        (s.lr(1.0, 29) - 1.0).abs() < 1e-7
            && (s.lr(1.0, 30) - 0.1).abs() < 1e-7
            && (s.lr(1.0, 65) - 0.01).abs() < 1e-8
    );
}

#[test]
fn invalid_hyperparameters_are_errors() {
    assert!(Sgd::new(0.0, true, 0.0).is_err());
    assert!(Sgd::new(-0.1, false, 0.0).is_err());
    assert!(AdamW::new(1.0, 0.999, 1e-8, 0.0).is_err());
    assert!(AdamW::new(0.9, 0.999, 0.0, 0.0).is_err());
}

#[test]
fn training_a_linear_layer_reduces_the_loss() {
    // A real learning signal: fit y = x W* + b* with SGD.
    let x = Tensor::randn(&[64, 3], 1);
    let wt = Tensor::from_slice(&[1.0, -2.0, 0.5, 0.3, 0.7, -1.1], &[2, 3]).unwrap();
    let y = x.linear(&wt, None).unwrap();
    let mut l = Linear::new(3, 2, true, &mut Rng::new(3));
    tessera::models::module::set_requires_grad(&mut l, true);
    let mut opt = Sgd::new(0.9, false, 0.0).unwrap();
    let loss_of = |l: &Linear| l.forward(&x).unwrap().sub(&y).unwrap().powf(2.0).mean_all();
    let first = loss_of(&l).item().unwrap();
    for _ in 0..100 {
        loss_of(&l).backward().unwrap();
        opt.step(&mut l, 0.05, 1.0).unwrap();
    }
    let last = loss_of(&l).item().unwrap();
    assert!(last < first * 1e-3, "loss {first} -> {last}");
}

#[test]
fn in_place_and_copying_updates_agree_bit_for_bit() {
    // 300 x 100 weights span several parallel update chunks. One layer's weight is also held
    // elsewhere, so its update must copy; the other is updated in its own buffer.
    let make = || {
        let mut l = Linear::new(100, 300, true, &mut Rng::new(7));
        set_requires_grad(&mut l, true);
        l
    };
    let opts: [fn() -> Box<dyn Optimizer>; 2] = [
        || Box::new(Sgd::new(0.9, true, 0.01).unwrap()),
        || Box::new(AdamW::new(0.9, 0.999, 1e-8, 0.05).unwrap()),
    ];
    for new_opt in opts {
        let (mut a, mut b) = (make(), make());
        let (mut oa, mut ob) = (new_opt(), new_opt());
        for step in 0..3u64 {
            let x = Tensor::randn(&[4, 100], 100 + step);
            for l in [&a, &b] {
                let y = l.forward(&x).unwrap();
                y.mul(&y).unwrap().sum_all().backward().unwrap();
            }
            let buffer = a.weight.storage().as_f32().as_ptr();
            let held = b.weight.clone();
            oa.step(&mut a, 0.05, 1.0).unwrap();
            ob.step(&mut b, 0.05, 1.0).unwrap();
            assert_eq!(a.weight.storage().as_f32().as_ptr(), buffer, "not in place");
            assert!(!b.weight.same_storage(&held), "a shared buffer was written");
            let bits = |t: &Tensor| t.to_vec().iter().map(|v| v.to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(&a.weight), bits(&b.weight));
            assert_eq!(
                bits(a.bias.as_ref().unwrap()),
                bits(b.bias.as_ref().unwrap())
            );
            assert!(a.weight.grad().is_none() && b.weight.grad().is_none());
        }
    }
}
