//! Naive f64 oracles for the normalisation kernels, written straight from the formulas in the
//! `batch` and `layer` module headers (PyTorch's definitions). Test code: lengths are assumed
//! correct. Each returns its outputs as f64 vectors.

/// Per-channel mean and biased variance of `[n, c, hw]`.
pub fn batch_norm_stats(x: &[f32], n: usize, c: usize, hw: usize) -> (Vec<f64>, Vec<f64>) {
    let m = (n * hw) as f64;
    let mut mean = vec![0.0; c];
    let mut var = vec![0.0; c];
    for ch in 0..c {
        let vals = (0..n).flat_map(|i| x[(i * c + ch) * hw..(i * c + ch + 1) * hw].iter());
        mean[ch] = vals.clone().map(|&v| v as f64).sum::<f64>() / m;
        var[ch] = vals.map(|&v| (v as f64 - mean[ch]).powi(2)).sum::<f64>() / m;
    }
    (mean, var)
}

/// `y = (x - mean) / sqrt(var + eps) * gamma + beta`.
#[allow(clippy::too_many_arguments)]
pub fn batch_norm_forward(
    x: &[f32],
    c: usize,
    hw: usize,
    mean: &[f32],
    var: &[f32],
    gamma: Option<&[f32]>,
    beta: Option<&[f32]>,
    eps: f32,
) -> Vec<f64> {
    x.iter()
        .enumerate()
        .map(|(i, &v)| {
            let ch = (i / hw) % c;
            let g = gamma.map_or(1.0, |g| g[ch] as f64);
            let b = beta.map_or(0.0, |b| b[ch] as f64);
            (v as f64 - mean[ch] as f64) / (var[ch] as f64 + eps as f64).sqrt() * g + b
        })
        .collect()
}

/// `(dx, dgamma, dbeta)` of batch norm (training: through the batch statistics).
#[allow(clippy::too_many_arguments)]
pub fn batch_norm_backward(
    x: &[f32],
    dy: &[f32],
    n: usize,
    c: usize,
    hw: usize,
    mean: &[f32],
    var: &[f32],
    gamma: Option<&[f32]>,
    eps: f32,
    training: bool,
) -> (Vec<f64>, Vec<f64>, Vec<f64>) {
    let m = (n * hw) as f64;
    let mut sdy = vec![0.0f64; c];
    let mut dot = vec![0.0f64; c];
    for (i, (&xv, &g)) in x.iter().zip(dy).enumerate() {
        let ch = (i / hw) % c;
        sdy[ch] += g as f64;
        dot[ch] += (xv as f64 - mean[ch] as f64) * g as f64;
    }
    let invstd: Vec<f64> = var
        .iter()
        .map(|&v| 1.0 / (v as f64 + eps as f64).sqrt())
        .collect();
    let dx = x
        .iter()
        .zip(dy)
        .enumerate()
        .map(|(i, (&xv, &g))| {
            let ch = (i / hw) % c;
            let w = gamma.map_or(1.0, |w| w[ch] as f64);
            let is = invstd[ch];
            if training {
                let xc = xv as f64 - mean[ch] as f64;
                (g as f64 - sdy[ch] / m - xc * dot[ch] * is * is / m) * is * w
            } else {
                g as f64 * is * w
            }
        })
        .collect();
    let dgamma = dot.iter().zip(&invstd).map(|(d, is)| d * is).collect();
    (dx, dgamma, sdy)
}

/// `(y, mean, rstd)` of layer norm over rows of length `d`.
pub fn layer_norm_forward(
    x: &[f32],
    rows: usize,
    d: usize,
    gamma: Option<&[f32]>,
    beta: Option<&[f32]>,
    eps: f32,
) -> (Vec<f64>, Vec<f64>, Vec<f64>) {
    let mut y = vec![0.0; rows * d];
    let mut mean = vec![0.0; rows];
    let mut rstd = vec![0.0; rows];
    for r in 0..rows {
        let row = &x[r * d..(r + 1) * d];
        let m = row.iter().map(|&v| v as f64).sum::<f64>() / d as f64;
        let v = row.iter().map(|&v| (v as f64 - m).powi(2)).sum::<f64>() / d as f64;
        let s = 1.0 / (v + eps as f64).sqrt();
        for (j, &xv) in row.iter().enumerate() {
            let g = gamma.map_or(1.0, |g| g[j] as f64);
            let b = beta.map_or(0.0, |b| b[j] as f64);
            y[r * d + j] = (xv as f64 - m) * s * g + b;
        }
        mean[r] = m;
        rstd[r] = s;
    }
    (y, mean, rstd)
}

/// `(dx, dgamma, dbeta)` of layer norm given the saved statistics.
#[allow(clippy::too_many_arguments)]
pub fn layer_norm_backward(
    x: &[f32],
    dy: &[f32],
    rows: usize,
    d: usize,
    gamma: Option<&[f32]>,
    mean: &[f32],
    rstd: &[f32],
) -> (Vec<f64>, Vec<f64>, Vec<f64>) {
    let mut dx = vec![0.0; rows * d];
    let mut dg = vec![0.0; d];
    let mut db = vec![0.0; d];
    for r in 0..rows {
        let (m, s) = (mean[r] as f64, rstd[r] as f64);
        let xhat: Vec<f64> = (0..d).map(|j| (x[r * d + j] as f64 - m) * s).collect();
        let g: Vec<f64> = (0..d)
            .map(|j| dy[r * d + j] as f64 * gamma.map_or(1.0, |w| w[j] as f64))
            .collect();
        let mg = g.iter().sum::<f64>() / d as f64;
        let mgx = g.iter().zip(&xhat).map(|(a, b)| a * b).sum::<f64>() / d as f64;
        for j in 0..d {
            dx[r * d + j] = s * (g[j] - mg - xhat[j] * mgx);
            dg[j] += dy[r * d + j] as f64 * xhat[j];
            db[j] += dy[r * d + j] as f64;
        }
    }
    (dx, dg, db)
}
