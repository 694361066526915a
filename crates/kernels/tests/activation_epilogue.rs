//! Every activation fused as the GEMM epilogue (bias, then `activation::<isa>::apply` in
//! registers) gives bit for bit what the element-wise forward gives on the GEMM's un-activated
//! output, on every ISA path: the epilogue and the slice loops share one vector form.

use tessera_kernels::activation::{forward_with, Activation};
use tessera_kernels::gemm::{gemm, Bias, Epilogue, GemmConfig, MatMut, MatRef};
use tessera_kernels::Isa;

fn data(n: usize, seed: u32) -> Vec<f32> {
    (0..n)
        .map(|i| {
            ((i as u32).wrapping_mul(2_654_435_761).wrapping_add(seed) >> 8) as f32
                / (1u32 << 24) as f32
                * 2.0
                - 1.0
        })
        .collect()
}

#[test]
fn fused_epilogue_equals_elementwise_forward() {
    // Odd sizes: full tiles and edge tiles.
    let (m, n, k) = (13, 29, 37);
    let a = data(m * k, 1);
    let b = data(k * n, 2);
    let bias: Vec<f32> = data(n, 3).iter().map(|v| v * 4.0).collect();
    for isa in Isa::available() {
        let cfg = GemmConfig {
            isa: Some(isa),
            threads: 1,
            tuning: None,
        };
        let run = |act: Activation| {
            let mut c = vec![0.0f32; m * n];
            gemm(
                3.0,
                MatRef::row_major(&a, m, k),
                MatRef::row_major(&b, k, n),
                0.0,
                MatMut::row_major(&mut c, m, n),
                Epilogue::new(Bias::PerCol(&bias), act),
                &cfg,
            )
            .unwrap();
            c
        };
        let pre = run(Activation::Identity);
        for &act in Activation::ALL {
            let fused = run(act);
            let mut want = vec![0.0f32; m * n];
            forward_with(isa, act, &pre, &mut want).unwrap();
            let same = fused
                .iter()
                .zip(&want)
                .all(|(x, y)| x.to_bits() == y.to_bits());
            assert!(
                same,
                "{isa} {act:?}: fused epilogue differs from the element-wise forward"
            );
        }
    }
}
