//! Max pooling on every instruction set the host has (`max_pool2d_forward_with`,
//! `max_pool2d_forward_values_with`) against the window-by-window reference
//! (`max_pool2d_forward_scalar`), bit for bit: values (NaN payloads and signed zeros included)
//! and argmax, on rows narrower and wider than a vector, strides 1 to 3 (2 takes the
//! deinterleaving split), padding and `ceil_mode`; then the backward through each path's
//! argmax.

use proptest::prelude::*;
use tessera_kernels::pool::{self, Pool2dShape};
use tessera_kernels::Isa;

/// Values from a small set with many ties (signed zeros among them), NaNs with two payloads
/// and infinities.
fn data(len: usize, seed: u64) -> Vec<f32> {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            s ^= s >> 12;
            s ^= s << 25;
            s ^= s >> 27;
            let r = s.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 40;
            match r % 29 {
                0 => f32::NAN,
                1 => f32::from_bits(0x7fc0_1234),
                2 => f32::from_bits(0xffc0_0077),
                3 => f32::INFINITY,
                4 => f32::NEG_INFINITY,
                5..=7 => -0.0,
                8..=10 => 0.0,
                _ => ((r % 9) as f32 - 4.0) / 2.0,
            }
        })
        .collect()
}

fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|f| f.to_bits()).collect()
}

fn check(s: &Pool2dShape, x: &[f32]) {
    let mut yr = vec![1.0; s.output_len()];
    let mut ar = vec![7u32; s.output_len()];
    pool::max_pool2d_forward_scalar(s, x, &mut yr, &mut ar).unwrap();
    for isa in Isa::available() {
        let mut y = vec![f32::NAN; s.output_len()];
        let mut a = vec![u32::MAX; s.output_len()];
        pool::max_pool2d_forward_with(isa, s, x, &mut y, &mut a).unwrap();
        assert_eq!(a, ar, "{isa} {s}: argmax differs");
        assert_eq!(bits(&y), bits(&yr), "{isa} {s}: values differ");
        let mut yv = vec![f32::NAN; s.output_len()];
        pool::max_pool2d_forward_values_with(isa, s, x, &mut yv).unwrap();
        assert_eq!(bits(&yv), bits(&yr), "{isa} {s}: value-only path differs");
    }
}

fn any_pool() -> impl Strategy<Value = Pool2dShape> {
    (
        (1usize..3, 1usize..4, 1usize..12, 1usize..80),
        (
            1usize..6,
            1usize..6,
            1usize..4,
            1usize..4,
            0usize..3,
            0usize..3,
        ),
        any::<bool>(),
    )
        .prop_filter_map(
            "valid",
            |((n, c, h, w), (kh, kw, sh, sw, ph, pw), ceil_mode)| {
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
    fn every_isa_matches_the_window_reference(s in any_pool(), seed in 0u64..10_000) {
        let x = data(s.input_len(), seed);
        check(&s, &x);
    }
}

#[test]
fn stem_shapes_match_on_every_isa() {
    // ResNet's stem pooling (3x3, stride 2, padding 1) at widths around the vector lengths
    // (8, 16) and their doubles (the stride-2 split takes 2L inputs at a time), and 112.
    for w in [1, 2, 7, 15, 16, 17, 31, 32, 33, 34, 47, 64, 65, 112] {
        for ceil_mode in [false, true] {
            let s = Pool2dShape {
                n: 1,
                c: 3,
                h: 9,
                w,
                kh: 3,
                kw: 3,
                stride: (2, 2),
                padding: (1, 1),
                ceil_mode,
            };
            check(&s, &data(s.input_len(), w as u64));
        }
    }
}

#[test]
fn one_by_one_windows_subsample_on_every_isa() {
    // A 1x1 window is a strided copy (the plan's subsampling before a strided 1x1
    // convolution); sizes above the parallel threshold, odd planes, both ceil modes.
    for (c, h, w, stride) in [
        (64, 56, 56, 2),
        (5, 13, 29, 2),
        (3, 40, 41, 3),
        (600, 7, 7, 2),
    ] {
        for ceil_mode in [false, true] {
            let s = Pool2dShape {
                n: 2,
                c,
                h,
                w,
                kh: 1,
                kw: 1,
                stride: (stride, stride),
                padding: (0, 0),
                ceil_mode,
            };
            check(&s, &data(s.input_len(), c as u64));
        }
    }
}

#[test]
fn backward_scatters_through_each_paths_argmax() {
    let s = Pool2dShape {
        n: 2,
        c: 3,
        h: 21,
        w: 37,
        kh: 3,
        kw: 3,
        stride: (2, 2),
        padding: (1, 1),
        ceil_mode: false,
    };
    // Distinct values: one maximum per window, so the gradient's positions are unambiguous.
    let x: Vec<f32> = (0..s.input_len())
        .map(|i| ((i * 7919) % 1009) as f32 - 500.0)
        .collect();
    let dy: Vec<f32> = (0..s.output_len()).map(|i| (i % 13) as f32 - 6.0).collect();
    let (mut yr, mut ar) = (vec![0.0; s.output_len()], vec![0u32; s.output_len()]);
    pool::max_pool2d_forward_scalar(&s, &x, &mut yr, &mut ar).unwrap();
    let mut want = vec![0.0f32; s.input_len()];
    pool::max_pool2d_backward(&s, &dy, &ar, &mut want).unwrap();
    assert!(want.iter().any(|&g| g != 0.0));
    for isa in Isa::available() {
        let (mut y, mut a) = (vec![0.0; s.output_len()], vec![0u32; s.output_len()]);
        pool::max_pool2d_forward_with(isa, &s, &x, &mut y, &mut a).unwrap();
        let mut dx = vec![f32::NAN; s.input_len()];
        pool::max_pool2d_backward(&s, &dy, &a, &mut dx).unwrap();
        assert_eq!(bits(&dx), bits(&want), "{isa}");
    }
}
