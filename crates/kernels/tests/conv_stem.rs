//! The direct convolution for few input channels (the networks' stems: `conv/stem.rs`), on
//! every ISA the host has: against the f64 oracle on stem-like and odd shapes (2 to 4 input
//! channels, filters 2x2 to 7x7, strides 1 to 3, output channels not a multiple of the tile,
//! rows narrower and wider than the tile), each activation; pre-packed weights (with and
//! without a channel scale) bit-identical to the raw-weight call; and the same bits for any
//! thread count.

use tessera_kernels::conv::{self, reference, Conv2dShape, PackedConvWeight};
use tessera_kernels::{Activation, Isa};

mod common;
use common::data;

/// Allowance for a vector activation differing from its scalar definition by a few ulps (as
/// in `conv_dense.rs`).
const ACT_ULPS: f32 = 16.0;

fn abs(v: &[f32]) -> Vec<f32> {
    v.iter().map(|x| x.abs()).collect()
}

#[allow(clippy::too_many_arguments)]
fn shape(
    n: usize,
    c_in: usize,
    h: usize,
    w: usize,
    c_out: usize,
    k: usize,
    st: usize,
    p: usize,
) -> Conv2dShape {
    Conv2dShape {
        n,
        c_in,
        h,
        w,
        c_out,
        kh: k,
        kw: k,
        stride: (st, st),
        padding: (p, p),
        dilation: (1, 1),
        groups: 1,
    }
}

fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|f| f.to_bits()).collect()
}

/// The forward on `isa` against the oracle: `|got - want| <= 2 (K + 4) eps sum|terms|`.
fn check(isa: Isa, s: &Conv2dShape, act: Activation, seed: u64) {
    let (x, w, b) = (
        data(s.input_len(), seed),
        data(s.weight_len(), seed + 1),
        data(s.c_out, seed + 2),
    );
    let mut y = vec![f32::NAN; s.output_len()];
    conv::conv2d_forward_with(isa, s, &x, &w, Some(&b), act, &mut y).unwrap();
    let (mut want, mut mag) = (vec![0.0; s.output_len()], vec![0.0; s.output_len()]);
    reference::conv2d_forward(s, &x, &w, Some(&b), act, &mut want);
    reference::conv2d_forward(
        s,
        &abs(&x),
        &abs(&w),
        Some(&abs(&b)),
        Activation::Identity,
        &mut mag,
    );
    let k = s.c_in * s.kh * s.kw + 1;
    let gamma = 2.0 * (k as f32 + 4.0) * f32::EPSILON;
    for (i, ((g, wv), m)) in y.iter().zip(&want).zip(&mag).enumerate() {
        assert!(
            (g - wv).abs() <= gamma * m + ACT_ULPS * f32::EPSILON * wv.abs() + f32::MIN_POSITIVE,
            "{isa} {s} {act:?} y[{i}]: {g} vs {wv}"
        );
    }
    // The same weights packed once: the same bits.
    let p = PackedConvWeight::pack(&w, [s.c_out, s.c_in, s.kh, s.kw], 1, Some(isa)).unwrap();
    let mut yp = vec![f32::NAN; s.output_len()];
    conv::conv2d_forward_packed(s, &x, &p, Some(&b), act, &mut yp).unwrap();
    assert_eq!(bits(&yp), bits(&y), "{isa} {s} {act:?}: packed differs");
}

#[test]
fn stem_shapes_match_the_oracle_on_every_isa() {
    let shapes = [
        shape(1, 3, 40, 38, 64, 7, 2, 3), // ResNet stem (7x7 / 2), smaller plane
        shape(1, 3, 34, 66, 32, 3, 2, 1), // MobileNetV2 stem
        shape(2, 3, 20, 36, 16, 3, 2, 1), // MobileNetV3 stem, two images
        shape(1, 2, 17, 17, 5, 3, 1, 1),  // stride 1, 5 output channels
        shape(1, 2, 9, 100, 6, 5, 3, 2),  // stride 3, wide rows (tiles of every width)
        shape(1, 4, 11, 7, 9, 2, 1, 0),   // 2x2, no padding, rows narrower than a vector
        shape(1, 3, 5, 5, 3, 5, 1, 2),    // a 5x5 filter on a 5x5 plane
        shape(3, 3, 13, 31, 13, 4, 2, 1), // even filter, odd sizes, 3 images
    ];
    for (i, s) in shapes.iter().enumerate() {
        for isa in Isa::available() {
            for (j, act) in [
                Activation::Identity,
                Activation::Relu,
                Activation::Relu6,
                Activation::HardSwish,
                Activation::Swish,
            ]
            .into_iter()
            .enumerate()
            {
                if (i + j) % 2 == 0 || i < 3 {
                    check(isa, s, act, 10 * i as u64 + j as u64);
                }
            }
        }
    }
}

#[test]
fn channel_scale_multiplies_each_sum_before_the_bias() {
    let s = shape(1, 3, 21, 45, 10, 3, 2, 1);
    let (x, w, b) = (
        data(s.input_len(), 1),
        data(s.weight_len(), 2),
        data(s.c_out, 3),
    );
    let scale: Vec<f32> = data(s.c_out, 4).iter().map(|v| 1.0 + 0.5 * v).collect();
    let ohw = s.out_h() * s.out_w();
    for isa in Isa::available() {
        let mut sums = vec![0.0; s.output_len()];
        conv::conv2d_forward_with(isa, &s, &x, &w, None, Activation::Identity, &mut sums).unwrap();
        let want: Vec<f32> = sums
            .iter()
            .enumerate()
            .map(|(i, &v)| (v * scale[i / ohw] + b[i / ohw]).clamp(0.0, 6.0))
            .collect();
        let p = PackedConvWeight::pack(&w, [10, 3, 3, 3], 1, Some(isa))
            .unwrap()
            .with_channel_scale(scale.clone())
            .unwrap();
        let mut got = vec![f32::NAN; s.output_len()];
        conv::conv2d_forward_packed(&s, &x, &p, Some(&b), Activation::Relu6, &mut got).unwrap();
        assert_eq!(bits(&got), bits(&want), "{isa}");
    }
}

#[test]
fn results_do_not_depend_on_the_thread_count() {
    let s = shape(2, 3, 64, 64, 24, 7, 2, 3);
    let (x, w, b) = (
        data(s.input_len(), 5),
        data(s.weight_len(), 6),
        data(s.c_out, 7),
    );
    let run = |threads: usize| {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap();
        pool.install(|| {
            let mut y = vec![0.0; s.output_len()];
            conv::conv2d_forward(&s, &x, &w, Some(&b), Activation::Relu, &mut y).unwrap();
            bits(&y)
        })
    };
    let one = run(1);
    assert_eq!(one, run(2));
    assert_eq!(one, run(3));
}
