//! Accuracy of the vectorised `exp` against `f64::exp`, on every ISA path the host has.
//!
//! The normal suite checks every 997th f32 in [-88, 88] (about 2.1 million values per path);
//! `exp_exhaustive_all_paths` (behind `#[ignore]`; run with
//! `cargo test -p tessera-kernels --release --test exp_accuracy -- --ignored --nocapture`)
//! checks every one of the ~2.1 billion f32 in [-88, 88] and prints the maximum error.

use tessera_kernels::exp::{exp_flush_with, exp_with, MAX_ULP};
use tessera_kernels::Isa;

/// One unit in the last place of an f32 at the magnitude of `v` (subnormal ulp below 2^-126).
fn ulp_f32(v: f64) -> f64 {
    let v = v.abs();
    let e = if v == 0.0 {
        -126
    } else {
        (((v.to_bits() >> 52) & 0x7ff) as i64 - 1023).max(-126)
    };
    2f64.powi(e as i32 - 23)
}

/// Error of `y` in ulps of the exact `e^x`.
fn ulp_err(x: f32, y: f32) -> f64 {
    let exact = (x as f64).exp();
    (y as f64 - exact).abs() / ulp_f32(exact)
}

/// Every f32 in [-88, 88], in order of bit pattern, taking every `stride`-th one, in batches.
fn sweep(stride: u32, mut f: impl FnMut(&[f32])) {
    const BATCH: usize = 1 << 16;
    let mut batch = Vec::with_capacity(BATCH);
    // Non-negative half: bits 0 ..= bits(88); negative half: sign bit set.
    let top = 88f32.to_bits();
    for sign in [0u32, 0x8000_0000] {
        let mut b = 0u32;
        while b <= top {
            batch.push(f32::from_bits(b | sign));
            if batch.len() == BATCH {
                f(&batch);
                batch.clear();
            }
            b = match b.checked_add(stride) {
                Some(v) => v,
                None => break,
            };
        }
    }
    if !batch.is_empty() {
        f(&batch);
    }
}

/// Returns (max ulp error, the x where it is attained, number of values checked).
fn max_error(isa: Isa, stride: u32) -> (f64, f32, u64) {
    let mut out = vec![0.0f32; 1 << 16];
    let (mut worst, mut at, mut count) = (0.0f64, 0.0f32, 0u64);
    sweep(stride, |xs| {
        let y = &mut out[..xs.len()];
        exp_with(isa, xs, y).unwrap();
        for (&x, &v) in xs.iter().zip(y.iter()) {
            let e = ulp_err(x, v);
            if e > worst || e.is_nan() {
                worst = e;
                at = x;
            }
        }
        count += xs.len() as u64;
    });
    (worst, at, count)
}

#[test]
fn exp_strided_subset_within_bound_on_every_path() {
    for isa in Isa::available() {
        let (worst, at, count) = max_error(isa, 997);
        println!("exp {isa}: max error {worst:.4} ulp at x = {at:e} over {count} values");
        assert!(count > 2_000_000, "{isa}: only {count} values");
        assert!(
            worst <= MAX_ULP,
            "{isa}: exp error {worst} ulp at x = {at:e} exceeds the documented {MAX_ULP}"
        );
    }
}

#[test]
#[ignore = "exhaustive: ~2.1e9 values per ISA path, minutes; run with --ignored"]
fn exp_exhaustive_all_paths() {
    for isa in Isa::available() {
        let t0 = std::time::Instant::now();
        let (worst, at, count) = max_error(isa, 1);
        println!(
            "exp {isa}: max error {worst:.4} ulp at x = {at:e} over {count} values in {:.1} s",
            t0.elapsed().as_secs_f64()
        );
        assert!(worst <= MAX_ULP, "{isa}: {worst} ulp at {at:e}");
    }
}

#[test]
fn exp_special_values_on_every_path() {
    let xs = [
        f32::NAN,
        f32::INFINITY,
        f32::NEG_INFINITY,
        88.72283,
        88.7229,
        89.0,
        1e30,
        -1e30,
        -87.5,
        -100.0,
        -103.0,
        -104.0,
        -110.0,
        0.0,
        -0.0,
        f32::MIN_POSITIVE,
        1e-30,
    ];
    for isa in Isa::available() {
        let mut y = vec![0.0f32; xs.len()];
        exp_with(isa, &xs, &mut y).unwrap();
        for (&x, &v) in xs.iter().zip(&y) {
            let exact = (x as f64).exp();
            if x.is_nan() {
                assert!(v.is_nan(), "{isa}: exp(NaN) = {v}");
            } else if exact > f32::MAX as f64 * (1.0 + f32::EPSILON as f64 / 2.0) {
                assert_eq!(v, f32::INFINITY, "{isa}: exp({x}) = {v}, expected inf");
            } else {
                assert!(
                    ulp_err(x, v) <= MAX_ULP,
                    "{isa}: exp({x:e}) = {v:e}, exact {exact:e}"
                );
            }
        }
    }
}

#[test]
fn scalar_and_portable_are_bit_identical() {
    let mut out = vec![0.0f32; 1 << 16];
    let mut want = vec![0.0f32; 1 << 16];
    sweep(104_729, |xs| {
        let y = &mut out[..xs.len()];
        let w = &mut want[..xs.len()];
        exp_with(Isa::Portable, xs, y).unwrap();
        exp_with(Isa::Scalar, xs, w).unwrap();
        for ((&x, &v), &s) in xs.iter().zip(y.iter()).zip(w.iter()) {
            assert_eq!(v.to_bits(), s.to_bits(), "x = {x:e}");
        }
    });
}

#[test]
fn lengths_must_match_and_every_length_works() {
    for isa in Isa::available() {
        let x = [0.5f32; 3];
        let mut y = [0.0f32; 4];
        assert!(exp_with(isa, &x, &mut y).is_err());
        for n in 0..40 {
            let x: Vec<f32> = (0..n).map(|i| i as f32 * 0.37 - 5.0).collect();
            let mut y = vec![f32::NAN; n];
            exp_with(isa, &x, &mut y).unwrap();
            for (&a, &b) in x.iter().zip(&y) {
                assert!(ulp_err(a, b) <= MAX_ULP, "{isa} n={n}: exp({a}) = {b}");
            }
        }
    }
}

#[test]
fn flushing_form_within_bound_and_flushes_on_every_path() {
    // Every 97th f32 in [-87.3365, 0] plus the cut-off neighbourhood and special values,
    // through the flushing form of every path the host has (the table variant on AVX2 and
    // AVX-512, the polynomial elsewhere).
    let mut xs: Vec<f32> = (0..(87.3365f32.to_bits() / 97))
        .map(|i| -f32::from_bits(i * 97))
        .collect();
    xs.extend([
        0.0,
        -0.0,
        -87.0,
        -87.33654,
        -87.3366,
        -88.0,
        -1e30,
        f32::NEG_INFINITY,
        f32::NAN,
    ]);
    for isa in Isa::available() {
        let mut ys = vec![0.0f32; xs.len()];
        exp_flush_with(isa, &xs, &mut ys).unwrap();
        for (&x, &v) in xs.iter().zip(&ys) {
            if x.is_nan() {
                assert!(v.is_nan(), "{isa}: exp_flush(NaN) = {v}");
            } else if x < -87.33654 {
                assert_eq!(v, 0.0, "{isa}: exp_flush({x:e}) must flush to 0");
            } else {
                let exact = (x as f64).exp();
                let err = (v as f64 - exact).abs() / ulp_f32(exact);
                assert!(err <= MAX_ULP, "{isa}: exp_flush({x:e}) = {v:e}, {err} ulp");
            }
        }
    }
}

/// Every f32 in [-87.33654, 0] (about 1.1 billion) through the flushing form of every path
/// the host has (on AVX2 / AVX-512 the table variant, see `crate::exp`), against `f64::exp`;
/// prints the maximum error. Run with
/// `cargo test -p tessera-kernels --release --test exp_accuracy -- --ignored --nocapture`.
#[test]
#[ignore = "exhaustive: ~1.1e9 values per path, tens of seconds each; run with --ignored"]
fn flushing_form_exhaustive_all_paths() {
    const BATCH: u32 = 1 << 16;
    let last = 87.33654f32.to_bits();
    for isa in Isa::available() {
        let t0 = std::time::Instant::now();
        let (mut worst, mut at) = (0.0f64, 0.0f32);
        let mut xs = vec![0.0f32; BATCH as usize];
        let mut ys = vec![0.0f32; BATCH as usize];
        let mut bits = 0u32;
        while bits <= last {
            let n = (last - bits + 1).min(BATCH) as usize;
            for (k, v) in xs[..n].iter_mut().enumerate() {
                *v = -f32::from_bits(bits + k as u32);
            }
            exp_flush_with(isa, &xs[..n], &mut ys[..n]).unwrap();
            for (&x, &y) in xs[..n].iter().zip(&ys[..n]) {
                let e = ulp_err(x, y);
                if e > worst {
                    (worst, at) = (e, x);
                }
            }
            bits += n as u32;
        }
        println!(
            "exp_flush {isa}: max error {worst:.4} ulp at x = {at:e} over [-87.33654, 0] in {:.1} s",
            t0.elapsed().as_secs_f64()
        );
        assert!(worst <= MAX_ULP, "{isa} exp_flush: {worst} ulp at {at:e}");
    }
}
