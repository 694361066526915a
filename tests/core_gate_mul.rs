//! `x * s` with one gate value per plane (`x` `[n, c, h, w]`, `s` `[n, c, 1, 1]`, the
//! squeeze-excitation gate), whose backward takes a one-pass path, against the general
//! broadcasting backward (`s * x`, same values): outputs and `dx` bit for bit, `ds` to f32
//! summation accuracy; the same bits for 1 and 2 threads.

use proptest::prelude::*;
use tessera::core::Tensor;

/// `(y, dx, ds)` of `sum(r * (x * s))`, through `x.mul(s)` (`gate_first == false`) or
/// `s.mul(x)`.
fn run(shape: &[usize], gate_shape: &[usize], swap: bool, seed: u64) -> [Vec<f32>; 3] {
    let x = Tensor::randn(shape, seed).requires_grad_(true);
    let s = Tensor::randn(gate_shape, seed + 1).requires_grad_(true);
    let r = Tensor::randn(shape, seed + 2);
    let y = if swap {
        s.mul(&x).unwrap()
    } else {
        x.mul(&s).unwrap()
    };
    y.mul(&r).unwrap().sum_all().backward().unwrap();
    [
        y.to_vec(),
        x.grad().unwrap().to_vec(),
        s.grad().unwrap().to_vec(),
    ]
}

fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|f| f.to_bits()).collect()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, failure_persistence: None, ..ProptestConfig::default() })]
    #[test]
    fn gate_backward_matches_the_general_path(
        n in 1usize..4, c in 1usize..5, h in 1usize..12, w in 1usize..12,
        ones in 1usize..3, seed in 0u64..10_000,
    ) {
        // The gate is 1 over the last `ones` dims (a per-plane or per-row gate).
        let shape = [n, c, h, w];
        let mut gate = shape;
        for d in gate.iter_mut().rev().take(ones) {
            *d = 1;
        }
        let [y, dx, ds] = run(&shape, &gate, false, seed);
        let [y2, dx2, ds2] = run(&shape, &gate, true, seed);
        prop_assert_eq!(bits(&y), bits(&y2));
        prop_assert_eq!(bits(&dx), bits(&dx2));
        let plane = shape.iter().rev().take(ones).product::<usize>() as f32;
        for (a, b) in ds.iter().zip(&ds2) {
            // Sums of `plane` products of O(1) values, in different orders.
            prop_assert!((a - b).abs() <= 4.0 * plane * f32::EPSILON * (1.0 + b.abs()), "{} vs {}", a, b);
        }
    }
}

#[test]
fn gate_backward_ignores_the_thread_count() {
    let go = |threads: usize| {
        rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap()
            .install(|| run(&[2, 24, 28, 28], &[2, 24, 1, 1], false, 5))
    };
    let one = go(1);
    let two = go(2);
    for (a, b) in one.iter().zip(&two) {
        assert_eq!(bits(a), bits(b));
    }
}

#[test]
fn only_the_gate_or_only_the_input_can_require_grad() {
    let x = Tensor::randn(&[2, 3, 4, 4], 1).requires_grad_(true);
    let s = Tensor::randn(&[2, 3, 1, 1], 2);
    x.mul(&s).unwrap().sum_all().backward().unwrap();
    let want: Vec<f32> = (0..96).map(|i| s.to_vec()[i / 16]).collect();
    assert_eq!(x.grad().unwrap().to_vec(), want);
    let x = Tensor::randn(&[2, 3, 4, 4], 1);
    let s = Tensor::randn(&[2, 3, 1, 1], 2).requires_grad_(true);
    x.mul(&s).unwrap().sum_all().backward().unwrap();
    let xv = x.to_vec();
    for (p, g) in s.grad().unwrap().to_vec().iter().enumerate() {
        let want: f32 = xv[p * 16..(p + 1) * 16].iter().sum();
        assert!(
            (g - want).abs() <= 1e-5 * (1.0 + want.abs()),
            "{g} vs {want}"
        );
    }
}
