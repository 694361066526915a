//! The f64 oracle of the fused attention core: the textbook formulas of
//! [`super`] evaluated per (image, head) with naive loops and f64 accumulation, recomputing
//! everything from `qkv` (the backward does not trust the forward's probabilities), so the
//! tests check the fused kernels against an independent computation.

use super::AttentionShape;

/// Element `(t, c)` of part `part` (0 = q, 1 = k, 2 = v) of head `hh` of image `b`.
fn at(
    s: &AttentionShape,
    qkv: &[f32],
    b: usize,
    part: usize,
    hh: usize,
    t: usize,
    c: usize,
) -> f64 {
    let dim = s.dim();
    qkv[(b * s.tokens + t) * 3 * dim + part * dim + hh * s.head_dim + c] as f64
}

/// The probabilities `[L, L]` of (image `b`, head `hh`) in f64.
fn probs_of(s: &AttentionShape, scale: f32, qkv: &[f32], b: usize, hh: usize) -> Vec<f64> {
    let (l, d) = (s.tokens, s.head_dim);
    let mut p = vec![0.0f64; l * l];
    for i in 0..l {
        let row = &mut p[i * l..(i + 1) * l];
        for (j, r) in row.iter_mut().enumerate() {
            let dot: f64 = (0..d)
                .map(|c| at(s, qkv, b, 0, hh, i, c) * at(s, qkv, b, 1, hh, j, c))
                .sum();
            *r = scale as f64 * dot;
        }
        let max = row.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        row.iter_mut().for_each(|v| *v = (*v - max).exp());
        let sum: f64 = row.iter().sum();
        row.iter_mut().for_each(|v| *v /= sum);
    }
    p
}

/// Forward in f64: `(out [n, L, D], probs [n, h, L, L])`.
pub fn forward(s: &AttentionShape, scale: f32, qkv: &[f32]) -> (Vec<f64>, Vec<f64>) {
    let (n, l, h, d) = (s.batch, s.tokens, s.heads, s.head_dim);
    let dim = s.dim();
    let mut out = vec![0.0f64; n * l * dim];
    let mut probs = Vec::with_capacity(n * h * l * l);
    for b in 0..n {
        for hh in 0..h {
            let p = probs_of(s, scale, qkv, b, hh);
            for i in 0..l {
                for c in 0..d {
                    out[(b * l + i) * dim + hh * d + c] = (0..l)
                        .map(|j| p[i * l + j] * at(s, qkv, b, 2, hh, j, c))
                        .sum();
                }
            }
            probs.extend(p);
        }
    }
    (out, probs)
}

/// Backward in f64: `dqkv [n, L, 3D]` for the output gradient `dout [n, L, D]`.
pub fn backward(s: &AttentionShape, scale: f32, qkv: &[f32], dout: &[f32]) -> Vec<f64> {
    let (n, l, h, d) = (s.batch, s.tokens, s.heads, s.head_dim);
    let dim = s.dim();
    let sc = scale as f64;
    let mut dqkv = vec![0.0f64; n * l * 3 * dim];
    let g = |b: usize, hh: usize, t: usize, c: usize| dout[(b * l + t) * dim + hh * d + c] as f64;
    for b in 0..n {
        for hh in 0..h {
            let p = probs_of(s, scale, qkv, b, hh);
            // dP = dO V^T, then dS = P (dP - rowsum(dP P)).
            let mut ds = vec![0.0f64; l * l];
            for i in 0..l {
                for j in 0..l {
                    ds[i * l + j] = (0..d)
                        .map(|c| g(b, hh, i, c) * at(s, qkv, b, 2, hh, j, c))
                        .sum();
                }
                let dot: f64 = (0..l).map(|j| ds[i * l + j] * p[i * l + j]).sum();
                for j in 0..l {
                    ds[i * l + j] = p[i * l + j] * (ds[i * l + j] - dot);
                }
            }
            for t in 0..l {
                let row = (b * l + t) * 3 * dim + hh * d;
                for c in 0..d {
                    // dQ = scale dS K, dK = scale dS^T Q, dV = P^T dO.
                    dqkv[row + c] = sc
                        * (0..l)
                            .map(|j| ds[t * l + j] * at(s, qkv, b, 1, hh, j, c))
                            .sum::<f64>();
                    dqkv[row + dim + c] = sc
                        * (0..l)
                            .map(|i| ds[i * l + t] * at(s, qkv, b, 0, hh, i, c))
                            .sum::<f64>();
                    dqkv[row + 2 * dim + c] = (0..l).map(|i| p[i * l + t] * g(b, hh, i, c)).sum();
                }
            }
        }
    }
    dqkv
}
