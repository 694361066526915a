//! Anomaly detection: find where NaN or infinity first appears, in the spirit of
//! `torch.autograd.set_detect_anomaly`, at the granularity of a model's stages and parameters.
//!
//! With detection on ([`set_enabled`], or `tessera train --detect-anomaly`), the training loop
//! runs each forward through [`forward_checked`], which checks the input and then every stage
//! output that [`Model::forward_stages`] reports (`patch_embed`, `blocks.3`, `head`...): the
//! first non-finite one is an [`ModelError::Anomaly`] naming the stage, the op that produced its
//! output (when the graph recorded one) and how many values are bad. After the backward pass
//! [`check_gradients`] walks the parameters from the output back to the input (the order
//! backward produces their gradients in) and names the first whose gradient is not finite. Off
//! by default: the checks read every stage output and gradient once.

use crate::error::{ModelError, Result};
use crate::module::{Module, TensorKind};
use crate::zoo::Model;
use std::sync::atomic::{AtomicBool, Ordering};
use tessera_core::Tensor;

static ENABLED: AtomicBool = AtomicBool::new(false);

/// Turns anomaly detection on or off for the whole process.
pub fn set_enabled(on: bool) {
    ENABLED.store(on, Ordering::Relaxed);
}

/// Whether anomaly detection is on.
pub fn enabled() -> bool {
    ENABLED.load(Ordering::Relaxed)
}

/// The number of NaN and of infinite values in `t`.
pub fn non_finite(t: &Tensor) -> (usize, usize) {
    let data = t.data();
    let nan = data.iter().filter(|v| v.is_nan()).count();
    let inf = data.iter().filter(|v| v.is_infinite()).count();
    (nan, inf)
}

fn describe(t: &Tensor, nan: usize, inf: usize) -> String {
    let op = t
        .op_name()
        .map_or(String::new(), |op| format!(" (produced by op {op})"));
    format!(
        "{nan} NaN and {inf} infinite of {} values, shape {:?}{op}",
        t.numel(),
        t.shape()
    )
}

/// Runs `model` on `x`, checking the input and every stage output; the first non-finite one
/// is an error naming it.
pub fn forward_checked(model: &dyn Model, x: &Tensor) -> Result<Tensor> {
    let (nan, inf) = non_finite(x);
    if nan + inf > 0 {
        return Err(ModelError::Anomaly(format!(
            "the input of {} is not finite: {}",
            model.arch(),
            describe(x, nan, inf)
        )));
    }
    let mut first: Option<String> = None;
    let y = model.forward_stages(x, &mut |name, t| {
        if first.is_none() {
            let (nan, inf) = non_finite(t);
            if nan + inf > 0 {
                first = Some(format!(
                    "forward: stage {name} of {} is the first to produce non-finite values: {}",
                    model.arch(),
                    describe(t, nan, inf)
                ));
            }
        }
    })?;
    if let Some(m) = first {
        return Err(ModelError::Anomaly(m));
    }
    let (nan, inf) = non_finite(&y);
    if nan + inf > 0 {
        return Err(ModelError::Anomaly(format!(
            "forward: the output of {} is not finite: {}",
            model.arch(),
            describe(&y, nan, inf)
        )));
    }
    Ok(y)
}

/// After a backward pass: the first parameter, from the output back to the input, whose
/// gradient has NaN or infinite values, as an error.
pub fn check_gradients(model: &dyn Module) -> Result<()> {
    let mut grads = Vec::new();
    model.visit("", &mut |name, t, kind| {
        if kind == TensorKind::Parameter {
            if let Some(g) = t.grad() {
                grads.push((name.to_string(), g));
            }
        }
    });
    for (name, g) in grads.iter().rev() {
        let (nan, inf) = non_finite(g);
        if nan + inf > 0 {
            return Err(ModelError::Anomaly(format!(
                "backward: the gradient of {name} is the first (from the output back) with non-finite values: {nan} NaN and {inf} infinite of {}",
                g.numel()
            )));
        }
    }
    Ok(())
}
