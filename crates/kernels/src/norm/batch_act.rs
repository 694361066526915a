//! Batch normalisation fused with the activation after it, for training (the `bn -> act`
//! pairs of ResNet and MobileNet blocks; Ioffe & Szegedy, ICML 2015, with the formulas of the
//! `batch` module header):
//!
//! ```text
//! forward:  z = (x - mean_c) * a_c + beta_c,  a_c = gamma_c / sqrt(var_c + eps);  y = act(z)
//! backward: g = dy * act'(z)   (z recomputed from x, never stored)
//!           then batch_norm_backward with g in place of dy
//! ```
//!
//! The activation is applied to each output plane right after it is written (still in cache),
//! and the backward recomputes `z` chunk by chunk from `x`, so neither the pre-activation nor
//! the masked gradient is ever a tensor: one write pass and one read pass fewer than
//! `batch_norm` followed by an activation op, and one allocation fewer each way. The chunking,
//! the per-plane sums and the element formulas are those of `batch_norm_forward` /
//! `batch_norm_backward`, and `act` / `act'` come from [`crate::activation`] (ReLU, ReLU6 and
//! the identity inline on the SIMD paths, with those kernels' exact select semantics), so the
//! results are bit for bit those of the composed ops on the same instruction set.

use super::batch::{backward_coefficients, per_channel, per_plane, shape, Part, Reduce};
use super::{check_eps, check_len, check_opt, checked_len, sum_and_dot};
use crate::activation::{self, Activation};
use crate::error::KernelError;
use crate::isa::Isa;

/// Elements per chunk of the backward (the chunk `batch_norm_backward` centres `x` in).
const CHUNK: usize = 64;
/// Elements per activation call in the forward (below the activation kernel's parallel size).
const ACT_CHUNK: usize = 4096;

/// `g = dy * act'(z)` over one chunk: the identity, and on the SIMD paths ReLU and ReLU6,
/// inline (the same selects as those paths' backward: `dy` where the mask holds, `+0`
/// elsewhere); everything else, and the scalar path (which multiplies by the derivative, so
/// `-dy * 0 = -0`), through the activation kernel.
#[inline]
fn act_grad(isa: Isa, act: Activation, z: &[f32], dy: &[f32], g: &mut [f32]) {
    let simd = isa != Isa::Scalar;
    match act {
        Activation::Identity => g.copy_from_slice(dy),
        Activation::Relu if simd => {
            for ((o, &zv), &d) in g.iter_mut().zip(z).zip(dy) {
                *o = if zv > 0.0 { d } else { 0.0 };
            }
        }
        Activation::Relu6 if simd => {
            for ((o, &zv), &d) in g.iter_mut().zip(z).zip(dy) {
                *o = if zv > 0.0 && zv < 6.0 { d } else { 0.0 };
            }
        }
        // The lengths match and `isa` was checked by the caller: this cannot fail.
        _ => {
            let _ = activation::backward_with(isa, act, z, dy, g);
        }
    }
}

/// Whether [`act_grad`] masks inline (no activation-kernel call per chunk).
fn inline_grad(isa: Isa, act: Activation) -> bool {
    matches!(act, Activation::Identity)
        || (isa != Isa::Scalar && matches!(act, Activation::Relu | Activation::Relu6))
}

thread_local! {
    /// Per-thread scratch of the materialised backward (z and g), reused between calls.
    static SCRATCH: std::cell::Cell<Vec<f32>> = const { std::cell::Cell::new(Vec::new()) };
}

fn with_scratch<R>(len: usize, f: impl FnOnce(&mut [f32]) -> R) -> R {
    crate::memory::lend_scratch(&SCRATCH, len, f)
}

/// Per-channel `(gamma / sqrt(var + eps), beta)` as the forward computes them.
fn scale_shift(
    c: usize,
    var: &[f32],
    gamma: Option<&[f32]>,
    beta: Option<&[f32]>,
    eps: f32,
) -> Vec<(f32, f32)> {
    (0..c)
        .map(|ch| {
            (
                gamma.map_or(1.0, |g| g[ch]) / (var[ch] + eps).sqrt(),
                beta.map_or(0.0, |b| b[ch]),
            )
        })
        .collect()
}

/// `y = act((x - mean) / sqrt(var + eps) * gamma + beta)` per channel on the current ISA;
/// `x`, `y` are `[n, c, hw]` (`y` overwritten), the rest `[c]`.
#[allow(clippy::too_many_arguments)]
pub fn batch_norm_act_forward(
    x: &[f32],
    n: usize,
    c: usize,
    hw: usize,
    mean: &[f32],
    var: &[f32],
    gamma: Option<&[f32]>,
    beta: Option<&[f32]>,
    eps: f32,
    act: Activation,
    y: &mut [f32],
) -> Result<(), KernelError> {
    let isa = Isa::current()?;
    batch_norm_act_forward_with(isa, x, n, c, hw, mean, var, gamma, beta, eps, act, y)
}

/// [`batch_norm_act_forward`] with the activation on an explicit instruction set.
#[allow(clippy::too_many_arguments)]
pub fn batch_norm_act_forward_with(
    isa: Isa,
    x: &[f32],
    n: usize,
    c: usize,
    hw: usize,
    mean: &[f32],
    var: &[f32],
    gamma: Option<&[f32]>,
    beta: Option<&[f32]>,
    eps: f32,
    act: Activation,
    y: &mut [f32],
) -> Result<(), KernelError> {
    forward_checked(
        "batch_norm_act_forward",
        isa,
        x,
        (n, c, hw),
        mean,
        var,
        gamma,
        beta,
        eps,
        act,
        y,
    )
}

/// The forward of [`batch_norm_act_forward_with`] and of `batch_norm_forward` (identity
/// activation), with errors named after `op`.
#[allow(clippy::too_many_arguments)]
pub(super) fn forward_checked(
    op: &'static str,
    isa: Isa,
    x: &[f32],
    (n, c, hw): (usize, usize, usize),
    mean: &[f32],
    var: &[f32],
    gamma: Option<&[f32]>,
    beta: Option<&[f32]>,
    eps: f32,
    act: Activation,
    y: &mut [f32],
) -> Result<(), KernelError> {
    let sh = shape(n, c, hw);
    let len = checked_len(op, &sh, &[n, c, hw])?;
    check_len(op, &sh, "x", x.len(), len)?;
    check_len(op, &sh, "y", y.len(), len)?;
    check_len(op, &sh, "mean", mean.len(), c)?;
    check_len(op, &sh, "var", var.len(), c)?;
    check_opt(op, &sh, "gamma", gamma.map(<[f32]>::len), c)?;
    check_opt(op, &sh, "beta", beta.map(<[f32]>::len), c)?;
    check_eps(op, eps)?;
    let isa = isa.check()?;
    let coef = scale_shift(c, var, gamma, beta, eps);
    per_plane(y, c, hw, |p, ch, out| {
        let ((a, b), m) = (coef[ch], mean[ch]);
        for (o, &v) in out.iter_mut().zip(&x[p * hw..(p + 1) * hw]) {
            *o = (v - m) * a + b;
        }
        if act != Activation::Identity {
            for part in out.chunks_mut(ACT_CHUNK) {
                // `isa` is checked: cannot fail.
                let _ = activation::forward_inplace_with(isa, act, part);
            }
        }
    });
    Ok(())
}

/// The gradients of [`batch_norm_act_forward`] on the current ISA: `dx` (overwritten), and
/// `dgamma`, `dbeta` (`[c]`, overwritten) when given. `beta` is the forward's shift (needed to
/// recompute the pre-activation); `training` as in `batch_norm_backward`.
#[allow(clippy::too_many_arguments)]
pub fn batch_norm_act_backward(
    x: &[f32],
    dy: &[f32],
    n: usize,
    c: usize,
    hw: usize,
    mean: &[f32],
    var: &[f32],
    gamma: Option<&[f32]>,
    beta: Option<&[f32]>,
    eps: f32,
    training: bool,
    act: Activation,
    dx: &mut [f32],
    dgamma: Option<&mut [f32]>,
    dbeta: Option<&mut [f32]>,
) -> Result<(), KernelError> {
    let isa = Isa::current()?;
    batch_norm_act_backward_with(
        isa, x, dy, n, c, hw, mean, var, gamma, beta, eps, training, act, dx, dgamma, dbeta,
    )
}

/// [`batch_norm_act_backward`] with the activation's derivative on an explicit instruction set.
#[allow(clippy::too_many_arguments)]
pub fn batch_norm_act_backward_with(
    isa: Isa,
    x: &[f32],
    dy: &[f32],
    n: usize,
    c: usize,
    hw: usize,
    mean: &[f32],
    var: &[f32],
    gamma: Option<&[f32]>,
    beta: Option<&[f32]>,
    eps: f32,
    training: bool,
    act: Activation,
    dx: &mut [f32],
    dgamma: Option<&mut [f32]>,
    dbeta: Option<&mut [f32]>,
) -> Result<(), KernelError> {
    let part = Part {
        count: n * hw,
        reduce: None,
    };
    backward(
        "batch_norm_act_backward",
        isa,
        x,
        dy,
        (n, c, hw),
        (mean, var),
        (gamma, beta),
        eps,
        training,
        act,
        (dx, dgamma, dbeta),
        part,
    )
}

/// The training-mode gradients of [`batch_norm_act_forward`] for one part of a batch split
/// across processes (synchronised batch norm), on the current ISA: `mean` / `var` are the
/// whole batch's statistics and `count` its values per channel; `reduce` sums the per-channel
/// sums over the parts, as in
/// [`batch_norm_backward_reduced`](super::batch_norm_backward_reduced), whose outputs these
/// are with the activation's derivative applied to `dy` first.
#[allow(clippy::too_many_arguments)]
pub fn batch_norm_act_backward_reduced(
    x: &[f32],
    dy: &[f32],
    n: usize,
    c: usize,
    hw: usize,
    count: usize,
    mean: &[f32],
    var: &[f32],
    gamma: Option<&[f32]>,
    beta: Option<&[f32]>,
    eps: f32,
    act: Activation,
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
        "batch_norm_act_backward_reduced",
        Isa::current()?,
        x,
        dy,
        (n, c, hw),
        (mean, var),
        (gamma, beta),
        eps,
        true,
        act,
        (dx, dgamma, dbeta),
        part,
    )
}

type Grads<'a> = (&'a mut [f32], Option<&'a mut [f32]>, Option<&'a mut [f32]>);

#[allow(clippy::too_many_arguments)]
fn backward(
    op: &'static str,
    isa: Isa,
    x: &[f32],
    dy: &[f32],
    (n, c, hw): (usize, usize, usize),
    (mean, var): (&[f32], &[f32]),
    (gamma, beta): (Option<&[f32]>, Option<&[f32]>),
    eps: f32,
    training: bool,
    act: Activation,
    (dx, dgamma, dbeta): Grads<'_>,
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
    check_opt(op, &sh, "beta", beta.map(<[f32]>::len), c)?;
    check_opt(op, &sh, "dgamma", dgamma.as_ref().map(|v| v.len()), c)?;
    check_opt(op, &sh, "dbeta", dbeta.as_ref().map(|v| v.len()), c)?;
    check_eps(op, eps)?;
    let isa = isa.check()?;
    let coef = scale_shift(c, var, gamma, beta, eps);
    if !inline_grad(isa, act) {
        // One activation-kernel call per 64-element chunk costs more than the pass it saves
        // when planes are small (MobileNetV3's hard-swish on 4x4 digits planes: 3x slower):
        // recompute z for the whole batch, mask dy once, then the plain backward.
        return with_scratch(2 * len, |buf| {
            let (z, g) = buf.split_at_mut(len);
            per_plane(z, c, hw, |p, ch, out| {
                let ((a, b), mu) = (coef[ch], mean[ch]);
                for (o, &v) in out.iter_mut().zip(&x[p * hw..(p + 1) * hw]) {
                    let centred = v - mu;
                    *o = centred * a + b;
                }
            });
            activation::backward_with(isa, act, z, dy, g)?;
            super::batch::backward(
                op,
                x,
                g,
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
        });
    }
    // For chunk `xs`/`ds` of channel `ch`: the centred input and the masked gradient.
    let masked = |ch: usize, xs: &[f32], ds: &[f32], centred: &mut [f32], g: &mut [f32]| {
        let ((a, b), mu) = (coef[ch], mean[ch]);
        let mut z = [0.0f32; CHUNK];
        let z = &mut z[..xs.len()];
        for ((o, zo), &v) in centred.iter_mut().zip(z.iter_mut()).zip(xs) {
            *o = v - mu;
            *zo = *o * a + b;
        }
        act_grad(isa, act, z, ds, g);
    };
    // Pass 1: sum g and sum (x - mean) g per channel (as batch_norm_backward, on g).
    let mut sums = vec![(0.0f64, 0.0f64); c];
    per_channel(n, c, hw, &mut sums, |p, hw| {
        let ch = p % c;
        let (xs, ds) = (&x[p * hw..(p + 1) * hw], &dy[p * hw..(p + 1) * hw]);
        let (mut centred, mut g) = ([0.0f32; CHUNK], [0.0f32; CHUNK]);
        let (mut s, mut d) = (0.0f32, 0.0f32);
        for (xc, dc) in xs.chunks(CHUNK).zip(ds.chunks(CHUNK)) {
            let k = xc.len();
            masked(ch, xc, dc, &mut centred[..k], &mut g[..k]);
            let (a, b) = sum_and_dot(&g[..k], &centred[..k]);
            s += a;
            d += b;
        }
        (s, d)
    });
    let coeffs = backward_coefficients(&mut sums, var, gamma, eps, training, part, dgamma, dbeta);
    per_plane(dx, c, hw, |p, ch, out| {
        let (a, k, mg) = coeffs[ch];
        let (xs, ds) = (&x[p * hw..(p + 1) * hw], &dy[p * hw..(p + 1) * hw]);
        let (mut centred, mut g) = ([0.0f32; CHUNK], [0.0f32; CHUNK]);
        for ((oc, xc), dc) in out
            .chunks_mut(CHUNK)
            .zip(xs.chunks(CHUNK))
            .zip(ds.chunks(CHUNK))
        {
            let n = xc.len();
            masked(ch, xc, dc, &mut centred[..n], &mut g[..n]);
            for ((o, &cv), &gv) in oc.iter_mut().zip(&centred[..n]).zip(&g[..n]) {
                *o = cv * k + (gv - mg) * a;
            }
        }
    });
    Ok(())
}
