//! Criterion benchmarks of the GEMM: tessera (default ISA) vs matrixmultiply vs tessera's
//! scalar reference path, single-threaded, in GFLOP/s (criterion's element throughput is
//! set to the flop count, so "elem/s" reads as FLOP/s).
//!
//! Run: `cargo bench --bench gemm`. The scalar path is skipped above 2.2 GFLOP per call
//! (2048^3 would take minutes per sample).

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use tessera::kernels::gemm::{gemm, Epilogue, GemmConfig, MatMut, MatRef};
use tessera::kernels::Isa;

const SHAPES: &[(usize, usize, usize, &str)] = &[
    (256, 256, 256, "256^3"),
    (512, 512, 512, "512^3"),
    (1024, 1024, 1024, "1024^3"),
    (2048, 2048, 2048, "2048^3"),
    (197, 2304, 768, "vit_b16_qkv"),
    (197, 768, 3072, "vit_b16_mlp_fc2"),
    (3136, 64, 576, "resnet_3x3_im2col"),
    (12544, 96, 16, "mobilenetv2_1x1"),
];

fn data(len: usize, seed: u32) -> Vec<f32> {
    (0..len)
        .map(|i| {
            ((i as u32).wrapping_mul(2654435761).wrapping_add(seed) >> 8) as f32
                / (1u32 << 24) as f32
                - 0.5
        })
        .collect()
}

fn bench_gemm(c: &mut Criterion) {
    std::env::set_var("MATMUL_NUM_THREADS", "1");
    let mut group = c.benchmark_group("gemm");
    group.sample_size(10);
    for &(m, n, k, name) in SHAPES {
        let flops = 2 * m * n * k;
        group.throughput(Throughput::Elements(flops as u64));
        let a = data(m * k, 1);
        let b = data(k * n, 2);
        let mut out = vec![0.0f32; m * n];
        let mut paths = vec![("tessera", Isa::best())];
        if flops <= 2_200_000_000 {
            paths.push(("tessera_scalar", Isa::Scalar));
        }
        for (label, isa) in paths {
            let cfg = GemmConfig {
                isa: Some(isa),
                threads: 1,
                tuning: None,
            };
            group.bench_with_input(BenchmarkId::new(label, name), &(), |bench, _| {
                bench.iter(|| {
                    gemm(
                        1.0,
                        MatRef::row_major(&a, m, k),
                        MatRef::row_major(&b, k, n),
                        0.0,
                        MatMut::row_major(&mut out, m, n),
                        Epilogue::NONE,
                        &cfg,
                    )
                    .expect("valid shapes")
                })
            });
        }
        group.bench_with_input(BenchmarkId::new("matrixmultiply", name), &(), |bench, _| {
            bench.iter(|| unsafe {
                // SAFETY: dense row-major buffers of m*k, k*n and m*n floats.
                matrixmultiply::sgemm(
                    m,
                    k,
                    n,
                    1.0,
                    a.as_ptr(),
                    k as isize,
                    1,
                    b.as_ptr(),
                    n as isize,
                    1,
                    0.0,
                    out.as_mut_ptr(),
                    n as isize,
                    1,
                )
            })
        });
    }
    group.finish();
}

criterion_group!(benches, bench_gemm);
criterion_main!(benches);
