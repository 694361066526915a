//! The fused batch norm + activation kernels against the composed kernels they replace
//! (`batch_norm_forward` then the activation; the activation's backward then
//! `batch_norm_backward`), bit for bit, on every available instruction set, over random shapes,
//! activations, affine / no affine and training / eval; the thread-count independence; the
//! errors.

use proptest::prelude::*;
use tessera_kernels::activation::{self, Activation};
use tessera_kernels::norm;
use tessera_kernels::Isa;

mod common;

/// Values in [-2, 2).
fn data(len: usize, seed: u64) -> Vec<f32> {
    common::uniform(len, seed, -2.0, 2.0)
}

fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|f| f.to_bits()).collect()
}

const ACTS: [Activation; 6] = [
    Activation::Identity,
    Activation::Relu,
    Activation::Relu6,
    Activation::HardSwish,
    Activation::Swish,
    Activation::GeluErf,
];

struct Case {
    n: usize,
    c: usize,
    hw: usize,
    x: Vec<f32>,
    dy: Vec<f32>,
    mean: Vec<f32>,
    var: Vec<f32>,
    gamma: Option<Vec<f32>>,
    beta: Option<Vec<f32>>,
}

fn case(n: usize, c: usize, hw: usize, affine: bool, seed: u64) -> Case {
    let x: Vec<f32> = data(n * c * hw, seed).iter().map(|v| v * 3.0).collect();
    let dy = data(n * c * hw, seed + 1);
    let (mut mean, mut var) = (vec![0.0; c], vec![0.0; c]);
    norm::batch_norm_stats(&x, n, c, hw, &mut mean, &mut var).unwrap();
    let gamma = affine.then(|| data(c, seed + 2).iter().map(|v| v * 2.0).collect());
    let beta = affine.then(|| data(c, seed + 3));
    Case {
        n,
        c,
        hw,
        x,
        dy,
        mean,
        var,
        gamma,
        beta,
    }
}

/// Fused and composed forward and backward on `isa`, compared bit for bit.
fn check(k: &Case, act: Activation, training: bool, isa: Isa) {
    let (n, c, hw) = (k.n, k.c, k.hw);
    let len = n * c * hw;
    let (g, b) = (k.gamma.as_deref(), k.beta.as_deref());
    let eps = 1e-5;
    // Composed: z = bn(x), y = act(z); dz = act'(z) dy, then bn backward.
    let mut z = vec![f32::NAN; len];
    norm::batch_norm_forward(&k.x, n, c, hw, &k.mean, &k.var, g, b, eps, &mut z).unwrap();
    let mut y_ref = vec![f32::NAN; len];
    activation::forward_with(isa, act, &z, &mut y_ref).unwrap();
    let mut dz = vec![f32::NAN; len];
    activation::backward_with(isa, act, &z, &k.dy, &mut dz).unwrap();
    let (mut dx_ref, mut dg_ref, mut db_ref) = (vec![f32::NAN; len], vec![0.0; c], vec![0.0; c]);
    norm::batch_norm_backward(
        &k.x,
        &dz,
        n,
        c,
        hw,
        &k.mean,
        &k.var,
        g,
        eps,
        training,
        &mut dx_ref,
        Some(&mut dg_ref),
        Some(&mut db_ref),
    )
    .unwrap();
    // Fused.
    let mut y = vec![f32::NAN; len];
    norm::batch_norm_act_forward_with(isa, &k.x, n, c, hw, &k.mean, &k.var, g, b, eps, act, &mut y)
        .unwrap();
    let what = format!("[{n}, {c}, {hw}] {act:?} training {training} {isa:?}");
    assert_eq!(bits(&y), bits(&y_ref), "forward {what}");
    let (mut dx, mut dg, mut db) = (vec![f32::NAN; len], vec![f32::NAN; c], vec![f32::NAN; c]);
    norm::batch_norm_act_backward_with(
        isa,
        &k.x,
        &k.dy,
        n,
        c,
        hw,
        &k.mean,
        &k.var,
        g,
        b,
        eps,
        training,
        act,
        &mut dx,
        Some(&mut dg),
        Some(&mut db),
    )
    .unwrap();
    assert_eq!(bits(&dx), bits(&dx_ref), "dx {what}");
    assert_eq!(bits(&dg), bits(&dg_ref), "dgamma {what}");
    assert_eq!(bits(&db), bits(&db_ref), "dbeta {what}");
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]
    #[test]
    fn fused_equals_composed(
        n in 1usize..4, c in 1usize..6, hw in 1usize..150, affine: bool, training: bool,
        a in 0usize..ACTS.len(), seed in 0u64..1000,
    ) {
        let k = case(n, c, hw, affine, seed);
        for isa in Isa::available() {
            check(&k, ACTS[a], training, isa);
        }
    }
}

#[test]
fn large_planes_take_the_parallel_paths_and_ignore_the_thread_count() {
    // 2 x 8 x 3136 = 50k elements (above the parallel threshold), ResNet-like planes.
    let k = case(2, 8, 56 * 56, true, 7);
    for act in [Activation::Relu, Activation::HardSwish] {
        check(&k, act, true, Isa::current().unwrap());
    }
    let run = |threads: usize| {
        let tp = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap();
        tp.install(|| {
            let len = k.x.len();
            let (g, b) = (k.gamma.as_deref(), k.beta.as_deref());
            let mut y = vec![0.0; len];
            norm::batch_norm_act_forward(
                &k.x,
                k.n,
                k.c,
                k.hw,
                &k.mean,
                &k.var,
                g,
                b,
                1e-5,
                Activation::Relu,
                &mut y,
            )
            .unwrap();
            let (mut dx, mut dg, mut db) = (vec![0.0; len], vec![0.0; k.c], vec![0.0; k.c]);
            norm::batch_norm_act_backward(
                &k.x,
                &k.dy,
                k.n,
                k.c,
                k.hw,
                &k.mean,
                &k.var,
                g,
                b,
                1e-5,
                true,
                Activation::Relu,
                &mut dx,
                Some(&mut dg),
                Some(&mut db),
            )
            .unwrap();
            (bits(&y), bits(&dx), bits(&dg), bits(&db))
        })
    };
    assert_eq!(run(1), run(2));
}

#[test]
fn errors_name_the_op_and_shape() {
    let x = vec![0.0; 2 * 3 * 4];
    let (m, v) = (vec![0.0; 3], vec![1.0; 3]);
    let e = norm::batch_norm_act_forward(
        &x,
        2,
        3,
        4,
        &m,
        &v,
        None,
        Some(&[0.0; 2]),
        1e-5,
        Activation::Relu,
        &mut [0.0; 24],
    )
    .unwrap_err()
    .to_string();
    assert!(
        e.starts_with("batch_norm_act_forward:") && e.contains("beta has 2"),
        "{e}"
    );
    let e = norm::batch_norm_act_backward(
        &x,
        &x[..23],
        2,
        3,
        4,
        &m,
        &v,
        None,
        None,
        1e-5,
        true,
        Activation::Relu,
        &mut [0.0; 24],
        None,
        None,
    )
    .unwrap_err()
    .to_string();
    assert!(
        e.starts_with("batch_norm_act_backward:") && e.contains("dy has 23"),
        "{e}"
    );
    let e = norm::batch_norm_act_forward(
        &x,
        2,
        3,
        4,
        &m,
        &v,
        None,
        None,
        f32::NAN,
        Activation::Relu,
        &mut [0.0; 24],
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("eps"), "{e}");
}
