//! The f64 reference `erf` / `erfc` against published high-precision values (computed with
//! mpmath at 30 digits; the same values appear in Abramowitz & Stegun, Table 7.1), and the
//! reference activations against their textbook identities.

#![allow(clippy::excessive_precision)] // published values, quoted in full

use tessera_kernels::activation::{reference, Activation};

#[test]
fn erf_and_erfc_match_published_values() {
    let erf_table = [
        (0.1, 0.112_462_916_018_284_898_4),
        (0.5, 0.520_499_877_813_046_537_7),
        (1.0, 0.842_700_792_949_714_869_3),
        (2.0, 0.995_322_265_018_952_734_2),
        (3.0, 0.999_977_909_503_001_414_6),
        (1e-3, 0.001_128_378_790_969_236_38),
    ];
    for (x, want) in erf_table {
        let got = reference::erf(x);
        assert!(
            ((got - want) / want).abs() < 1e-14,
            "erf({x}) = {got}, want {want}"
        );
        let got = reference::erf(-x);
        assert!(((got + want) / want).abs() < 1e-14, "erf(-{x}) = {got}");
    }
    let erfc_table = [
        (3.0, 2.209_049_699_858_544_137e-5),
        (5.0, 1.537_459_794_428_034_850e-12),
        (10.0, 2.088_487_583_762_544_757e-45),
    ];
    for (x, want) in erfc_table {
        let got = reference::erfc(x);
        assert!(
            ((got - want) / want).abs() < 1e-13,
            "erfc({x}) = {got}, want {want}"
        );
    }
    assert_eq!(reference::erf(f64::INFINITY), 1.0);
    assert_eq!(reference::erfc(-40.0), 2.0);
    assert!(reference::erf(f64::NAN).is_nan());
}

#[test]
fn reference_identities() {
    for i in -800..=800 {
        let x = i as f64 / 64.0;
        let s = reference::forward(Activation::Sigmoid, x);
        assert!((s - 1.0 / (1.0 + (-x).exp())).abs() < 1e-15);
        let sw = reference::forward(Activation::Swish, x);
        assert!((sw - x * s).abs() < 1e-14 * (1.0 + x.abs()));
        let gt = reference::forward(Activation::GeluTanh, x);
        let direct =
            0.5 * x * (1.0 + (0.797_884_560_802_865_4 * (x + 0.044_715 * x * x * x)).tanh());
        assert!(
            (gt - direct).abs() < 1e-14 * (1.0 + x.abs()),
            "gelu_tanh({x})"
        );
        // Derivatives against central differences.
        for &act in Activation::ALL {
            if matches!(
                act,
                Activation::Relu
                    | Activation::Relu6
                    | Activation::LeakyRelu(_)
                    | Activation::HardSigmoid
                    | Activation::HardSwish
            ) {
                continue;
            }
            let h = 1e-6;
            let fd = (reference::forward(act, x + h) - reference::forward(act, x - h)) / (2.0 * h);
            let d = reference::derivative(act, x);
            assert!(
                (fd - d).abs() < 1e-7,
                "{act:?}'({x}) = {d}, finite difference {fd}"
            );
        }
    }
}
