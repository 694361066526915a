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
