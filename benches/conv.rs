//! Criterion benchmarks of the convolutions, single-threaded, in FLOP/s (criterion's element
//! throughput is set to the flop count, so "elem/s" reads as FLOP/s): the depthwise layers of
//! `tessera bench dwconv` (forward with bias + ReLU6, input gradient, weight gradient) and a
//! few dense layers (pointwise GEMM on NCHW, 3x3 im2col), and the forward of SE-ResNet-101's
//! 3x3 and strided 1x1 convolutions in each packed form the inference plan chooses from (the
//! GEMM on im2col columns, its transposed form, the implicit-GEMM kernel and Winograd
//! F(2x2, 3x3) where they apply).
//! Depthwise FLOPs are `2 * c * oh * ow * k * k` for every pass, dense ones
//! `2 * c_out * oh * ow * c_in * k * k` (padding taps included).
//!
//! Run: `cargo bench --bench conv` (filter with e.g. `cargo bench --bench conv -- dwconv`).

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use tessera::kernels::conv::{
    conv2d_backward_input, conv2d_backward_weight, conv2d_forward, conv2d_forward_packed,
    Conv2dShape, PackedConvWeight,
};
use tessera::kernels::Activation;

/// Depthwise: (channels, height = width, kernel, stride), batch 1, padding k/2.
const DEPTHWISE: &[(usize, usize, usize, usize)] = &[
    (32, 112, 3, 1),
    (144, 56, 3, 1),
    (144, 56, 3, 2),
    (240, 28, 5, 1),
    (960, 7, 3, 1),
    (672, 14, 5, 2),
];

/// Dense: (c_in, c_out, height = width, kernel, stride, label), batch 1, padding k/2.
const DENSE: &[(usize, usize, usize, usize, usize, &str)] = &[
    (24, 144, 56, 1, 1, "mbv2_expand_1x1"),
    (144, 24, 56, 1, 1, "mbv2_project_1x1"),
    (64, 64, 56, 3, 1, "resnet_3x3"),
    (3, 32, 224, 3, 2, "mbv2_stem_3x3_s2"),
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

/// One image of `c_in x hw x hw` through `c_out` filters `k x k` at stride `st`, padding
/// `k / 2`, one group.
fn square(c_in: usize, c_out: usize, hw: usize, k: usize, st: usize) -> Conv2dShape {
    Conv2dShape {
        n: 1,
        c_in,
        h: hw,
        w: hw,
        c_out,
        kh: k,
        kw: k,
        stride: (st, st),
        padding: (k / 2, k / 2),
        dilation: (1, 1),
        groups: 1,
    }
}

fn bench_shape(c: &mut Criterion, group_name: &str, label: &str, s: &Conv2dShape, flops: f64) {
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .build()
        .expect("one-thread pool");
    let x = data(s.input_len(), 1);
    let w = data(s.weight_len(), 2);
    let b = data(s.c_out, 3);
    let dy = data(s.output_len(), 4);
    let mut y = vec![0.0f32; s.output_len()];
    let mut dx = vec![0.0f32; s.input_len()];
    let mut dw = vec![0.0f32; s.weight_len()];
    let mut group = c.benchmark_group(group_name);
    group.sample_size(20);
    group.throughput(Throughput::Elements(flops as u64));
    group.bench_function(BenchmarkId::new("forward", label), |bench| {
        pool.install(|| {
            bench.iter(|| conv2d_forward(s, &x, &w, Some(&b), Activation::Relu6, &mut y).unwrap())
        })
    });
    group.bench_function(BenchmarkId::new("backward_input", label), |bench| {
        pool.install(|| bench.iter(|| conv2d_backward_input(s, &w, &dy, &mut dx).unwrap()))
    });
    group.bench_function(BenchmarkId::new("backward_weight", label), |bench| {
        pool.install(|| bench.iter(|| conv2d_backward_weight(s, &x, &dy, &mut dw).unwrap()))
    });
    group.finish();
}

fn bench_depthwise(c: &mut Criterion) {
    for &(ch, hw, k, st) in DEPTHWISE {
        let s = Conv2dShape {
            groups: ch,
            ..square(ch, ch, hw, k, st)
        };
        let flops = 2.0 * (ch * s.out_h() * s.out_w() * k * k) as f64;
        bench_shape(c, "dwconv", &format!("{ch}x{hw}^2_k{k}_s{st}"), &s, flops);
    }
}

fn bench_dense(c: &mut Criterion) {
    for &(ci, co, hw, k, st, label) in DENSE {
        let s = square(ci, co, hw, k, st);
        bench_shape(c, "conv_dense", label, &s, s.flops());
    }
}

/// SE-ResNet-101's convolutions that the plan runs through a packed form: (c_in, c_out,
/// height = width, kernel, stride).
const PACKED: &[(usize, usize, usize, usize, usize)] = &[
    (64, 64, 56, 3, 1),
    (128, 128, 56, 3, 2),
    (128, 128, 28, 3, 1),
    (256, 256, 14, 3, 1),
    (512, 512, 7, 3, 1),
    (1024, 2048, 14, 1, 2),
];

fn bench_packed_forms(c: &mut Criterion) {
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .build()
        .expect("one-thread pool");
    for &(ci, co, hw, k, st) in PACKED {
        let s = square(ci, co, hw, k, st);
        let (x, w, b) = (data(s.input_len(), 1), data(s.weight_len(), 2), data(co, 3));
        let dims = [co, ci, k, k];
        let mut forms = vec![
            ("gemm", PackedConvWeight::pack(&w, dims, 1, None).unwrap()),
            (
                "transposed",
                PackedConvWeight::pack_transposed(&w, dims, 1, None).unwrap(),
            ),
        ];
        if PackedConvWeight::implicit_applies(&s, None) {
            forms.push((
                "implicit",
                PackedConvWeight::pack_implicit(&w, dims, 1, None).unwrap(),
            ));
        }
        if PackedConvWeight::winograd_applies(&s) {
            forms.push((
                "winograd",
                PackedConvWeight::pack_winograd(&w, dims, 1, None).unwrap(),
            ));
        }
        let mut y = vec![0.0f32; s.output_len()];
        let mut group = c.benchmark_group("conv_packed_forms");
        group.sample_size(20);
        group.throughput(Throughput::Elements(s.flops() as u64));
        let label = format!("{ci}to{co}_{hw}^2_k{k}_s{st}");
        for (name, p) in &forms {
            group.bench_function(BenchmarkId::new(*name, &label), |bench| {
                pool.install(|| {
                    bench.iter(|| {
                        conv2d_forward_packed(&s, &x, p, Some(&b), Activation::Relu, &mut y)
                            .unwrap()
                    })
                })
            });
        }
        group.finish();
    }
}

criterion_group!(benches, bench_depthwise, bench_dense, bench_packed_forms);
criterion_main!(benches);
