//! Pooling against brute-force oracles written from PyTorch's definitions (every tap of the
//! window enumerated in padded coordinates), output-size rules including `ceil_mode`, the
//! adjoint identity of the linear poolings, and the errors.

use proptest::prelude::*;
use tessera_kernels::pool::{self, Pool2dShape};

mod common;
use common::data;

fn dot(a: &[f32], b: &[f32]) -> f64 {
    a.iter().zip(b).map(|(&x, &y)| x as f64 * y as f64).sum()
}

/// The taps `(tap_in_padded_window, Some(flat input index) or None for padding / beyond)` of
/// output `(oy, ox)`, and the padded window size PyTorch divides by with count_include_pad.
fn taps(s: &Pool2dShape, oy: usize, ox: usize) -> (Vec<Option<usize>>, usize) {
    let mut v = Vec::new();
    let mut padded = 0;
    for i in 0..s.kh {
        for j in 0..s.kw {
            let r = (oy * s.stride.0 + i) as isize - s.padding.0 as isize;
            let c = (ox * s.stride.1 + j) as isize - s.padding.1 as isize;
            // Inside input + padding on both sides counts toward the padded size.
            if r < s.h as isize + s.padding.0 as isize && c < s.w as isize + s.padding.1 as isize {
                padded += 1;
            }
            let inside = r >= 0 && c >= 0 && r < s.h as isize && c < s.w as isize;
            v.push(inside.then(|| r as usize * s.w + c as usize));
        }
    }
    (v, padded)
}

fn check_pool(s: &Pool2dShape, include_pad: bool, seed: u64) {
    let x = data(s.input_len(), seed);
    let (oh, ow, hw) = (s.out_h(), s.out_w(), s.h * s.w);
    let mut y = vec![f32::NAN; s.output_len()];
    let mut am = vec![u32::MAX; s.output_len()];
    pool::max_pool2d_forward(s, &x, &mut y, &mut am).unwrap();
    let mut yv = vec![f32::NAN; s.output_len()];
    pool::max_pool2d_forward_values(s, &x, &mut yv).unwrap();
    assert!(
        y.iter().zip(&yv).all(|(a, b)| a.to_bits() == b.to_bits()),
        "{s}: the value-only max pool differs"
    );
    let mut ya = vec![f32::NAN; s.output_len()];
    pool::avg_pool2d_forward(s, include_pad, &x, &mut ya).unwrap();
    for p in 0..s.n * s.c {
        for oy in 0..oh {
            for ox in 0..ow {
                let o = (p * oh + oy) * ow + ox;
                let (t, padded) = taps(s, oy, ox);
                let inside: Vec<usize> = t.iter().flatten().copied().collect();
                // First maximum in row-major order.
                let best = inside
                    .iter()
                    .map(|&i| x[p * hw + i])
                    .fold(f32::NEG_INFINITY, f32::max);
                let first = inside
                    .iter()
                    .copied()
                    .find(|&i| x[p * hw + i] == best)
                    .unwrap();
                assert_eq!((y[o], am[o] as usize), (best, first), "{s} max at {o}");
                let sum: f64 = inside.iter().map(|&i| x[p * hw + i] as f64).sum();
                let div = if include_pad { padded } else { inside.len() };
                let want = sum / div as f64;
                assert!(
                    (ya[o] as f64 - want).abs() <= 1e-6 * (1.0 + want.abs()),
                    "{s} avg at {o}: {} vs {want}",
                    ya[o]
                );
            }
        }
    }
    // Backward: max scatters through argmax; avg is the adjoint of its forward.
    let dy = data(s.output_len(), seed + 1);
    let mut dx = vec![f32::NAN; s.input_len()];
    pool::max_pool2d_backward(s, &dy, &am, &mut dx).unwrap();
    let mut want = vec![0.0f32; s.input_len()];
    for (o, (&g, &a)) in dy.iter().zip(&am).enumerate() {
        want[o / (oh * ow) * hw + a as usize] += g;
    }
    for (a, b) in dx.iter().zip(&want) {
        assert!(
            (a - b).abs() <= 1e-6 * (1.0 + b.abs()),
            "{s} max backward {a} vs {b}"
        );
    }
    pool::avg_pool2d_backward(s, include_pad, &dy, &mut dx).unwrap();
    let (l, r) = (dot(&ya, &dy), dot(&x, &dx));
    assert!(
        (l - r).abs() <= 1e-5 * (1.0 + l.abs()),
        "{s} avg adjoint {l} vs {r}"
    );
}

fn any_pool() -> impl Strategy<Value = Pool2dShape> {
    (
        1usize..3,
        1usize..4,
        1usize..12,
        1usize..12,
        1usize..5,
        1usize..5,
        1usize..4,
        1usize..4,
        0usize..3,
        0usize..3,
        any::<bool>(),
    )
        .prop_filter_map(
            "valid",
            |(n, c, h, w, kh, kw, sh, sw, ph, pw, ceil_mode)| {
                let s = Pool2dShape {
                    n,
                    c,
                    h,
                    w,
                    kh,
                    kw,
                    stride: (sh, sw),
                    padding: (ph, pw),
                    ceil_mode,
                };
                s.validate().ok().map(|_| s)
            },
        )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]
    #[test]
    fn pools_match_brute_force(s in any_pool(), include_pad: bool, seed in 0u64..1000) {
        check_pool(&s, include_pad, seed);
    }

    #[test]
    fn adaptive_matches_bins(n in 1usize..3, c in 1usize..3, h in 1usize..15, w in 1usize..15, oh in 1usize..9, ow in 1usize..9, seed in 0u64..1000) {
        let x = data(n * c * h * w, seed);
        let mut y = vec![f32::NAN; n * c * oh * ow];
        pool::adaptive_avg_pool2d_forward(n, c, h, w, oh, ow, &x, &mut y).unwrap();
        for p in 0..n * c {
            for oy in 0..oh {
                // PyTorch: start = floor(o * in / out), end = ceil((o + 1) * in / out).
                let (r0, r1) = ((oy as f64 * h as f64 / oh as f64).floor() as usize, ((oy + 1) as f64 * h as f64 / oh as f64).ceil() as usize);
                for ox in 0..ow {
                    let (c0, c1) = ((ox as f64 * w as f64 / ow as f64).floor() as usize, ((ox + 1) as f64 * w as f64 / ow as f64).ceil() as usize);
                    let mut sum = 0.0f64;
                    for r in r0..r1 { for cc in c0..c1 { sum += x[p * h * w + r * w + cc] as f64; } }
                    let want = sum / ((r1 - r0) * (c1 - c0)) as f64;
                    let got = y[(p * oh + oy) * ow + ox] as f64;
                    prop_assert!((got - want).abs() <= 1e-6 * (1.0 + want.abs()), "{got} vs {want}");
                }
            }
        }
        let dy = data(y.len(), seed + 1);
        let mut dx = vec![f32::NAN; x.len()];
        pool::adaptive_avg_pool2d_backward(n, c, h, w, oh, ow, &dy, &mut dx).unwrap();
        let (l, r) = (dot(&y, &dy), dot(&x, &dx));
        prop_assert!((l - r).abs() <= 1e-5 * (1.0 + l.abs()), "adjoint {l} vs {r}");
    }
}

#[test]
fn large_inputs_take_the_parallel_paths() {
    let s = Pool2dShape {
        n: 2,
        c: 32,
        h: 56,
        w: 56,
        kh: 3,
        kw: 3,
        stride: (2, 2),
        padding: (1, 1),
        ceil_mode: true,
    };
    check_pool(&s, false, 5);
}

#[test]
fn output_sizes_follow_pytorch() {
    let mk = |h: usize, k: usize, st: usize, p: usize, ceil_mode: bool| Pool2dShape {
        n: 1,
        c: 1,
        h,
        w: h,
        kh: k,
        kw: k,
        stride: (st, st),
        padding: (p, p),
        ceil_mode,
    };
    // ResNet stem: 112 -> 56 with 3x3 s2 p1.
    assert_eq!(mk(112, 3, 2, 1, false).out_h(), 56);
    assert_eq!(mk(5, 2, 2, 0, false).out_h(), 2);
    assert_eq!(mk(5, 2, 2, 0, true).out_h(), 3);
    // ceil would give 4, but the last window would start in the right padding: 3.
    assert_eq!(mk(5, 2, 2, 1, true).out_h(), 3);
    assert_eq!(mk(6, 3, 3, 1, true).out_h(), 3);
}

#[test]
fn nan_wins_max_pooling() {
    let s = Pool2dShape::new(1, 1, 2, 2, 2);
    let (mut y, mut a) = ([0.0], [0]);
    pool::max_pool2d_forward(&s, &[1.0, f32::NAN, 3.0, 2.0], &mut y, &mut a).unwrap();
    assert!(y[0].is_nan());
    assert_eq!(a[0], 1);
    for x in [
        [1.0, f32::NAN, 3.0, 2.0],
        [f32::NAN, 1.0, 3.0, 2.0],
        [1.0, 3.0, 2.0, f32::NAN],
    ] {
        pool::max_pool2d_forward_values(&s, &x, &mut y).unwrap();
        assert!(y[0].is_nan(), "{x:?}");
    }
}

#[test]
fn errors_name_the_op_and_shape() {
    let bad = Pool2dShape {
        padding: (2, 0),
        ..Pool2dShape::new(1, 1, 8, 8, 3)
    };
    let e = pool::avg_pool2d_forward(&bad, true, &[0.0; 64], &mut [0.0; 9])
        .unwrap_err()
        .to_string();
    assert!(
        e.starts_with("avg_pool2d_forward:") && e.contains("padding"),
        "{e}"
    );
    let s = Pool2dShape::new(1, 2, 4, 4, 2);
    let e = pool::max_pool2d_forward(&s, &[0.0; 32], &mut [0.0; 7], &mut [0; 8])
        .unwrap_err()
        .to_string();
    assert!(
        e.starts_with("max_pool2d_forward:") && e.contains("y has 7"),
        "{e}"
    );
    let e = pool::max_pool2d_backward(&s, &[0.0; 8], &[16; 8], &mut [0.0; 32])
        .unwrap_err()
        .to_string();
    assert!(e.contains("argmax[0] = 16"), "{e}");
    let e = pool::adaptive_avg_pool2d_forward(1, 1, 4, 4, 0, 2, &[0.0; 16], &mut [])
        .unwrap_err()
        .to_string();
    assert!(e.starts_with("adaptive_avg_pool2d_forward:"), "{e}");
    let big = Pool2dShape::new(1, 1, 3, 3, 4);
    assert!(big.validate().is_err());
}

#[test]
fn results_do_not_depend_on_the_thread_count() {
    let s = Pool2dShape {
        n: 2,
        c: 24,
        h: 40,
        w: 40,
        kh: 3,
        kw: 3,
        stride: (2, 2),
        padding: (1, 1),
        ceil_mode: false,
    };
    let x = data(s.input_len(), 9);
    let dy = data(s.output_len(), 10);
    let run = |threads: usize| {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap();
        pool.install(|| {
            let (mut y, mut a) = (vec![0.0; s.output_len()], vec![0u32; s.output_len()]);
            pool::max_pool2d_forward(&s, &x, &mut y, &mut a).unwrap();
            let mut dx = vec![0.0; s.input_len()];
            pool::max_pool2d_backward(&s, &dy, &a, &mut dx).unwrap();
            let mut ya = vec![0.0; s.output_len()];
            pool::avg_pool2d_forward(&s, true, &x, &mut ya).unwrap();
            let mut dxa = vec![0.0; s.input_len()];
            pool::avg_pool2d_backward(&s, true, &dy, &mut dxa).unwrap();
            let mut yd = vec![0.0; 2 * 24 * 7 * 7];
            pool::adaptive_avg_pool2d_forward(2, 24, 40, 40, 7, 7, &x, &mut yd).unwrap();
            let mut dxd = vec![0.0; s.input_len()];
            pool::adaptive_avg_pool2d_backward(2, 24, 40, 40, 7, 7, &yd, &mut dxd).unwrap();
            // Global pooling: one output per plane, many planes per task.
            let mut yg = vec![0.0; 2 * 24];
            pool::adaptive_avg_pool2d_forward(2, 24, 40, 40, 1, 1, &x, &mut yg).unwrap();
            let mut dxg = vec![0.0; s.input_len()];
            pool::adaptive_avg_pool2d_backward(2, 24, 40, 40, 1, 1, &yg, &mut dxg).unwrap();
            let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<u32>>();
            (
                bits(&y),
                a,
                bits(&dx),
                bits(&ya),
                bits(&dxa),
                bits(&yd),
                bits(&dxd),
                bits(&yg),
                bits(&dxg),
            )
        })
    };
    assert_eq!(run(1), run(3));
}
