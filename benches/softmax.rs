//! Criterion benchmarks of softmax and log-softmax over the last dimension (the same shapes as
//! `tessera bench softmax`: 12x197x197, 3x197x197, 8x1024x1024), single-threaded, default ISA.
//! Element throughput is the element count: time per element is 1 / (elem/s).
//!
//! Run: `cargo bench --bench softmax`.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use tessera::kernels::softmax::{log_softmax_with, softmax_with};
use tessera::kernels::Isa;

const SHAPES: [(usize, usize, &str); 3] = [
    (12 * 197, 197, "12x197x197"),
    (3 * 197, 197, "3x197x197"),
    (8 * 1024, 1024, "8x1024x1024"),
];

fn data(len: usize) -> Vec<f32> {
    (0..len)
        .map(|i| {
            ((i as u32).wrapping_mul(2654435761) >> 8) as f32 / (1u32 << 24) as f32 * 16.0 - 8.0
        })
        .collect()
}

fn bench_softmax(c: &mut Criterion) {
    let _ = rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .build_global();
    let isa = Isa::current().expect("a usable ISA");
    let mut group = c.benchmark_group("softmax");
    group.sample_size(20);
    for (rows, row_len, name) in SHAPES {
        let x = data(rows * row_len);
        let mut y = vec![0.0f32; x.len()];
        group.throughput(Throughput::Elements(x.len() as u64));
        group.bench_with_input(BenchmarkId::new("softmax", name), &(), |b, _| {
            b.iter(|| softmax_with(isa, &x, &mut y, row_len).expect("valid shape"))
        });
        group.bench_with_input(BenchmarkId::new("log_softmax", name), &(), |b, _| {
            b.iter(|| log_softmax_with(isa, &x, &mut y, row_len).expect("valid shape"))
        });
    }
    group.finish();
}

criterion_group!(benches, bench_softmax);
criterion_main!(benches);
