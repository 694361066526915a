//! A product whose M is not a multiple of the kernel's MR ends in a short row panel, which runs
//! the kernel's short twin (`MicroKernel::run_short`) directly on C, or through a padded
//! temporary when no twin fits exactly. Each row must be bit-identical to the same row inside a
//! product with more rows (where it falls in a full tile), on every ISA and kernel candidate,
//! with A packed per call or once, with every epilogue term, with and without `beta * C`, at
//! any thread count.

use tessera_kernels::gemm::table::candidates;
use tessera_kernels::gemm::{
    gemm_ex, Bias, Epilogue, GemmConfig, MatMut, MatRef, Operand, PackedMatrix, Scale, Tuning,
};
use tessera_kernels::{Activation, Isa};

mod common;

#[test]
fn short_row_panels_equal_their_rows_in_a_taller_product() {
    let (k, n) = (150, 77);
    for isa in Isa::available() {
        for kernel in candidates(isa) {
            let mr = kernel.mr;
            // Every remainder of M modulo MR, two full panels first.
            let tall = 3 * mr;
            let a = common::data(tall * k, 1);
            let b = common::data(k * n, 2);
            let c0 = common::data(tall * n, 3);
            let bias = common::data(tall, 4);
            let scale: Vec<f32> = common::data(tall, 5)
                .iter()
                .map(|v| 1.0 + 0.5 * v)
                .collect();
            let epi = Epilogue::new(Bias::PerRow(&bias), Activation::Relu6)
                .with_scale(Scale::PerRow(&scale));
            let bv = MatRef::row_major(&b, k, n);
            // The ISA's selected kernel and blocks (A also packed ahead for them), and every
            // candidate with its analytical and with small blocks.
            let first = kernel.name == candidates(isa)[0].name;
            let tunings = [
                None,
                Some(Tuning::analytical(kernel)),
                Tuning::with_blocks(kernel, 64, 2 * mr),
            ];
            for tuning in tunings {
                if tuning.is_none() && !first {
                    continue;
                }
                for (threads, beta) in [(1, 0.0), (2, 0.5), (3, 0.0)] {
                    let cfg = GemmConfig {
                        isa: Some(isa),
                        threads,
                        tuning,
                    };
                    let mut want = c0.clone();
                    let av = MatRef::row_major(&a, tall, k);
                    let c = MatMut::row_major(&mut want, tall, n);
                    gemm_ex(
                        1.0,
                        Operand::View(av),
                        Operand::View(bv),
                        beta,
                        c,
                        epi,
                        &cfg,
                    )
                    .unwrap();
                    for m in 2 * mr + 1..tall {
                        let av = MatRef::row_major(&a[..m * k], m, k);
                        let pa = PackedMatrix::pack_a(av, Some(isa)).unwrap();
                        let epi_m = Epilogue::new(Bias::PerRow(&bias[..m]), Activation::Relu6)
                            .with_scale(Scale::PerRow(&scale[..m]));
                        for packed in [false, tuning.is_none()] {
                            let ao = if packed {
                                Operand::Packed(&pa)
                            } else {
                                Operand::View(av)
                            };
                            let mut got = c0[..m * n].to_vec();
                            let c = MatMut::row_major(&mut got, m, n);
                            gemm_ex(1.0, ao, Operand::View(bv), beta, c, epi_m, &cfg).unwrap();
                            assert!(
                                got.iter()
                                    .zip(&want[..m * n])
                                    .all(|(x, y)| x.to_bits() == y.to_bits()),
                                "{isa} {} {tuning:?} threads {threads} m {m} beta {beta} packed {packed}",
                                kernel.name
                            );
                        }
                    }
                }
            }
        }
    }
}
