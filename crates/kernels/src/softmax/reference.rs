//! The f64 oracle of softmax and log-softmax (naive three-pass per row, `f64::exp`,
//! compensation-free f64 sums, far more accurate than f32), and the per-element error bounds
//! the tests check every path against.

/// Softmax of each row in f64. Fully `-inf` rows and rows with NaN or `+inf` give NaN.
pub fn softmax(x: &[f32], row_len: usize) -> Vec<f64> {
    let mut out = Vec::with_capacity(x.len());
    for row in x.chunks_exact(row_len) {
        let max = row.iter().fold(f64::NEG_INFINITY, |m, &v| m.max(v as f64));
        let bad = max == f64::NEG_INFINITY || row.iter().any(|v| v.is_nan());
        let e: Vec<f64> = row.iter().map(|&v| (v as f64 - max).exp()).collect();
        let s: f64 = e.iter().sum();
        out.extend(e.iter().map(|v| if bad { f64::NAN } else { v / s }));
    }
    out
}

/// Log-softmax of each row in f64, with the same special rows as [`softmax`].
pub fn log_softmax(x: &[f32], row_len: usize) -> Vec<f64> {
    let mut out = Vec::with_capacity(x.len());
    for row in x.chunks_exact(row_len) {
        let max = row.iter().fold(f64::NEG_INFINITY, |m, &v| m.max(v as f64));
        let bad = max == f64::NEG_INFINITY || row.iter().any(|v| v.is_nan());
        let s: f64 = row.iter().map(|&v| (v as f64 - max).exp()).sum();
        let l = s.ln();
        out.extend(
            row.iter()
                .map(|&v| if bad { f64::NAN } else { (v as f64 - max) - l }),
        );
    }
    out
}

/// Softmax backward in f64: `dx = y (dy - sum(dy y))`.
pub fn softmax_backward(y: &[f32], dy: &[f32], row_len: usize) -> Vec<f64> {
    let mut out = Vec::with_capacity(y.len());
    for (yr, dr) in y.chunks_exact(row_len).zip(dy.chunks_exact(row_len)) {
        let s: f64 = yr.iter().zip(dr).map(|(&a, &b)| a as f64 * b as f64).sum();
        out.extend(yr.iter().zip(dr).map(|(&a, &b)| a as f64 * (b as f64 - s)));
    }
    out
}

/// Log-softmax backward in f64: `dx = dy - e^y sum(dy)`.
pub fn log_softmax_backward(y: &[f32], dy: &[f32], row_len: usize) -> Vec<f64> {
    let mut out = Vec::with_capacity(y.len());
    for (yr, dr) in y.chunks_exact(row_len).zip(dy.chunks_exact(row_len)) {
        let s: f64 = dr.iter().map(|&b| b as f64).sum();
        out.extend(
            yr.iter()
                .zip(dr)
                .map(|(&a, &b)| b as f64 - (a as f64).exp() * s),
        );
    }
    out
}
