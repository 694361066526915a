//! A product whose B the driver reads in place (unpacked, rows `rs` apart; see
//! `gemm/in_place.rs`) must be bit-identical to the same product with B packed: packed ahead
//! once, or packed per call because the same values are stored column-major (which is never
//! read in place). On every ISA and kernel candidate, with plain and batched
//! (column-segmented) B, edge panels, several depth blocks, every epilogue term, and at any
//! thread count. The same holds where B is packed panel by panel with each next panel copied
//! by the tiles of the current one (`TileEpilogue::copy_to`).

use tessera_kernels::gemm::table::candidates;
use tessera_kernels::gemm::{
    gemm_ex, Bias, Epilogue, GemmConfig, MatMut, MatRef, Operand, PackedMatrix, Scale, Segments,
    Tuning,
};
use tessera_kernels::{Activation, Isa};

mod common;

fn same(x: &[f32], y: &[f32]) -> bool {
    x.iter().zip(y).all(|(a, b)| a.to_bits() == b.to_bits())
}

/// `v` with its columns cut into `imgs` images of `n`, `k * n` floats apart.
fn segmented(v: MatRef<'_>, n: usize, k: usize, imgs: usize) -> MatRef<'_> {
    if imgs > 1 {
        v.with_segments(Segments::cols(n, k * n))
    } else {
        v
    }
}

#[test]
fn in_place_b_equals_packed_b() {
    // (m, k, n, images): n columns per image; the pointwise convolutions' shapes in small.
    let shapes = [
        (30, 16, 500, 1),
        (13, 40, 333, 1),
        (25, 150, 96, 1),
        (30, 24, 100, 3),
        // Packed panel by panel, each panel's copy made by a tile of the previous one (rows
        // on cache lines; a way apart, or too deep to fit L1 as they lie).
        (60, 40, 1024, 1),
        (60, 40, 1024, 2),
        (40, 300, 320, 1),
    ];
    for isa in Isa::available() {
        for kernel in candidates(isa) {
            let first = kernel.name == candidates(isa)[0].name;
            let tunings = [
                None,
                Some(Tuning::analytical(kernel)),
                Tuning::with_blocks(kernel, 64, 2 * kernel.mr),
            ];
            for &(m, k, n, imgs) in &shapes {
                let cols = n * imgs;
                let a = common::data(m * k, 1);
                // NCHW batch: image i's [k, n] block starts at i * k * n.
                let b = common::data(k * cols, 2);
                let bias = common::data(m, 3);
                let scale: Vec<f32> = common::data(m, 4).iter().map(|v| 1.0 + 0.5 * v).collect();
                let c0 = common::data(m * cols, 5);
                let epi = Epilogue::new(Bias::PerRow(&bias), Activation::HardSwish)
                    .with_scale(Scale::PerRow(&scale));
                // The same matrix stored column-major per image: element (i, j) of image t at
                // t * k * n + j * k + i.
                let mut bt = vec![0.0f32; b.len()];
                for t in 0..imgs {
                    for i in 0..k {
                        for j in 0..n {
                            bt[t * k * n + j * k + i] = b[t * k * n + i * n + j];
                        }
                    }
                }
                let view = || segmented(MatRef::new(&b, k, cols, n, 1), n, k, imgs);
                let view_t = || segmented(MatRef::new(&bt, k, cols, 1, k), n, k, imgs);
                for tuning in tunings {
                    if tuning.is_none() && !first {
                        continue;
                    }
                    let pb = (imgs == 1 && tuning.is_none())
                        .then(|| PackedMatrix::pack_b(view(), Some(isa)).unwrap());
                    for (threads, beta) in [(1, 0.0), (2, 1.0), (3, 0.0)] {
                        let cfg = GemmConfig {
                            isa: Some(isa),
                            threads,
                            tuning,
                        };
                        let av = MatRef::row_major(&a, m, k);
                        let run = |bo: Operand<'_>| {
                            let mut c = c0.clone();
                            let cm = MatMut::row_major(&mut c, m, cols);
                            gemm_ex(1.0, Operand::View(av), bo, beta, cm, epi, &cfg).unwrap();
                            c
                        };
                        let direct = run(Operand::View(view()));
                        let packed = run(Operand::View(view_t()));
                        assert!(
                            same(&direct, &packed),
                            "{isa} {} {tuning:?} m {m} k {k} n {n} x{imgs} threads {threads}",
                            kernel.name
                        );
                        if let Some(pb) = &pb {
                            assert!(
                                same(&direct, &run(Operand::Packed(pb))),
                                "{isa} {} packed ahead, m {m} k {k} n {n} threads {threads}",
                                kernel.name
                            );
                        }
                    }
                }
            }
        }
    }
}
