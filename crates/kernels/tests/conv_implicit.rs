//! The implicit-GEMM convolution (`PackedConvWeight::pack_implicit`: no im2col matrix, the
//! padding taps skipped) against the float64 reference, within the rounding bound of its
//! reduction: 3x3 convolutions on 14-, 28- and 7-pixel rows, strided, a strided 1x1, with and
//! without a channel scale, three activations, one and two images; bit-identical for 1-3
//! threads; the shapes and ISAs it does not take are refused with an error.

use tessera_kernels::conv::{conv2d_forward_packed, reference, Conv2dShape, PackedConvWeight};
use tessera_kernels::{Activation, Isa};

mod common;
use common::{bits, data, run_packed, square_conv};

#[test]
fn implicit_form_is_within_the_rounding_bound_of_the_f64_reference() {
    let shapes = [
        square_conv(1, 40, 14, 64, 3, 1), // one 14-pixel tile per row, both edges padded
        square_conv(2, 24, 28, 32, 3, 2), // strided 28 -> 14, two images
        square_conv(1, 20, 28, 32, 3, 1), // two tiles per row
        square_conv(1, 36, 7, 128, 3, 1), // 7-pixel rows: the 7 x 64 tile
        square_conv(1, 16, 14, 64, 3, 2), // strided 14 -> 7
        square_conv(1, 48, 14, 64, 1, 2), // strided 1x1 (a ResNet downsample)
    ];
    let acts = [
        Activation::Identity,
        Activation::Relu,
        Activation::HardSwish,
    ];
    for isa in Isa::available() {
        for (i, s) in shapes.iter().enumerate() {
            let dims = [s.c_out, s.c_in, s.kh, s.kw];
            let w = data(s.weight_len(), 10 * i as u64 + 1);
            // AVX-512 takes every shape here; the other paths none (and refuse to pack).
            let expect = isa == Isa::Avx512;
            assert_eq!(
                PackedConvWeight::implicit_applies(s, Some(isa)),
                expect,
                "{isa} {s}"
            );
            if !expect {
                assert!(PackedConvWeight::pack_implicit(&w, dims, 1, Some(isa)).is_err());
                continue;
            }
            let seed = 10 * i as u64;
            let (x, b) = (data(s.input_len(), seed), data(s.c_out, seed + 2));
            let scale: Vec<f32> = data(s.c_out, seed + 3)
                .iter()
                .map(|v| 1.0 + 0.5 * v)
                .collect();
            // The exact sums and the sums of |x w| (the bound's scale), in f64 and rounded once.
            let mut sums = vec![0.0; s.output_len()];
            reference::conv2d_forward(s, &x, &w, None, Activation::Identity, &mut sums);
            let (ax, aw): (Vec<f32>, Vec<f32>) = (
                x.iter().map(|v| v.abs()).collect(),
                w.iter().map(|v| v.abs()).collect(),
            );
            let mut mags = vec![0.0; s.output_len()];
            reference::conv2d_forward(s, &ax, &aw, None, Activation::Identity, &mut mags);
            let terms = (s.c_in * s.kh * s.kw) as f32;
            let plane = s.out_h() * s.out_w();
            let packed = PackedConvWeight::pack_implicit(&w, dims, 1, Some(isa)).unwrap();
            assert_eq!(packed.isa(), isa);
            assert!(packed.is_implicit());
            for scaled in [false, true] {
                let p = if scaled {
                    packed.clone().with_channel_scale(scale.clone()).unwrap()
                } else {
                    packed.clone()
                };
                for act in acts {
                    let got = run_packed(s, &x, &p, &b, act);
                    for (k, &g) in got.iter().enumerate() {
                        let c = k / plane % s.c_out;
                        let sc = if scaled { scale[c] } else { 1.0 };
                        let want = act.apply_scalar(sums[k] * sc + b[c]);
                        // Reduction: terms * 2^-24 * sum |x w|, scaled; then the scale, the
                        // bias and the activation: a few ulps of the result (|f'| <= 1.5).
                        let bound = 1.5
                            * (terms * f32::EPSILON / 2.0 * mags[k] * sc.abs()
                                + 4.0 * f32::EPSILON * (sums[k] * sc).abs().max(b[c].abs()));
                        assert!(
                            (g - want).abs() <= bound + 1e-30,
                            "{isa} {s} {act:?} scaled {scaled}: y[{k}] = {g}, reference {want}, bound {bound}"
                        );
                    }
                    for threads in [2, 3] {
                        let pool = rayon::ThreadPoolBuilder::new()
                            .num_threads(threads)
                            .build()
                            .unwrap();
                        let again = pool.install(|| run_packed(s, &x, &p, &b, act));
                        assert_eq!(
                            bits(&again),
                            bits(&got),
                            "{isa} {s} {act:?} {threads} threads"
                        );
                    }
                }
            }
        }
    }
}

#[test]
fn shapes_and_weights_it_does_not_take_are_refused() {
    let w = data(64 * 8 * 9, 1);
    // Several groups.
    assert!(PackedConvWeight::pack_implicit(&w, [64, 4, 3, 3], 2, None).is_err());
    let s = square_conv(1, 8, 14, 64, 3, 1);
    let bad = [
        square_conv(1, 8, 13, 64, 3, 1), // 13-pixel rows
        square_conv(1, 8, 14, 48, 3, 1), // channels off the 32-channel tile
        square_conv(1, 8, 14, 64, 5, 1), // 5 x 5: more taps, wider padding
        Conv2dShape { groups: 2, ..s },  // grouped
        Conv2dShape {
            dilation: (2, 2),
            padding: (2, 2),
            ..s
        }, // dilated
    ];
    for isa in Isa::ALL {
        for b in &bad {
            assert!(
                !PackedConvWeight::implicit_applies(b, Some(isa)),
                "{isa} {b}"
            );
        }
    }
    for isa in Isa::available() {
        if !PackedConvWeight::implicit_applies(&s, Some(isa)) {
            continue;
        }
        // A weight packed for 14-pixel rows run on 13-pixel ones: an error, not garbage.
        let p = PackedConvWeight::pack_implicit(&w, [64, 8, 3, 3], 1, Some(isa)).unwrap();
        let other = bad[0];
        let (x, mut y) = (data(other.input_len(), 2), vec![0.0; other.output_len()]);
        let e = conv2d_forward_packed(&other, &x, &p, None, Activation::Identity, &mut y);
        assert!(e.unwrap_err().to_string().contains("implicit"), "{isa}");
    }
}
