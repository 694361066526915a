//! The error table of `docs/accuracy.md`: every approximation the kernels make (the
//! vectorised exp, each activation forward and backward, the batch-norm reciprocal square
//! root), on every ISA path the host has, against the exact value computed in f64 (the
//! correctly rounded f32 result is within 0.5 ulp of it). Prints a markdown table; it asserts
//! nothing beyond what `activation_accuracy.rs` and `exp_accuracy.rs` already bound, so it is
//! `#[ignore]`d:
//!
//! ```sh
//! cargo test -p tessera-kernels --release --test approx_error_table -- --ignored --nocapture
//! ```
//!
//! Errors are in ulps of the exact result (`ulp(v) = 2^(floor(log2 |v|) - 23)`, subnormal
//! ulp below `2^-126`), over results whose exact value is a normal f32, and ("abs") in units
//! of `2^-24 max(1, |x|)`; inputs: [-25, 25] in
//! steps of 1/4096 for the activations (x), dy = 1; [-87, 88] in steps of 1/4096 for exp;
//! variances 1e-6 .. 1e6 (log-spaced) for `1 / sqrt(var + eps)`.

use tessera_kernels::activation::{backward_with, forward_with, reference, Activation};
use tessera_kernels::exp::exp_with;
use tessera_kernels::Isa;

fn ulp_f32(v: f64) -> f64 {
    let v = v.abs();
    let e = if v == 0.0 {
        -126
    } else {
        (((v.to_bits() >> 52) & 0x7ff) as i64 - 1023).max(-126)
    };
    2f64.powi(e as i32 - 23)
}

/// The worst error over results with a normal exact value: (max error in ulps, the input
/// where it occurs, max error in units of `2^-24 max(1, |x|)`). The second measure is the
/// one that matters where a result cancels to near zero (a derivative crossing zero, GELU's
/// negative tail), where a tiny absolute error is a huge number of ulps.
fn worst(xs: &[f32], got: &[f32], exact: impl Fn(f64) -> f64) -> (f64, f32, f64) {
    let mut w = (0.0, 0.0f32, 0.0);
    for (&x, &g) in xs.iter().zip(got) {
        let e = exact(x as f64);
        if !e.is_finite() || e.abs() < f32::MIN_POSITIVE as f64 || e.abs() > f32::MAX as f64 {
            continue;
        }
        let d = (g as f64 - e).abs();
        let u = d / ulp_f32(e);
        if u > w.0 || u.is_nan() {
            w = (u, x, w.2);
        }
        w.2 = f64::max(w.2, d / (2f64.powi(-24) * (x as f64).abs().max(1.0)));
    }
    w
}

#[test]
#[ignore = "prints the table of docs/accuracy.md"]
fn approximation_error_table() {
    let xs: Vec<f32> = (-102_400..=102_400).map(|i| i as f32 / 4096.0).collect();
    let ones = vec![1.0f32; xs.len()];
    let ex: Vec<f32> = (-87 * 4096..=88 * 4096)
        .map(|i| i as f32 / 4096.0)
        .collect();
    let isas = Isa::available();
    let names: Vec<&str> = isas.iter().map(|i| i.name()).collect();
    println!("| function | {} |", names.join(" | "));
    println!("|---|{}", "---|".repeat(isas.len()));
    let row = |label: String, cells: Vec<(f64, f32, f64)>| {
        let c: Vec<String> = cells
            .iter()
            .map(|(u, x, a)| format!("{u:.3} ulp (x = {x}); {a:.2} abs"))
            .collect();
        println!("| {label} | {} |", c.join(" | "));
    };
    let cells: Vec<(f64, f32, f64)> = isas
        .iter()
        .map(|&isa| {
            let mut y = vec![0.0f32; ex.len()];
            exp_with(isa, &ex, &mut y).unwrap();
            worst(&ex, &y, f64::exp)
        })
        .collect();
    row("exp (exp::exp)".into(), cells);
    for &act in Activation::ALL {
        if matches!(
            act,
            Activation::Identity | Activation::Relu | Activation::Relu6
        ) {
            continue;
        }
        let fwd: Vec<(f64, f32, f64)> = isas
            .iter()
            .map(|&isa| {
                let mut y = vec![0.0f32; xs.len()];
                forward_with(isa, act, &xs, &mut y).unwrap();
                worst(&xs, &y, |x| reference::forward(act, x))
            })
            .collect();
        row(format!("{} forward", act.name()), fwd);
        let bwd: Vec<(f64, f32, f64)> = isas
            .iter()
            .map(|&isa| {
                let mut dx = vec![0.0f32; xs.len()];
                backward_with(isa, act, &xs, &ones, &mut dx).unwrap();
                worst(&xs, &dx, |x| reference::derivative(act, x))
            })
            .collect();
        row(format!("{} backward (dy = 1)", act.name()), bwd);
    }
    // Batch norm's per-channel 1 / sqrt(var + eps) (scalar f32 on every path).
    let eps = 1e-5f32;
    let vars: Vec<f32> = (0..=120_000)
        .map(|i| 10f32.powf(-6.0 + 12.0 * i as f32 / 120_000.0))
        .collect();
    let got: Vec<f32> = vars.iter().map(|&v| 1.0 / (v + eps).sqrt()).collect();
    let w = worst(&vars, &got, |v| 1.0 / (v + eps as f64).sqrt());
    row("batch norm 1/sqrt(var + eps)".into(), vec![w; isas.len()]);
}
