//! The Winograd form against the f64 oracle on every ISA, across plane sizes that exercise
//! partial tiles and vector tails, blocks of several tile rows, and thread counts.

use crate::activation::Activation;
use crate::conv::{conv2d_forward_packed, reference, Conv2dShape, PackedConvWeight};
use crate::isa::Isa;

fn shape(n: usize, c_in: usize, c_out: usize, h: usize, w: usize) -> Conv2dShape {
    Conv2dShape {
        n,
        c_in,
        h,
        w,
        c_out,
        kh: 3,
        kw: 3,
        stride: (1, 1),
        padding: (1, 1),
        dilation: (1, 1),
        groups: 1,
    }
}

fn data(n: usize, seed: u32) -> Vec<f32> {
    (0..n)
        .map(|i| {
            (((i as u32).wrapping_mul(2654435761).wrapping_add(seed) >> 8) % 1000) as f32 / 500.0
                - 1.0
        })
        .collect()
}

/// Checks `got` against the f64 oracle of `conv(x, w) + bias`, then `act`, within a few
/// units of rounding of the sum of the terms' magnitudes (the transforms add and subtract up
/// to 16 terms per element).
fn assert_near_oracle(
    isa: Isa,
    s: &Conv2dShape,
    x: &[f32],
    w: &[f32],
    b: Option<&[f32]>,
    act: Activation,
    got: &[f32],
) {
    let (mut want, mut mag) = (vec![0.0; s.output_len()], vec![0.0; s.output_len()]);
    reference::conv2d_forward(s, x, w, b, act, &mut want);
    let abs = |v: &[f32]| v.iter().map(|a| a.abs()).collect::<Vec<_>>();
    let b_abs = b.map(abs);
    reference::conv2d_forward(
        s,
        &abs(x),
        &abs(w),
        b_abs.as_deref(),
        Activation::Identity,
        &mut mag,
    );
    for (i, ((g, w), m)) in got.iter().zip(&want).zip(&mag).enumerate() {
        let tol = 32.0 * f32::EPSILON * (m + 1.0);
        assert!(
            (g - w).abs() <= tol,
            "{isa} {s} {act:?}: output {i}: {g} vs {w} (tolerance {tol})"
        );
    }
}

/// Runs the Winograd form of `s` on `isa` (with the tiles as the GEMMs' rows when `rows`)
/// with a channel scale, a bias and `act`, and checks every output against the f64 oracle
/// ([`assert_near_oracle`]).
fn check_arranged(
    isa: Isa,
    s: &Conv2dShape,
    act: Activation,
    threads: usize,
    rows: bool,
) -> Vec<f32> {
    let (x, w, b) = (
        data(s.input_len(), 1),
        data(s.weight_len(), 2),
        data(s.c_out, 3),
    );
    let scale: Vec<f32> = data(s.c_out, 4).iter().map(|v| 1.0 + 0.25 * v).collect();
    let p = PackedConvWeight::pack_winograd_arranged(&w, [s.c_out, s.c_in, 3, 3], Some(isa), rows)
        .unwrap()
        .with_channel_scale(scale.clone())
        .unwrap();
    assert!(p.is_winograd());
    assert_eq!(p.is_winograd_tiles_as_rows(), rows);
    let mut got = vec![f32::NAN; s.output_len()];
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .unwrap();
    pool.install(|| conv2d_forward_packed(s, &x, &p, Some(&b), act, &mut got))
        .unwrap();
    // The oracle: the scale folded into the weights in f32 (`w * s`, one rounding of the
    // weight, far inside the tolerance below), then the reference forward in f64.
    let ws: Vec<f32> = w
        .iter()
        .enumerate()
        .map(|(i, &v)| v * scale[i / (s.c_in * 9)])
        .collect();
    assert_near_oracle(isa, s, &x, &ws, Some(&b), act, &got);
    got
}

/// [`check_arranged`] with both arrangements of the GEMMs, which must give the same bits
/// (each element of M is the same FMA chain either way); returns the output.
fn check(isa: Isa, s: &Conv2dShape, act: Activation, threads: usize) -> Vec<f32> {
    let cols = check_arranged(isa, s, act, threads, false);
    let rows = check_arranged(isa, s, act, threads, true);
    assert!(
        cols.iter()
            .zip(&rows)
            .all(|(a, b)| a.to_bits() == b.to_bits()),
        "{isa} {s} {act:?}: the two arrangements differ"
    );
    cols
}

/// The arrangement follows the plan's shape: SE-ResNet's 256-channel 14 x 14 layers at batch
/// 1 take the tiles as rows where the kernel in force has a transposed store and a 32-wide
/// tile (49 tiles: 64 columns against 49 rows and a short tile), its 56 x 56 ones never.
#[test]
fn the_arrangement_is_chosen_from_the_shape() {
    for isa in Isa::available() {
        let k = crate::gemm::table::selected(isa).tuning.kernel;
        let w = data(256 * 256 * 9, 1);
        let s = shape(1, 256, 256, 14, 14);
        let p = PackedConvWeight::pack_winograd_for(&w, [256, 256, 3, 3], &s, Some(isa)).unwrap();
        assert_eq!(p.is_winograd_tiles_as_rows(), super::tiles_as_rows(&s, isa));
        if k.name == "avx512_12x32" {
            assert!(p.is_winograd_tiles_as_rows(), "{isa} {}", k.name);
        }
        let s = shape(1, 64, 64, 56, 56);
        let p =
            PackedConvWeight::pack_winograd_for(&w[..64 * 64 * 9], [64, 64, 3, 3], &s, Some(isa))
                .unwrap();
        assert!(!p.is_winograd_tiles_as_rows(), "{isa} {}", k.name);
        // A weight of another shape than the convolution's is an error.
        assert!(PackedConvWeight::pack_winograd_for(&w, [256, 256, 3, 3], &s, Some(isa)).is_err());
    }
}

#[test]
fn winograd_matches_the_oracle_on_every_isa_and_plane_size() {
    for isa in Isa::available() {
        for &(n, ci, co, h, w) in &[
            (1, 3, 5, 4, 4),
            (2, 8, 13, 7, 7),
            (1, 16, 16, 14, 14),
            (1, 5, 7, 9, 35),
            (1, 4, 6, 1, 1),
            (3, 6, 4, 2, 33),
        ] {
            for act in [Activation::Identity, Activation::Relu, Activation::GeluErf] {
                check(isa, &shape(n, ci, co, h, w), act, 1);
            }
        }
    }
}

#[test]
fn winograd_is_bit_identical_for_any_thread_count() {
    for isa in Isa::available() {
        // Enough channels for several tasks per phase, and a plane of several tile rows: a
        // few blocks, each phase in parallel; then eight images, enough blocks (at least 9
        // of at most 14 tile rows, whatever the L2) for whole blocks in parallel.
        for s in [shape(2, 40, 36, 30, 30), shape(8, 40, 36, 30, 30)] {
            let one = check(isa, &s, Activation::Relu6, 1);
            let two = check(isa, &s, Activation::Relu6, 2);
            assert!(
                one.iter()
                    .zip(&two)
                    .all(|(a, b)| a.to_bits() == b.to_bits()),
                "{isa} {s}"
            );
        }
    }
}

#[test]
fn winograd_rejects_other_shapes() {
    let w = data(2 * 3 * 25, 1);
    assert!(PackedConvWeight::pack_winograd(&w, [2, 3, 5, 5], 1, None).is_err());
    let w = data(4 * 2 * 9, 1);
    assert!(PackedConvWeight::pack_winograd(&w, [4, 2, 3, 3], 2, None).is_err());
    let p = PackedConvWeight::pack_winograd(&data(4 * 4 * 9, 1), [4, 4, 3, 3], 1, None).unwrap();
    let s = Conv2dShape {
        stride: (2, 2),
        ..shape(1, 4, 4, 8, 8)
    };
    let (x, mut y) = (vec![0.0; s.input_len()], vec![0.0; s.output_len()]);
    let e = conv2d_forward_packed(&s, &x, &p, None, Activation::Identity, &mut y);
    assert!(e.unwrap_err().to_string().contains("Winograd"));
    assert!(!PackedConvWeight::winograd_applies(&s));
    assert!(PackedConvWeight::winograd_applies(&shape(1, 4, 4, 8, 8)));
}

#[test]
fn winograd_without_scale_or_bias_and_on_vector_multiple_widths() {
    for isa in Isa::available() {
        // w = 32 and 64: the tile row is exactly one or two AVX-512 / four or eight AVX2
        // vectors; hard-swish through the runtime-selected output instantiation.
        for (h, w) in [(6, 32), (3, 64)] {
            let s = shape(2, 3, 5, h, w);
            let (x, wt) = (data(s.input_len(), 5), data(s.weight_len(), 6));
            let p = PackedConvWeight::pack_winograd(&wt, [5, 3, 3, 3], 1, Some(isa)).unwrap();
            for act in [Activation::Identity, Activation::HardSwish] {
                let mut got = vec![f32::NAN; s.output_len()];
                conv2d_forward_packed(&s, &x, &p, None, act, &mut got).unwrap();
                assert_near_oracle(isa, &s, &x, &wt, None, act, &got);
            }
        }
    }
}

#[test]
fn winograd_takes_an_empty_batch_and_leaves_one_input_channel_to_the_depthwise_path() {
    let p = PackedConvWeight::pack_winograd(&data(4 * 4 * 9, 1), [4, 4, 3, 3], 1, None).unwrap();
    let s = shape(0, 4, 4, 8, 8);
    let mut y: Vec<f32> = vec![];
    conv2d_forward_packed(&s, &[], &p, None, Activation::Identity, &mut y).unwrap();
    assert!(!PackedConvWeight::winograd_applies(&shape(1, 1, 4, 8, 8)));
}
