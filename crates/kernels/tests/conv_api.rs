//! The convolution API: shape rules and errors (PyTorch's output sizes), the oracle's
//! semantics (adjoint identities, group decomposition, counting taps), and every ISA path of the
//! public entry points against the f64 oracle on random shapes (proptest).

use proptest::prelude::*;
use tessera_kernels::conv::{self, reference, Conv2dShape};
use tessera_kernels::{Activation, Isa, KernelError};

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

fn dot(a: &[f32], b: &[f32]) -> f64 {
    a.iter().zip(b).map(|(&x, &y)| x as f64 * y as f64).sum()
}

#[allow(clippy::too_many_arguments)]
fn shape(
    n: usize,
    c_in: usize,
    h: usize,
    w: usize,
    c_out: usize,
    k: (usize, usize),
    st: (usize, usize),
    p: (usize, usize),
    d: (usize, usize),
    g: usize,
) -> Conv2dShape {
    Conv2dShape {
        n,
        c_in,
        h,
        w,
        c_out,
        kh: k.0,
        kw: k.1,
        stride: st,
        padding: p,
        dilation: d,
        groups: g,
    }
}

#[test]
fn output_sizes_follow_pytorch() {
    // torch.nn.Conv2d(.., kernel_size=3, stride=2, padding=1) on 224 -> 112; 7x7 s2 p3 -> 112.
    let s = shape(1, 3, 224, 224, 32, (3, 3), (2, 2), (1, 1), (1, 1), 1);
    assert_eq!((s.out_h(), s.out_w()), (112, 112));
    let s = shape(1, 3, 224, 224, 64, (7, 7), (2, 2), (3, 3), (1, 1), 1);
    assert_eq!(s.out_h(), 112);
    // Dilation 2, 3x3, no padding on 10 -> 6; asymmetric stride.
    let s = shape(1, 1, 10, 9, 1, (3, 2), (1, 3), (0, 0), (2, 1), 1);
    assert_eq!((s.out_h(), s.out_w()), (6, 3));
    assert_eq!(s.weight_len(), 6);
}

#[test]
fn invalid_shapes_are_errors_naming_the_op() {
    let bad = [
        shape(1, 3, 8, 8, 4, (3, 3), (1, 1), (0, 0), (1, 1), 2), // 3 % 2 != 0
        shape(1, 4, 8, 8, 4, (0, 3), (1, 1), (0, 0), (1, 1), 1),
        shape(1, 4, 8, 8, 4, (3, 3), (0, 1), (0, 0), (1, 1), 1),
        shape(1, 4, 8, 8, 4, (3, 3), (1, 1), (0, 0), (0, 1), 1),
        shape(1, 4, 2, 8, 4, (3, 3), (1, 1), (0, 0), (1, 1), 1), // kernel taller than input
        shape(1, 4, 8, 8, 4, (3, 3), (1, 1), (0, 0), (4, 1), 1), // dilated kernel too tall
        shape(
            usize::MAX / 2,
            4,
            8,
            8,
            4,
            (3, 3),
            (1, 1),
            (0, 0),
            (1, 1),
            1,
        ),
    ];
    for s in bad {
        assert!(s.validate().is_err(), "{s}");
        let y = &mut [0.0f32; 4];
        let err = conv::conv2d_forward(&s, &[], &[], None, Activation::Identity, y).unwrap_err();
        assert!(err.to_string().starts_with("conv2d_forward:"), "{err}");
    }
}

#[test]
fn wrong_lengths_are_errors() {
    let s = shape(2, 4, 6, 6, 8, (3, 3), (1, 1), (1, 1), (1, 1), 2);
    let (x, w) = (data(s.input_len(), 1), data(s.weight_len(), 2));
    let mut y = vec![0.0; s.output_len()];
    let e = conv::conv2d_forward(&s, &x[1..], &w, None, Activation::Identity, &mut y).unwrap_err();
    assert!(matches!(
        e,
        KernelError::InvalidArgument {
            op: "conv2d_forward",
            ..
        }
    ));
    assert!(
        e.to_string().contains("x has 287 elements, expected 288"),
        "{e}"
    );
    let e = conv::conv2d_forward(&s, &x, &w, Some(&[0.0; 3]), Activation::Identity, &mut y)
        .unwrap_err();
    assert!(e.to_string().contains("bias has 3"), "{e}");
    let mut dx = vec![0.0; s.input_len() + 1];
    let e = conv::conv2d_backward_input(&s, &w, &y, &mut dx).unwrap_err();
    assert!(e.to_string().starts_with("conv2d_backward_input:"), "{e}");
    let mut dw = vec![0.0; s.weight_len() - 1];
    let e = conv::conv2d_backward_weight(&s, &x, &y, &mut dw).unwrap_err();
    assert!(e.to_string().starts_with("conv2d_backward_weight:"), "{e}");
    let e = conv::conv2d_backward_bias(&s, &y, &mut [0.0; 7]).unwrap_err();
    assert!(e.to_string().starts_with("conv2d_backward_bias:"), "{e}");
}

#[test]
fn oracle_counts_valid_taps() {
    // All-ones input and 3x3 all-ones filter with padding 1: each output counts the taps that
    // land inside the image (4 at corners, 6 on edges, 9 inside).
    let s = shape(1, 1, 4, 5, 1, (3, 3), (1, 1), (1, 1), (1, 1), 1);
    let mut y = vec![0.0; s.output_len()];
    reference::conv2d_forward(
        &s,
        &[1.0; 20],
        &[1.0; 9],
        None,
        Activation::Identity,
        &mut y,
    );
    for (i, &v) in y.iter().enumerate() {
        let (r, c) = (i / 5, i % 5);
        let rows = 3 - usize::from(r == 0) - usize::from(r == 3);
        let cols = 3 - usize::from(c == 0) - usize::from(c == 4);
        assert_eq!(v, (rows * cols) as f32, "at ({r}, {c})");
    }
}

#[test]
fn oracle_groups_are_independent_convolutions() {
    let s = shape(2, 6, 7, 5, 4, (3, 2), (2, 1), (1, 0), (1, 2), 2);
    let (x, w, b) = (data(s.input_len(), 3), data(s.weight_len(), 4), data(4, 5));
    let mut y = vec![0.0; s.output_len()];
    reference::conv2d_forward(&s, &x, &w, Some(&b), Activation::Identity, &mut y);
    let sg = Conv2dShape {
        c_in: 3,
        c_out: 2,
        groups: 1,
        ..s
    };
    let plane_in = s.h * s.w;
    let plane_out = s.out_h() * s.out_w();
    for n in 0..2 {
        for g in 0..2 {
            let xg: Vec<f32> =
                x[(n * 6 + g * 3) * plane_in..(n * 6 + g * 3 + 3) * plane_in].to_vec();
            let wg = &w[g * sg.weight_len()..(g + 1) * sg.weight_len()];
            let mut yg = vec![0.0; sg.output_len() / 2];
            let s1 = Conv2dShape { n: 1, ..sg };
            reference::conv2d_forward(
                &s1,
                &xg,
                wg,
                Some(&b[g * 2..g * 2 + 2]),
                Activation::Identity,
                &mut yg,
            );
            assert_eq!(
                &y[(n * 4 + g * 2) * plane_out..(n * 4 + g * 2 + 2) * plane_out],
                &yg[..]
            );
        }
    }
}

/// `<conv(x, w), dy> == <x, dconv_x(dy)> == <w, dconv_w(x, dy)>`: the gradients are the
/// adjoints of the forward map.
fn check_adjoint(isa: Isa, s: &Conv2dShape, seed: u64) {
    let (x, w, dy) = (
        data(s.input_len(), seed),
        data(s.weight_len(), seed + 1),
        data(s.output_len(), seed + 2),
    );
    let mut y = vec![0.0; s.output_len()];
    conv::conv2d_forward_with(isa, s, &x, &w, None, Activation::Identity, &mut y).unwrap();
    let mut dx = vec![f32::NAN; s.input_len()];
    conv::conv2d_backward_input_with(isa, s, &w, &dy, &mut dx).unwrap();
    let mut dw = vec![f32::NAN; s.weight_len()];
    conv::conv2d_backward_weight_with(isa, s, &x, &dy, &mut dw).unwrap();
    let lhs = dot(&y, &dy);
    // Every product |x| |w| |dy| bounds the rounding of each side.
    let mut ya = vec![0.0; s.output_len()];
    reference::conv2d_forward(s, &abs(&x), &abs(&w), None, Activation::Identity, &mut ya);
    let mag = dot(&ya, &abs(&dy));
    let (k1, k2, k3) = reference::terms(s);
    let tol = (k1.max(k2).max(k3) + 8) as f64 * f32::EPSILON as f64 * mag + 1e-30;
    assert!(
        (lhs - dot(&x, &dx)).abs() <= tol,
        "{isa} {s}: input adjoint {lhs} vs {}",
        dot(&x, &dx)
    );
    assert!(
        (lhs - dot(&w, &dw)).abs() <= tol,
        "{isa} {s}: weight adjoint {lhs} vs {}",
        dot(&w, &dw)
    );
}

#[test]
fn gradients_are_adjoints() {
    let shapes = [
        shape(2, 4, 9, 7, 6, (3, 3), (1, 1), (1, 1), (1, 1), 1),
        shape(1, 6, 11, 10, 4, (3, 2), (2, 3), (1, 1), (2, 1), 2),
        shape(2, 5, 8, 8, 10, (5, 5), (2, 2), (2, 2), (1, 1), 5),
        shape(1, 8, 6, 6, 8, (1, 1), (1, 1), (0, 0), (1, 1), 1),
    ];
    for (i, s) in shapes.iter().enumerate() {
        for isa in Isa::available() {
            check_adjoint(isa, s, 10 + i as u64);
        }
    }
}

#[test]
fn bias_gradient_sums_planes() {
    let s = shape(3, 2, 5, 5, 4, (3, 3), (1, 1), (1, 1), (1, 1), 1);
    let dy = data(s.output_len(), 7);
    let mut db = vec![0.0; 4];
    conv::conv2d_backward_bias(&s, &dy, &mut db).unwrap();
    let mut want = vec![0.0; 4];
    reference::conv2d_backward_bias(&s, &dy, &mut want);
    let mut mag = vec![0.0; 4];
    reference::conv2d_backward_bias(&s, &abs(&dy), &mut mag);
    // 75 terms per channel: (75 + 4) eps sum |dy|.
    for ((a, b), m) in db.iter().zip(&want).zip(&mag) {
        assert!((a - b).abs() <= 79.0 * f32::EPSILON * m, "{a} vs {b}");
    }
}

/// Each path of the public entry points against the oracle, element by element, within
/// `(K + 4) eps sum |terms|` (x2 for the activation's Lipschitz constant, which is <= 2 for
/// every activation in the family).
fn check_against_oracle(isa: Isa, s: &Conv2dShape, act: Activation, seed: u64) {
    let (x, w, b) = (
        data(s.input_len(), seed),
        data(s.weight_len(), seed + 1),
        data(s.c_out, seed + 2),
    );
    let dy = data(s.output_len(), seed + 3);
    let (k1, k2, k3) = reference::terms(s);
    let close = |what: &str, got: &[f32], want: &[f32], mag: &[f32], k: usize| {
        let gamma = 2.0 * (k as f32 + 4.0) * f32::EPSILON;
        for (i, ((g, w), m)) in got.iter().zip(want).zip(mag).enumerate() {
            assert!(
                (g - w).abs() <= gamma * m + ACT_ULPS * f32::EPSILON * w.abs() + f32::MIN_POSITIVE,
                "{isa} {s} {what}[{i}]: {g} vs {w} (bound {})",
                gamma * m
            );
        }
    };
    let mut y = vec![f32::NAN; s.output_len()];
    let mut want = vec![0.0; s.output_len()];
    let mut mag = vec![0.0; s.output_len()];
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
    close("y", &y, &want, &mag, k1 + 1);

    let mut dx = vec![f32::NAN; s.input_len()];
    let mut want = vec![0.0; s.input_len()];
    let mut mag = vec![0.0; s.input_len()];
    conv::conv2d_backward_input_with(isa, s, &w, &dy, &mut dx).unwrap();
    reference::conv2d_backward_input(s, &w, &dy, &mut want);
    reference::conv2d_backward_input(s, &abs(&w), &abs(&dy), &mut mag);
    close("dx", &dx, &want, &mag, k2);

    let mut dw = vec![f32::NAN; s.weight_len()];
    let mut want = vec![0.0; s.weight_len()];
    let mut mag = vec![0.0; s.weight_len()];
    conv::conv2d_backward_weight_with(isa, s, &x, &dy, &mut dw).unwrap();
    reference::conv2d_backward_weight(s, &x, &dy, &mut want);
    reference::conv2d_backward_weight(s, &abs(&x), &abs(&dy), &mut mag);
    close("dw", &dw, &want, &mag, k3);
}

fn any_shape() -> impl Strategy<Value = Conv2dShape> {
    (
        1usize..3,
        1usize..4,
        prop_oneof![Just(1usize), 1usize..4],
        1usize..3,
        (1usize..6, 1usize..6),
        (1usize..16, 1usize..20),
        (1usize..3, 1usize..3),
        (0usize..3, 0usize..3),
        (1usize..3, 1usize..3),
    )
        .prop_filter_map(
            "kernel must fit",
            |(n, cig, groups, cog, k, hw, st, p, d)| {
                let s = shape(
                    n,
                    cig * groups,
                    hw.0,
                    hw.1,
                    cog * groups,
                    k,
                    st,
                    p,
                    d,
                    groups,
                );
                s.validate().ok().map(|_| s)
            },
        )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(96))]
    #[test]
    fn every_path_matches_the_oracle(s in any_shape(), act in 0usize..3, seed in 0u64..1000) {
        let act = Activation::ALL[act % Activation::ALL.len()];
        for isa in Isa::available() {
            check_against_oracle(isa, &s, act, seed);
        }
    }
}
