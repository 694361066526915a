//! Every op gives the same result on a non-contiguous view as on a contiguous copy of it, and
//! tensors can be shared across threads.

mod core_common;

use core_common::*;
use proptest::prelude::*;
use tessera::core::{no_grad, Result, Tensor};

type Op = fn(&Tensor) -> Result<Tensor>;

/// Ops whose result must match bit for bit (element-wise math, views, copies).
const EXACT: &[(&str, Op)] = &[
    ("neg", |x| Ok(x.neg())),
    ("exp", |x| Ok(x.exp())),
    ("abs", |x| Ok(x.abs())),
    ("relu", |x| Ok(x.relu())),
    ("gelu", |x| Ok(x.gelu())),
    ("sigmoid", |x| Ok(x.sigmoid())),
    ("hardswish", |x| Ok(x.hardswish())),
    ("clamp", |x| x.clamp(-0.5, 0.5)),
    ("mul self", |x| x.mul(x)),
    ("add row", |x| x.add(&x.narrow(0, 0, 1)?)),
    ("max", |x| x.max(&[0], true)),
    ("softmax", |x| x.softmax(x.rank() - 1)),
    ("log_softmax", |x| x.log_softmax(0)),
    ("cat", |x| Tensor::cat(&[x.clone(), x.clone()], 0)),
    ("flatten", |x| x.flatten(0, x.rank() - 1)),
];

/// Ops that accumulate (f64 sums with layout-dependent fast paths, GEMM blocking): equal up
/// to the last bit or two.
const CLOSE: &[(&str, Op)] = &[
    ("sum", |x| x.sum(&[0], false)),
    ("mean", |x| x.mean(&[x.rank() - 1], true)),
    ("var", |x| x.var(&[0], false, 0)),
    ("matmul xᵀx", |x| {
        let r = x.rank();
        x.transpose(r - 2, r - 1)?.matmul(x)
    }),
];

fn rel_close(a: &[f32], b: &[f32]) -> bool {
    a.iter()
        .zip(b)
        .all(|(&x, &y)| (x - y).abs() <= 1e-6 * (1.0 + y.abs()))
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn views_match_contiguous_copies(a in shape(2, 4).prop_flat_map(|s| arg(s, Vals::smooth()))) {
        let _g = no_grad();
        let base = Tensor::from_vec(a.data.clone(), &a.base).unwrap();
        let view = a.apply(&base).unwrap();
        let copy = Tensor::from_vec(view.to_vec(), view.shape()).unwrap();
        for (name, op) in EXACT {
            let (v, c) = (op(&view).unwrap(), op(&copy).unwrap());
            prop_assert_eq!(v.shape(), c.shape(), "{}", name);
            prop_assert_eq!(v.to_vec(), c.to_vec(), "{} on {:?}", name, a.view);
        }
        for (name, op) in CLOSE {
            let (v, c) = (op(&view).unwrap(), op(&copy).unwrap());
            prop_assert_eq!(v.shape(), c.shape(), "{}", name);
            prop_assert!(rel_close(&v.to_vec(), &c.to_vec()), "{} on {:?}", name, a.view);
        }
    }
}

#[test]
fn one_model_serves_many_threads() {
    let w = Tensor::randn(&[16, 8], 1);
    let want = Tensor::ones(&[4, 8])
        .matmul(&w.t().unwrap())
        .unwrap()
        .relu()
        .to_vec();
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..4)
            .map(|_| {
                let w = w.clone();
                s.spawn(move || {
                    let _g = no_grad();
                    Tensor::ones(&[4, 8])
                        .matmul(&w.t().unwrap())
                        .unwrap()
                        .relu()
                        .to_vec()
                })
            })
            .collect();
        for h in handles {
            assert_eq!(h.join().unwrap(), want);
        }
    });
}

#[test]
fn per_plane_broadcasts_match_the_definition() {
    // [n, c, h, w] against [n, c, 1, 1] / [n, 1, 1, 1] / [1, 1, 1, 1] in both operand orders,
    // with a non-commutative op, at sizes on both sides of the parallel threshold.
    for (n, c, h, w) in [(2, 3, 4, 5), (4, 64, 32, 32)] {
        let full = Tensor::randn(&[n, c, h, w], 1);
        let fv = full.to_vec();
        for small_shape in [[n, c, 1, 1], [n, 1, 1, 1], [1, 1, 1, 1]] {
            let small = Tensor::randn(&small_shape, 2);
            let sv = small.to_vec();
            let per = sv.len();
            let inner = fv.len() / per;
            let left = full.sub(&small).unwrap().to_vec();
            let right = small.sub(&full).unwrap().to_vec();
            for (i, &x) in fv.iter().enumerate() {
                let v = sv[i / inner];
                assert_eq!(left[i].to_bits(), (x - v).to_bits(), "{small_shape:?}");
                assert_eq!(right[i].to_bits(), (v - x).to_bits(), "{small_shape:?}");
            }
        }
    }
}

#[test]
fn row_sums_over_many_columns_are_exact_and_thread_independent() {
    // The bias-gradient shape: the sum over rows of a [rows, cols] tensor with cols spanning
    // several parallel column blocks; f64 accumulation in row order, for any thread count.
    let x = Tensor::randn(&[300, 1000], 5);
    let v = x.to_vec();
    let want: Vec<f32> = (0..1000)
        .map(|c| (0..300).map(|r| v[r * 1000 + c] as f64).sum::<f64>() as f32)
        .collect();
    let run = |threads: usize| {
        rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap()
            .install(|| x.sum(&[0], false).unwrap().to_vec())
    };
    for threads in [1, 2, 3] {
        let got = run(threads);
        assert!(
            got.iter()
                .zip(&want)
                .all(|(a, b)| a.to_bits() == b.to_bits()),
            "{threads} threads"
        );
    }
}
