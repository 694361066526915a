//! The activation slice API: names, length errors, in-place == out-of-place, thread-count
//! independence, and the register-level `apply` agreeing with the slice loops.

use tessera_kernels::activation::{
    backward, backward_with, forward, forward_inplace, forward_inplace_with, forward_with,
    Activation,
};
use tessera_kernels::Isa;

mod common;

/// Values in [-8, 8), where the activations differ most.
fn data(n: usize) -> Vec<f32> {
    common::uniform(n, 1, -8.0, 8.0)
}

#[test]
fn names_round_trip_and_aliases() {
    for &act in Activation::ALL {
        let parsed = Activation::from_name(act.name()).unwrap();
        match act {
            Activation::LeakyRelu(_) => assert_eq!(parsed, Activation::LeakyRelu(0.01)),
            _ => assert_eq!(parsed, act),
        }
    }
    assert_eq!(Activation::from_name("SiLU").unwrap(), Activation::Swish);
    assert_eq!(
        Activation::from_name("hard-swish").unwrap(),
        Activation::HardSwish
    );
    assert_eq!(
        Activation::from_name("leaky_relu:0.2").unwrap(),
        Activation::LeakyRelu(0.2)
    );
    assert_eq!(
        Activation::from_name("leaky_relu(0.3)").unwrap(),
        Activation::LeakyRelu(0.3)
    );
    assert_eq!(
        Activation::from_name("Leaky-ReLU:-0.5").unwrap(),
        Activation::LeakyRelu(-0.5)
    );
    assert!(Activation::from_name("leaky_relu:abc").is_err());
    assert!(Activation::from_name("leaky_relu:inf").is_err());
    assert!(Activation::from_name("leaky_relux").is_err());
    // Every alias parses, to the activation whose canonical name it spells.
    for alias in Activation::ALIASES {
        assert!(Activation::from_name(alias).is_ok(), "{alias}");
    }
    assert_eq!(
        Activation::from_name("h-swish").unwrap(),
        Activation::HardSwish
    );
    assert_eq!(
        Activation::from_name("H-Sigmoid").unwrap(),
        Activation::HardSigmoid
    );
    assert_eq!(
        Activation::from_name("gelu_erf").unwrap(),
        Activation::GeluErf
    );
    assert_eq!(Activation::from_name("none").unwrap(), Activation::Identity);
    // An unknown name is an error listing every valid name and alias.
    let e = Activation::from_name("mish").unwrap_err().to_string();
    assert!(e.contains("\"mish\""), "{e}");
    for &act in Activation::ALL {
        assert!(e.contains(act.name()), "{e} lacks {}", act.name());
    }
    for alias in Activation::ALIASES {
        assert!(e.contains(alias), "{e} lacks {alias}");
    }
}

#[test]
fn length_mismatch_is_an_error_naming_the_lengths() {
    let x = [1.0f32; 5];
    let mut y = [0.0f32; 4];
    let e = forward(Activation::Swish, &x, &mut y)
        .unwrap_err()
        .to_string();
    assert!(e.contains('5') && e.contains('4'), "{e}");
    let mut dx = [0.0f32; 5];
    assert!(backward(Activation::Swish, &x, &y, &mut dx).is_err());
    let dy = [1.0f32; 5];
    assert!(backward(Activation::Swish, &x, &dy, &mut dx).is_ok());
}

#[test]
fn inplace_equals_out_of_place_on_every_path() {
    let x = data(1000 + 7);
    for isa in Isa::available() {
        for &act in Activation::ALL {
            let mut y = vec![0.0; x.len()];
            forward_with(isa, act, &x, &mut y).unwrap();
            let mut z = x.clone();
            forward_inplace_with(isa, act, &mut z).unwrap();
            assert_eq!(
                y.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
                z.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
                "{isa} {act:?}"
            );
        }
    }
    let mut z = x.clone();
    forward_inplace(Activation::Relu, &mut z);
    assert!(z.iter().zip(&x).all(|(a, b)| *a == b.max(0.0)));
}

#[test]
fn results_do_not_depend_on_the_thread_count() {
    // Large enough to take the parallel path.
    let x = data((1 << 18) + 13);
    let dy = data((1 << 18) + 13);
    let run = |threads: usize, isa: Isa, act: Activation| {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap();
        pool.install(|| {
            let mut y = vec![0.0f32; x.len()];
            forward_with(isa, act, &x, &mut y).unwrap();
            let mut dx = vec![0.0f32; x.len()];
            backward_with(isa, act, &x, &dy, &mut dx).unwrap();
            (y, dx)
        })
    };
    for isa in Isa::available() {
        for act in [
            Activation::Swish,
            Activation::GeluErf,
            Activation::HardSwish,
        ] {
            let (y1, d1) = run(1, isa, act);
            let (y3, d3) = run(3, isa, act);
            assert!(
                y1.iter().zip(&y3).all(|(a, b)| a.to_bits() == b.to_bits()),
                "{isa} {act:?}"
            );
            assert!(
                d1.iter().zip(&d3).all(|(a, b)| a.to_bits() == b.to_bits()),
                "{isa} {act:?}"
            );
        }
    }
}

#[test]
fn register_apply_matches_the_slice_loops() {
    let x = data(64);
    for &act in Activation::ALL {
        let mut want = vec![0.0f32; 64];
        forward_with(Isa::Portable, act, &x, &mut want).unwrap();
        for (c, w) in x.chunks(8).zip(want.chunks(8)) {
            let v = tessera_kernels::activation::portable::apply(
                act,
                wide::f32x8::from(<[f32; 8]>::try_from(c).unwrap()),
            );
            assert_eq!(
                v.to_array().map(f32::to_bits),
                <[f32; 8]>::try_from(w).unwrap().map(f32::to_bits)
            );
        }
        #[cfg(target_arch = "x86_64")]
        if Isa::Avx2.is_supported() {
            use std::arch::x86_64::*;
            let mut want = vec![0.0f32; 64];
            forward_with(Isa::Avx2, act, &x, &mut want).unwrap();
            for (c, w) in x.chunks(8).zip(want.chunks(8)) {
                let mut out = [0.0f32; 8];
                // SAFETY: AVX2 + FMA checked above; c and out hold 8 floats.
                unsafe {
                    let v =
                        tessera_kernels::activation::avx2::apply(act, _mm256_loadu_ps(c.as_ptr()));
                    _mm256_storeu_ps(out.as_mut_ptr(), v);
                }
                assert_eq!(
                    out.map(f32::to_bits),
                    <[f32; 8]>::try_from(w).unwrap().map(f32::to_bits),
                    "{act:?}"
                );
            }
        }
    }
}
