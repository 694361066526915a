//! Property tests for the fused and NCHW ops: softmax, log_softmax, cross_entropy, layer_norm,
//! batch_norm, conv2d (incl. depthwise, groups, dilation), pools and dropout; autograd vs
//! finite differences on random shapes and non-contiguous views.

mod core_common;

use core_common::*;
use proptest::prelude::*;
use tessera::core::{Conv2dParams, Pool2dParams, RunningStats, Tensor};

fn cfg() -> ProptestConfig {
    ProptestConfig {
        cases: 96,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

fn any_arg(lo: usize, hi: usize, vals: Vals) -> BoxedStrategy<Arg> {
    shape(lo, hi)
        .prop_flat_map(move |s| arg(s, vals.clone()))
        .boxed()
}

/// An NCHW input (a view whose H and W are swapped from the leaf when `transposed`).
fn nchw(n: usize, c: usize, h: usize, w: usize, seed: u64, vals_distinct: bool) -> Arg {
    let transposed = seed % 2 == 1;
    let base = if transposed {
        vec![n, c, w, h]
    } else {
        vec![n, c, h, w]
    };
    let count: usize = base.iter().product();
    let data = if vals_distinct {
        // a shuffled grid 0.05 apart: no ties in any window
        let mut rng = tessera::core::Rng::new(seed);
        let mut v: Vec<f32> = (0..count).map(|i| i as f32 * 0.05 - 1.0).collect();
        for i in (1..v.len()).rev() {
            v.swap(i, rng.below(i + 1));
        }
        v
    } else {
        Tensor::randn(&base, seed).to_vec()
    };
    Arg {
        base,
        data,
        view: if transposed {
            View::Transposed
        } else {
            View::Contig
        },
    }
}

fn plain(t: &Tensor) -> Arg {
    Arg {
        base: t.shape().to_vec(),
        data: t.to_vec(),
        view: View::Contig,
    }
}

proptest! {
    #![proptest_config(cfg())]

    #[test]
    fn softmax(a in any_arg(1, 3, Vals::Range(-3.0, 3.0, vec![])), d in any::<usize>()) {
        let dim = d % a.shape().len();
        check(&[a], |t| t[0].softmax(dim));
    }

    #[test]
    fn log_softmax(a in any_arg(1, 3, Vals::Range(-3.0, 3.0, vec![])), d in any::<usize>()) {
        let dim = d % a.shape().len();
        check(&[a], |t| t[0].log_softmax(dim));
    }

    #[test]
    fn cross_entropy(n in 1usize..5, c in 1usize..6, ls in prop::sample::select(vec![0.0f32, 0.1]), seed in any::<u64>()) {
        let a = Arg { base: vec![c, n], data: Tensor::randn(&[c, n], seed).to_vec(), view: View::Transposed };
        let targets: Vec<usize> = (0..n).map(|i| (i + seed as usize) % c).collect();
        check(&[a], |t| t[0].cross_entropy(&targets, ls));
    }

    #[test]
    fn layer_norm(a in any_arg(1, 3, Vals::Distinct), affine in any::<bool>(), k in any::<usize>(), seed in any::<u64>()) {
        let s = a.shape();
        let k = 1 + k % s.len();
        let ns = s[s.len() - k..].to_vec();
        prop_assume!(ns.iter().product::<usize>() > 1);
        let mut args = vec![a];
        if affine {
            args.push(plain(&Tensor::randn(&ns, seed)));
            args.push(plain(&Tensor::randn(&ns, seed ^ 5)));
        }
        check(&args, |t| t[0].layer_norm(&ns, t.get(1), t.get(2), 1e-5));
    }

    #[test]
    fn batch_norm_train(n in 1usize..4, c in 1usize..4, h in 1usize..4, w in 1usize..4, affine in any::<bool>(), seed in any::<u64>()) {
        prop_assume!(n * h * w > 1);
        let mut args = vec![nchw(n, c, h, w, seed, true)];
        if affine {
            args.push(plain(&Tensor::randn(&[c], seed)));
            args.push(plain(&Tensor::randn(&[c], seed ^ 3)));
        }
        check(&args, |t| t[0].batch_norm(None, t.get(1), t.get(2), true, 1e-5));
    }

    #[test]
    fn batch_norm_eval(n in 1usize..3, c in 1usize..4, h in 1usize..4, seed in any::<u64>()) {
        let args = vec![
            nchw(n, c, h, 2, seed, false),
            plain(&Tensor::randn(&[c], seed)),
            plain(&Tensor::randn(&[c], seed ^ 3)),
        ];
        let rm = Tensor::randn(&[c], seed ^ 9);
        let rv = Tensor::rand_uniform(&[c], 0.5, 2.0, seed ^ 11);
        check(&args, |t| {
            let (mut m, mut v) = (rm.clone(), rv.clone());
            let r = RunningStats { mean: &mut m, var: &mut v, momentum: 0.1 };
            t[0].batch_norm(Some(r), t.get(1), t.get(2), false, 1e-5)
        });
    }

    #[test]
    fn conv2d(
        n in 1usize..3, cin_g in 1usize..3, cout_g in 1usize..3, groups in 1usize..3,
        h in 1usize..6, w in 1usize..6, k in 1usize..4, stride in 1usize..3, pad in 0usize..2,
        dil in 1usize..3, bias in any::<bool>(), seed in any::<u64>(),
    ) {
        let (cin, cout) = (cin_g * groups, cout_g * groups);
        prop_assume!(h + 2 * pad > dil * (k - 1) && w + 2 * pad > dil * (k - 1));
        let p = Conv2dParams { stride: (stride, stride), padding: (pad, pad), dilation: (dil, dil), groups };
        let mut args = vec![
            nchw(n, cin, h, w, seed, false),
            plain(&Tensor::randn(&[cout, cin_g, k, k], seed ^ 1)),
        ];
        if bias {
            args.push(plain(&Tensor::randn(&[cout], seed ^ 2)));
        }
        check(&args, |t| t[0].conv2d(&t[1], t.get(2), p));
    }

    #[test]
    fn conv2d_depthwise(n in 1usize..3, c in 1usize..5, mult in 1usize..3, h in 3usize..7, stride in 1usize..3, seed in any::<u64>()) {
        let p = Conv2dParams::new(stride, 1).groups(c);
        let args = vec![
            nchw(n, c, h, h, seed, false),
            plain(&Tensor::randn(&[c * mult, 1, 3, 3], seed ^ 1)),
            plain(&Tensor::randn(&[c * mult], seed ^ 2)),
        ];
        check(&args, |t| t[0].conv2d(&t[1], t.get(2), p));
    }

    #[test]
    fn max_pool2d(n in 1usize..3, c in 1usize..3, h in 2usize..7, w in 2usize..7, k in 1usize..4, stride in 1usize..3, pad in 0usize..2, ceil in any::<bool>(), seed in any::<u64>()) {
        prop_assume!(pad * 2 <= k && h + 2 * pad >= k && w + 2 * pad >= k);
        let p = Pool2dParams { kernel: (k, k), stride: (stride, stride), padding: (pad, pad), ceil_mode: ceil };
        check(&[nchw(n, c, h, w, seed, true)], |t| t[0].max_pool2d(p));
    }

    #[test]
    fn avg_pool2d(n in 1usize..3, c in 1usize..3, h in 2usize..7, w in 2usize..7, k in 1usize..4, stride in 1usize..3, pad in 0usize..2, incl in any::<bool>(), seed in any::<u64>()) {
        prop_assume!(pad * 2 <= k && h + 2 * pad >= k && w + 2 * pad >= k);
        let p = Pool2dParams { kernel: (k, k), stride: (stride, stride), padding: (pad, pad), ceil_mode: false };
        check(&[nchw(n, c, h, w, seed, false)], |t| t[0].avg_pool2d(p, incl));
    }

    #[test]
    fn adaptive_avg_pool2d(n in 1usize..3, c in 1usize..3, h in 1usize..7, w in 1usize..7, oh in 1usize..4, ow in 1usize..4, seed in any::<u64>()) {
        check(&[nchw(n, c, h, w, seed, false)], |t| t[0].adaptive_avg_pool2d(oh, ow));
    }

    #[test]
    fn global_avg_pool2d(n in 1usize..3, c in 1usize..3, h in 1usize..5, seed in any::<u64>()) {
        check(&[nchw(n, c, h, h + 1, seed, false)], |t| t[0].global_avg_pool2d());
    }

    #[test]
    fn dropout(a in any_arg(1, 3, Vals::smooth()), seed in any::<u64>()) {
        check(&[a], |t| t[0].dropout(0.3, true, seed));
    }
}

#[test]
fn dropout_eval_is_identity_and_train_is_seeded() {
    let x = Tensor::randn(&[64, 64], 1);
    assert_eq!(x.dropout(0.5, false, 3).unwrap().to_vec(), x.to_vec());
    let a = x.dropout(0.5, true, 3).unwrap().to_vec();
    let b = x.dropout(0.5, true, 3).unwrap().to_vec();
    assert_eq!(a, b);
    let zeros = a.iter().filter(|&&v| v == 0.0).count() as f64 / a.len() as f64;
    assert!((zeros - 0.5).abs() < 0.05, "{zeros}");
    assert!(x.dropout(1.0, true, 0).is_err());
}

#[test]
fn batch_norm_updates_running_stats() {
    let x = Tensor::randn(&[4, 3, 2, 2], 5)
        .mul_scalar(2.0)
        .add_scalar(1.0);
    let (mut m, mut v) = (Tensor::zeros(&[3]), Tensor::ones(&[3]));
    x.batch_norm(
        Some(RunningStats {
            mean: &mut m,
            var: &mut v,
            momentum: 0.1,
        }),
        None,
        None,
        true,
        1e-5,
    )
    .unwrap();
    let mean = x.mean(&[0, 2, 3], false).unwrap().to_vec();
    let var = x.var(&[0, 2, 3], false, 1).unwrap().to_vec();
    for ch in 0..3 {
        assert!((m.to_vec()[ch] - 0.1 * mean[ch]).abs() < 1e-5);
        assert!((v.to_vec()[ch] - (0.9 + 0.1 * var[ch])).abs() < 1e-5);
    }
    assert!(x.batch_norm(None, None, None, false, 1e-5).is_err());
}

#[test]
fn nn_errors_name_the_op() {
    let x = Tensor::zeros(&[2, 3, 8, 8]);
    let e = x
        .conv2d(&Tensor::zeros(&[4, 2, 3, 3]), None, Conv2dParams::default())
        .unwrap_err()
        .to_string();
    assert!(
        e.starts_with("conv2d:") && e.contains("[2, 3, 8, 8]"),
        "{e}"
    );
    assert!(x.max_pool2d(Pool2dParams::new(0)).is_err());
    assert!(x.softmax(4).is_err());
    assert!(Tensor::zeros(&[2, 3]).cross_entropy(&[0, 3], 0.0).is_err());
    assert!(x.layer_norm(&[7], None, None, 1e-5).is_err());
}
