//! Criterion benchmarks of the activation study (the same cases as `tessera bench
//! activations`): relu6, sigmoid, swish, hardsigmoid, hardswish and gelu (erf), forward and
//! backward, in cache (64 Ki elements) and streaming (16 Mi elements), single-threaded, default
//! ISA. Criterion's element throughput is the element count, so time per element is
//! 1 / (elem/s).
//!
//! Run: `cargo bench --bench activations` (add `-- swish` to filter).

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use tessera::kernels::activation::{backward_with, forward_with, Activation};
use tessera::kernels::Isa;

const OPS: [Activation; 6] = [
    Activation::Relu6,
    Activation::Sigmoid,
    Activation::Swish,
    Activation::HardSigmoid,
    Activation::HardSwish,
    Activation::GeluErf,
];
const SIZES: [(usize, &str); 2] = [(1 << 16, "cache_64Ki"), (1 << 24, "memory_16Mi")];

fn data(len: usize, seed: u32) -> Vec<f32> {
    (0..len)
        .map(|i| {
            ((i as u32).wrapping_mul(2654435761).wrapping_add(seed) >> 8) as f32
                / (1u32 << 24) as f32
                * 16.0
                - 8.0
        })
        .collect()
}

fn bench_activations(c: &mut Criterion) {
    // One thread, as the study's targets are per core.
    let _ = rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .build_global();
    let isa = Isa::current().expect("a usable ISA");
    let mut group = c.benchmark_group("activations");
    group.sample_size(20);
    for (n, size) in SIZES {
        let x = data(n, 1);
        let dy = data(n, 2);
        let mut y = vec![0.0f32; n];
        group.throughput(Throughput::Elements(n as u64));
        for act in OPS {
            let id = format!("{}/{size}", act.name());
            group.bench_with_input(BenchmarkId::new("forward", &id), &(), |b, _| {
                b.iter(|| forward_with(isa, act, &x, &mut y).expect("equal lengths"))
            });
            group.bench_with_input(BenchmarkId::new("backward", &id), &(), |b, _| {
                b.iter(|| backward_with(isa, act, &x, &dy, &mut y).expect("equal lengths"))
            });
        }
    }
    group.finish();
}

criterion_group!(benches, bench_activations);
criterion_main!(benches);
