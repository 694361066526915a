//! Tests of the op recorder: kinds, shapes and costs of an op sequence, nesting, layers,
//! backward records, and isolation (off, nested recorders, other threads).

use super::*;
use crate::{Conv2dParams, Tensor};

fn ops(p: &Profile) -> Vec<&str> {
    p.records.iter().map(|r| r.op.as_str()).collect()
}

#[test]
fn op_sequence_kinds_shapes_and_costs() {
    let x = Tensor::randn(&[4, 16], 0);
    let w = Tensor::randn(&[8, 16], 1);
    let b = Tensor::randn(&[8], 2);
    let (y, p) = record(|| {
        let h = x.linear(&w, Some(&b)).unwrap();
        let a = h.relu();
        let s = a.softmax(1).unwrap();
        s.add(&a).unwrap()
    });
    assert_eq!(y.shape(), &[4, 8]);
    assert_eq!(ops(&p), ["linear", "relu", "softmax", "add"]);
    let lin = &p.records[0];
    assert_eq!(lin.inputs, vec![vec![4, 16], vec![8, 16], vec![8]]);
    assert_eq!(lin.output, vec![4, 8]);
    assert_eq!(lin.macs, 4 * 8 * 16);
    assert_eq!(lin.flops, 2 * 4 * 8 * 16 + 4 * 8); // + the bias add
    assert_eq!(lin.bytes_read, 4 * (4 * 16 + 8 * 16 + 8));
    assert_eq!(lin.bytes_written, 4 * 4 * 8);
    let relu = &p.records[1];
    assert_eq!((relu.flops, relu.macs), (32, 0));
    assert_eq!((relu.bytes_read, relu.bytes_written), (128, 128));
    assert_eq!(p.records[2].flops, 5 * 32);
    let add = &p.records[3];
    assert_eq!(add.inputs, vec![vec![4, 8], vec![4, 8]]);
    assert_eq!(
        (add.flops, add.bytes_read, add.bytes_written),
        (32, 256, 128)
    );
    assert!(p.records.iter().all(|r| r.phase == Phase::Forward));
    assert!(p.records.iter().all(|r| r.layer == OTHER));
    let t = p.totals();
    assert_eq!(t.ops, 4);
    assert_eq!(t.flops, p.records.iter().map(|r| r.flops).sum::<u64>());
    assert_eq!(t.contraction_flops(), 2 * 4 * 8 * 16);
    assert!(p.wall_ns >= t.ns);
}

#[test]
fn convolutions_and_fused_activation() {
    let x = Tensor::randn(&[1, 4, 8, 8], 0);
    let wd = Tensor::randn(&[4, 1, 3, 3], 1);
    let wp = Tensor::randn(&[6, 4, 1, 1], 2);
    let bp = Tensor::zeros(&[6]);
    let (_, p) = record(|| {
        let dw = Conv2dParams::new(2, 1).groups(4);
        let h = x.conv2d(&wd, None, dw).unwrap();
        h.conv2d_act(&wp, Some(&bp), Conv2dParams::default(), Activation::Relu6)
            .unwrap()
    });
    assert_eq!(ops(&p), ["conv2d_dw", "conv2d+relu6"]);
    let dw = &p.records[0];
    assert_eq!(dw.output, vec![1, 4, 4, 4]);
    assert_eq!(dw.macs, 4 * 4 * 4 * 9);
    assert_eq!(dw.flops, 2 * dw.macs);
    assert_eq!(dw.bytes_read, 4 * (4 * 64 + 36));
    assert_eq!(dw.bytes_written, 4 * 64);
    let pw = &p.records[1];
    assert_eq!(pw.macs, 6 * 16 * 4);
    // bias (1) + relu6 (2) per output element
    assert_eq!(pw.flops, 2 * pw.macs + 3 * 6 * 16);
}

#[test]
fn nested_ops_fold_into_the_outer_record() {
    // A transposed (non-contiguous) input: conv2d copies it first; the copy is part of the
    // conv2d record, not a record of its own.
    let x = Tensor::randn(&[1, 2, 5, 5], 0).transpose(2, 3).unwrap();
    let w = Tensor::randn(&[3, 2, 1, 1], 1);
    let logits = Tensor::randn(&[2, 5], 2);
    let (_, p) = record(|| {
        x.conv2d(&w, None, Conv2dParams::default()).unwrap();
        logits.cross_entropy(&[1, 3], 0.0).unwrap()
    });
    assert_eq!(ops(&p), ["conv2d", "cross_entropy"]);
    let conv = &p.records[0];
    // The copy's 50 values read and written plus the convolution's own traffic.
    assert_eq!(conv.bytes_read, 4 * (50 + 50 + 6));
    assert_eq!(conv.bytes_written, 4 * (50 + 75));
    // cross_entropy: its own 2 per logit + the nested log_softmax's 5 per logit.
    assert_eq!(p.records[1].flops, 7 * 10);
}

#[test]
fn nothing_recorded_when_off_and_state_is_clean_after() {
    assert!(!is_recording());
    let x = Tensor::randn(&[3, 3], 0);
    let _ = x.matmul(&x).unwrap().relu();
    end_layer("ignored"); // no-op when off
    let _s = scope("ignored");
    let (_, p) = record(|| {});
    assert!(p.records.is_empty());
    assert!(!is_recording());
    // A recorder dropped without finish stops recording too.
    {
        let _r = Recorder::start();
        assert!(is_recording());
    }
    assert!(!is_recording());
}

#[test]
fn nested_recorder_suspends_the_outer_one() {
    let x = Tensor::randn(&[2, 2], 0);
    let outer = Recorder::start();
    let _ = x.relu();
    let (_, inner) = record(|| {
        let _ = x.sigmoid();
        end_layer("inner_layer");
    });
    let _ = x.tanh();
    end_layer("outer_layer");
    let outer = outer.finish();
    assert_eq!(ops(&inner), ["sigmoid"]);
    assert_eq!(inner.records[0].layer, "inner_layer");
    assert_eq!(ops(&outer), ["relu", "tanh"]);
    assert!(outer.records.iter().all(|r| r.layer == "outer_layer"));
    assert!(!is_recording());
}

#[test]
fn layers_from_scopes_and_layer_ends() {
    let x = Tensor::randn(&[2, 3], 0);
    let (_, p) = record(|| {
        let _ = x.relu();
        end_layer("stem");
        {
            let _a = scope("blocks.0");
            let _ = x.exp();
            let _b = scope("attn");
            let _ = x.tanh();
        }
        let _ = x.neg();
        end_layer("blocks.0");
        let _ = x.abs();
    });
    let layers: Vec<&str> = p.records.iter().map(|r| r.layer.as_str()).collect();
    assert_eq!(
        layers,
        ["stem", "blocks.0", "blocks.0.attn", "blocks.0", OTHER]
    );
    assert_eq!(ops(&p), ["relu", "exp", "tanh", "neg", "abs"]);
    let groups: Vec<(&str, usize)> = p
        .layer_groups()
        .iter()
        .map(|(l, r)| (*l, r.len()))
        .collect();
    assert_eq!(
        groups,
        [
            ("stem", 1),
            ("blocks.0", 1),
            ("blocks.0.attn", 1),
            ("blocks.0", 1),
            (OTHER, 1)
        ]
    );
}

#[test]
fn backward_records_take_the_forward_layer() {
    let x = Tensor::randn(&[4, 6], 0);
    let w = Tensor::randn(&[3, 6], 1).requires_grad_(true);
    let (_, p) = record(|| {
        let h = x.linear(&w, None).unwrap();
        end_layer("fc");
        let a = h.relu();
        end_layer("act");
        let loss = a.cross_entropy(&[0, 1, 2, 0], 0.0).unwrap();
        end_layer("loss");
        loss.backward().unwrap();
    });
    let got: Vec<(&str, &str, Phase)> = p
        .records
        .iter()
        .map(|r| (r.layer.as_str(), r.op.as_str(), r.phase))
        .collect();
    assert_eq!(
        got,
        [
            ("fc", "linear", Phase::Forward),
            ("act", "relu", Phase::Forward),
            ("loss", "cross_entropy", Phase::Forward),
            ("loss", "cross_entropy.backward", Phase::Backward),
            ("act", "relu.backward", Phase::Backward),
            ("fc", "linear.backward", Phase::Backward),
        ]
    );
    // dW = g^T x: one [3, 4] x [4, 6] product (x needs no grad, so no dx product).
    let lb = &p.records[5];
    assert_eq!(lb.macs, 3 * 4 * 6);
    assert_eq!(lb.inputs[0], vec![4, 3]);
    assert!(w.grad().is_some());
}

#[test]
fn an_op_error_leaves_the_recorder_consistent() {
    let a = Tensor::randn(&[2, 3], 0);
    let (_, p) = record(|| {
        assert!(a.matmul(&a).is_err());
        assert!(a.conv2d(&a, None, Conv2dParams::default()).is_err());
        a.add(&a).unwrap()
    });
    assert_eq!(ops(&p), ["add"]);
}

#[test]
fn region_times_a_block_as_one_record() {
    let x = Tensor::randn(&[8], 0);
    let (_, p) = record(|| {
        let _s = scope("optimizer");
        region(
            "optimizer.step",
            Phase::Update,
            &[&[8]],
            Cost {
                flops: 16,
                ..Cost::default()
            },
            || x.mul_scalar(2.0),
        )
    });
    assert_eq!(ops(&p), ["optimizer.step"]);
    let r = &p.records[0];
    assert_eq!((r.phase, r.layer.as_str()), (Phase::Update, "optimizer"));
    // Its own 16 plus the nested mul_scalar's 8.
    assert_eq!(r.flops, 24);
}

#[test]
fn recording_is_per_thread() {
    use std::sync::{Arc, Barrier};
    let barrier = Arc::new(Barrier::new(2));
    let b2 = barrier.clone();
    let other = std::thread::spawn(move || {
        let x = Tensor::randn(&[16], 1);
        let (_, p) = record(|| {
            b2.wait();
            for _ in 0..50 {
                let _ = x.sigmoid();
            }
            b2.wait();
        });
        p
    });
    let x = Tensor::randn(&[16], 0);
    let (_, mine) = record(|| {
        barrier.wait();
        for _ in 0..50 {
            let _ = x.relu();
        }
        barrier.wait();
    });
    let theirs = other.join().unwrap();
    assert_eq!(mine.records.len(), 50);
    assert!(mine.records.iter().all(|r| r.op == "relu"));
    assert_eq!(theirs.records.len(), 50);
    assert!(theirs.records.iter().all(|r| r.op == "sigmoid"));
}

#[test]
fn top_by_time_orders_by_ns() {
    let mk = |ns| OpRecord {
        layer: String::new(),
        module: String::new(),
        op: String::new(),
        phase: Phase::Forward,
        inputs: vec![],
        output: vec![],
        flops: 0,
        macs: 0,
        bytes_read: 0,
        bytes_written: 0,
        ns,
        non_finite: None,
    };
    let p = Profile {
        records: vec![mk(5), mk(9), mk(1), mk(9)],
        wall_ns: 30,
    };
    assert_eq!(p.top_by_time(3), [1, 3, 0]);
}

/// What recording costs per op: a tiny op (relu of 8 values, dominated by its allocation)
/// timed with the recorder off and on. A probe, not a benchmark: run with
/// `cargo test -p tessera-core --release recording_overhead_probe -- --ignored --nocapture`.
#[test]
#[ignore]
fn recording_overhead_probe() {
    use std::time::Instant;
    let x = Tensor::randn(&[8], 0);
    let n = 1_000_000;
    let time = |f: &dyn Fn()| {
        let t0 = Instant::now();
        for _ in 0..n {
            f();
        }
        t0.elapsed().as_nanos() as f64 / n as f64
    };
    let op = || {
        std::hint::black_box(x.relu());
    };
    time(&op);
    let off = time(&op);
    let (on, p) = record(|| time(&op));
    assert_eq!(p.records.len(), n);
    println!("relu of 8 values: {off:.1} ns/op not recording, {on:.1} ns/op recording");
}
