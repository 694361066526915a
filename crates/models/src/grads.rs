//! One training-mode forward and backward with the mean cross-entropy, returning the loss, the
//! logits and the gradient of every parameter under its timm name: the computation behind
//! `tessera grads` and the gradient-parity tests against PyTorch (`scripts/fixtures_grads.py`
//! does the same in torch: `model.train()`, `F.cross_entropy(model(x), labels)`, `backward()`).
//!
//! Training mode here means batch statistics in batch norm (normalising with the biased batch
//! variance, as PyTorch) and no dropout. [`Mode::Train`] is exactly that for every
//! architecture of the zoo: none of them contains a dropout or drop-path layer (timm's
//! `drop_rate` and `drop_path_rate` default to 0, and the fixtures are made with both at 0), so
//! no separate mode is needed. A model of your own that puts a [`crate::layers::Dropout`] with
//! `p > 0` in its forward would draw masks in [`Mode::Train`].
//!
//! The model is left as it was found, apart from its mode: the parameters get fresh gradient
//! slots for this computation and the original tensors (with any gradient they had accumulated)
//! are put back afterwards, and the running statistics that a training-mode batch-norm forward
//! updates are restored. The [`crate::Module`] trait has no way to read a model's mode, so the
//! model is left in [`Mode::Eval`], the default every model is built in.
//!
//! Parameters that the forward does not reach get a zero gradient (as
//! `torch.zeros_like(p)` for a `p.grad` of `None`), so the output always has one entry per
//! parameter; no architecture of the zoo has such a parameter.

use crate::error::{ModelError, Result};
use crate::module::{named_tensors, set_requires_grad, Mode, TensorKind};
use crate::zoo::Model;
use tessera_core::{no_grad, Tensor};

/// What one training-mode forward and backward produced.
#[derive(Debug, Clone)]
pub struct Gradients {
    /// The mean cross-entropy over the batch.
    pub loss: f32,
    /// The logits `[n, num_classes]` (detached).
    pub logits: Tensor,
    /// `(timm name, gradient)` for every parameter, in `state_dict` (visiting) order; each
    /// gradient has its parameter's shape.
    pub grads: Vec<(String, Tensor)>,
}

fn fmt_shape(s: &[usize]) -> String {
    let parts: Vec<String> = s.iter().map(|d| d.to_string()).collect();
    format!("[{}]", parts.join(", "))
}

/// Checks `x` (`[n, in_chans, h, w]`, `n >= 1`) and `labels` (`n` values in
/// `[0, num_classes)`) against `model`; returns the labels as indices.
fn check_inputs(model: &dyn Model, x: &Tensor, labels: &[i64]) -> Result<Vec<usize>> {
    let [c, h, w] = model.input_chw();
    let s = x.shape();
    if s.len() != 4 || s[0] == 0 || s[1] != c {
        return Err(ModelError::config(format!(
            "grads: input of shape {} does not fit {}: expected [N, {c}, H, W] with N >= 1 \
             ([N, {c}, {h}, {w}] at its configured size)",
            fmt_shape(s),
            model.arch()
        )));
    }
    if labels.len() != s[0] {
        return Err(ModelError::config(format!(
            "grads: {} labels for a batch of {} images (input {}); need one label per image",
            labels.len(),
            s[0],
            fmt_shape(s)
        )));
    }
    let classes = model.num_classes();
    labels
        .iter()
        .enumerate()
        .map(|(i, &l)| {
            usize::try_from(l)
                .ok()
                .filter(|&v| v < classes)
                .ok_or_else(|| {
                    ModelError::config(format!(
                        "grads: label {l} (index {i}) is out of range for {} with \
                         num_classes {classes} (labels must be in 0..{classes})",
                        model.arch()
                    ))
                })
        })
        .collect()
}

/// Runs `model` on `x` in training mode (batch statistics, no dropout), the mean cross-entropy
/// against `labels` (one class index per image, as PyTorch's int64 targets) and one backward;
/// returns the loss, the logits and every parameter's gradient.
///
/// Errors (a [`ModelError::Config`] naming the problem, the model untouched) if `x` is not
/// `[n, in_chans, h, w]` with `n >= 1`, if there are not `n` labels, or if a label is negative or
/// not below `num_classes`; errors of the forward itself (an input size the architecture cannot
/// take, a batch too small for batch statistics) are returned with the input shape named.
/// See the module docs for what is restored afterwards.
pub fn compute(model: &mut dyn Model, x: &Tensor, labels: &[i64]) -> Result<Gradients> {
    let targets = check_inputs(model, x, labels)?;
    // Every parameter and buffer handle, to put back afterwards (running statistics are
    // replaced, not written in place, by a training-mode batch norm).
    let saved: Vec<Tensor> = named_tensors(model)
        .into_iter()
        .map(|(_, t, _)| t)
        .collect();
    model.set_mode(Mode::Train);
    // Fresh leaf handles over the same data: this backward accumulates into new slots.
    set_requires_grad(model, true);
    let result = forward_backward(model, x, &targets);
    let mut it = saved.into_iter();
    model.visit_mut("", &mut |_, t, _| {
        if let Some(orig) = it.next() {
            *t = orig;
        }
    });
    model.set_mode(Mode::Eval);
    result
}

fn forward_backward(model: &dyn Model, x: &Tensor, targets: &[usize]) -> Result<Gradients> {
    let context = |e: ModelError| {
        let [c, h, w] = model.input_chw();
        ModelError::config(format!(
            "grads: {} failed on input of shape {} (expected [N, {c}, {h}, {w}]): {e}",
            model.arch(),
            fmt_shape(x.shape())
        ))
    };
    let logits = model.forward(&x.detach()).map_err(context)?;
    let expect = [x.shape()[0], model.num_classes()];
    if logits.shape() != expect {
        return Err(ModelError::config(format!(
            "grads: {} returned logits of shape {} instead of {}",
            model.arch(),
            fmt_shape(logits.shape()),
            fmt_shape(&expect)
        )));
    }
    let loss = logits.cross_entropy(targets, 0.0)?;
    loss.backward()?;
    let _g = no_grad();
    let mut grads = Vec::new();
    let mut bad_shape = None;
    model.visit("", &mut |name, t, kind| {
        if kind == TensorKind::Parameter {
            let g = t.grad().unwrap_or_else(|| t.zeros_like());
            if g.shape() != t.shape() && bad_shape.is_none() {
                bad_shape = Some(format!(
                    "grads: gradient of {name} has shape {} but the parameter {}",
                    fmt_shape(g.shape()),
                    fmt_shape(t.shape())
                ));
            }
            grads.push((name.to_string(), g.detach()));
        }
    });
    if let Some(m) = bad_shape {
        return Err(ModelError::config(m));
    }
    Ok(Gradients {
        loss: loss.item()?,
        logits: logits.detach(),
        grads,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layers::Linear;
    use crate::module::Module;
    use tessera_core::Rng;

    /// `linear(flatten(x))` plus a parameter the forward never reads.
    struct Tiny {
        fc: Linear,
        unused: Tensor,
    }

    impl Module for Tiny {
        fn forward(&self, x: &Tensor) -> Result<Tensor> {
            self.forward_stages(x, &mut |_, _| {})
        }
        fn visit(&self, prefix: &str, f: &mut dyn FnMut(&str, &Tensor, TensorKind)) {
            self.fc.visit(&format!("{prefix}fc."), f);
            f(
                &format!("{prefix}unused"),
                &self.unused,
                TensorKind::Parameter,
            );
        }
        fn visit_mut(&mut self, prefix: &str, f: &mut dyn FnMut(&str, &mut Tensor, TensorKind)) {
            self.fc.visit_mut(&format!("{prefix}fc."), f);
            f(
                &format!("{prefix}unused"),
                &mut self.unused,
                TensorKind::Parameter,
            );
        }
        fn set_mode(&mut self, _mode: Mode) {}
    }

    impl Model for Tiny {
        fn arch(&self) -> &str {
            "tiny"
        }
        fn input_chw(&self) -> [usize; 3] {
            [2, 2, 2]
        }
        fn num_classes(&self) -> usize {
            3
        }
        fn forward_stages(
            &self,
            x: &Tensor,
            _stage: &mut dyn FnMut(&str, &Tensor),
        ) -> Result<Tensor> {
            self.fc.forward(&x.flatten(1, 3)?)
        }
    }

    fn tiny() -> Tiny {
        let mut rng = Rng::new(7);
        Tiny {
            fc: Linear::new(8, 3, true, &mut rng),
            unused: Tensor::ones(&[4]),
        }
    }

    /// Gradients of mean cross-entropy through one linear layer, in f64:
    /// `dW = (softmax(z) - onehot)^T x / n`, `db = sum_rows(softmax(z) - onehot) / n`.
    #[test]
    fn linear_gradients_match_the_closed_form_and_unused_parameters_get_zeros() {
        let mut m = tiny();
        let x = Tensor::randn(&[3, 2, 2, 2], 11);
        let labels = [2i64, 0, 1];
        let g = compute(&mut m, &x, &labels).unwrap();
        let (w, b, xs) = (
            m.fc.weight.to_vec(),
            m.fc.bias.as_ref().unwrap().to_vec(),
            x.to_vec(),
        );
        let (mut dw, mut db, mut loss) = (vec![0f64; 24], vec![0f64; 3], 0f64);
        for (i, &label) in labels.iter().enumerate() {
            let xi = &xs[i * 8..i * 8 + 8];
            let z: Vec<f64> = (0..3)
                .map(|k| {
                    b[k] as f64
                        + (0..8)
                            .map(|j| w[k * 8 + j] as f64 * xi[j] as f64)
                            .sum::<f64>()
                })
                .collect();
            let mx = z.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
            let s: f64 = z.iter().map(|v| (v - mx).exp()).sum();
            loss += (s.ln() + mx - z[label as usize]) / 3.0;
            for k in 0..3 {
                let p = (z[k] - mx).exp() / s - (k == label as usize) as i32 as f64;
                db[k] += p / 3.0;
                for j in 0..8 {
                    dw[k * 8 + j] += p * xi[j] as f64 / 3.0;
                }
            }
        }
        assert!((g.loss as f64 - loss).abs() < 1e-5, "{} vs {loss}", g.loss);
        let names: Vec<&str> = g.grads.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["fc.weight", "fc.bias", "unused"]);
        for (got, want) in [(&g.grads[0].1, &dw), (&g.grads[1].1, &db)] {
            for (a, b) in got.to_vec().iter().zip(want.iter()) {
                assert!((*a as f64 - b).abs() < 1e-5, "{a} vs {b}");
            }
        }
        assert_eq!(g.grads[2].1.shape(), [4]);
        assert_eq!(g.grads[2].1.to_vec(), [0.0; 4]);
        assert_eq!(g.logits.shape(), [3, 3]);
    }

    /// Gradients the caller had accumulated on its own parameter handles survive.
    #[test]
    fn the_callers_gradients_are_kept() {
        let mut m = tiny();
        m.fc.weight = m.fc.weight.detach().requires_grad_(true);
        let x = Tensor::randn(&[2, 2, 2, 2], 3);
        let y = m.forward(&x).unwrap().sum_all();
        y.backward().unwrap();
        let before = m.fc.weight.grad().unwrap().to_vec();
        compute(&mut m, &x, &[0, 1]).unwrap();
        assert!(m.fc.weight.requires_grad());
        assert_eq!(m.fc.weight.grad().unwrap().to_vec(), before);
        assert!(!m.unused.requires_grad());
    }
}
