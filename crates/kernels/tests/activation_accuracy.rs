//! Every vector path of every activation, forward and backward, against the f64 scalar
//! reference, within the documented error bounds (`docs/kernels/activations.md`).
//!
//! The bound of one forward output is `U ulp(exact) + A eps s + 4 * 2^-126 max(1, s)`, with
//! `s = |x|`: the ulp term covers the usual relative error; the `eps s` term covers results that
//! cancel (GELU's negative tail, where `1 + erf` loses relative accuracy exactly as PyTorch's
//! does; derivatives near their zeros); the last term covers results built from an exp that the
//! shared exp flushes to zero below `2^-126` (tanh' = 4 e^-2|x| / (1 + e^-2|x|)^2 is the
//! largest multiple of it). The backward `dx = dy f'(x)` is bounded the same way on the
//! derivative, scaled by `|dy|` (`U ulp(f') |dy| + A eps |dy| + 4 * 2^-126 max(1, |dy|)`), plus
//! half an ulp of the result for the final product: an error of `U` ulps of `f'` is not `U`
//! ulps of `dy f'` when the product lands higher in its binade than `f'` does in its own.

use proptest::prelude::*;
use tessera_kernels::activation::{backward_with, forward_with, reference, Activation};
use tessera_kernels::Isa;

/// (U, A) for the forward, (U, A) for the backward.
fn bounds(act: Activation) -> ((f64, f64), (f64, f64)) {
    match act {
        Activation::Identity | Activation::Relu | Activation::Relu6 => ((0.0, 0.0), (0.0, 0.0)),
        Activation::LeakyRelu(_) => ((0.5, 0.0), (0.5, 0.0)),
        Activation::Sigmoid => ((3.0, 0.0), (4.5, 0.0)),
        Activation::Tanh => ((3.0, 0.0), (4.5, 0.0)),
        Activation::Swish => ((3.5, 0.0), (4.5, 2.5)),
        // A priori: k roundings of relative size <= 2^-24 each cost at most k ulp.
        Activation::HardSigmoid => ((3.0, 0.0), (2.0, 0.0)),
        Activation::HardSwish => ((4.0, 0.0), (2.0, 1.0)),
        Activation::GeluErf => ((3.0, 2.5), (4.0, 2.5)),
        Activation::GeluTanh => ((3.0, 1.5), (4.5, 2.5)),
    }
}

fn ulp_f32(v: f64) -> f64 {
    let v = v.abs();
    let e = if v == 0.0 {
        -126
    } else {
        (((v.to_bits() >> 52) & 0x7ff) as i64 - 1023).max(-126)
    };
    2f64.powi(e as i32 - 23)
}

fn within(got: f32, exact: f64, (u, a): (f64, f64), scale: f64) -> bool {
    within_product(got, exact, exact, 1.0, (u, a), scale)
}

/// `got` against `exact = m * f` (`f` exact, `m` the f32 multiplier, 1 for a forward): `U`
/// ulps of `f` scaled by `|m|`, `A eps s`, the flush term, and (when `m != 1`) half an ulp of
/// the product for its rounding.
fn within_product(got: f32, exact: f64, f: f64, m: f64, (u, a): (f64, f64), scale: f64) -> bool {
    if exact.is_nan() {
        return got.is_nan();
    }
    if exact.is_infinite() {
        return got as f64 == exact;
    }
    let scale = scale.min(f32::MAX as f64);
    let flush = 4.0 * f32::MIN_POSITIVE as f64 * scale.max(1.0);
    let product = if m == 1.0 { 0.0 } else { 0.5 * ulp_f32(exact) };
    let tol = u * ulp_f32(f) * m.abs() + product + a * f32::EPSILON as f64 * scale + flush;
    (got as f64 - exact).abs() <= tol
}

fn check(isa: Isa, act: Activation, xs: &[f32], dys: &[f32]) {
    let ((uf, af), (ub, ab)) = bounds(act);
    let mut y = vec![0.0f32; xs.len()];
    forward_with(isa, act, xs, &mut y).unwrap();
    let mut dx = vec![0.0f32; xs.len()];
    backward_with(isa, act, xs, dys, &mut dx).unwrap();
    for i in 0..xs.len() {
        let (x, dy) = (xs[i], dys[i]);
        let exact = reference::forward(act, x as f64);
        assert!(
            within(y[i], exact, (uf, af), (x as f64).abs()),
            "{isa} {act:?} forward({x:e}) = {:e}, exact {exact:e}",
            y[i]
        );
        let d = reference::derivative(act, x as f64);
        let exact = dy as f64 * d;
        assert!(
            within_product(dx[i], exact, d, dy as f64, (ub, ab), (dy as f64).abs()),
            "{isa} {act:?} backward(x = {x:e}, dy = {dy:e}) = {:e}, exact {exact:e}",
            dx[i]
        );
    }
}

#[test]
fn dense_grid_every_activation_every_path() {
    // [-25, 25] in steps of 1/4096 (every kink and both saturation regions), plus large and
    // tiny magnitudes.
    let mut xs: Vec<f32> = (-102_400..=102_400).map(|i| i as f32 / 4096.0).collect();
    for e in -40..=30 {
        let v = 10f32.powi(e / 2) * if e % 2 == 0 { 1.0 } else { 3.0 };
        xs.push(v);
        xs.push(-v);
    }
    xs.extend([
        0.0,
        -0.0,
        f32::MIN_POSITIVE,
        -f32::MIN_POSITIVE,
        1e-42,
        100.0,
        -100.0,
    ]);
    xs.extend([f32::INFINITY, f32::NEG_INFINITY, f32::MAX, f32::MIN]);
    let dys = vec![1.0f32; xs.len()];
    for isa in Isa::available() {
        for &act in Activation::ALL {
            check(isa, act, &xs, &dys);
        }
    }
}

#[test]
fn kink_conventions_match_pytorch_exactly() {
    use Activation::*;
    let cases: &[(Activation, f32, f32)] = &[
        (Relu, 0.0, 0.0),
        (Relu, 1e-30, 1.0),
        (Relu6, 0.0, 0.0),
        (Relu6, 6.0, 0.0),
        (Relu6, 5.999, 1.0),
        (LeakyRelu(0.2), 0.0, 0.2),
        (LeakyRelu(0.2), 1.0, 1.0),
        (HardSigmoid, -3.0, 0.0),
        (HardSigmoid, 3.0, 0.0),
        (HardSigmoid, 0.0, 1.0 / 6.0),
        (HardSwish, -3.0, -0.5),
        (HardSwish, 3.0, 1.5),
        (HardSwish, -3.001, 0.0),
        (HardSwish, 3.001, 1.0),
        (HardSwish, 0.0, 0.5),
    ];
    for isa in Isa::available() {
        for &(act, x, want) in cases {
            let mut dx = [f32::NAN];
            backward_with(isa, act, &[x], &[1.0], &mut dx).unwrap();
            let err = (dx[0] - want).abs();
            assert!(
                err <= f32::EPSILON * want.abs(),
                "{isa} {act:?}'({x}) = {}, want {want}",
                dx[0]
            );
        }
    }
}

#[test]
fn nan_propagates_through_every_forward() {
    for isa in Isa::available() {
        for &act in Activation::ALL {
            let xs = [f32::NAN; 11];
            let mut y = [0.0f32; 11];
            forward_with(isa, act, &xs, &mut y).unwrap();
            assert!(y.iter().all(|v| v.is_nan()), "{isa} {act:?}: {y:?}");
        }
    }
}

#[test]
fn saturation_at_infinities() {
    use Activation::*;
    let cases: &[(Activation, f32, f32)] = &[
        (Sigmoid, f32::INFINITY, 1.0),
        (Sigmoid, f32::NEG_INFINITY, 0.0),
        (Tanh, f32::INFINITY, 1.0),
        (Tanh, f32::NEG_INFINITY, -1.0),
        (Swish, f32::INFINITY, f32::INFINITY),
        (HardSwish, f32::INFINITY, f32::INFINITY),
        (HardSigmoid, f32::NEG_INFINITY, 0.0),
        (GeluErf, f32::INFINITY, f32::INFINITY),
        (GeluTanh, f32::INFINITY, f32::INFINITY),
        (Relu6, f32::INFINITY, 6.0),
    ];
    for isa in Isa::available() {
        for &(act, x, want) in cases {
            let mut y = [0.0f32];
            forward_with(isa, act, &[x], &mut y).unwrap();
            assert_eq!(y[0], want, "{isa} {act:?}({x})");
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn random_inputs_any_length(
        xs in proptest::collection::vec(-60.0f32..60.0, 0..300),
        seed in any::<u32>(),
        slope in -2.0f32..2.0,
    ) {
        let dys: Vec<f32> = xs
            .iter()
            .enumerate()
            .map(|(i, _)| ((i as u32).wrapping_mul(2_654_435_761).wrapping_add(seed) >> 8) as f32 / (1u32 << 23) as f32 - 1.0)
            .collect();
        for isa in Isa::available() {
            for &act in Activation::ALL {
                let act = if let Activation::LeakyRelu(_) = act { Activation::LeakyRelu(slope) } else { act };
                check(isa, act, &xs, &dys);
            }
        }
    }
}

#[test]
fn backward_bound_counts_ulps_of_the_derivative() {
    // tanh'(-2.3739762) = 0.0341 lies low in its binade (an ulp is 1.1e-7 of it), the product
    // with dy = -0.4370587, 0.0149, high in its own (6.3e-8): the AVX-512 derivative's 2.5
    // ulps of f' are 4.8 ulps of dx, past a bound of 4.5 ulps of dx, within 4.5 ulps of f'.
    for isa in Isa::available() {
        check(isa, Activation::Tanh, &[-2.373_976_2], &[-0.437_058_7]);
    }
}
