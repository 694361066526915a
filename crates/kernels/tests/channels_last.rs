//! The channels-last (`[n, h, w, c]`) forms of the global average pool and the
//! squeeze-and-excitation gate, which the inference plan runs on its small feature maps,
//! against their NCHW forms on the same values transposed.

use tessera_kernels::pool::{adaptive_avg_pool2d_forward, global_avg_pool_nhwc};
use tessera_kernels::squeeze_excite::{excite_gate, excite_gate_nhwc, ExciteWeights};
use tessera_kernels::Activation;

fn values(len: usize, seed: u32) -> Vec<f32> {
    (0..len)
        .map(|i| {
            let v = (i as u32).wrapping_mul(2_654_435_761).wrapping_add(seed) >> 7;
            (v % 4001) as f32 / 1000.0 - 2.0
        })
        .collect()
}

/// `[n, c, hw]` -> `[n, hw, c]`.
fn to_nhwc(x: &[f32], n: usize, c: usize, hw: usize) -> Vec<f32> {
    let mut out = vec![0.0; x.len()];
    for b in 0..n {
        for ch in 0..c {
            for p in 0..hw {
                out[(b * hw + p) * c + ch] = x[(b * c + ch) * hw + p];
            }
        }
    }
    out
}

#[test]
fn global_pool_matches_the_nchw_pool() {
    // 1280 channels: runs of 64 on the stack plus none left; 100: a partial run.
    for (n, c, h) in [(1, 1280, 7), (3, 100, 5), (2, 7, 1)] {
        let x = values(n * c * h * h, 1);
        let mut want = vec![0.0; n * c];
        adaptive_avg_pool2d_forward(n, c, h, h, 1, 1, &x, &mut want).unwrap();
        let mut got = vec![f32::NAN; n * c];
        global_avg_pool_nhwc(n, h * h, c, &to_nhwc(&x, n, c, h * h), &mut got).unwrap();
        // Both sum in f64 and round once: the results differ by at most the rounding.
        for (g, w) in got.iter().zip(&want) {
            assert!((g - w).abs() <= f32::EPSILON * w.abs(), "{g} vs {w}");
        }
    }
}

#[test]
fn global_pool_rejects_bad_lengths() {
    let mut y = vec![0.0; 4];
    assert!(global_avg_pool_nhwc(1, 9, 4, &[0.0; 35], &mut y).is_err());
    assert!(global_avg_pool_nhwc(1, 0, 4, &[], &mut y).is_err());
    assert!(global_avg_pool_nhwc(1, 9, 4, &[0.0; 36], &mut y[..3]).is_err());
}

#[test]
fn excite_gate_matches_the_nchw_gate() {
    let (n, c, rd, hw) = (2, 72, 24, 49);
    let (w1, b1, w2, b2) = (
        values(rd * c, 2),
        values(rd, 3),
        values(c * rd, 4),
        values(c, 5),
    );
    let w = ExciteWeights {
        w1: &w1,
        b1: &b1,
        act: Activation::Relu,
        w2: &w2,
        b2: &b2,
        gate: Activation::HardSigmoid,
    };
    let x = values(n * c * hw, 6);
    let mut want = vec![0.0; n * c];
    excite_gate(n, hw, &x, &w, &mut want).unwrap();
    let mut got = vec![f32::NAN; n * c];
    excite_gate_nhwc(n, hw, &to_nhwc(&x, n, c, hw), &w, &mut got).unwrap();
    // The squeeze's f64 sums are added in another order; the gate is rounded once.
    for (g, e) in got.iter().zip(&want) {
        assert!(
            (g - e).abs() <= f32::EPSILON * e.abs().max(1e-3),
            "{g} vs {e}"
        );
    }
    assert!(excite_gate_nhwc(n, hw, &x[1..], &w, &mut got).is_err());
}
