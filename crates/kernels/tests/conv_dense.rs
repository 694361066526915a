//! Dense and grouped convolution through GEMM (pointwise on NCHW, im2col for k x k), every
//! ISA path against the f64 oracle on network-like layers, and bit-identical results across
//! thread counts.

use tessera_kernels::conv::{self, reference, Conv2dShape};
use tessera_kernels::{Activation, Isa};

mod common;
use common::data;

/// Allowance for a vector activation differing from its scalar definition by a few ulps of the
/// output (polynomial `exp`/`tanh` forms of sigmoid, swish, GELU): 8 ulps. Exact for
/// identity / ReLU / ReLU6, whose vector and scalar forms agree bit for bit (8 ulps of a
/// value in [1, 2) is 16 eps times it).
const ACT_ULPS: f32 = 16.0;

fn abs(v: &[f32]) -> Vec<f32> {
    v.iter().map(|x| x.abs()).collect()
}

/// `|got - want| <= 2 (K + 4) eps sum|terms|` element-wise (see `conv_depthwise.rs`).
fn close(what: &str, s: &Conv2dShape, isa: Isa, got: &[f32], want: &[f32], mag: &[f32], k: usize) {
    let gamma = 2.0 * (k as f32 + 4.0) * f32::EPSILON;
    for (i, ((g, w), m)) in got.iter().zip(want).zip(mag).enumerate() {
        assert!(
            (g - w).abs() <= gamma * m + ACT_ULPS * f32::EPSILON * w.abs() + f32::MIN_POSITIVE,
            "{isa} {s} {what}[{i}]: {g} vs {w}"
        );
    }
}

fn check(isa: Isa, s: &Conv2dShape, act: Activation, seed: u64) {
    let (x, w, b) = (
        data(s.input_len(), seed),
        data(s.weight_len(), seed + 1),
        data(s.c_out, seed + 2),
    );
    let dy = data(s.output_len(), seed + 3);
    let (k1, k2, k3) = reference::terms(s);
    let mut y = vec![f32::NAN; s.output_len()];
    let (mut want, mut mag) = (vec![0.0; s.output_len()], vec![0.0; s.output_len()]);
    conv::conv2d_forward_with(isa, s, &x, &w, Some(&b), act, &mut y).unwrap();
    reference::conv2d_forward(s, &x, &w, Some(&b), act, &mut want);
    reference::conv2d_forward(
        s,
        &abs(&x),
        &abs(&w),
        Some(&abs(&b)),
        Activation::Identity,
        &mut mag,
    );
    close("y", s, isa, &y, &want, &mag, k1 + 1);
    let mut dx = vec![f32::NAN; s.input_len()];
    let (mut want, mut mag) = (vec![0.0; s.input_len()], vec![0.0; s.input_len()]);
    conv::conv2d_backward_input_with(isa, s, &w, &dy, &mut dx).unwrap();
    reference::conv2d_backward_input(s, &w, &dy, &mut want);
    reference::conv2d_backward_input(s, &abs(&w), &abs(&dy), &mut mag);
    close("dx", s, isa, &dx, &want, &mag, k2);
    let mut dw = vec![f32::NAN; s.weight_len()];
    let (mut want, mut mag) = (vec![0.0; s.weight_len()], vec![0.0; s.weight_len()]);
    conv::conv2d_backward_weight_with(isa, s, &x, &dy, &mut dw).unwrap();
    reference::conv2d_backward_weight(s, &x, &dy, &mut want);
    reference::conv2d_backward_weight(s, &abs(&x), &abs(&dy), &mut mag);
    close("dw", s, isa, &dw, &want, &mag, k3);
}

#[allow(clippy::too_many_arguments)]
fn shape(
    n: usize,
    c_in: usize,
    h: usize,
    w: usize,
    c_out: usize,
    k: usize,
    st: usize,
    p: usize,
    g: usize,
) -> Conv2dShape {
    Conv2dShape {
        n,
        c_in,
        h,
        w,
        c_out,
        kh: k,
        kw: k,
        stride: (st, st),
        padding: (p, p),
        dilation: (1, 1),
        groups: g,
    }
}

#[test]
fn network_layers_match_the_oracle() {
    let shapes = [
        shape(2, 24, 14, 14, 40, 1, 1, 0, 1), // pointwise expand
        shape(1, 16, 12, 12, 32, 3, 1, 1, 1), // 3x3 im2col
        shape(1, 3, 32, 32, 16, 3, 2, 1, 1),  // stem, stride 2
        shape(2, 16, 9, 9, 8, 3, 2, 0, 4),    // grouped
        shape(1, 8, 10, 10, 8, 1, 2, 0, 1),   // strided 1x1 goes through im2col
        shape(1, 4, 11, 13, 6, 7, 3, 3, 2),   // large kernel, odd sizes
        shape(3, 16, 9, 9, 24, 3, 1, 1, 1),   // batch: filters packed once for all images
        shape(5, 40, 1, 1, 10, 1, 1, 0, 1),   // squeeze-excitation: 1x1 planes, one GEMM
        shape(4, 12, 1, 1, 18, 1, 1, 0, 3),   // grouped 1x1 planes
        shape(1, 24, 1, 1, 8, 1, 1, 0, 1),    // 1x1 plane, one image
        shape(3, 16, 10, 10, 24, 1, 1, 0, 2), // grouped pointwise batch: segmented views
        shape(2, 8, 40, 36, 12, 1, 1, 0, 1),  // pointwise batch over planes > 1024 pixels
        shape(3, 6, 7, 7, 10, 5, 1, 2, 1),    // 7x7 planes: 49-column segments
    ];
    for (i, s) in shapes.iter().enumerate() {
        for isa in Isa::available() {
            check(
                isa,
                s,
                Activation::ALL[i % Activation::ALL.len()],
                60 + i as u64,
            );
        }
    }
}

#[test]
fn results_do_not_depend_on_the_thread_count() {
    for s in [
        shape(2, 32, 20, 20, 48, 3, 1, 1, 2),
        shape(2, 64, 16, 16, 96, 1, 1, 0, 1),
        shape(16, 256, 1, 1, 64, 1, 1, 0, 1),
        shape(8, 64, 14, 14, 96, 1, 1, 0, 1),
    ] {
        let (x, w, dy) = (
            data(s.input_len(), 1),
            data(s.weight_len(), 2),
            data(s.output_len(), 3),
        );
        let run = |threads: usize| {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap();
            pool.install(|| {
                let mut y = vec![0.0; s.output_len()];
                let mut dx = vec![0.0; s.input_len()];
                let mut dw = vec![0.0; s.weight_len()];
                conv::conv2d_forward(&s, &x, &w, Some(&x[..s.c_out]), Activation::Relu6, &mut y)
                    .unwrap();
                conv::conv2d_backward_input(&s, &w, &dy, &mut dx).unwrap();
                conv::conv2d_backward_weight(&s, &x, &dy, &mut dw).unwrap();
                (y, dx, dw)
            })
        };
        let one = run(1);
        let three = run(3);
        let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(&one.0), bits(&three.0));
        assert_eq!(bits(&one.1), bits(&three.1));
        assert_eq!(bits(&one.2), bits(&three.2));
    }
}
