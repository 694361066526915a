//! Optimizers (SGD with momentum / Nesterov / weight decay, AdamW), learning-rate schedules
//! (cosine with linear warm-up, step) and gradient-norm clipping, with PyTorch's update rules.
//!
//! Parameters are found through [`Module::visit_mut`] by their state_dict names, so the
//! optimizer state is keyed by name and can be saved with the model. A step updates each
//! parameter that has a gradient in place (or, when its buffer is shared, replaces it with a new
//! leaf holding the updated values) and clears its gradient, as
//! `optimizer.zero_grad(set_to_none=True)` would. Updates run element-wise in parallel chunks.
//!
//! Parameter groups follow timm: tensors with one dimension or fewer (biases, norm scales) and
//! the names in [`Optimizer::no_decay`] (e.g. ViT's `pos_embed`, `cls_token`) get no weight
//! decay.

mod adamw;
mod schedule;
mod sgd;

pub use adamw::AdamW;
pub use schedule::LrSchedule;
pub use sgd::Sgd;

use crate::error::{ModelError, Result};
use crate::module::{Module, TensorKind};
use std::collections::BTreeMap;
use tessera_core::Tensor;

/// Named state tensors of an optimizer (flattened), plus its scalar counters.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct OptimizerState {
    /// Per-parameter buffers by name (momentum, moments).
    pub tensors: BTreeMap<String, Vec<f32>>,
    /// Scalars (step counts).
    pub scalars: BTreeMap<String, f64>,
}

/// An optimizer over a module's parameters.
pub trait Optimizer: Send {
    /// Applies one update with learning rate `lr`, each gradient multiplied by `grad_scale`
    /// (1.0, or the factor from [`clip_grad_norm`]). Parameters without a gradient are skipped.
    fn step(&mut self, model: &mut dyn Module, lr: f32, grad_scale: f32) -> Result<()>;

    /// Names that never get weight decay (in addition to tensors of rank <= 1).
    fn no_decay(&mut self) -> &mut Vec<String>;

    /// The state to checkpoint.
    fn state(&self) -> OptimizerState;

    /// Restores a checkpointed state. The state is checked as a whole first (the problems
    /// [`Optimizer::check_state`] finds without a model: another optimizer's state, unknown
    /// keys, a step count that is not a finite non-negative integer); on error nothing changes.
    /// Lengths are checked against the parameters on the next [`Optimizer::step`], which errors
    /// rather than resetting a mismatched moment.
    fn load_state(&mut self, state: &OptimizerState) -> Result<()>;

    /// Every problem of `state` as this optimizer's state for parameters `params`
    /// (`(state_dict name, number of elements)`; `None` skips the checks against parameters):
    /// another optimizer's keys, unknown keys, a tensor for no parameter or of the wrong length,
    /// a step count that is not a finite non-negative integer. Empty when the state is usable.
    fn check_state(
        &self,
        state: &OptimizerState,
        params: Option<&[(String, usize)]>,
    ) -> Vec<String>;
}

/// The trainable parameters of `model` as `(state_dict name, number of elements)`: what
/// [`Optimizer::check_state`] checks a state against.
pub fn param_sizes(model: &dyn Module) -> Vec<(String, usize)> {
    let mut v = Vec::new();
    model.visit("", &mut |name, t, kind| {
        if kind == TensorKind::Parameter {
            v.push((name.to_string(), t.numel()));
        }
    });
    v
}

/// Checks one per-parameter state tensor `key` (`<prefix><name>`, `len` values) against
/// `params`, pushing problems.
pub(crate) fn check_param_tensor(
    key: &str,
    name: &str,
    len: usize,
    params: Option<&[(String, usize)]>,
    problems: &mut Vec<String>,
) {
    let Some(params) = params else { return };
    match params.iter().find(|(n, _)| n == name) {
        None => problems.push(format!(
            "optimizer tensor {key:?} belongs to no parameter of the model"
        )),
        Some((_, numel)) if *numel != len => problems.push(format!(
            "optimizer tensor {key:?} has {len} values but parameter {name:?} has {numel}"
        )),
        Some(_) => {}
    }
}

/// Checks, before a step changes anything, that every per-parameter state in `maps`
/// (`(what, state by parameter name)`) has one value per element of its parameter, for the
/// parameters of `model` that have a gradient.
pub(crate) fn check_state_lengths(
    opt: &str,
    model: &dyn Module,
    maps: &[(&str, &BTreeMap<String, Vec<f32>>)],
) -> Result<()> {
    let mut problems = Vec::new();
    model.visit("", &mut |name, t, kind| {
        if kind != TensorKind::Parameter || t.grad().is_none() {
            return;
        }
        for (what, map) in maps {
            if let Some(s) = map.get(name) {
                if s.len() != t.numel() {
                    problems.push(format!(
                        "{what} of {name:?} has {} values but the parameter has {}",
                        s.len(),
                        t.numel()
                    ));
                }
            }
        }
    });
    if problems.is_empty() {
        Ok(())
    } else {
        Err(ModelError::config(format!(
            "{opt}: the optimizer state does not fit the model: {}",
            problems.join("; ")
        )))
    }
}

/// A step count stored as a float: a finite non-negative integer no larger than 2^53 (exact in
/// f64), or a problem.
pub(crate) fn check_step_count(key: &str, v: f64) -> std::result::Result<u64, String> {
    if v.is_finite() && v >= 0.0 && v.fract() == 0.0 && v <= (1u64 << 53) as f64 {
        Ok(v as u64)
    } else {
        Err(format!(
            "optimizer scalar {key:?} is {v}, not a finite non-negative integer step count"
        ))
    }
}

/// Whether `name` (of the given shape) is decayed under timm's rule.
pub(crate) fn decays(name: &str, shape: &[usize], no_decay: &[String]) -> bool {
    shape.len() > 1 && !no_decay.iter().any(|n| n == name)
}

/// An update rule: `(name, shape, values, gradient)`, updating `values` in place, or an error
/// (left unchanged) when its state does not fit the parameter.
pub(crate) type UpdateFn<'a> =
    dyn FnMut(&str, &[usize], &mut [f32], &[f32]) -> std::result::Result<(), String> + 'a;

/// Elements per parallel chunk of an element-wise update (each element's arithmetic is the
/// same whatever the split, so results do not depend on the thread count).
pub(crate) const UPDATE_CHUNK: usize = 1 << 14;

/// Calls `f(name, shape, values, grad)` for every parameter with a gradient, then clears the
/// gradient. The values are updated in place when the parameter's buffer is not shared
/// (the usual case once the step's graph is dropped); otherwise the parameter is replaced by
/// a new leaf holding the updated copy.
pub(crate) fn update_params(model: &mut dyn Module, f: &mut UpdateFn<'_>) -> Result<()> {
    let mut err = None;
    model.visit_mut("", &mut |name, t, kind| {
        if kind != TensorKind::Parameter || err.is_some() {
            return;
        }
        let Some(g) = t.grad() else { return };
        if g.shape() != t.shape() {
            err = Some(ModelError::config(format!(
                "gradient of {name} has shape {:?}, parameter {:?}",
                g.shape(),
                t.shape()
            )));
            return;
        }
        let shape = t.shape().to_vec();
        // Borrowed when contiguous (gradients are): no copy.
        let g = g.data();
        let mut outcome = Ok(());
        if t.update_in_place(|p| outcome = f(name, &shape, p, &g)) {
            match outcome {
                Ok(()) => t.zero_grad(),
                Err(m) => err = Some(ModelError::config(m)),
            }
            return;
        }
        let mut new = t.to_vec();
        if let Err(m) = f(name, &shape, &mut new, &g) {
            err = Some(ModelError::config(m));
            return;
        }
        match Tensor::from_vec(new, &shape) {
            Ok(n) => *t = n.requires_grad_(true),
            Err(e) => err = Some(e.into()),
        }
    });
    err.map_or(Ok(()), Err)
}

/// The global L2 norm of all parameter gradients.
pub fn grad_norm(model: &dyn Module) -> f32 {
    let mut sq = 0.0f64;
    model.visit("", &mut |_, t, kind| {
        if kind == TensorKind::Parameter {
            if let Some(g) = t.grad() {
                sq += g
                    .to_vec()
                    .iter()
                    .map(|v| (*v as f64) * (*v as f64))
                    .sum::<f64>();
            }
        }
    });
    sq.sqrt() as f32
}

/// `torch.nn.utils.clip_grad_norm_`: returns (the total norm, the factor to scale gradients
/// by so their norm is at most `max_norm`; 1.0 when already below). Pass the factor to
/// [`Optimizer::step`].
pub fn clip_grad_norm(model: &dyn Module, max_norm: f32) -> (f32, f32) {
    let norm = grad_norm(model);
    let scale = if norm.is_finite() && norm > max_norm {
        max_norm / (norm + 1e-6)
    } else {
        1.0
    };
    (norm, scale)
}
