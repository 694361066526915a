//! Products with one row run the kernel's one-row twin (`MicroKernel::run_row`): each row it
//! computes must be bit-identical to the same row inside a taller product (which runs the full
//! register tile), on every ISA and kernel candidate, with B packed per call or once, across
//! depth blocks, with every epilogue term, at any thread count.

use tessera_kernels::gemm::table::candidates;
use tessera_kernels::gemm::{
    gemm_ex, Bias, Epilogue, GemmConfig, MatMut, MatRef, Operand, PackedMatrix, Scale, Tuning,
};
use tessera_kernels::{Activation, Isa};

mod common;

#[test]
fn one_row_products_equal_their_row_in_a_taller_product() {
    // k crosses several depth blocks of the small tuning; n crosses column panels with a
    // partial last one, and (300) groups of four panels that the row path takes at once.
    for n in [83, 300] {
        check_width(n);
    }
}

fn check_width(n: usize) {
    let (rows, k) = (7, 300);
    let a = common::data(rows * k, 1);
    let b = common::data(k * n, 2);
    let bias = common::data(n, 3);
    let scale: Vec<f32> = common::data(n, 4).iter().map(|v| 1.0 + 0.5 * v).collect();
    let epi =
        Epilogue::new(Bias::PerCol(&bias), Activation::HardSwish).with_scale(Scale::PerCol(&scale));
    for isa in Isa::available() {
        for kernel in candidates(isa) {
            // The ISA's selected kernel and blocks (B also packed ahead for them), and every
            // candidate with its analytical and with small blocks.
            let tunings = [
                None,
                Some(Tuning::analytical(kernel)),
                Tuning::with_blocks(kernel, 64, 2 * kernel.mr),
            ];
            let bv = MatRef::row_major(&b, k, n);
            let pb = PackedMatrix::pack_b(bv, Some(isa)).unwrap();
            for tuning in tunings {
                if tuning.is_none() && kernel.name != candidates(isa)[0].name {
                    continue;
                }
                for threads in [1, 2, 3] {
                    let cfg = GemmConfig {
                        isa: Some(isa),
                        threads,
                        tuning,
                    };
                    let mut tall = vec![0.0f32; rows * n];
                    let av = MatRef::row_major(&a, rows, k);
                    let c = MatMut::row_major(&mut tall, rows, n);
                    gemm_ex(1.0, Operand::View(av), Operand::View(bv), 0.0, c, epi, &cfg).unwrap();
                    for r in 0..rows {
                        let row = MatRef::row_major(&a[r * k..(r + 1) * k], 1, k);
                        for packed in [false, tuning.is_none()] {
                            let bo = if packed {
                                Operand::Packed(&pb)
                            } else {
                                Operand::View(bv)
                            };
                            let mut one = vec![f32::NAN; n];
                            let c = MatMut::row_major(&mut one, 1, n);
                            gemm_ex(1.0, Operand::View(row), bo, 0.0, c, epi, &cfg).unwrap();
                            let want = &tall[r * n..(r + 1) * n];
                            assert!(
                                want.iter()
                                    .zip(&one)
                                    .all(|(x, y)| x.to_bits() == y.to_bits()),
                                "{isa} {} {tuning:?} threads {threads} row {r} packed {packed}",
                                kernel.name
                            );
                        }
                    }
                }
            }
        }
    }
}
