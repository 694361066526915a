//! A product whose N is not a multiple of the kernel's NR ends in a narrow column panel, which
//! runs the kernel's narrow twin (`MicroKernel::run_narrow`, with its own short twins for the
//! corner tile) when one covers the remaining columns. Each column must be bit-identical to the
//! same column inside a wider product (where it falls in a full tile), on every ISA and kernel
//! candidate, with B packed per call, read in place or packed once, A packed per call or once,
//! with every epilogue term, with and without `beta * C`, at any thread count.

use tessera_kernels::gemm::table::candidates;
use tessera_kernels::gemm::{
    gemm_ex, Bias, Epilogue, GemmConfig, MatMut, MatRef, Operand, PackedMatrix, Scale, Tuning,
};
use tessera_kernels::{Activation, Isa};

mod common;

/// How B reaches the GEMM.
#[derive(Debug, Clone, Copy, PartialEq)]
enum BForm {
    /// A view into the wide B (row stride = the wide product's N): packed per call or read
    /// in place.
    Strided,
    /// Its own dense copy.
    Dense,
    /// Packed once ahead.
    Packed,
}

#[test]
fn narrow_column_panels_equal_their_columns_in_a_wider_product() {
    let k = 150;
    for isa in Isa::available() {
        for kernel in candidates(isa) {
            let (mr, nr) = (kernel.mr, kernel.nr);
            let wide = 3 * nr;
            // Full row panels, and short last ones (the corner tile).
            for m in [2 * mr, 2 * mr + 1, 3 * mr - 1] {
                let a = common::data(m * k, 1);
                let b = common::data(k * wide, 2);
                let c0 = common::data(m * wide, 3);
                let bias = common::data(wide, 4);
                let scale: Vec<f32> = common::data(wide, 5)
                    .iter()
                    .map(|v| 1.0 + 0.5 * v)
                    .collect();
                let epi = Epilogue::new(Bias::PerCol(&bias), Activation::Relu6)
                    .with_scale(Scale::PerCol(&scale));
                let av = MatRef::row_major(&a, m, k);
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
                        let c = MatMut::row_major(&mut want, m, wide);
                        let bv = MatRef::row_major(&b, k, wide);
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
                        let pa = PackedMatrix::pack_a(av, Some(isa)).unwrap();
                        for n in 2 * nr + 1..wide {
                            let dense: Vec<f32> = b
                                .chunks_exact(wide)
                                .flat_map(|row| row[..n].to_vec())
                                .collect();
                            let pb =
                                PackedMatrix::pack_b(MatRef::row_major(&dense, k, n), Some(isa))
                                    .unwrap();
                            let epi_n = Epilogue::new(Bias::PerCol(&bias[..n]), Activation::Relu6)
                                .with_scale(Scale::PerCol(&scale[..n]));
                            for form in [BForm::Strided, BForm::Dense, BForm::Packed] {
                                // Operands packed ahead need the process's own tuning.
                                if form == BForm::Packed && tuning.is_some() {
                                    continue;
                                }
                                for a_packed in [false, tuning.is_none() && form != BForm::Packed] {
                                    let bo = match form {
                                        BForm::Strided => {
                                            Operand::View(MatRef::new(&b, k, n, wide, 1))
                                        }
                                        BForm::Dense => {
                                            Operand::View(MatRef::row_major(&dense, k, n))
                                        }
                                        BForm::Packed => Operand::Packed(&pb),
                                    };
                                    let ao = if a_packed {
                                        Operand::Packed(&pa)
                                    } else {
                                        Operand::View(av)
                                    };
                                    let mut got: Vec<f32> = c0
                                        .chunks_exact(wide)
                                        .flat_map(|row| row[..n].to_vec())
                                        .collect();
                                    let c = MatMut::row_major(&mut got, m, n);
                                    gemm_ex(1.0, ao, bo, beta, c, epi_n, &cfg).unwrap();
                                    let same = got
                                        .chunks_exact(n)
                                        .zip(want.chunks_exact(wide))
                                        .all(|(g, w)| {
                                            g.iter().zip(w).all(|(x, y)| x.to_bits() == y.to_bits())
                                        });
                                    assert!(
                                        same,
                                        "{isa} {} {tuning:?} threads {threads} m {m} n {n} \
                                         beta {beta} {form:?} a_packed {a_packed}",
                                        kernel.name
                                    );
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}
