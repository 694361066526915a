//! The Module framework: PyTorch state_dict names by construction, parameter counts, train/eval
//! behaviour of batch norm and dropout, and safetensors load/save with one error listing every
//! problem.

use std::collections::BTreeMap;
use tessera::core::ops::conv::Conv2dParams;
use tessera::core::{Rng, Tensor};
use tessera::models::io::safetensors::{self, TensorRef};
use tessera::models::layers::{BatchNorm2d, Conv2d, Dropout, Linear};
use tessera::models::module::{named_tensors, parameter_count, Sequential};
use tessera::models::{weights, Mode, ModelError, Module, TensorKind};

fn small_net(seed: u64) -> Sequential {
    let mut rng = Rng::new(seed);
    let mut s = Sequential::new();
    s.push(Conv2d::new(3, 4, 3, Conv2dParams::new(1, 1), false, &mut rng).unwrap());
    s.push(BatchNorm2d::new(4));
    s.push(Dropout::new(0.5, 1));
    s
}

#[test]
fn names_follow_pytorch_state_dict() {
    let net = small_net(0);
    let names: Vec<(String, TensorKind)> = named_tensors(&net)
        .into_iter()
        .map(|(n, _, k)| (n, k))
        .collect();
    assert_eq!(
        names,
        vec![
            ("0.weight".to_string(), TensorKind::Parameter),
            ("1.weight".to_string(), TensorKind::Parameter),
            ("1.bias".to_string(), TensorKind::Parameter),
            ("1.running_mean".to_string(), TensorKind::Buffer),
            ("1.running_var".to_string(), TensorKind::Buffer),
        ]
    );
    // 4*3*3*3 conv weights + 4 + 4 batch-norm affine parameters; buffers are not counted.
    assert_eq!(parameter_count(&net), 108 + 8);
    let lin = Linear::new(10, 3, true, &mut Rng::new(1));
    assert_eq!(parameter_count(&lin), 33);
}

#[test]
fn batch_norm_updates_running_stats_only_in_training() {
    let mut net = small_net(0);
    let x = Tensor::randn(&[2, 3, 5, 5], 7);
    let before = named_tensors(&net)[3].1.to_vec();
    net.forward(&x).unwrap();
    assert_eq!(
        named_tensors(&net)[3].1.to_vec(),
        before,
        "eval forward changed running_mean"
    );
    net.set_mode(Mode::Train);
    let y1 = net.forward(&x).unwrap();
    assert_ne!(
        named_tensors(&net)[3].1.to_vec(),
        before,
        "train forward did not update running_mean"
    );
    // Dropout is active in training: about half the outputs are zero.
    let zeros = y1.to_vec().iter().filter(|v| **v == 0.0).count();
    assert!(zeros > 30 && zeros < 170, "{zeros} zeros of 200");
    net.set_mode(Mode::Eval);
    let a = net.forward(&x).unwrap().to_vec();
    let b = net.forward(&x).unwrap().to_vec();
    assert_eq!(a, b, "eval forward is deterministic");
}

fn tmp(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("tessera-module-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(name)
}

#[test]
fn save_and_load_round_trip() {
    let a = small_net(1);
    let p = tmp("net.safetensors");
    weights::save(&a, &p, &BTreeMap::new()).unwrap();
    let mut b = small_net(2);
    assert_ne!(
        named_tensors(&a)[0].1.to_vec(),
        named_tensors(&b)[0].1.to_vec()
    );
    weights::load(&mut b, &p).unwrap();
    for ((na, ta, _), (nb, tb, _)) in named_tensors(&a).into_iter().zip(named_tensors(&b)) {
        assert_eq!(na, nb);
        assert_eq!(ta.to_vec(), tb.to_vec(), "{na}");
    }
    let x = Tensor::randn(&[1, 3, 4, 4], 3);
    assert_eq!(
        a.forward(&x).unwrap().to_vec(),
        b.forward(&x).unwrap().to_vec()
    );
}

#[test]
fn load_lists_every_problem_at_once() {
    let p = tmp("bad.safetensors");
    let w = vec![0.0f32; 4 * 3 * 3 * 3];
    let wrong = vec![0.0f32; 5];
    let nbt = [0.0f32];
    safetensors::write(
        &p,
        &[
            TensorRef {
                name: "0.weight",
                shape: &[4, 3, 3, 3],
                data: &w,
            },
            TensorRef {
                name: "1.weight",
                shape: &[5],
                data: &wrong,
            },
            TensorRef {
                name: "1.num_batches_tracked",
                shape: &[],
                data: &nbt,
            },
            TensorRef {
                name: "head.weight",
                shape: &[5],
                data: &wrong,
            },
        ],
        &BTreeMap::new(),
    )
    .unwrap();
    let mut net = small_net(0);
    let before: Vec<Vec<f32>> = named_tensors(&net)
        .into_iter()
        .map(|(_, t, _)| t.to_vec())
        .collect();
    let err = weights::load(&mut net, &p).unwrap_err();
    let ModelError::Weights { problems, .. } = &err else {
        panic!("{err}")
    };
    let text = err.to_string();
    assert_eq!(problems.len(), 5, "{text}");
    assert!(text.contains("bad.safetensors"), "{text}");
    assert!(text.contains("\"1.weight\" has shape [5]"), "{text}");
    assert!(text.contains("missing tensor \"1.bias\""), "{text}");
    assert!(text.contains("missing tensor \"1.running_mean\""), "{text}");
    assert!(text.contains("unexpected tensor \"head.weight\""), "{text}");
    assert!(!text.contains("num_batches_tracked"), "{text}");
    // Nothing was changed by the failed load.
    let after: Vec<Vec<f32>> = named_tensors(&net)
        .into_iter()
        .map(|(_, t, _)| t.to_vec())
        .collect();
    assert_eq!(before, after);
}

#[test]
fn corrupt_weights_file_is_named() {
    let p = tmp("corrupt.safetensors");
    std::fs::write(&p, b"\x10\x00\x00\x00\x00\x00\x00\x00{\"a\":").unwrap();
    let err = weights::load(&mut small_net(0), &p)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("corrupt.safetensors") && err.contains("past the end"),
        "{err}"
    );
}

#[test]
fn mac_counter_counts_linear_and_conv() {
    use tessera::core::profile::count_macs;
    let lin = Linear::new(10, 3, true, &mut Rng::new(1));
    let x = Tensor::randn(&[4, 10], 1);
    let (_, macs) = count_macs(|| lin.forward(&x).unwrap());
    assert_eq!(macs, 4 * 10 * 3);
    let conv = Conv2d::new(3, 8, 3, Conv2dParams::new(2, 1), true, &mut Rng::new(1)).unwrap();
    let x = Tensor::randn(&[2, 3, 9, 9], 1);
    let (y, macs) = count_macs(|| conv.forward(&x).unwrap());
    assert_eq!(y.shape(), &[2, 8, 5, 5]);
    assert_eq!(macs, 2 * 8 * 5 * 5 * 3 * 3 * 3);
}

#[test]
fn training_checkpoint_loads_as_weights_and_lean_load_matches() {
    // Optimizer entries of a training checkpoint are skipped when loading model weights.
    let a = small_net(4);
    let named = named_tensors(&a);
    let mut owned: Vec<(String, Vec<usize>, Vec<f32>)> = named
        .iter()
        .map(|(n, t, _)| (n.clone(), t.shape().to_vec(), t.to_vec()))
        .collect();
    owned.push((
        "__optim__.adamw.exp_avg.0.weight".into(),
        vec![3],
        vec![0.0; 3],
    ));
    let refs: Vec<TensorRef<'_>> = owned
        .iter()
        .map(|(n, s, d)| TensorRef {
            name: n,
            shape: s,
            data: d,
        })
        .collect();
    let p = tmp("ckpt.safetensors");
    safetensors::write(&p, &refs, &BTreeMap::new()).unwrap();
    let mut b = small_net(5);
    weights::load(&mut b, &p).unwrap();
    let mut c = small_net(6);
    weights::load_lean(&mut c, &p).unwrap();
    for (((_, x, _), (_, y, _)), (_, z, _)) in
        named.iter().zip(named_tensors(&b)).zip(named_tensors(&c))
    {
        assert_eq!(x.to_vec(), y.to_vec());
        assert_eq!(x.to_vec(), z.to_vec());
    }
    let err = weights::load_lean(&mut small_net(0), tmp("missing.safetensors")).unwrap_err();
    assert!(err.to_string().contains("missing.safetensors"));
}
