//! `Tensor::batch_norm_act` (batch norm and the activation after it as one op) against
//! `batch_norm` followed by the activation op: outputs, the gradients of the input, weight and
//! bias, and the running-statistics update, bit for bit, in training and eval, with and without
//! affine parameters; the same for 1 and 2 threads.

use proptest::prelude::*;
use tessera::core::ops::norm::RunningStats;
use tessera::core::Tensor;
use tessera::kernels::Activation;

const ACTS: [Activation; 6] = [
    Activation::Identity,
    Activation::Relu,
    Activation::Relu6,
    Activation::HardSwish,
    Activation::Swish,
    Activation::LeakyRelu(0.1),
];

fn bits(t: &Tensor) -> Vec<u32> {
    t.to_vec().iter().map(|f| f.to_bits()).collect()
}

/// `(y, dx, dweight, dbias, running_mean, running_var)` bits of one forward + backward of
/// `sum(r * f(x))`, fused or composed.
fn run(
    shape: &[usize],
    affine: bool,
    training: bool,
    act: Activation,
    fused: bool,
    seed: u64,
) -> Vec<Vec<u32>> {
    let c = shape[1];
    let x = Tensor::randn(shape, seed)
        .mul_scalar(2.0)
        .requires_grad_(true);
    let r = Tensor::randn(shape, seed + 1);
    let w = affine.then(|| Tensor::randn(&[c], seed + 2).requires_grad_(true));
    let b = affine.then(|| Tensor::randn(&[c], seed + 3).requires_grad_(true));
    let mut rm = Tensor::randn(&[c], seed + 4);
    let mut rv = Tensor::randn(&[c], seed + 5).abs().add_scalar(0.5);
    let running = RunningStats {
        mean: &mut rm,
        var: &mut rv,
        momentum: 0.1,
    };
    let y = if fused {
        x.batch_norm_act(Some(running), w.as_ref(), b.as_ref(), training, 1e-5, act)
            .unwrap()
    } else {
        x.batch_norm(Some(running), w.as_ref(), b.as_ref(), training, 1e-5)
            .unwrap()
            .activate(act)
    };
    y.mul(&r).unwrap().sum_all().backward().unwrap();
    let mut out = vec![bits(&y), bits(&x.grad().unwrap())];
    for p in w.iter().chain(b.iter()) {
        out.push(bits(&p.grad().unwrap()));
    }
    out.push(bits(&rm));
    out.push(bits(&rv));
    out
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, failure_persistence: None, ..ProptestConfig::default() })]
    #[test]
    fn fused_equals_batch_norm_then_activation(
        n in 1usize..4, c in 1usize..5, h in 1usize..9, w in 1usize..9,
        affine: bool, training: bool, a in 0usize..ACTS.len(), seed in 0u64..10_000,
    ) {
        prop_assume!(!training || n * h * w > 1);
        let shape = [n, c, h, w];
        let act = ACTS[a];
        prop_assert_eq!(
            run(&shape, affine, training, act, true, seed),
            run(&shape, affine, training, act, false, seed)
        );
    }
}

#[test]
fn large_fused_equals_composed_and_ignores_the_thread_count() {
    // 2 x 16 x 32 x 32 = 32k elements: the kernels' parallel paths.
    let shape = [2, 16, 32, 32];
    let go = |threads: usize, fused: bool| {
        rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap()
            .install(|| run(&shape, true, true, Activation::Relu, fused, 11))
    };
    let one = go(1, true);
    assert_eq!(one, go(2, true));
    assert_eq!(one, go(2, false));
}

#[test]
fn errors_name_the_op() {
    let x = Tensor::randn(&[2, 3, 4, 4], 1);
    let w = Tensor::randn(&[4], 2);
    let e = x
        .batch_norm_act(None, Some(&w), None, true, 1e-5, Activation::Relu)
        .unwrap_err()
        .to_string();
    assert!(e.contains("batch_norm") && e.contains("weight"), "{e}");
    let e = Tensor::randn(&[1, 3, 1, 1], 1)
        .batch_norm_act(None, None, None, true, 1e-5, Activation::Relu)
        .unwrap_err()
        .to_string();
    assert!(e.contains("more than 1 value"), "{e}");
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, failure_persistence: None, ..ProptestConfig::default() })]
    /// `add_relu` (the residual join) against `add` then `relu`: values and both gradients
    /// equal, with broadcasting.
    #[test]
    fn add_relu_equals_add_then_relu(n in 1usize..4, c in 1usize..5, hw in 1usize..40, bcast: bool, seed in 0u64..10_000) {
        let shape = [n, c, hw];
        let other = if bcast { vec![1, c, 1] } else { shape.to_vec() };
        let go = |fused: bool| {
            let a = Tensor::randn(&shape, seed).requires_grad_(true);
            let b = Tensor::randn(&other, seed + 1).requires_grad_(true);
            let r = Tensor::randn(&shape, seed + 2);
            let y = if fused { a.add_relu(&b).unwrap() } else { a.add(&b).unwrap().relu() };
            y.mul(&r).unwrap().sum_all().backward().unwrap();
            [y.to_vec(), a.grad().unwrap().to_vec(), b.grad().unwrap().to_vec()]
        };
        // Compared as values (a -0 / +0 difference between ISA paths is not a difference).
        prop_assert_eq!(go(true), go(false));
    }
}
