//! The transposed form of a dense convolution (`PackedConvWeight::pack_transposed`: per image
//! `Y^T = cols^T W^T`, `W^T` packed as the right operand, `Y` written through the kernel's
//! transposed store) must give the bits of the direct form (`Y = W cols`) on every ISA the
//! host has: 3x3 convolutions with 7 x 7 and odd-sized output planes, strided, a 1x1 one, with
//! and without a channel scale, each activation, one and two images, 1-3 threads; a weight of
//! several groups is refused.

use tessera_kernels::conv::PackedConvWeight;
use tessera_kernels::{Activation, Isa};

mod common;
use common::{bits, data, run_packed, square_conv};

#[test]
fn transposed_form_equals_the_direct_form_bitwise() {
    let shapes = [
        square_conv(1, 40, 7, 70, 3, 1), // a 7 x 7 plane, channels off the tile
        square_conv(2, 24, 14, 48, 3, 2), // strided to 7 x 7, two images
        square_conv(1, 19, 9, 33, 3, 1), // an odd plane (81 pixels)
        square_conv(1, 64, 7, 96, 1, 1), // 1x1
        square_conv(1, 8, 5, 20, 5, 1),  // 5x5 on a small plane
    ];
    let acts = [
        Activation::Identity,
        Activation::Relu,
        Activation::HardSwish,
    ];
    for isa in Isa::available() {
        for (i, s) in shapes.iter().enumerate() {
            let seed = 10 * i as u64;
            let (x, w, b) = (
                data(s.input_len(), seed),
                data(s.weight_len(), seed + 1),
                data(s.c_out, seed + 2),
            );
            let scale: Vec<f32> = data(s.c_out, seed + 3)
                .iter()
                .map(|v| 1.0 + 0.5 * v)
                .collect();
            let dims = [s.c_out, s.c_in, s.kh, s.kw];
            for scaled in [false, true] {
                let mut direct = PackedConvWeight::pack(&w, dims, 1, Some(isa)).unwrap();
                let mut trans = PackedConvWeight::pack_transposed(&w, dims, 1, Some(isa)).unwrap();
                assert!(trans.is_transposed() && !direct.is_transposed());
                if scaled {
                    direct = direct.with_channel_scale(scale.clone()).unwrap();
                    trans = trans.with_channel_scale(scale.clone()).unwrap();
                }
                for act in acts {
                    let want = run_packed(s, &x, &direct, &b, act);
                    assert!(want.iter().all(|v| v.is_finite()));
                    for threads in [1, 2, 3] {
                        let pool = rayon::ThreadPoolBuilder::new()
                            .num_threads(threads)
                            .build()
                            .unwrap();
                        let got = pool.install(|| run_packed(s, &x, &trans, &b, act));
                        assert_eq!(
                            bits(&got),
                            bits(&want),
                            "{isa:?} {s} {act:?} scaled {scaled} {threads} threads"
                        );
                    }
                }
            }
        }
    }
    // Several groups: refused with an error, not packed wrongly.
    let w = data(8 * 2 * 9, 1);
    assert!(PackedConvWeight::pack_transposed(&w, [8, 2, 3, 3], 2, None).is_err());
}
