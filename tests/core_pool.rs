//! The op-output buffer pool (`tessera::core::pool`): once a computation has run, repeating it
//! allocates no new large buffer (every large output comes back from the pool), the results
//! are bit-identical to the first run, a working set over 1 GiB is kept by the default bound,
//! and a fixed bound frees what exceeds it. This
//! file holds a single test so the process-wide pool sees no other test's tensors.

use tessera::core::{no_grad, pool, Tensor};

fn step(x: &Tensor, w: &Tensor, g: &Tensor) -> Tensor {
    let h = x.linear(w, None).unwrap().gelu();
    let h = h.layer_norm(&[256], Some(g), None, 1e-5).unwrap();
    h.softmax(1).unwrap().add(&h).unwrap()
}

#[test]
fn warm_runs_reuse_buffers_and_stay_bit_identical() {
    let x = Tensor::randn(&[512, 256], 1);
    let w = Tensor::randn(&[256, 256], 2);
    let g = Tensor::randn(&[256], 3);
    let _guard = no_grad();

    let first = step(&x, &w, &g).to_vec();
    let before = pool::stats();
    for _ in 0..5 {
        let again = step(&x, &w, &g).to_vec();
        assert!(
            again
                .iter()
                .zip(&first)
                .all(|(a, b)| a.to_bits() == b.to_bits()),
            "a reused buffer changed the result"
        );
    }
    let after = pool::stats();
    assert_eq!(
        after.misses, before.misses,
        "warm runs allocated new buffers"
    );
    assert!(after.hits > before.hits, "warm runs did not use the pool");

    // By default the bound follows the peak working set: a step holding more than 1 GiB at
    // once (as a training step's saved activations do) finds all of it again next time.
    let big = |seed: u64| {
        (0..9)
            .map(|i| Tensor::full(&[32 << 20], (seed + i) as f32).relu())
            .collect::<Vec<_>>()
    };
    drop(big(10));
    let stats = pool::stats();
    assert!(stats.peak_bytes_in_use >= 9 * (128 << 20));
    assert!(pool::limit() >= stats.peak_bytes_in_use);
    assert!(
        stats.bytes >= 9 * (128 << 20),
        "the working set was not kept: {stats:?}, limit {}",
        pool::limit()
    );
    drop(big(20));
    assert_eq!(
        pool::stats().misses,
        stats.misses,
        "a working set over 1 GiB was not reused"
    );

    // A limit of zero frees everything held and keeps nothing afterwards.
    pool::set_limit(0);
    assert_eq!(pool::stats().bytes, 0);
    drop(step(&x, &w, &g));
    assert_eq!(pool::stats().buffers, 0);
    pool::set_limit_auto();
    assert!(pool::limit() >= 9 * (128 << 20));
}
