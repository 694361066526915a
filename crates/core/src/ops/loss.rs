//! Losses: cross_entropy over class indices with optional label smoothing (mean reduction),
//! as PyTorch's `F.cross_entropy(logits, target, label_smoothing=ε)`, and mse_loss.
//!
//! Cross-entropy is fused: with `q = (1 - ε) onehot(t) + ε / C` and `p = softmax(z)`,
//! `loss = -(1/N) Σ_n Σ_c q_nc log p_nc` and `dz = (p - q) / N · dy`. Saved: the softmax
//! probabilities and the targets.

use crate::autograd::needs_grad;
use crate::error::{fmt_shape, Result, TensorError};
use crate::profile::{self, f32_bytes, Cost, OpInfo};
use crate::tensor::Tensor;

impl Tensor {
    /// Mean cross-entropy of `[n, c]` logits against class indices `targets` (length n), with
    /// label smoothing `label_smoothing` in `[0, 1]`.
    pub fn cross_entropy(&self, targets: &[usize], label_smoothing: f32) -> Result<Tensor> {
        const OP: &str = "cross_entropy";
        if self.rank() != 2 {
            return Err(TensorError::shape(
                OP,
                format!(
                    "logits must be [n, classes], got {}",
                    fmt_shape(self.shape())
                ),
            ));
        }
        let (n, c) = (self.shape()[0], self.shape()[1]);
        if targets.len() != n || n == 0 || c == 0 {
            return Err(TensorError::shape(
                OP,
                format!(
                    "logits {} with {} targets (need one per row, at least one row and class)",
                    fmt_shape(self.shape()),
                    targets.len()
                ),
            ));
        }
        if let Some(&t) = targets.iter().find(|&&t| t >= c) {
            return Err(TensorError::arg(
                OP,
                format!("target {t} is out of range for {c} classes"),
            ));
        }
        if !(0.0..=1.0).contains(&label_smoothing) {
            return Err(TensorError::arg(
                OP,
                format!("label_smoothing {label_smoothing} is outside [0, 1]"),
            ));
        }
        let frame = profile::begin();
        let logp = {
            let _g = crate::autograd::no_grad();
            self.log_softmax(1)?.to_vec()
        };
        let (eps, cf) = (label_smoothing as f64, c as f64);
        let mut total = 0.0f64;
        for (row, &t) in logp.chunks(c).zip(targets) {
            let sum_all: f64 = row.iter().map(|&v| v as f64).sum();
            total -= (1.0 - eps) * row[t] as f64 + eps / cf * sum_all;
        }
        let y = Tensor::scalar((total / n as f64) as f32);
        if let Some(fr) = frame {
            // Beyond the nested log_softmax: the row sum and the target term, per logit.
            fr.end_op(&y, || OpInfo {
                op: OP.into(),
                inputs: vec![self.shape().to_vec(), vec![n]],
                output: Vec::new(),
                cost: Cost {
                    flops: 2 * (n * c) as u64,
                    macs: 0,
                    bytes_read: f32_bytes(n * c),
                    bytes_written: f32_bytes(1),
                },
            });
        }
        if !needs_grad(&[self]) {
            return Ok(y);
        }
        let probs: Vec<f32> = logp.iter().map(|&v| v.exp()).collect();
        let targets = targets.to_vec();
        let shape = [n, c];
        Ok(y.record(OP, &[self], move |g| {
            let scale = g.item()? as f64 / n as f64;
            let mut dz = crate::pool::zeroed(n * c);
            for (r, &t) in targets.iter().enumerate() {
                for j in 0..c {
                    let q = eps / cf + if j == t { 1.0 - eps } else { 0.0 };
                    dz[r * c + j] = ((probs[r * c + j] as f64 - q) * scale) as f32;
                }
            }
            // Per logit: (p - q) * scale.
            profile::add_cost(|| Cost {
                flops: 2 * dz.len() as u64,
                macs: 0,
                bytes_read: f32_bytes(dz.len()),
                bytes_written: f32_bytes(dz.len()),
            });
            Ok(vec![Some(Tensor::from_contig(dz, &shape))])
        }))
    }

    /// Mean squared error `mean((self - target)^2)` (broadcasting).
    pub fn mse_loss(&self, target: &Tensor) -> Result<Tensor> {
        let d = self.sub(target)?;
        Ok(d.mul(&d)?.mean_all())
    }
}
