//! Batch norm and layer norm against the f64 oracles (proptest over shapes), the oracles'
//! backward formulas against central finite differences of their forward, and the errors.

use proptest::prelude::*;
use tessera_kernels::norm::{self, reference};

mod common;
use common::data;

/// `|got - want| <= tol * (1 + |want|)` element-wise.
fn close(what: &str, got: &[f32], want: &[f64], tol: f64) {
    assert_eq!(got.len(), want.len(), "{what}");
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        assert!(
            (g as f64 - w).abs() <= tol * (1.0 + w.abs()),
            "{what}[{i}]: {g} vs {w}"
        );
    }
}

fn to32(v: &[f64]) -> Vec<f32> {
    v.iter().map(|&x| x as f32).collect()
}

/// Tolerance for f32 work whose reductions sum `terms` values: sqrt-free, worst-case style
/// `(terms + 16) eps`, with inputs O(1) and outputs normalised to O(1).
fn tol(terms: usize) -> f64 {
    (terms as f64 + 16.0) * f32::EPSILON as f64
}

fn bn_case(n: usize, c: usize, hw: usize, affine: bool, training: bool, seed: u64) {
    let x: Vec<f32> = data(n * c * hw, seed)
        .iter()
        .map(|v| v * 3.0 + 0.5)
        .collect();
    let dy = data(n * c * hw, seed + 1);
    let gamma = affine.then(|| data(c, seed + 2));
    let beta = affine.then(|| data(c, seed + 3));
    let eps = 1e-5;
    let (mut mean, mut var) = (vec![0.0; c], vec![0.0; c]);
    norm::batch_norm_stats(&x, n, c, hw, &mut mean, &mut var).unwrap();
    let (rm, rv) = reference::batch_norm_stats(&x, n, c, hw);
    close("mean", &mean, &rm, tol(n * hw));
    close("var", &var, &rv, tol(n * hw) * 4.0);
    let mut y = vec![f32::NAN; x.len()];
    norm::batch_norm_forward(
        &x,
        n,
        c,
        hw,
        &mean,
        &var,
        gamma.as_deref(),
        beta.as_deref(),
        eps,
        &mut y,
    )
    .unwrap();
    let ry = reference::batch_norm_forward(
        &x,
        c,
        hw,
        &mean,
        &var,
        gamma.as_deref(),
        beta.as_deref(),
        eps,
    );
    close("y", &y, &ry, tol(8));
    let mut dx = vec![f32::NAN; x.len()];
    let (mut dg, mut db) = (vec![f32::NAN; c], vec![f32::NAN; c]);
    norm::batch_norm_backward(
        &x,
        &dy,
        n,
        c,
        hw,
        &mean,
        &var,
        gamma.as_deref(),
        eps,
        training,
        &mut dx,
        Some(&mut dg),
        Some(&mut db),
    )
    .unwrap();
    let (rdx, rdg, rdb) = reference::batch_norm_backward(
        &x,
        &dy,
        n,
        c,
        hw,
        &mean,
        &var,
        gamma.as_deref(),
        eps,
        training,
    );
    // dgamma/dbeta are sums of m O(1) terms whose size is ~sqrt(m): the bound relative to
    // (1 + |want|) scales by sqrt(m); dx combines those sums divided by m.
    let m = (n * hw) as f64;
    close("dx", &dx, &rdx, tol(n * hw));
    close("dgamma", &dg, &rdg, tol(n * hw) * m.sqrt());
    close("dbeta", &db, &rdb, tol(n * hw) * m.sqrt());
}

fn ln_case(rows: usize, d: usize, affine: bool, seed: u64) {
    let x: Vec<f32> = data(rows * d, seed).iter().map(|v| v * 2.0 - 0.3).collect();
    let dy = data(rows * d, seed + 1);
    let gamma = affine.then(|| data(d, seed + 2));
    let beta = affine.then(|| data(d, seed + 3));
    let (mut y, mut mean, mut rstd) = (vec![f32::NAN; x.len()], vec![0.0; rows], vec![0.0; rows]);
    norm::layer_norm_forward(
        &x,
        rows,
        d,
        gamma.as_deref(),
        beta.as_deref(),
        1e-5,
        &mut y,
        &mut mean,
        &mut rstd,
    )
    .unwrap();
    let (ry, rm, rr) =
        reference::layer_norm_forward(&x, rows, d, gamma.as_deref(), beta.as_deref(), 1e-5);
    close("y", &y, &ry, tol(d));
    close("mean", &mean, &rm, tol(d));
    close("rstd", &rstd, &rr, tol(d));
    let mut dx = vec![f32::NAN; x.len()];
    let (mut dg, mut db) = (vec![f32::NAN; d], vec![f32::NAN; d]);
    norm::layer_norm_backward(
        &x,
        &dy,
        rows,
        d,
        gamma.as_deref(),
        &mean,
        &rstd,
        &mut dx,
        Some(&mut dg),
        Some(&mut db),
    )
    .unwrap();
    let (rdx, rdg, rdb) =
        reference::layer_norm_backward(&x, &dy, rows, d, gamma.as_deref(), &mean, &rstd);
    close("dx", &dx, &rdx, tol(d) * 4.0);
    close("dgamma", &dg, &rdg, tol(rows) * 4.0);
    close("dbeta", &db, &rdb, tol(rows));
}

/// One value per channel in training: every input gradient is exactly zero (x is its own
/// mean, g its own mean), which the kernel must return as zero rather than as the difference
/// of two products of size g / sqrt(eps) rounded apart (proptest found it: 3.8e-6 vs 0).
#[test]
fn batch_norm_of_one_value_per_channel_has_zero_input_gradient() {
    for seed in [37, 58, 1, 2] {
        bn_case(1, 3, 1, true, true, seed);
        bn_case(1, 3, 1, false, true, seed);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]
    #[test]
    fn batch_norm_matches_oracle(n in 1usize..4, c in 1usize..6, hw in 1usize..70, affine: bool, training: bool, seed in 0u64..500) {
        bn_case(n, c, hw, affine, training, seed);
    }

    #[test]
    fn layer_norm_matches_oracle(rows in 1usize..6, d in 1usize..150, affine: bool, seed in 0u64..500) {
        ln_case(rows, d, affine, seed);
    }
}

/// The layer-norm forward of every ISA path this host has against the f64 oracle: widths
/// below, at and between vector multiples (ragged tails), each combination of gamma / beta,
/// rows far from zero (the two-pass variance), and a large case that runs in parallel.
#[test]
fn layer_norm_forward_of_every_isa_matches_the_oracle() {
    use tessera_kernels::isa::Isa;
    for isa in Isa::available() {
        for (rows, d) in [
            (3, 1),
            (2, 7),
            (4, 16),
            (3, 17),
            (2, 33),
            (5, 64),
            (2, 100),
            (300, 768),
        ] {
            for (k, (g, b)) in [(true, true), (true, false), (false, true), (false, false)]
                .into_iter()
                .enumerate()
            {
                let seed = (rows * 1000 + d * 10 + k) as u64;
                let x: Vec<f32> = data(rows * d, seed)
                    .iter()
                    .map(|v| v * 2.0 + 40.0)
                    .collect();
                let gamma = g.then(|| data(d, seed + 1));
                let beta = b.then(|| data(d, seed + 2));
                let mut y = vec![f32::NAN; x.len()];
                let (mut mean, mut rstd) = (vec![0.0; rows], vec![0.0; rows]);
                norm::layer_norm_forward_with(
                    isa,
                    &x,
                    rows,
                    d,
                    gamma.as_deref(),
                    beta.as_deref(),
                    1e-5,
                    &mut y,
                    &mut mean,
                    &mut rstd,
                )
                .unwrap();
                let (ry, rm, rr) = reference::layer_norm_forward(
                    &x,
                    rows,
                    d,
                    gamma.as_deref(),
                    beta.as_deref(),
                    1e-5,
                );
                // Inputs about 40 with unit spread: the centred values lose log2(40) bits.
                let t = tol(d) * 64.0;
                close(&format!("{isa:?} y {rows}x{d} {g} {b}"), &y, &ry, t);
                close(&format!("{isa:?} mean {rows}x{d}"), &mean, &rm, tol(d));
                close(&format!("{isa:?} rstd {rows}x{d}"), &rstd, &rr, t);
            }
        }
    }
}

#[test]
fn large_inputs_take_the_parallel_paths() {
    bn_case(4, 16, 56 * 56, true, true, 3);
    ln_case(300, 768, true, 4);
}

/// A scalar loss `sum(y * r)` of batch norm in training mode (stats from the batch), in f64.
fn bn_loss(
    x: &[f64],
    n: usize,
    c: usize,
    hw: usize,
    gamma: &[f64],
    beta: &[f64],
    r: &[f32],
) -> f64 {
    let m = (n * hw) as f64;
    let mut loss = 0.0;
    for ch in 0..c {
        let idx: Vec<usize> = (0..n)
            .flat_map(|i| (0..hw).map(move |j| (i * c + ch) * hw + j))
            .collect();
        let mu = idx.iter().map(|&i| x[i]).sum::<f64>() / m;
        let var = idx.iter().map(|&i| (x[i] - mu).powi(2)).sum::<f64>() / m;
        for &i in &idx {
            loss += ((x[i] - mu) / (var + 1e-5).sqrt() * gamma[ch] + beta[ch]) * r[i] as f64;
        }
    }
    loss
}

#[test]
fn batch_norm_backward_is_the_derivative() {
    let (n, c, hw) = (3, 2, 5);
    let x = data(n * c * hw, 11);
    let r = data(n * c * hw, 12);
    let g = data(c, 13);
    let g64: Vec<f64> = g.iter().map(|&v| v as f64).collect();
    let b64 = vec![0.25; c];
    let (rm, rv) = reference::batch_norm_stats(&x, n, c, hw);
    let (dx, dg, _) = reference::batch_norm_backward(
        &x,
        &r,
        n,
        c,
        hw,
        &to32(&rm),
        &to32(&rv),
        Some(&g),
        1e-5,
        true,
    );
    let x64: Vec<f64> = x.iter().map(|&v| v as f64).collect();
    let h = 1e-6;
    for i in 0..x.len() {
        let (mut xp, mut xm) = (x64.clone(), x64.clone());
        xp[i] += h;
        xm[i] -= h;
        let fd = (bn_loss(&xp, n, c, hw, &g64, &b64, &r) - bn_loss(&xm, n, c, hw, &g64, &b64, &r))
            / (2.0 * h);
        // mean/var were rounded to f32 for the analytic side: ~1e-7 relative.
        assert!(
            (fd - dx[i]).abs() <= 1e-5 * (1.0 + fd.abs()),
            "dx[{i}]: fd {fd} vs {}",
            dx[i]
        );
    }
    for ch in 0..c {
        let (mut gp, mut gm) = (g64.clone(), g64.clone());
        gp[ch] += h;
        gm[ch] -= h;
        let fd = (bn_loss(&x64, n, c, hw, &gp, &b64, &r) - bn_loss(&x64, n, c, hw, &gm, &b64, &r))
            / (2.0 * h);
        assert!(
            (fd - dg[ch]).abs() <= 1e-5 * (1.0 + fd.abs()),
            "dgamma[{ch}]: fd {fd} vs {}",
            dg[ch]
        );
    }
}

fn ln_loss(x: &[f64], rows: usize, d: usize, gamma: &[f64], r: &[f32]) -> f64 {
    let mut loss = 0.0;
    for row in 0..rows {
        let v = &x[row * d..(row + 1) * d];
        let mu = v.iter().sum::<f64>() / d as f64;
        let var = v.iter().map(|a| (a - mu).powi(2)).sum::<f64>() / d as f64;
        for j in 0..d {
            loss += (v[j] - mu) / (var + 1e-5).sqrt() * gamma[j] * r[row * d + j] as f64;
        }
    }
    loss
}

#[test]
fn layer_norm_backward_is_the_derivative() {
    let (rows, d) = (3, 7);
    let x = data(rows * d, 21);
    let r = data(rows * d, 22);
    let g = data(d, 23);
    let g64: Vec<f64> = g.iter().map(|&v| v as f64).collect();
    let (_, rm, rr) = reference::layer_norm_forward(&x, rows, d, Some(&g), None, 1e-5);
    let (dx, dg, _) =
        reference::layer_norm_backward(&x, &r, rows, d, Some(&g), &to32(&rm), &to32(&rr));
    let x64: Vec<f64> = x.iter().map(|&v| v as f64).collect();
    let h = 1e-6;
    for i in 0..x.len() {
        let (mut xp, mut xm) = (x64.clone(), x64.clone());
        xp[i] += h;
        xm[i] -= h;
        let fd = (ln_loss(&xp, rows, d, &g64, &r) - ln_loss(&xm, rows, d, &g64, &r)) / (2.0 * h);
        assert!(
            (fd - dx[i]).abs() <= 1e-5 * (1.0 + fd.abs()),
            "dx[{i}]: fd {fd} vs {}",
            dx[i]
        );
    }
    for j in 0..d {
        let (mut gp, mut gm) = (g64.clone(), g64.clone());
        gp[j] += h;
        gm[j] -= h;
        let fd = (ln_loss(&x64, rows, d, &gp, &r) - ln_loss(&x64, rows, d, &gm, &r)) / (2.0 * h);
        assert!(
            (fd - dg[j]).abs() <= 1e-5 * (1.0 + fd.abs()),
            "dgamma[{j}]: fd {fd} vs {}",
            dg[j]
        );
    }
}

#[test]
fn eval_mode_backward_is_a_per_channel_scale() {
    let (n, c, hw) = (2, 3, 4);
    let x = data(n * c * hw, 31);
    let dy = data(n * c * hw, 32);
    let (mean, var) = ([0.1, -0.2, 0.3], [0.5, 2.0, 1.5]);
    let mut dx = vec![0.0; x.len()];
    norm::batch_norm_backward(
        &x, &dy, n, c, hw, &mean, &var, None, 0.0, false, &mut dx, None, None,
    )
    .unwrap();
    for (i, (&g, &d)) in dy.iter().zip(&dx).enumerate() {
        let want = g / var[(i / hw) % c].sqrt();
        assert!(
            (d - want).abs() <= 2.0 * f32::EPSILON * want.abs(),
            "{d} vs {want}"
        );
    }
}

#[test]
fn errors_name_the_op_and_shape() {
    let x = vec![0.0; 24];
    let (mut m, mut v) = (vec![0.0; 3], vec![0.0; 2]);
    let e = norm::batch_norm_stats(&x, 2, 3, 4, &mut m, &mut v)
        .unwrap_err()
        .to_string();
    assert!(
        e.starts_with("batch_norm_stats:") && e.contains("[2, 3, 4]") && e.contains("var has 2"),
        "{e}"
    );
    let e = norm::batch_norm_stats(&[], 0, 3, 4, &mut m, &mut [0.0; 3])
        .unwrap_err()
        .to_string();
    assert!(e.contains("no values"), "{e}");
    let mut y = vec![0.0; 24];
    let e = norm::batch_norm_forward(&x, 2, 3, 4, &m, &m, Some(&[1.0; 2]), None, 1e-5, &mut y)
        .unwrap_err()
        .to_string();
    assert!(
        e.starts_with("batch_norm_forward:") && e.contains("gamma has 2"),
        "{e}"
    );
    let e = norm::batch_norm_forward(&x, 2, 3, 4, &m, &m, None, None, f32::NAN, &mut y)
        .unwrap_err()
        .to_string();
    assert!(e.contains("eps"), "{e}");
    let e = norm::batch_norm_backward(
        &x,
        &x[1..],
        2,
        3,
        4,
        &m,
        &m,
        None,
        1e-5,
        true,
        &mut y,
        None,
        None,
    )
    .unwrap_err()
    .to_string();
    assert!(
        e.starts_with("batch_norm_backward:") && e.contains("dy has 23"),
        "{e}"
    );
    let (mut lm, mut lr) = (vec![0.0; 4], vec![0.0; 4]);
    let e = norm::layer_norm_forward(
        &x,
        4,
        6,
        None,
        Some(&[0.0; 5]),
        1e-5,
        &mut y,
        &mut lm,
        &mut lr,
    )
    .unwrap_err()
    .to_string();
    assert!(
        e.starts_with("layer_norm_forward:") && e.contains("[4, 6]") && e.contains("beta has 5"),
        "{e}"
    );
    let e = norm::layer_norm_backward(&x, &x, 4, 6, None, &lm, &lr[..3], &mut y, None, None)
        .unwrap_err()
        .to_string();
    assert!(
        e.starts_with("layer_norm_backward:") && e.contains("rstd has 3"),
        "{e}"
    );
}

#[test]
fn results_do_not_depend_on_the_thread_count() {
    let (n, c, hw) = (4, 24, 40 * 40);
    let x = data(n * c * hw, 41);
    let dy = data(n * c * hw, 42);
    let g = data(c, 43);
    let (rows, d) = (512, 384);
    let xl = data(rows * d, 44);
    let dyl = data(rows * d, 45);
    let gl = data(d, 46);
    let run = |threads: usize| {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap();
        pool.install(|| {
            let (mut mean, mut var) = (vec![0.0; c], vec![0.0; c]);
            norm::batch_norm_stats(&x, n, c, hw, &mut mean, &mut var).unwrap();
            let mut y = vec![0.0; x.len()];
            norm::batch_norm_forward(&x, n, c, hw, &mean, &var, Some(&g), None, 1e-5, &mut y)
                .unwrap();
            let (mut dx, mut dg, mut db) = (vec![0.0; x.len()], vec![0.0; c], vec![0.0; c]);
            norm::batch_norm_backward(
                &x,
                &dy,
                n,
                c,
                hw,
                &mean,
                &var,
                Some(&g),
                1e-5,
                true,
                &mut dx,
                Some(&mut dg),
                Some(&mut db),
            )
            .unwrap();
            let (mut yl, mut ml, mut rl) = (vec![0.0; xl.len()], vec![0.0; rows], vec![0.0; rows]);
            norm::layer_norm_forward(
                &xl,
                rows,
                d,
                Some(&gl),
                None,
                1e-5,
                &mut yl,
                &mut ml,
                &mut rl,
            )
            .unwrap();
            let (mut dxl, mut dgl, mut dbl) = (vec![0.0; xl.len()], vec![0.0; d], vec![0.0; d]);
            norm::layer_norm_backward(
                &xl,
                &dyl,
                rows,
                d,
                Some(&gl),
                &ml,
                &rl,
                &mut dxl,
                Some(&mut dgl),
                Some(&mut dbl),
            )
            .unwrap();
            [mean, var, y, dx, dg, db, yl, dxl, dgl, dbl]
                .map(|v| v.iter().map(|f| f.to_bits()).collect::<Vec<u32>>())
        })
    };
    assert_eq!(run(1), run(3));
}
