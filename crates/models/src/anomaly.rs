//! Anomaly detection: the first op that produced NaN or infinity, with the module it ran in,
//! in the forward or the backward pass, in the spirit of `torch.autograd.set_detect_anomaly`.
//!
//! It reuses the op recorder of `tessera_core::profile`: a [`Watch`] is a checking recording
//! ([`Recorder::start_checking`]) around a training step. Every op run outside another op
//! checks its output, and every backward rule the gradients it returns, until the first that
//! holds a NaN or an infinity. The error names
//! - the op: `linear`, `layer_norm`, `softmax`, `conv2d+relu6`, ..., or for backward the rule
//!   `<op>.backward` of the forward op it belongs to;
//! - the module path it ran in, as the parameters are named (`blocks.3.attn.qkv`; a backward
//!   rule has its forward op's), which the models give with
//!   [`in_child`](crate::module::in_child) around each child they run;
//! - the stage of [`Model::forward_stages`] (`blocks.3`), and how many values are bad.
//!
//! The input is checked first. After the backward pass [`check_gradients`] names the first
//! parameter, from the output back, whose accumulated gradient is not finite (a sum of finite
//! gradients can still overflow). With detection on ([`set_enabled`], or
//! `tessera train --detect-anomaly`) the training loop does all of this every step; off (the
//! default), the ops and module scopes pay one thread-local flag check each.

use crate::error::{ModelError, Result};
use crate::module::{Module, TensorKind};
use crate::zoo::Model;
use std::sync::atomic::{AtomicBool, Ordering};
use tessera_core::profile::{self, NonFinite, OpRecord, Phase, Profile, Recorder};
use tessera_core::Tensor;

static ENABLED: AtomicBool = AtomicBool::new(false);

/// Turns anomaly detection in the training loop on or off for the whole process.
pub fn set_enabled(on: bool) {
    ENABLED.store(on, Ordering::Relaxed);
}

/// Whether anomaly detection is on.
pub fn enabled() -> bool {
    ENABLED.load(Ordering::Relaxed)
}

/// The number of NaN and of infinite values in `t`.
pub fn non_finite(t: &Tensor) -> (usize, usize) {
    let n = NonFinite::count(&t.data());
    (n.nan, n.inf)
}

/// Checks the ops run on this thread from [`Watch::start`] to [`Watch::finish`]: forward
/// ([`Watch::forward`]), loss and backward.
///
/// ```
/// use tessera_models::{anomaly::Watch, create, Model, Overrides};
/// use tessera_models::core::Tensor;
/// # fn main() -> tessera_models::Result<()> {
/// let mut m = create("vit_digits", &Overrides::default(), 0)?;
/// m.visit_mut("", &mut |name, t, _| {
///     if name == "blocks.1.mlp.fc2.bias" {
///         *t = Tensor::full(t.shape(), f32::NAN);
///     }
/// });
/// let watch = Watch::start();
/// let y = watch.forward(m.as_ref(), &Tensor::rand(&[2, 1, 8, 8], 0))?;
/// let e = watch.finish(m.arch()).unwrap_err().to_string();
/// assert!(e.contains("op linear in module blocks.1.mlp.fc2 (stage blocks.1)"), "{e}");
/// # Ok(())
/// # }
/// ```
#[must_use = "the checks are reported by Watch::finish"]
pub struct Watch {
    rec: Recorder,
}

impl Watch {
    /// Starts checking the ops of this thread.
    pub fn start() -> Watch {
        Watch {
            rec: Recorder::start_checking(),
        }
    }

    /// Runs `model` on `x` reporting its stages (so an anomaly names its stage); a non-finite
    /// input is an error at once.
    pub fn forward(&self, model: &dyn Model, x: &Tensor) -> Result<Tensor> {
        let (nan, inf) = non_finite(x);
        if nan + inf > 0 {
            return Err(ModelError::Anomaly(format!(
                "the input of {} is not finite: {nan} NaN and {inf} infinite of {} values, \
                 shape {:?}",
                model.arch(),
                x.numel(),
                x.shape()
            )));
        }
        model.forward_stages(x, &mut |name, _| profile::end_layer(name))
    }

    /// Stops checking; the first op with non-finite output values, if any, as an error (`arch`
    /// names the model in it).
    pub fn finish(self, arch: &str) -> Result<()> {
        match report(&self.rec.finish(), arch) {
            Some(m) => Err(ModelError::Anomaly(m)),
            None => Ok(()),
        }
    }
}

/// The message for the first record of `prof` with non-finite values.
pub fn report(prof: &Profile, arch: &str) -> Option<String> {
    let r = prof.first_non_finite()?;
    let bad = r.non_finite.unwrap_or_default();
    let place = place(r);
    Some(match r.phase {
        Phase::Backward => {
            let fwd = r.op.strip_suffix(".backward").unwrap_or(&r.op);
            format!(
                "backward: {} of op {fwd}{place} of {arch} is the first to return non-finite \
                 gradients: {bad}, for inputs of shapes {:?}",
                r.op,
                &r.inputs[1.min(r.inputs.len())..]
            )
        }
        _ => format!(
            "forward: op {}{place} of {arch} is the first to produce non-finite values: {bad}, \
             output shape {:?}",
            r.op, r.output
        ),
    })
}

/// ` in module blocks.3.attn.qkv (stage blocks.3)`: where a record's op ran.
fn place(r: &OpRecord) -> String {
    let module = if r.module.is_empty() {
        " outside the model's modules".to_string()
    } else {
        format!(" in module {}", r.module)
    };
    let stage = if r.layer == profile::OTHER || r.layer == r.module {
        String::new()
    } else {
        format!(" (stage {})", r.layer)
    };
    format!("{module}{stage}")
}

/// Runs `model` on `x` under a [`Watch`]: the output, or the first op whose output is not
/// finite (or a non-finite input) as an error.
pub fn forward_checked(model: &dyn Model, x: &Tensor) -> Result<Tensor> {
    let watch = Watch::start();
    let y = watch.forward(model, x)?;
    watch.finish(model.arch())?;
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
