//! Batch normalisation over `[n, c, hw]` (Ioffe & Szegedy, "Batch Normalization", ICML 2015),
//! following PyTorch's CPU kernels (`aten/src/ATen/native/Normalization.cpp`):
//!
//! ```text
//! stats:    mean_c = E[x],  var_c = E[(x - mean_c)^2]            (biased; two passes)
//! forward:  y = x * a_c + b_c,  a_c = gamma_c / sqrt(var_c + eps),  b_c = beta_c - mean_c * a_c
//! backward: invstd = 1 / sqrt(var + eps),  sdy = sum dy,  dot = sum (x - mean) dy     (per c)
//!           training: dx = (dy - sdy / M - (x - mean) * dot * invstd^2 / M) * invstd * gamma
//!           eval:     dx = dy * invstd * gamma
//!           dgamma = dot * invstd,  dbeta = sdy                                      (M = n*hw)
//! ```
//! Per-channel reductions accumulate plane sums (eight f32 partials each) into f64 in image
//! order, parallel over channels; element-wise passes are parallel over planes.

use super::{check_eps, check_len, check_opt, checked_len, sum_and_dot, sum_and_sq, PAR_MIN};
use crate::activation::Activation;
use crate::error::KernelError;
use crate::isa::Isa;
use rayon::prelude::*;

pub(super) fn shape(n: usize, c: usize, hw: usize) -> impl Fn() -> String {
    move || format!("x [{n}, {c}, {hw}] (n, c, h*w)")
}

/// Per-channel `(sum_plane f(plane_of_a, plane_of_b))` reductions in f64, image order.
pub(super) fn per_channel<F>(n: usize, c: usize, hw: usize, out: &mut [(f64, f64)], f: F)
where
    F: Fn(usize, usize) -> (f32, f32) + Sync,
{
    let body = |ch: usize, o: &mut (f64, f64)| {
        let mut acc = (0.0f64, 0.0f64);
        for img in 0..n {
            let (a, b) = f(img * c + ch, hw);
            acc.0 += a as f64;
            acc.1 += b as f64;
        }
        *o = acc;
    };
    if n * c * hw >= PAR_MIN {
        out.par_iter_mut()
            .enumerate()
            .for_each(|(ch, o)| body(ch, o));
    } else {
        out.iter_mut().enumerate().for_each(|(ch, o)| body(ch, o));
    }
}

/// Applies `y[plane] = g(channel, x[plane], ...)` plane by plane, in parallel for large inputs.
pub(super) fn per_plane<F>(y: &mut [f32], c: usize, hw: usize, f: F)
where
    F: Fn(usize, usize, &mut [f32]) + Sync,
{
    if hw == 0 {
        return;
    }
    if y.len() >= PAR_MIN {
        y.par_chunks_mut(hw)
            .enumerate()
            .for_each(|(p, out)| f(p, p % c, out));
    } else {
        y.chunks_mut(hw)
            .enumerate()
            .for_each(|(p, out)| f(p, p % c, out));
    }
}

/// Per-channel batch mean and biased variance of `x` (`[n, c, hw]`) into `mean`, `var` (`[c]`).
///
/// Errors: wrong lengths, or an empty reduction (`n * hw == 0`).
pub fn batch_norm_stats(
    x: &[f32],
    n: usize,
    c: usize,
    hw: usize,
    mean: &mut [f32],
    var: &mut [f32],
) -> Result<(), KernelError> {
    stats("batch_norm_stats", x, n, c, hw, mean, var, None).map(|_| ())
}

/// Sums per-channel values over the parts of a batch split across processes (synchronised
/// batch norm): replaces every value with its sum over all parts. Every part calls it the same
/// number of times with the same lengths.
pub type Reduce<'a> = &'a mut dyn FnMut(&mut [f64]);

/// [`batch_norm_stats`] of a batch split into parts (`x` is this part, `[n, c, hw]`): mean and
/// biased variance over all parts, the same on every part; returns the number of values per
/// channel over all parts. `reduce` is called twice: with the `c` per-channel sums of `x`
/// followed by this part's count `n * hw`, then with the `c` sums of squared deviations from
/// the global mean.
///
/// The per-channel sums are those of [`batch_norm_stats`] (f32 plane sums added in f64 in
/// image order), so when the parts are consecutive images of the whole batch the statistics
/// are bit for bit those of the whole batch on one process whenever the f64 additions are
/// exact, which they are unless the plane sums of a channel span more than ~29 binary orders
/// of magnitude; otherwise they differ in the last bit of an f64 before rounding to f32.
///
/// Errors: wrong lengths, or no values per channel over all parts.
#[allow(clippy::too_many_arguments)]
pub fn batch_norm_stats_reduced(
    x: &[f32],
    n: usize,
    c: usize,
    hw: usize,
    mean: &mut [f32],
    var: &mut [f32],
    reduce: Reduce<'_>,
) -> Result<usize, KernelError> {
    stats(
        "batch_norm_stats_reduced",
        x,
        n,
        c,
        hw,
        mean,
        var,
        Some(reduce),
    )
}

#[allow(clippy::too_many_arguments)]
fn stats(
    op: &'static str,
    x: &[f32],
    n: usize,
    c: usize,
    hw: usize,
    mean: &mut [f32],
    var: &mut [f32],
    mut reduce: Option<Reduce<'_>>,
) -> Result<usize, KernelError> {
    let sh = shape(n, c, hw);
    check_len(op, &sh, "x", x.len(), checked_len(op, &sh, &[n, c, hw])?)?;
    check_len(op, &sh, "mean", mean.len(), c)?;
    check_len(op, &sh, "var", var.len(), c)?;
    let mut sums = vec![(0.0f64, 0.0f64); c];
    per_channel(n, c, hw, &mut sums, |p, hw| {
        (super::sum_and_sq(&x[p * hw..(p + 1) * hw], 0.0).0, 0.0)
    });
    let mut count = n * hw;
    if let Some(r) = reduce.as_deref_mut() {
        let mut flat: Vec<f64> = sums.iter().map(|s| s.0).collect();
        flat.push(count as f64);
        r(&mut flat);
        count = flat[c] as usize;
        for (s, v) in sums.iter_mut().zip(&flat) {
            s.0 = *v;
        }
    }
    if count == 0 {
        return Err(KernelError::invalid(
            op,
            format!("{}: no values per channel to average", sh()),
        ));
    }
    let m = count as f64;
    for (mu, s) in mean.iter_mut().zip(&sums) {
        *mu = (s.0 / m) as f32;
    }
    let means: &[f32] = mean;
    per_channel(n, c, hw, &mut sums, |p, hw| {
        (0.0, sum_and_sq(&x[p * hw..(p + 1) * hw], means[p % c]).1)
    });
    if let Some(r) = reduce {
        let mut flat: Vec<f64> = sums.iter().map(|s| s.1).collect();
        r(&mut flat);
        for (s, v) in sums.iter_mut().zip(&flat) {
            s.1 = *v;
        }
    }
    for (v, s) in var.iter_mut().zip(&sums) {
        *v = (s.1 / m) as f32;
    }
    Ok(count)
}

/// `y = (x - mean) / sqrt(var + eps) * gamma + beta` per channel (`gamma` defaults to 1, `beta`
/// to 0); `x`, `y` are `[n, c, hw]`, the rest `[c]`.
#[allow(clippy::too_many_arguments)]
pub fn batch_norm_forward(
    x: &[f32],
    n: usize,
    c: usize,
    hw: usize,
    mean: &[f32],
    var: &[f32],
    gamma: Option<&[f32]>,
    beta: Option<&[f32]>,
    eps: f32,
    y: &mut [f32],
) -> Result<(), KernelError> {
    // y = (x - mean) * a + beta with a = gamma / sqrt(var + eps). Centring first (rather than
    // folding the mean into the shift, x * a + (beta - mean * a)) keeps the result accurate
    // when a is large (a tiny variance): no cancellation between two large terms. The same
    // code as the fused batch norm + activation, with the identity (no ISA-specific step).
    super::batch_act::forward_checked(
        "batch_norm_forward",
        Isa::Scalar,
        x,
        (n, c, hw),
        mean,
        var,
        gamma,
        beta,
        eps,
        Activation::Identity,
        y,
    )
}

/// The gradients of [`batch_norm_forward`]: `dx` (overwritten), and `dgamma`, `dbeta` (`[c]`,
/// overwritten) when given.
///
/// With `training == true`, `mean` / `var` are this batch's statistics (from
/// [`batch_norm_stats`]) and the gradient flows through them; with `false` they are running
/// statistics, constants. Formulas in the module header.
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
    dx: &mut [f32],
    dgamma: Option<&mut [f32]>,
    dbeta: Option<&mut [f32]>,
) -> Result<(), KernelError> {
    let part = Part {
        count: n * hw,
        reduce: None,
    };
    backward(
        "batch_norm_backward",
        x,
        dy,
        (n, c, hw),
        mean,
        var,
        gamma,
        eps,
        training,
        dx,
        dgamma,
        dbeta,
        part,
    )
}

/// The training-mode gradients of [`batch_norm_forward`] for one part of a batch split across
/// processes (synchronised batch norm), `mean` / `var` the whole batch's statistics (from
/// [`batch_norm_stats_reduced`]) and `count` its number of values per channel: `reduce` is
/// called once, with the per-channel sums `sum dy` and `sum (x - mean) dy` of this part
/// interleaved (`2 c` values), and `dx` is this part's gradient through the global statistics.
/// `dgamma`, `dbeta` are this part's contributions (their sum over the parts is the whole
/// batch's gradient). With consecutive parts of a batch, `dx` is bit for bit the one-process
/// value under the condition of [`batch_norm_stats_reduced`].
#[allow(clippy::too_many_arguments)]
pub fn batch_norm_backward_reduced(
    x: &[f32],
    dy: &[f32],
    n: usize,
    c: usize,
    hw: usize,
    count: usize,
    mean: &[f32],
    var: &[f32],
    gamma: Option<&[f32]>,
    eps: f32,
    dx: &mut [f32],
    dgamma: Option<&mut [f32]>,
    dbeta: Option<&mut [f32]>,
    reduce: Reduce<'_>,
) -> Result<(), KernelError> {
    let part = Part {
        count,
        reduce: Some(reduce),
    };
    backward(
        "batch_norm_backward_reduced",
        x,
        dy,
        (n, c, hw),
        mean,
        var,
        gamma,
        eps,
        true,
        dx,
        dgamma,
        dbeta,
        part,
    )
}

/// How a backward's per-channel sums become the whole batch's: the number of values per
/// channel over all parts, and the reduction over the parts (`None`: one part).
pub(super) struct Part<'a> {
    pub count: usize,
    pub reduce: Option<Reduce<'a>>,
}

#[allow(clippy::too_many_arguments)]
pub(super) fn backward(
    op: &'static str,
    x: &[f32],
    dy: &[f32],
    (n, c, hw): (usize, usize, usize),
    mean: &[f32],
    var: &[f32],
    gamma: Option<&[f32]>,
    eps: f32,
    training: bool,
    dx: &mut [f32],
    dgamma: Option<&mut [f32]>,
    dbeta: Option<&mut [f32]>,
    part: Part<'_>,
) -> Result<(), KernelError> {
    let sh = shape(n, c, hw);
    let len = checked_len(op, &sh, &[n, c, hw])?;
    check_len(op, &sh, "x", x.len(), len)?;
    check_len(op, &sh, "dy", dy.len(), len)?;
    check_len(op, &sh, "dx", dx.len(), len)?;
    check_len(op, &sh, "mean", mean.len(), c)?;
    check_len(op, &sh, "var", var.len(), c)?;
    check_opt(op, &sh, "gamma", gamma.map(<[f32]>::len), c)?;
    check_opt(op, &sh, "dgamma", dgamma.as_ref().map(|v| v.len()), c)?;
    check_opt(op, &sh, "dbeta", dbeta.as_ref().map(|v| v.len()), c)?;
    check_eps(op, eps)?;
    // dot_c = sum (x - mean) dy = sum x dy - mean * sum dy, accumulated per plane as
    // sum dy and sum (x - mean) dy directly (no cancellation between the two sums).
    let mut sums = vec![(0.0f64, 0.0f64); c];
    per_channel(n, c, hw, &mut sums, |p, hw| {
        let mu = mean[p % c];
        let (xs, ds) = (&x[p * hw..(p + 1) * hw], &dy[p * hw..(p + 1) * hw]);
        let mut centred = [0.0f32; 64];
        let (mut s, mut d) = (0.0f32, 0.0f32);
        for (xc, dc) in xs.chunks(64).zip(ds.chunks(64)) {
            for (o, &v) in centred.iter_mut().zip(xc) {
                *o = v - mu;
            }
            let (a, b) = sum_and_dot(dc, &centred[..xc.len()]);
            s += a;
            d += b;
        }
        (s, d)
    });
    let coeffs = backward_coefficients(&mut sums, var, gamma, eps, training, part, dgamma, dbeta);
    per_plane(dx, c, hw, |p, ch, out| {
        let (a, k, mg) = coeffs[ch];
        let mu = mean[ch];
        let (xs, ds) = (&x[p * hw..(p + 1) * hw], &dy[p * hw..(p + 1) * hw]);
        for ((o, &xv), &g) in out.iter_mut().zip(xs).zip(ds) {
            *o = (xv - mu) * k + (g - mg) * a;
        }
    });
    Ok(())
}

/// From the per-channel sums `(sum g, sum (x - mean) g)` of a backward (`g` the gradient
/// reaching the normalised output): writes `dgamma` and `dbeta` when given (this part's), sums
/// the sums over the parts (`part.reduce`), and returns the per-channel coefficients
/// `(a, k, mg)` of `dx = (x - mean) * k + (g - mg) * a` (training: the batch statistics' own
/// gradient included, `mg` the mean of `g`; eval: `k = mg = 0`). `g - mg` is formed before
/// the scaling by `a = gamma / sqrt(var + eps)`, so a gradient that is exactly zero (a channel
/// whose `g` is constant and whose `x` is its mean: one value per channel) comes out as zero,
/// not as the difference of two differently rounded products of size `a g`. `part.count` is
/// the values per channel of the whole batch (`n * hw` on one process).
#[allow(clippy::too_many_arguments)]
pub(super) fn backward_coefficients(
    sums: &mut [(f64, f64)],
    var: &[f32],
    gamma: Option<&[f32]>,
    eps: f32,
    training: bool,
    part: Part<'_>,
    dgamma: Option<&mut [f32]>,
    dbeta: Option<&mut [f32]>,
) -> Vec<(f32, f32, f32)> {
    let m = part.count as f64;
    let invstd: Vec<f32> = var.iter().map(|&v| 1.0 / (v + eps).sqrt()).collect();
    if let Some(dg) = dgamma {
        for ((o, s), &is) in dg.iter_mut().zip(sums.iter()).zip(&invstd) {
            *o = (s.1 * is as f64) as f32;
        }
    }
    if let Some(db) = dbeta {
        for (o, s) in db.iter_mut().zip(sums.iter()) {
            *o = s.0 as f32;
        }
    }
    if let Some(r) = part.reduce {
        let mut flat: Vec<f64> = sums.iter().flat_map(|s| [s.0, s.1]).collect();
        r(&mut flat);
        for (s, v) in sums.iter_mut().zip(flat.chunks_exact(2)) {
            *s = (v[0], v[1]);
        }
    }
    (0..var.len())
        .map(|ch| {
            let is = invstd[ch] as f64;
            let g = gamma.map_or(1.0, |g| g[ch]) as f64;
            if training {
                let k = -(sums[ch].1 / m) * is * is * is * g;
                let mg = sums[ch].0 / m;
                ((is * g) as f32, k as f32, mg as f32)
            } else {
                ((is * g) as f32, 0.0, 0.0)
            }
        })
        .collect()
}
