//! `gradcheck`: autograd gradients against central finite differences, for anyone writing an op.
//!
//! The output `y = f(inputs)` is projected to a scalar `L = Σ w ⊙ y` with fixed random weights
//! `w` (so one backward checks every output at once), accumulated in f64. For every element
//! `x_j` of every input that requires grad, the numeric derivative is
//! `(L(x_j + eps) - L(x_j - eps)) / (x_j⁺ - x_j⁻)` with the actual f32 step in the denominator,
//! and it must satisfy `|autograd - numeric| <= atol + rtol * |numeric|`.
//!
//! Default tolerances (f32 forward, `eps = 1e-3`): the truncation error of the central
//! difference is `O(eps²)`, and f32 rounding of `L` (about `6e-8 · Σ|w y|`) divided by `2 eps`
//! gives a few `1e-4` on the small tensors tests use; `atol = rtol = 1e-2` leave margin for
//! that and still catch any wrong rule (those are off by O(1)). Inputs must keep a distance of
//! more than `eps` from kinks (relu at 0, max ties): choose them so, never widen the tolerance.

use crate::autograd::no_grad;
use crate::error::{Result, TensorError};
use crate::rng::Rng;
use crate::tensor::Tensor;

/// Step and tolerances of [`gradcheck`].
#[derive(Debug, Clone, Copy)]
pub struct GradcheckOptions {
    /// Finite-difference step.
    pub eps: f32,
    /// Absolute tolerance.
    pub atol: f64,
    /// Relative tolerance (of the numeric derivative).
    pub rtol: f64,
    /// Seed of the projection weights.
    pub seed: u64,
}

impl Default for GradcheckOptions {
    fn default() -> Self {
        GradcheckOptions {
            eps: 1e-3,
            atol: 1e-2,
            rtol: 1e-2,
            seed: 0x5eed,
        }
    }
}

/// What [`gradcheck`] compared.
#[derive(Debug, Clone, Copy, Default)]
pub struct GradcheckReport {
    /// Number of input elements checked.
    pub checked: usize,
    /// Largest `|autograd - numeric|`.
    pub max_abs_err: f64,
}

fn projected(y: &Tensor, w: &[f32]) -> f64 {
    y.data()
        .iter()
        .zip(w)
        .map(|(&a, &b)| a as f64 * b as f64)
        .sum()
}

/// Checks the gradients of `f` at `inputs` (leaves; those with `requires_grad` are checked,
/// the others held fixed). Returns an error naming the first input element that disagrees.
pub fn gradcheck(
    f: impl Fn(&[Tensor]) -> Result<Tensor>,
    inputs: &[Tensor],
    opts: &GradcheckOptions,
) -> Result<GradcheckReport> {
    // Fresh leaves, so gradients of earlier runs cannot leak in.
    let leaves: Vec<Tensor> = inputs
        .iter()
        .map(|t| Tensor::from_contig(t.to_vec(), t.shape()).requires_grad_(t.requires_grad()))
        .collect();
    let y = f(&leaves)?;
    let mut rng = Rng::new(opts.seed);
    let w: Vec<f32> = (0..y.numel()).map(|_| rng.normal()).collect();
    let wt = Tensor::from_contig(w.clone(), y.shape());
    if y.requires_grad() {
        y.backward_with(&wt)?;
    }
    let mut report = GradcheckReport::default();
    for (i, leaf) in leaves.iter().enumerate() {
        if !leaf.requires_grad() {
            continue;
        }
        let analytic = leaf
            .grad()
            .map(|g| g.to_vec())
            .unwrap_or_else(|| vec![0.0; leaf.numel()]);
        let base = leaf.to_vec();
        for j in 0..base.len() {
            let eval = |v: f32| -> Result<(f64, f32)> {
                let mut d = base.clone();
                d[j] = v;
                let mut args: Vec<Tensor> = leaves.iter().map(|t| t.detach()).collect();
                args[i] = Tensor::from_contig(d, leaf.shape());
                let _g = no_grad();
                Ok((projected(&f(&args)?, &w), v))
            };
            let (lp, xp) = eval(base[j] + opts.eps)?;
            let (lm, xm) = eval(base[j] - opts.eps)?;
            let numeric = (lp - lm) / (xp as f64 - xm as f64);
            let a = analytic[j] as f64;
            let err = (a - numeric).abs();
            report.max_abs_err = report.max_abs_err.max(err);
            report.checked += 1;
            let within = err <= opts.atol + opts.rtol * numeric.abs();
            if !within {
                return Err(TensorError::arg(
                    "gradcheck",
                    format!(
                        "input {i} {:?} element {j} (value {}): autograd {a:.6} vs numeric \
                         {numeric:.6} (|diff| {err:.3e} > atol {} + rtol {} * |numeric|)",
                        leaf.shape(),
                        base[j],
                        opts.atol,
                        opts.rtol
                    ),
                ));
            }
        }
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn catches_a_wrong_rule() {
        let x = Tensor::from_vec(vec![0.5, 1.0, 2.0], &[3])
            .unwrap()
            .requires_grad_(true);
        let ok = gradcheck(
            |t| Ok(t[0].exp()),
            std::slice::from_ref(&x),
            &Default::default(),
        );
        assert!(ok.unwrap().checked == 3);
        // exp(x) * 2 written as a node whose rule forgets the factor 2.
        let wrong = gradcheck(
            |t| {
                let y = crate::ops::map(&t[0], |v| 2.0 * v.exp());
                if !crate::autograd::needs_grad(&[&t[0]]) {
                    return Ok(y);
                }
                let x = t[0].detach();
                Ok(y.record("bad", &[&t[0]], move |g| Ok(vec![Some(g.mul(&x.exp())?)])))
            },
            &[x],
            &Default::default(),
        );
        assert!(wrong.is_err());
    }
}
