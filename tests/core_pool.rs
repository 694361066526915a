//! The op-output buffer pool (`tessera::core::pool`): once a computation has run, repeating it
//! allocates no new large buffer (every large output comes back from the pool), the results
//! are bit-identical to the first run, and a bounded pool frees what exceeds its limit. This
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

    // A limit of zero frees everything held and keeps nothing afterwards.
    pool::set_limit(0);
    assert_eq!(pool::stats().bytes, 0);
    drop(step(&x, &w, &g));
    assert_eq!(pool::stats().buffers, 0);
}
