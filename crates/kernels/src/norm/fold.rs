//! Eval-mode batch norm after a convolution, as a per-output-channel epilogue
//! `y = acc * scale + shift` on the UNSCALED convolution accumulator, instead of folding the
//! scale into the weights (`w' = w * s`).
//!
//! Folding rounds every weight once more (`fl(w * s)`, a fresh relative error of `2^-24` on each
//! of the `k` terms of every output) where the unfolded composition only rounds the sum and the
//! one product `acc * s`. In a deep residual network these weight perturbations add up to
//! several times the error of the unfolded network (measured in `docs/accuracy.md`). The
//! epilogue form costs one multiply per output where the fold's epilogue already adds the
//! bias.
//!
//! `scale = gamma / sqrt(var + eps)` and `shift = (bias - mean) * scale + beta` are computed in
//! f64 and rounded once each (PyTorch's eval batch norm: `x * alpha + (beta - mean * alpha)`).

use super::check_len;
use crate::error::KernelError;

/// The per-channel `(scale, shift)` of an eval-mode batch norm applied to a convolution's
/// accumulator (`bias` the convolution's own bias, if any): `bn(acc + bias) = acc * scale +
/// shift`. All slices have the channel count `c`; `eps` must be finite and non-negative.
pub fn eval_scale_shift(
    gamma: &[f32],
    beta: &[f32],
    mean: &[f32],
    var: &[f32],
    eps: f32,
    bias: Option<&[f32]>,
) -> Result<(Vec<f32>, Vec<f32>), KernelError> {
    const OP: &str = "batch_norm_eval_scale_shift";
    let c = gamma.len();
    let sh = move || format!("{c} channels");
    check_len(OP, &sh, "beta", beta.len(), c)?;
    check_len(OP, &sh, "running_mean", mean.len(), c)?;
    check_len(OP, &sh, "running_var", var.len(), c)?;
    if let Some(b) = bias {
        check_len(OP, &sh, "bias", b.len(), c)?;
    }
    super::check_eps(OP, eps)?;
    let mut scale = Vec::with_capacity(c);
    let mut shift = Vec::with_capacity(c);
    for ch in 0..c {
        let s = f64::from(gamma[ch]) / (f64::from(var[ch]) + f64::from(eps)).sqrt();
        let b = bias.map_or(0.0, |b| f64::from(b[ch]));
        scale.push(s as f32);
        shift.push(((b - f64::from(mean[ch])) * s + f64::from(beta[ch])) as f32);
    }
    Ok((scale, shift))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_the_batch_norm_formula_in_f64() {
        let (g, b, m, v) = (
            [1.1f32, 0.9],
            [0.1f32, -0.05],
            [0.3f32, -2.0],
            [0.8f32, 1.2],
        );
        let (s, t) = eval_scale_shift(&g, &b, &m, &v, 1e-5, Some(&[0.5, 0.0])).unwrap();
        for ch in 0..2 {
            let acc = 3.25f64;
            let bias = [0.5, 0.0][ch];
            let want = (acc + bias - m[ch] as f64) / (v[ch] as f64 + 1e-5f32 as f64).sqrt()
                * g[ch] as f64
                + b[ch] as f64;
            let got = acc * s[ch] as f64 + t[ch] as f64;
            assert!(
                (got - want).abs() <= 4.0 * f32::EPSILON as f64 * want.abs(),
                "{ch}"
            );
        }
    }

    #[test]
    fn bad_lengths_and_eps_are_errors() {
        assert!(eval_scale_shift(&[1.0], &[0.0, 0.0], &[0.0], &[1.0], 1e-5, None).is_err());
        assert!(eval_scale_shift(&[1.0], &[0.0], &[0.0], &[1.0], 1e-5, Some(&[])).is_err());
        assert!(eval_scale_shift(&[1.0], &[0.0], &[0.0], &[1.0], f32::NAN, None).is_err());
    }
}
