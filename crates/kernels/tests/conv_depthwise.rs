//! The depthwise kernels (every ISA path this CPU has) against the f64 oracle: random
//! depthwise shapes (3x3, 5x5 and generic filters, strides 1-3, dilation, padding, channel
//! multipliers, planes narrower and wider than a vector), MobileNet layers, and bit-identical
//! results across thread counts.

use proptest::prelude::*;
use tessera_kernels::conv::{self, reference, Conv2dShape};
use tessera_kernels::{Activation, Isa};

mod common;
use common::data;

/// Allowance for a vector activation differing from its scalar definition by a few ulps of the
/// output (polynomial `exp`/`tanh` forms of sigmoid, swish, GELU): 8 ulps. Exact for
/// identity / ReLU / ReLU6, whose vector and scalar forms agree bit for bit (8 ulps of a
/// value in [1, 2) is 16 eps times it).
const ACT_ULPS: f32 = 16.0;

fn abs(v: &[f32]) -> Vec<f32> {
    v.iter().map(|x| x.abs()).collect()
}

/// Asserts `|got - want| <= 2 (K + 4) eps sum|terms|` element-wise (the dot-product bound,
/// doubled for the activation's Lipschitz constant).
fn close(what: &str, s: &Conv2dShape, isa: Isa, got: &[f32], want: &[f32], mag: &[f32], k: usize) {
    let gamma = 2.0 * (k as f32 + 4.0) * f32::EPSILON;
    for (i, ((g, w), m)) in got.iter().zip(want).zip(mag).enumerate() {
        assert!(
            (g - w).abs() <= gamma * m + ACT_ULPS * f32::EPSILON * w.abs() + f32::MIN_POSITIVE,
            "{isa} {s} {what}[{i}]: {g} vs {w} (bound {})",
            gamma * m
        );
    }
}

/// The f64 oracle's forward pass and the magnitudes of its terms (`|x| * |w| + |b|`) for the
/// error bound of [`close`].
fn forward_oracle(
    s: &Conv2dShape,
    x: &[f32],
    w: &[f32],
    b: &[f32],
    act: Activation,
) -> (Vec<f32>, Vec<f32>) {
    let (mut want, mut mag) = (vec![0.0; s.output_len()], vec![0.0; s.output_len()]);
    reference::conv2d_forward(s, x, w, Some(b), act, &mut want);
    reference::conv2d_forward(
        s,
        &abs(x),
        &abs(w),
        Some(&abs(b)),
        Activation::Identity,
        &mut mag,
    );
    (want, mag)
}

fn check(isa: Isa, s: &Conv2dShape, act: Activation, seed: u64) {
    assert!(s.is_depthwise());
    let (x, w, b) = (
        data(s.input_len(), seed),
        data(s.weight_len(), seed + 1),
        data(s.c_out, seed + 2),
    );
    let dy = data(s.output_len(), seed + 3);
    let (k1, k2, k3) = reference::terms(s);

    let mut y = vec![f32::NAN; s.output_len()];
    conv::conv2d_forward_with(isa, s, &x, &w, Some(&b), act, &mut y).unwrap();
    let (want, mag) = forward_oracle(s, &x, &w, &b, act);
    close("y", s, isa, &y, &want, &mag, k1 + 1);

    let mut dx = vec![f32::NAN; s.input_len()];
    let (mut want, mut mag) = (vec![0.0; s.input_len()], vec![0.0; s.input_len()]);
    conv::conv2d_backward_input_with(isa, s, &w, &dy, &mut dx).unwrap();
    reference::conv2d_backward_input(s, &w, &dy, &mut want);
    reference::conv2d_backward_input(s, &abs(&w), &abs(&dy), &mut mag);
    close("dx", s, isa, &dx, &want, &mag, k2);

    let mut dw = vec![f32::NAN; s.weight_len()];
    let (mut want, mut mag) = (vec![0.0; s.weight_len()], vec![0.0; s.weight_len()]);
    conv::conv2d_backward_weight_with(isa, s, &x, &dy, &mut dw).unwrap();
    reference::conv2d_backward_weight(s, &x, &dy, &mut want);
    reference::conv2d_backward_weight(s, &abs(&x), &abs(&dy), &mut mag);
    close("dw", s, isa, &dw, &want, &mag, k3);
}

#[allow(clippy::too_many_arguments)]
fn dw_shape(
    n: usize,
    c: usize,
    mult: usize,
    h: usize,
    w: usize,
    k: (usize, usize),
    st: (usize, usize),
    p: (usize, usize),
    d: (usize, usize),
) -> Conv2dShape {
    Conv2dShape {
        n,
        c_in: c,
        h,
        w,
        c_out: c * mult,
        kh: k.0,
        kw: k.1,
        stride: st,
        padding: p,
        dilation: d,
        groups: c,
    }
}

fn any_depthwise() -> impl Strategy<Value = Conv2dShape> {
    (
        1usize..3,
        1usize..4,
        prop_oneof![3 => Just(1usize), 1 => 2usize..4],
        // Widths past two AVX-512 vectors reach the stride-1 form that reads the plane in
        // place (AVX-512 only).
        (1usize..24, 1usize..64),
        prop_oneof![Just((3usize, 3usize)), Just((5, 5)), (1usize..8, 1usize..8)],
        prop_oneof![Just((1usize, 1usize)), Just((2, 2)), (1usize..4, 1usize..4)],
        (0usize..4, 0usize..4),
        prop_oneof![3 => Just((1usize, 1usize)), 1 => (1usize..3, 1usize..3)],
    )
        .prop_filter_map("kernel must fit", |(n, c, m, hw, k, st, p, d)| {
            let s = dw_shape(n, c, m, hw.0, hw.1, k, st, p, d);
            s.validate().ok().map(|_| s)
        })
}

/// Shapes for the channel-blocked small-plane path: output rows up to 14 wide and enough
/// channels for one or more blocks of 8 / 16 plus a remainder.
fn small_plane_depthwise() -> impl Strategy<Value = Conv2dShape> {
    (
        1usize..3,
        1usize..24,
        prop_oneof![3 => Just(1usize), 1 => 2usize..4],
        (1usize..17, 1usize..17),
        prop_oneof![3 => Just((3usize, 3usize)), 3 => Just((5, 5)), 1 => (1usize..6, 1usize..6)],
        prop_oneof![Just((1usize, 1usize)), Just((2, 2)), (1usize..3, 1usize..3)],
        (0usize..3, 0usize..3),
        prop_oneof![4 => Just((1usize, 1usize)), 1 => (1usize..3, 1usize..3)],
    )
        .prop_filter_map("kernel must fit", |(n, c, m, hw, k, st, p, d)| {
            let s = dw_shape(n, c, m, hw.0, hw.1, k, st, p, d);
            s.validate().ok().map(|_| s)
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(96))]
    #[test]
    fn small_planes_match_the_oracle(s in small_plane_depthwise(), act in 0usize..8, seed in 0u64..1000) {
        let act = Activation::ALL[act % Activation::ALL.len()];
        for isa in Isa::available() {
            check(isa, &s, act, seed);
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(160))]
    #[test]
    fn depthwise_matches_the_oracle(s in any_depthwise(), act in 0usize..8, seed in 0u64..1000) {
        let act = Activation::ALL[act % Activation::ALL.len()];
        for isa in Isa::available() {
            check(isa, &s, act, seed);
        }
    }
}

#[test]
fn mobilenet_layers_match_the_oracle() {
    // Reduced channel counts of the bench shapes: the oracle is slow, the geometry is what
    // matters (plane sizes around the vector widths, both strides, both filter sizes).
    let shapes = [
        dw_shape(1, 3, 1, 112, 112, (3, 3), (1, 1), (1, 1), (1, 1)),
        dw_shape(1, 4, 1, 56, 56, (3, 3), (2, 2), (1, 1), (1, 1)),
        dw_shape(2, 4, 1, 28, 28, (5, 5), (1, 1), (2, 2), (1, 1)),
        dw_shape(1, 8, 1, 7, 7, (3, 3), (1, 1), (1, 1), (1, 1)),
        dw_shape(1, 5, 1, 14, 14, (5, 5), (2, 2), (2, 2), (1, 1)),
        dw_shape(1, 20, 1, 7, 7, (3, 3), (1, 1), (1, 1), (1, 1)),
        dw_shape(1, 17, 1, 7, 7, (5, 5), (1, 1), (2, 2), (1, 1)),
        dw_shape(1, 18, 1, 14, 14, (5, 5), (2, 2), (2, 2), (1, 1)),
        dw_shape(1, 24, 1, 14, 14, (3, 3), (1, 1), (1, 1), (1, 1)),
        // Strided forward passes with output rows up to 28 take the channel-blocked path.
        dw_shape(1, 12, 1, 56, 56, (3, 3), (2, 2), (1, 1), (1, 1)),
        dw_shape(1, 9, 1, 45, 45, (5, 5), (2, 2), (2, 2), (1, 1)),
        dw_shape(1, 10, 1, 29, 31, (3, 3), (2, 1), (1, 1), (1, 1)),
    ];
    check_every_isa(&shapes, Activation::Relu6, 40);
}

/// [`check`] of every shape on every ISA the host has, shape `i` with seed `seed0 + i`.
fn check_every_isa(shapes: &[Conv2dShape], act: Activation, seed0: u64) {
    for (i, s) in shapes.iter().enumerate() {
        for isa in Isa::available() {
            check(isa, s, act, seed0 + i as u64);
        }
    }
}

#[test]
fn large_planes_in_row_bands_match_the_oracle() {
    // Planes whose padded copy exceeds half of L1d run band by band (`plane.rs`): strided
    // planes of a MobileNet's first stages, stride-1 planes the in-place form does not take
    // (no padding), and heights that leave every kind of remainder band.
    let shapes = [
        dw_shape(1, 2, 1, 112, 112, (3, 3), (2, 2), (1, 1), (1, 1)),
        dw_shape(1, 2, 1, 113, 115, (3, 3), (2, 2), (1, 1), (1, 1)),
        dw_shape(1, 2, 1, 112, 112, (5, 5), (2, 2), (2, 2), (1, 1)),
        dw_shape(1, 2, 1, 121, 96, (3, 3), (1, 1), (0, 0), (1, 1)),
        dw_shape(1, 2, 1, 97, 90, (5, 5), (1, 1), (0, 0), (1, 1)),
        dw_shape(2, 2, 1, 150, 64, (3, 3), (2, 2), (1, 1), (1, 1)),
    ];
    check_every_isa(&shapes, Activation::Relu6, 70);
    same_for_any_thread_count(&dw_shape(1, 6, 1, 112, 112, (3, 3), (2, 2), (1, 1), (1, 1)));
}

#[test]
fn in_place_form_matches_the_oracle_and_the_padded_form() {
    // Stride-1 3x3 / 5x5 with "same" padding on rows of two or more AVX-512 vectors (3x3:
    // more than one): the form that reads the plane in place (AVX-512). Widths around the
    // vector multiples (an
    // even and an odd number of vector positions, row ends 0-15 lanes past a multiple,
    // including 5x5 rows ending one lane past it, which keep the padded copy), heights
    // around the 8-row tile (interior and edge bands, an overlapping last band).
    let widths = [17, 18, 28, 31, 32, 40, 48, 49, 50, 56, 63, 64, 81, 112];
    let shapes = same_padding_shapes(1, &widths, &[7, 8, 9, 16, 19]);
    check_in_place_against_padded(&shapes, 70);
}

#[test]
fn in_place_stride2_form_matches_the_oracle_and_the_padded_form() {
    // Stride-2 3x3 / 5x5 with "same" padding, read in place on AVX-512 where the input width
    // is even and the output row holds at least one vector (w >= 32): one output vector
    // (w = 32), two overlapping ones (34, 56), an even and an odd number of positions (64,
    // 96, 112), and the widths the padded copy keeps (odd, or narrower than two vectors);
    // heights with an odd last input row, output heights of 7 to 17 rows (whole 4-row tiles
    // and an overlapping last one), and planes whose last tile's rows reach past the
    // plane's bottom (5x5).
    let widths = [30, 32, 33, 34, 56, 64, 66, 96, 112];
    let shapes = same_padding_shapes(2, &widths, &[14, 15, 16, 17, 19, 33]);
    check_in_place_against_padded(&shapes, 700);
}

#[test]
fn planes_read_in_place_between_others_equal_planes_read_alone() {
    // A plane with input floats on both sides of it (the middle channels of a tensor) may be
    // read in place with whole edge loads whose outside lanes are cleared (AVX2); a plane
    // alone in its tensor goes through the padded copy. Channels 1-3 repeat one plane and
    // filter between two NaN planes (the lanes read past a plane's edges must be cleared,
    // not multiplied); every ISA must give them the bits of that plane convolved alone.
    let widths = [16, 17, 18, 28, 31, 32, 40, 56, 64, 112];
    let shapes = same_padding_shapes(1, &widths, &[7, 8, 9, 16, 19]);
    for (i, two) in shapes.iter().enumerate() {
        let (mut one, mut five) = (*two, *two);
        (one.c_in, one.c_out, one.groups) = (1, 1, 1);
        (five.c_in, five.c_out, five.groups) = (5, 5, 5);
        let one = &one;
        let hw = one.h * one.w;
        let taps = one.kh * one.kw;
        let (p, f) = (data(hw, 900 + i as u64), data(taps, 1900 + i as u64));
        let b = [0.25f32];
        let mut x = vec![f32::NAN; 5 * hw];
        let mut w = vec![f32::NAN; 5 * taps];
        for c in 1..4 {
            x[c * hw..(c + 1) * hw].copy_from_slice(&p);
            w[c * taps..(c + 1) * taps].copy_from_slice(&f);
        }
        let b5 = [0.0, 0.25, 0.25, 0.25, 0.0];
        for isa in Isa::available() {
            let mut alone = vec![0.0f32; one.output_len()];
            conv::conv2d_forward_with(isa, one, &p, &f, Some(&b), Activation::Relu6, &mut alone)
                .unwrap();
            let mut y = vec![0.0f32; five.output_len()];
            conv::conv2d_forward_with(isa, &five, &x, &w, Some(&b5), Activation::Relu6, &mut y)
                .unwrap();
            let o = one.output_len();
            for c in 1..4 {
                for (j, (a, e)) in y[c * o..(c + 1) * o].iter().zip(&alone).enumerate() {
                    assert_eq!(
                        a.to_bits(),
                        e.to_bits(),
                        "{one} {isa} channel {c} y[{j}]: {a} vs {e}"
                    );
                }
            }
        }
    }
}

/// Two-channel 3x3 and 5x5 depthwise shapes with "same" padding at `stride` (both axes),
/// every width by every height.
fn same_padding_shapes(stride: usize, widths: &[usize], heights: &[usize]) -> Vec<Conv2dShape> {
    let mut shapes = Vec::new();
    for k in [3usize, 5] {
        for &w in widths {
            for &h in heights {
                let (st, pad) = ((stride, stride), (k / 2, k / 2));
                shapes.push(dw_shape(1, 2, 1, h, w, (k, k), st, pad, (1, 1)));
            }
        }
    }
    shapes
}

/// Every shape against the f64 oracle on every ISA, and the fused-FMA paths (AVX-512 in
/// place, AVX2 through the padded copy) against each other bit for bit.
fn check_in_place_against_padded(shapes: &[Conv2dShape], seed0: u64) {
    let isas = Isa::available();
    for (i, s) in shapes.iter().enumerate() {
        let seed = seed0 + i as u64;
        let (x, w, b) = (
            data(s.input_len(), seed),
            data(s.weight_len(), seed + 1),
            data(s.c_out, seed + 2),
        );
        let (want, mag) = forward_oracle(s, &x, &w, &b, Activation::Relu6);
        let mut first: Option<(Isa, Vec<f32>)> = None;
        for &isa in &isas {
            let mut y = vec![f32::NAN; s.output_len()];
            conv::conv2d_forward_with(isa, s, &x, &w, Some(&b), Activation::Relu6, &mut y).unwrap();
            close("y", s, isa, &y, &want, &mag, s.kh * s.kw + 1);
            // The fused-FMA paths add the same products in the same order (bias, then kernel
            // column by column, row by row; zero padding included), so they agree bit for
            // bit (the portable and scalar paths round each product: not compared).
            if !matches!(isa, Isa::Avx512 | Isa::Avx2) {
                continue;
            }
            match &first {
                None => first = Some((isa, y)),
                Some((isa0, y0)) => {
                    for (j, (a, b)) in y.iter().zip(y0).enumerate() {
                        assert_eq!(
                            a.to_bits(),
                            b.to_bits(),
                            "{s} y[{j}]: {isa} {a} vs {isa0} {b}"
                        );
                    }
                }
            }
        }
    }
}

#[test]
fn results_do_not_depend_on_the_thread_count() {
    // Large planes (width-vectorised path: strided through the padded copy, stride 1 read in
    // place) and a small one (channel-blocked, with a remainder of channels that are not a
    // whole block).
    for s in [
        dw_shape(2, 24, 1, 30, 30, (3, 3), (2, 2), (1, 1), (1, 1)),
        dw_shape(2, 24, 1, 40, 50, (3, 3), (1, 1), (1, 1), (1, 1)),
        dw_shape(1, 16, 1, 20, 61, (5, 5), (1, 1), (2, 2), (1, 1)),
        dw_shape(2, 100, 1, 7, 7, (3, 3), (1, 1), (1, 1), (1, 1)),
    ] {
        same_for_any_thread_count(&s);
    }
}

fn same_for_any_thread_count(s: &Conv2dShape) {
    let s = *s;
    let (x, w, dy) = (
        data(s.input_len(), 1),
        data(s.weight_len(), 2),
        data(s.output_len(), 3),
    );
    let run = |threads: usize| {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap();
        pool.install(|| {
            let mut y = vec![0.0; s.output_len()];
            let mut dx = vec![0.0; s.input_len()];
            let mut dw = vec![0.0; s.weight_len()];
            conv::conv2d_forward(&s, &x, &w, None, Activation::Relu, &mut y).unwrap();
            conv::conv2d_backward_input(&s, &w, &dy, &mut dx).unwrap();
            conv::conv2d_backward_weight(&s, &x, &dy, &mut dw).unwrap();
            (y, dx, dw)
        })
    };
    let one = run(1);
    for t in [2, 3] {
        let other = run(t);
        assert!(one
            .0
            .iter()
            .zip(&other.0)
            .all(|(a, b)| a.to_bits() == b.to_bits()));
        assert!(one
            .1
            .iter()
            .zip(&other.1)
            .all(|(a, b)| a.to_bits() == b.to_bits()));
        assert!(one
            .2
            .iter()
            .zip(&other.2)
            .all(|(a, b)| a.to_bits() == b.to_bits()));
    }
}

/// The forward pass of one image's planes, checked against the oracle.
fn check_forward(isa: Isa, s: &Conv2dShape, seed: u64) {
    let (x, w, b) = (
        data(s.input_len(), seed),
        data(s.weight_len(), seed + 1),
        data(s.c_out, seed + 2),
    );
    let mut y = vec![f32::NAN; s.output_len()];
    conv::conv2d_forward_with(isa, s, &x, &w, Some(&b), Activation::Relu, &mut y).unwrap();
    let (want, mag) = forward_oracle(s, &x, &w, &b, Activation::Relu);
    close("y", s, isa, &y, &want, &mag, reference::terms(s).0 + 1);
}

/// The forward pass keeps the zero padding of its per-thread packed plane between planes and
/// between calls of one geometry, rewriting only the data (strides 1 and 2): a geometry whose
/// data lands where another's padding was (no padding, other widths), planes narrower than
/// one or two vectors, and the gradients, which use the same scratch, run in between on the
/// same thread, and every result still matches the oracle.
#[test]
fn the_kept_padding_of_the_packed_plane_is_never_stale() {
    let padded = dw_shape(1, 6, 1, 28, 28, (5, 5), (1, 1), (2, 2), (1, 1));
    let unpadded = dw_shape(1, 6, 1, 28, 28, (5, 5), (1, 1), (0, 0), (1, 1));
    let other = dw_shape(1, 5, 1, 30, 26, (3, 3), (1, 1), (1, 1), (1, 1));
    let narrow = dw_shape(1, 3, 1, 12, 12, (3, 3), (1, 1), (1, 1), (1, 1));
    let strided = dw_shape(1, 6, 1, 70, 70, (3, 3), (2, 2), (1, 1), (1, 1));
    let strided_unpadded = dw_shape(1, 6, 1, 70, 70, (3, 3), (2, 2), (0, 0), (1, 1));
    let strided_narrow = dw_shape(1, 3, 1, 40, 23, (3, 3), (2, 2), (1, 1), (1, 1));
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .build()
        .unwrap();
    pool.install(|| {
        for isa in Isa::available() {
            let steps = [
                &padded, &padded, &unpadded, &padded, &other, &narrow, &padded,
            ];
            for (seed, s) in steps.into_iter().enumerate() {
                check_forward(isa, s, 10 * seed as u64);
            }
            let steps = [
                &strided,
                &strided,
                &strided_unpadded,
                &strided,
                &strided_narrow,
                &strided_narrow,
                &strided,
            ];
            for (seed, s) in steps.into_iter().enumerate() {
                check_forward(isa, s, 300 + 10 * seed as u64);
            }
            check(isa, &padded, Activation::Relu, 90);
            check_forward(isa, &padded, 100);
            check_forward(isa, &narrow, 110);
            check_forward(isa, &narrow, 120);
        }
    });
}
