//! Criterion benchmarks of the fused multi-head attention core at ViT shapes (8 images,
//! 197 tokens, heads of 64: ViT-B/16 with 12 heads, ViT-Ti/16 with 3), on the global rayon
//! pool (the machine's thread count, or `RAYON_NUM_THREADS`):
//! - `kernel_fwd` / `kernel_fwd_bwd`: `tessera_kernels::attention` forward, and forward plus
//!   backward, on preallocated slices;
//! - `op_fwd_bwd`: `Tensor::multi_head_attention` with its autograd backward (what a training
//!   step runs);
//! - `composed_fwd_bwd`: the composed tensor ops it replaced (reshape, permute, select,
//!   mul_scalar, matmul, softmax, matmul, transpose, reshape) with their backward, for the
//!   side-by-side ratio.
//!
//! Throughput is the FLOPs of the products (forward `4 n h L^2 d`, backward twice that).
//!
//! Run: `cargo bench --bench attention` (`RAYON_NUM_THREADS=2` for the training setting).

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use tessera::core::Tensor;
use tessera::kernels::attention::{attention_backward, attention_forward, AttentionShape};

const SHAPES: [(usize, &str); 2] = [(12, "vit_b_8x197x12x64"), (3, "vit_ti_8x197x3x64")];

fn composed(qkv: &Tensor, h: usize, scale: f32) -> Tensor {
    let s = qkv.shape().to_vec();
    let (n, l, d) = (s[0], s[1], s[2] / (3 * h));
    let t = qkv
        .reshape(&[n, l, 3, h, d])
        .unwrap()
        .permute(&[2, 0, 3, 1, 4])
        .unwrap();
    let q = t.select(0, 0).unwrap().mul_scalar(scale);
    let k = t.select(0, 1).unwrap();
    let v = t.select(0, 2).unwrap();
    let p = q
        .matmul(&k.transpose(2, 3).unwrap())
        .unwrap()
        .softmax(3)
        .unwrap();
    let o = p.matmul(&v).unwrap();
    o.transpose(1, 2).unwrap().reshape(&[n, l, h * d]).unwrap()
}

fn bench_attention(c: &mut Criterion) {
    let mut group = c.benchmark_group("attention");
    group.sample_size(10);
    for (h, name) in SHAPES {
        let s = AttentionShape::new(8, 197, h, 64);
        let scale = 0.125;
        let qkv_t = Tensor::rand_uniform(&[8, 197, 3 * h * 64], -1.0, 1.0, 1);
        let qkv = qkv_t.to_vec();
        let dout = Tensor::rand_uniform(&[8, 197, h * 64], -1.0, 1.0, 2).to_vec();
        let mut out = vec![0.0f32; s.out_len().unwrap()];
        let mut probs = vec![0.0f32; s.probs_len().unwrap()];
        let mut dqkv = vec![0.0f32; qkv.len()];
        let fwd_flops = 2 * s.forward_macs();
        group.throughput(Throughput::Elements(fwd_flops));
        group.bench_with_input(BenchmarkId::new("kernel_fwd", name), &(), |b, _| {
            b.iter(|| attention_forward(s, scale, &qkv, &mut out, &mut probs).unwrap())
        });
        group.throughput(Throughput::Elements(3 * fwd_flops));
        group.bench_with_input(BenchmarkId::new("kernel_fwd_bwd", name), &(), |b, _| {
            b.iter(|| {
                attention_forward(s, scale, &qkv, &mut out, &mut probs).unwrap();
                attention_backward(s, scale, &qkv, &probs, &dout, &mut dqkv).unwrap();
            })
        });
        let x = qkv_t.requires_grad_(true);
        let g = Tensor::from_vec(dout.clone(), &[8, 197, h * 64]).unwrap();
        group.bench_with_input(BenchmarkId::new("op_fwd_bwd", name), &(), |b, _| {
            b.iter(|| {
                let y = x.multi_head_attention(h, scale).unwrap();
                y.backward_with(&g).unwrap();
                x.zero_grad();
            })
        });
        group.bench_with_input(BenchmarkId::new("composed_fwd_bwd", name), &(), |b, _| {
            b.iter(|| {
                let y = composed(&x, h, scale);
                y.backward_with(&g).unwrap();
                x.zero_grad();
            })
        });
    }
    group.finish();
}

criterion_group!(benches, bench_attention);
criterion_main!(benches);
