//! Pre-packed operands: `gemm_ex` with A and/or B packed once gives bit-identical results to
//! packing on every call, on every ISA, layout and thread count; mismatches are errors.

use proptest::prelude::*;
use tessera_kernels::gemm::{
    gemm, gemm_ex, Bias, Epilogue, GemmConfig, MatMut, MatRef, Operand, PackedMatrix,
};
use tessera_kernels::{Activation, Isa};

mod common;

fn fill(len: usize, seed: u32) -> Vec<f32> {
    common::data(len, seed as u64)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn packed_operands_match_views(
        m in 0usize..200, n in 0usize..200, k in 0usize..600, a_t in any::<bool>(), b_t in any::<bool>(),
        pack_a in any::<bool>(), pack_b in any::<bool>(), threads in 1usize..4, beta in prop::sample::select(vec![0.0f32, 1.0]),
        seed in any::<u32>(),
    ) {
        let a = fill(m * k, seed);
        let b = fill(k * n, seed ^ 7);
        let bias = fill(n, seed ^ 9);
        let av = if a_t { MatRef::row_major(&a, k, m).t() } else { MatRef::row_major(&a, m, k) };
        let bv = if b_t { MatRef::row_major(&b, n, k).t() } else { MatRef::row_major(&b, k, n) };
        let epi = Epilogue::new(Bias::PerCol(&bias), Activation::Relu6);
        for isa in Isa::available() {
            let cfg = GemmConfig { isa: Some(isa), threads, tuning: None };
            let mut want = fill(m * n, 3);
            gemm(1.0, av, bv, beta, MatMut::row_major(&mut want, m, n), epi, &cfg).unwrap();
            let pa = PackedMatrix::pack_a(av, Some(isa)).unwrap();
            let pb = PackedMatrix::pack_b(bv, Some(isa)).unwrap();
            let ao = if pack_a { Operand::Packed(&pa) } else { Operand::View(av) };
            let bo = if pack_b { Operand::Packed(&pb) } else { Operand::View(bv) };
            let mut got = fill(m * n, 3);
            gemm_ex(1.0, ao, bo, beta, MatMut::row_major(&mut got, m, n), epi, &cfg).unwrap();
            prop_assert!(want.iter().zip(&got).all(|(x, y)| x.to_bits() == y.to_bits()), "{isa}: packed result differs");
            // A column-major C goes through the temporary-tile path with packed operands.
            let mut want_t = vec![0.0f32; m * n];
            gemm(1.0, av, bv, 0.0, MatMut::col_major(&mut want_t, m, n), Epilogue::NONE, &cfg).unwrap();
            let mut got_t = vec![0.0f32; m * n];
            gemm_ex(1.0, ao, bo, 0.0, MatMut::col_major(&mut got_t, m, n), Epilogue::NONE, &cfg).unwrap();
            for (x, y) in want_t.iter().zip(&got_t) {
                prop_assert!((x - y).abs() <= 1e-5 * (1.0 + x.abs()) * (k as f32).sqrt().max(1.0), "{isa}: col-major C {x} vs {y}");
            }
        }
    }
}

#[test]
fn mismatched_packed_operands_are_errors() {
    let a = fill(12, 1);
    let mut c = vec![0.0f32; 9];
    let v = MatRef::row_major(&a, 3, 4);
    let w = MatRef::row_major(&a, 4, 3);
    let pa = PackedMatrix::pack_a(v, Some(Isa::Scalar)).unwrap();
    let cfg = GemmConfig {
        isa: Some(Isa::Scalar),
        threads: 1,
        tuning: None,
    };
    // Packed as A, used as B.
    let e = gemm_ex(
        1.0,
        Operand::View(w),
        Operand::Packed(&pa),
        0.0,
        MatMut::row_major(&mut c, 4, 4),
        Epilogue::NONE,
        &cfg,
    )
    .unwrap_err();
    assert!(e.to_string().contains("packed as the A operand"), "{e}");
    let pb = PackedMatrix::pack_b(w, Some(Isa::Scalar)).unwrap();
    let mut c16 = vec![0.0f32; 16];
    let e = gemm_ex(
        1.0,
        Operand::Packed(&pb),
        Operand::View(v),
        0.0,
        MatMut::row_major(&mut c16, 4, 4),
        Epilogue::NONE,
        &cfg,
    )
    .unwrap_err();
    assert!(e.to_string().contains("packed as the B operand"), "{e}");
    // Packed for one ISA, run on another.
    if Isa::Portable.is_supported() {
        let cfg2 = GemmConfig {
            isa: Some(Isa::Portable),
            threads: 1,
            tuning: None,
        };
        let e = gemm_ex(
            1.0,
            Operand::Packed(&pa),
            Operand::View(w),
            0.0,
            MatMut::row_major(&mut c, 3, 3),
            Epilogue::NONE,
            &cfg2,
        )
        .unwrap_err();
        assert!(e.to_string().contains("packed for scalar"), "{e}");
    }
    // Shape mismatch names both shapes.
    let e = gemm_ex(
        1.0,
        Operand::Packed(&pa),
        Operand::View(v),
        0.0,
        MatMut::row_major(&mut c, 3, 3),
        Epilogue::NONE,
        &cfg,
    )
    .unwrap_err();
    assert!(e.to_string().contains("[3, 4] x B [3, 4]"), "{e}");
    // A view that does not fit its slice is rejected at packing time.
    assert!(PackedMatrix::pack_a(MatRef::row_major(&a, 4, 4), Some(Isa::Scalar)).is_err());
}

/// With B packed, a C whose rows balance the threads better than its column panels is split
/// along M (a 1x1 convolution of a 7 x 7 image as `C^T`: 49 x 160): the same bits as one
/// thread and as B unpacked (split along N), on every ISA.
#[test]
fn a_row_split_with_packed_b_gives_the_same_bits() {
    let (m, n, k) = (49, 160, 960);
    let (a, b) = (fill(m * k, 1), fill(k * n, 2));
    let (av, bv) = (MatRef::row_major(&a, m, k), MatRef::row_major(&b, k, n));
    for isa in Isa::available() {
        let pb = PackedMatrix::pack_b(bv, Some(isa)).unwrap();
        let run = |threads: usize, packed: bool| {
            let cfg = GemmConfig {
                isa: Some(isa),
                threads,
                tuning: None,
            };
            let bo = if packed {
                Operand::Packed(&pb)
            } else {
                Operand::View(bv)
            };
            let mut c = vec![0.0f32; m * n];
            let e = Epilogue::NONE;
            gemm_ex(
                1.0,
                Operand::View(av),
                bo,
                0.0,
                MatMut::row_major(&mut c, m, n),
                e,
                &cfg,
            )
            .unwrap();
            c
        };
        let one = run(1, true);
        for (threads, packed) in [(2, true), (3, true), (2, false)] {
            let other = run(threads, packed);
            assert!(
                one.iter()
                    .zip(&other)
                    .all(|(x, y)| x.to_bits() == y.to_bits()),
                "{isa}, {threads} threads, B packed: {packed}"
            );
        }
    }
}
