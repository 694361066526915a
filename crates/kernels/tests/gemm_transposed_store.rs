//! A C stored column by column (unit row stride) with an operand packed ahead cannot be turned
//! into a row-major problem, so the driver runs the kernel's transposed-store twin
//! (`MicroKernel::run_t`) on its full tiles and a padded temporary on the edges. Every element
//! must be bit-identical to the same product written row-major: on every ISA and kernel
//! candidate, with A or B packed ahead, every epilogue term (activations applied in registers
//! and in a second pass), with and without `beta * C`, at any thread count.

use tessera_kernels::gemm::table::candidates;
use tessera_kernels::gemm::{
    gemm_ex, Bias, Epilogue, GemmConfig, MatMut, MatRef, Operand, PackedMatrix, Scale,
};
use tessera_kernels::{Activation, Isa};

mod common;

#[test]
fn column_major_c_equals_row_major_c_bitwise() {
    let k = 70;
    for isa in Isa::available() {
        let kernel = &candidates(isa)[0];
        let (mr, nr) = (kernel.mr, kernel.nr);
        // Full tiles only, edges in both directions, and a product of one tile.
        for (m, n) in [(2 * mr, 2 * nr), (3 * mr + 5 % mr, 2 * nr + 3), (mr, nr)] {
            let a = common::data(m * k, 1);
            let b = common::data(k * n, 2);
            let c0 = common::data(m * n, 3);
            let bias_r = common::data(m, 4);
            let bias_c = common::data(n, 5);
            let scale_r: Vec<f32> = common::data(m, 6).iter().map(|v| 1.0 + 0.5 * v).collect();
            let scale_c: Vec<f32> = common::data(n, 7).iter().map(|v| 1.0 + 0.5 * v).collect();
            let av = MatRef::row_major(&a, m, k);
            let bv = MatRef::row_major(&b, k, n);
            let pa = PackedMatrix::pack_a(av, Some(isa)).unwrap();
            let pb = PackedMatrix::pack_b(bv, Some(isa)).unwrap();
            let epilogues = [
                Epilogue::new(Bias::PerCol(&bias_c), Activation::Relu6)
                    .with_scale(Scale::PerCol(&scale_c)),
                Epilogue::new(Bias::PerRow(&bias_r), Activation::HardSwish)
                    .with_scale(Scale::PerRow(&scale_r)),
                Epilogue::new(Bias::None, Activation::Identity),
            ];
            for epi in epilogues {
                for (threads, beta) in [(1, 0.0), (2, 1.0), (3, 0.5)] {
                    let cfg = GemmConfig {
                        isa: Some(isa),
                        threads,
                        tuning: None,
                    };
                    for packed in ["A", "B"] {
                        let (ao, bo) = if packed == "A" {
                            (Operand::Packed(&pa), Operand::View(bv))
                        } else {
                            (Operand::View(av), Operand::Packed(&pb))
                        };
                        let mut want = c0.clone();
                        let c = MatMut::row_major(&mut want, m, n);
                        gemm_ex(1.0, ao, bo, beta, c, epi, &cfg).unwrap();
                        // The same C column-major: element (i, j) at j * m + i.
                        let mut got: Vec<f32> =
                            (0..m * n).map(|x| c0[(x % m) * n + x / m]).collect();
                        let c = MatMut::col_major(&mut got, m, n);
                        gemm_ex(1.0, ao, bo, beta, c, epi, &cfg).unwrap();
                        for i in 0..m {
                            for j in 0..n {
                                assert_eq!(
                                    got[j * m + i].to_bits(),
                                    want[i * n + j].to_bits(),
                                    "{isa} {} {m}x{n} ({i}, {j}) threads {threads} beta {beta} \
                                     {packed} packed {:?}",
                                    kernel.name,
                                    epi.activation
                                );
                            }
                        }
                    }
                }
            }
        }
    }
}

/// A pointwise convolution computed as `Y^T = X^T W^T` (the plan's form for small planes:
/// `W^T` packed as B, Y stored transposed) gives the bits of `Y = W X` (`W` packed as A):
/// each element is the same chain of FMAs over the same depth blocks.
#[test]
fn transposed_product_equals_direct_product_bitwise() {
    for isa in Isa::available() {
        for (co, hw, ci) in [(96, 49, 160), (64, 196, 40), (40, 9, 24), (33, 50, 600)] {
            let w = common::data(co * ci, 11);
            let x = common::data(ci * hw, 12);
            let y0 = common::data(co * hw, 13);
            let bias = common::data(co, 14);
            let scale: Vec<f32> = common::data(co, 15).iter().map(|v| 1.0 + 0.5 * v).collect();
            let wv = MatRef::row_major(&w, co, ci);
            let wa = PackedMatrix::pack_a(wv, Some(isa)).unwrap();
            let wb = PackedMatrix::pack_b(wv.t(), Some(isa)).unwrap();
            for (act, beta) in [(Activation::Relu6, 0.0), (Activation::HardSwish, 1.0)] {
                for threads in [1, 2, 3] {
                    let cfg = GemmConfig {
                        isa: Some(isa),
                        threads,
                        tuning: None,
                    };
                    let mut want = y0.clone();
                    let e =
                        Epilogue::new(Bias::PerRow(&bias), act).with_scale(Scale::PerRow(&scale));
                    gemm_ex(
                        1.0,
                        Operand::Packed(&wa),
                        Operand::View(MatRef::row_major(&x, ci, hw)),
                        beta,
                        MatMut::row_major(&mut want, co, hw),
                        e,
                        &cfg,
                    )
                    .unwrap();
                    let mut got = y0.clone();
                    let e =
                        Epilogue::new(Bias::PerCol(&bias), act).with_scale(Scale::PerCol(&scale));
                    gemm_ex(
                        1.0,
                        Operand::View(MatRef::new(&x, hw, ci, 1, hw)),
                        Operand::Packed(&wb),
                        beta,
                        MatMut::new(&mut got, hw, co, 1, hw),
                        e,
                        &cfg,
                    )
                    .unwrap();
                    assert!(
                        got.iter()
                            .zip(&want)
                            .all(|(g, w)| g.to_bits() == w.to_bits()),
                        "{isa} {co}x{hw}x{ci} {act:?} beta {beta} threads {threads}"
                    );
                }
            }
        }
    }
}
