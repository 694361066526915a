//! Softmax / log-softmax forward and backward on every ISA path against the f64 oracle, with
//! per-element bounds derived from the algorithm (see `bound_*` below), plus the documented
//! special rows (masked `-inf`, fully masked, NaN, length 1) and thread-count independence.

use proptest::prelude::*;
use tessera_kernels::softmax::{
    log_softmax_backward_with, log_softmax_with, reference, softmax, softmax_backward_with,
    softmax_with,
};
use tessera_kernels::Isa;

const U: f64 = 1.0 / (1u64 << 24) as f64;
const FLUSH: f64 = f32::MIN_POSITIVE as f64;

fn data(n: usize, seed: u32, scale: f32) -> Vec<f32> {
    (0..n)
        .map(|i| {
            let h = (i as u32)
                .wrapping_mul(2_654_435_761)
                .wrapping_add(seed.wrapping_mul(40_503));
            let h = h ^ (h >> 15);
            ((h.wrapping_mul(2_246_822_519) >> 8) as f32 / (1u32 << 24) as f32 * 2.0 - 1.0) * scale
        })
        .collect()
}

fn row_max(row: &[f32]) -> f64 {
    row.iter().fold(f64::NEG_INFINITY, |m, &v| m.max(v as f64))
}

/// Softmax: `y_i` carries the rounding of `x_i - max` (relative `|x_i - max| u` after exp),
/// the exp (1.2 ulp <= 2.4 u), the sum of n terms in lane accumulators (each term's own
/// reduction error weighs `e^-d d <= 0.37`, plus n/W roundings: <= n/2 u together), the
/// reciprocal and the product; results the exp flushes may be off by 2^-126.
fn check_softmax(isa: Isa, x: &[f32], row_len: usize) {
    let mut y = vec![0.0f32; x.len()];
    softmax_with(isa, x, &mut y, row_len).unwrap();
    let want = reference::softmax(x, row_len);
    for (r, row) in x.chunks(row_len).enumerate() {
        let m = row_max(row);
        for (j, &xv) in row.iter().enumerate() {
            let (got, w) = (y[r * row_len + j], want[r * row_len + j]);
            if w.is_nan() {
                assert!(got.is_nan(), "{isa} softmax row {r}[{j}] = {got}, want NaN");
                continue;
            }
            if xv == f32::NEG_INFINITY {
                assert_eq!(got, 0.0, "{isa} softmax row {r}[{j}]: masked entry");
                continue;
            }
            let tol = w * U * ((xv as f64 - m).abs() + 8.0 + row_len as f64 / 2.0) + FLUSH;
            assert!(
                (got as f64 - w).abs() <= tol,
                "{isa} softmax n={row_len} row {r}[{j}] = {got:e}, want {w:e}"
            );
        }
    }
}

/// Log-softmax: `y_i = (x_i - max) - ln S`: two roundings of size `|x_i - max| u` and
/// `|y_i| u`, `ln S` rounded (`|ln S| u`), and the relative error of `S` (as above) which
/// becomes an absolute error of `ln S`.
fn check_log_softmax(isa: Isa, x: &[f32], row_len: usize) {
    let mut y = vec![0.0f32; x.len()];
    log_softmax_with(isa, x, &mut y, row_len).unwrap();
    let want = reference::log_softmax(x, row_len);
    for (r, row) in x.chunks(row_len).enumerate() {
        let m = row_max(row);
        let lse = row.iter().map(|&v| (v as f64 - m).exp()).sum::<f64>().ln();
        for (j, &xv) in row.iter().enumerate() {
            let (got, w) = (y[r * row_len + j], want[r * row_len + j]);
            if w.is_nan() {
                assert!(
                    got.is_nan(),
                    "{isa} log_softmax row {r}[{j}] = {got}, want NaN"
                );
                continue;
            }
            if w == f64::NEG_INFINITY {
                assert_eq!(got, f32::NEG_INFINITY, "{isa} log_softmax row {r}[{j}]");
                continue;
            }
            let tol = U * ((xv as f64 - m).abs() + w.abs() + lse + 8.0 + row_len as f64 / 2.0);
            assert!(
                (got as f64 - w).abs() <= tol,
                "{isa} log_softmax n={row_len} row {r}[{j}] = {got:e}, want {w:e}"
            );
        }
    }
}

/// Softmax backward: `dx_i = y_i (dy_i - s)`, `s = sum dy_j y_j` accumulated with FMA or
/// mul+add in lanes (<= (n/2 + 4) u sum |dy_j y_j|), then a subtraction and a product.
fn check_softmax_backward(isa: Isa, y: &[f32], dy: &[f32], row_len: usize) {
    let mut dx = vec![0.0f32; y.len()];
    softmax_backward_with(isa, y, dy, &mut dx, row_len).unwrap();
    let want = reference::softmax_backward(y, dy, row_len);
    for (r, (yr, dr)) in y.chunks(row_len).zip(dy.chunks(row_len)).enumerate() {
        let s: f64 = yr.iter().zip(dr).map(|(&a, &b)| a as f64 * b as f64).sum();
        let sa: f64 = yr
            .iter()
            .zip(dr)
            .map(|(&a, &b)| (a as f64 * b as f64).abs())
            .sum();
        for j in 0..row_len {
            let (got, w) = (dx[r * row_len + j], want[r * row_len + j]);
            let (a, b) = (yr[j] as f64, dr[j] as f64);
            let tol =
                U * a.abs() * (2.0 * b.abs() + 2.0 * s.abs() + (row_len as f64 / 2.0 + 4.0) * sa)
                    + U * w.abs();
            assert!(
                (got as f64 - w).abs() <= tol,
                "{isa} softmax_backward n={row_len} [{r},{j}] = {got:e}, want {w:e}"
            );
        }
    }
}

/// Log-softmax backward: `dx_i = dy_i - e^(y_i) S`, `S = sum dy`: the exp (2.4 u), the sum
/// (<= (n/2 + 4) u sum |dy|), the product and the subtraction.
fn check_log_softmax_backward(isa: Isa, y: &[f32], dy: &[f32], row_len: usize) {
    let mut dx = vec![0.0f32; y.len()];
    log_softmax_backward_with(isa, y, dy, &mut dx, row_len).unwrap();
    let want = reference::log_softmax_backward(y, dy, row_len);
    for (r, (yr, dr)) in y.chunks(row_len).zip(dy.chunks(row_len)).enumerate() {
        let s: f64 = dr.iter().map(|&b| b as f64).sum();
        let sa: f64 = dr.iter().map(|&b| (b as f64).abs()).sum();
        for j in 0..row_len {
            let (got, w) = (dx[r * row_len + j], want[r * row_len + j]);
            let e = (yr[j] as f64).exp();
            let tol = U
                * (dr[j].abs() as f64
                    + w.abs()
                    + e * (4.0 * s.abs() + (row_len as f64 / 2.0 + 4.0) * sa))
                + FLUSH;
            assert!(
                (got as f64 - w).abs() <= tol,
                "{isa} log_softmax_backward n={row_len} [{r},{j}] = {got:e}, want {w:e}"
            );
        }
    }
}

#[test]
fn every_path_against_the_oracle_for_many_row_lengths() {
    for isa in Isa::available() {
        for (k, &row_len) in [
            1usize, 2, 3, 7, 8, 9, 15, 16, 17, 31, 33, 64, 197, 1000, 1024,
        ]
        .iter()
        .enumerate()
        {
            let rows = 5;
            for scale in [1.0f32, 30.0, 200.0] {
                let x = data(rows * row_len, k as u32 + 1, scale);
                check_softmax(isa, &x, row_len);
                check_log_softmax(isa, &x, row_len);
                let mut y = vec![0.0f32; x.len()];
                softmax_with(isa, &x, &mut y, row_len).unwrap();
                let dy = data(x.len(), 99, 1.0);
                check_softmax_backward(isa, &y, &dy, row_len);
                log_softmax_with(isa, &x, &mut y, row_len).unwrap();
                check_log_softmax_backward(isa, &y, &dy, row_len);
            }
        }
    }
}

#[test]
fn large_offsets_are_stable_and_shift_invariant() {
    let row_len = 197;
    let base = data(3 * row_len, 7, 5.0);
    for isa in Isa::available() {
        let mut y0 = vec![0.0f32; base.len()];
        softmax_with(isa, &base, &mut y0, row_len).unwrap();
        for offset in [1e4f32, -1e4, 3e37, -3e37] {
            let x: Vec<f32> = base.iter().map(|v| v + offset).collect();
            check_softmax(isa, &x, row_len);
            check_log_softmax(isa, &x, row_len);
            let mut y = vec![0.0f32; x.len()];
            softmax_with(isa, &x, &mut y, row_len).unwrap();
            assert!(y.iter().all(|v| v.is_finite()), "{isa} offset {offset}");
        }
    }
}

#[test]
fn masked_and_special_rows() {
    let ninf = f32::NEG_INFINITY;
    // Row 0: partly masked. Row 1: fully masked. Row 2: contains NaN. Row 3: contains +inf.
    // Row 4: ordinary. Length 11 exercises the vector body and the tail.
    let mut x = data(5 * 11, 3, 4.0);
    for j in [0, 3, 4, 10] {
        x[j] = ninf;
    }
    x[11..22].fill(ninf);
    x[22 + 5] = f32::NAN;
    x[33 + 2] = f32::INFINITY;
    for isa in Isa::available() {
        let mut y = vec![0.0f32; x.len()];
        softmax_with(isa, &x, &mut y, 11).unwrap();
        for j in [0, 3, 4, 10] {
            assert_eq!(y[j], 0.0, "{isa}: masked entry {j}");
        }
        let total: f32 = y[..11].iter().sum();
        assert!(
            (total - 1.0).abs() <= 8.0 * f32::EPSILON,
            "{isa}: row 0 sums to {total}"
        );
        for (r, name) in [(1, "fully masked"), (2, "NaN"), (3, "+inf")] {
            assert!(
                y[r * 11..(r + 1) * 11].iter().all(|v| v.is_nan()),
                "{isa}: {name} row {:?}",
                &y[r * 11..(r + 1) * 11]
            );
        }
        assert!(
            y[44..].iter().all(|v| v.is_finite() && *v > 0.0),
            "{isa}: row 4 was disturbed"
        );
        check_softmax(isa, &x, 11);
        let mut l = vec![0.0f32; x.len()];
        log_softmax_with(isa, &x, &mut l, 11).unwrap();
        for j in [0, 3, 4, 10] {
            assert_eq!(l[j], ninf, "{isa}: masked log entry {j}");
        }
        assert!(l[11..22].iter().all(|v| v.is_nan()));
        check_log_softmax(isa, &x, 11);
        // Backward through masked entries: y = 0 gives dx = 0 for softmax.
        let dy = data(x.len(), 5, 1.0);
        let mut dx = vec![1.0f32; x.len()];
        softmax_backward_with(isa, &y[..11], &dy[..11], &mut dx[..11], 11).unwrap();
        for j in [0, 3, 4, 10] {
            assert_eq!(dx[j], 0.0, "{isa}");
        }
        log_softmax_backward_with(isa, &l[..11], &dy[..11], &mut dx[..11], 11).unwrap();
        for j in [0, 3, 4, 10] {
            assert_eq!(dx[j], dy[j], "{isa}: e^-inf = 0, so dx = dy");
        }
    }
}

#[test]
fn rows_of_length_one() {
    let x = [3.0f32, -1e30, 0.0, 7.5];
    for isa in Isa::available() {
        let mut y = [0.0f32; 4];
        softmax_with(isa, &x, &mut y, 1).unwrap();
        assert_eq!(y, [1.0; 4], "{isa}");
        log_softmax_with(isa, &x, &mut y, 1).unwrap();
        assert_eq!(y, [0.0; 4], "{isa}");
    }
}

#[test]
fn bad_shapes_are_errors() {
    let x = [0.0f32; 6];
    let mut y = [0.0f32; 6];
    assert!(softmax(&x, &mut y, 0)
        .unwrap_err()
        .to_string()
        .contains("row_len"));
    assert!(softmax(&x, &mut y, 4)
        .unwrap_err()
        .to_string()
        .contains('4'));
    let mut short = [0.0f32; 5];
    let e = softmax(&x, &mut short, 3).unwrap_err().to_string();
    assert!(e.contains('5') && e.contains('6'), "{e}");
    let mut dx = [0.0f32; 6];
    for isa in Isa::available() {
        assert!(softmax_backward_with(isa, &x, &x[..3], &mut dx, 3).is_err());
        assert!(log_softmax_backward_with(isa, &x, &x, &mut dx, 0).is_err());
        assert!(softmax_with(isa, &[], &mut [], 3).is_ok());
    }
}

#[test]
fn results_do_not_depend_on_the_thread_count() {
    let (rows, row_len) = (300, 197);
    let x = data(rows * row_len, 11, 8.0);
    let dy = data(rows * row_len, 12, 1.0);
    let run = |threads: usize, isa: Isa| {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap();
        pool.install(|| {
            let mut y = vec![0.0f32; x.len()];
            let mut l = vec![0.0f32; x.len()];
            let mut d1 = vec![0.0f32; x.len()];
            let mut d2 = vec![0.0f32; x.len()];
            softmax_with(isa, &x, &mut y, row_len).unwrap();
            log_softmax_with(isa, &x, &mut l, row_len).unwrap();
            softmax_backward_with(isa, &y, &dy, &mut d1, row_len).unwrap();
            log_softmax_backward_with(isa, &l, &dy, &mut d2, row_len).unwrap();
            [y, l, d1, d2].map(|v| v.into_iter().map(f32::to_bits).collect::<Vec<_>>())
        })
    };
    for isa in Isa::available() {
        assert!(run(1, isa) == run(3, isa), "{isa}");
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn random_shapes(rows in 1usize..6, row_len in 1usize..80, seed in any::<u32>(), scale in 0.1f32..60.0) {
        let x = data(rows * row_len, seed, scale);
        let dy = data(rows * row_len, seed ^ 0xdead, 1.0);
        for isa in Isa::available() {
            check_softmax(isa, &x, row_len);
            check_log_softmax(isa, &x, row_len);
            let mut y = vec![0.0f32; x.len()];
            softmax_with(isa, &x, &mut y, row_len).unwrap();
            check_softmax_backward(isa, &y, &dy, row_len);
            log_softmax_with(isa, &x, &mut y, row_len).unwrap();
            check_log_softmax_backward(isa, &y, &dy, row_len);
        }
    }
}
