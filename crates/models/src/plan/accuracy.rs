//! Where a plan loses its bits: [`Plan::accuracy`] runs the float32 plan step by step beside
//! its float64 reference ([`super::reference`], built by [`crate::Model::plan_reference`]) and
//! reports each step's relative error `max |y32 - y64| / max |y64|`.
//!
//! Three runs in lockstep, all from the same input:
//!
//! - the **reference**: every reference step on the f64 outputs of the previous ones;
//! - the **plan** (float32, end to end, as [`Plan::run`] runs it): its error at a step is what
//!   has accumulated up to there (propagated error);
//! - the plan's step **alone**: each f32 step fed the reference's input rounded to f32, so its
//!   error is what that step adds by itself (its own rounding, the batch-norm fold, the
//!   approximated activations), without what came before;
//! - for a convolution with a folded batch norm, the step in f64 on the **folded** f32 weight
//!   and bias the plan holds: the part of the error due to the fold alone; and the whole f64
//!   network on the folded weights (a fourth run), whose error is the fold's, propagated.
//!
//! The propagated error divided by the error of the step's inputs is the step's
//! amplification (a condition number seen in practice). This is the "shadow execution in
//! higher precision" method of floating-point error localisation (Benz, Hildebrandt & Hack,
//! "A dynamic program analysis to find floating-point accuracy problems", PLDI 2012), applied
//! per fused layer.

use super::reference::RefStep;
use super::Plan;
use crate::error::{ModelError, Result};

/// The float64 reference steps of a plan, one per plan step, and the number of buffers.
pub(crate) struct Reference {
    pub steps: Vec<RefStep>,
    pub buffers: usize,
}

/// One step's error in [`Plan::accuracy`].
#[derive(Debug, Clone)]
pub struct StepError {
    /// The step kind (`conv`, `pointwise`, `squeeze_excite`, ...).
    pub kind: &'static str,
    /// Its shape and fused activation ([`super::steps::Step::describe`]).
    pub detail: String,
    /// The shape of its output.
    pub shape: Vec<usize>,
    /// `max |y64|` of its output.
    pub scale: f64,
    /// `max |y32 - y64|` of the end-to-end float32 plan.
    pub abs: f64,
    /// `abs / scale`: the propagated relative error.
    pub rel: f64,
    /// The largest relative error of the step's inputs before it ran (0 for the image).
    pub rel_in: f64,
    /// The step alone (fed the reference input rounded to f32): its relative error.
    pub local: f64,
    /// Convolutions with a folded batch norm: the relative error of the step computed in f64
    /// from the folded f32 weight and bias (on the exact input): what the fold alone costs.
    pub fold: Option<f64>,
    /// The relative error of the f64 network run on the folded weights (its only error the
    /// fold's roundings), up to this step: the fold's share of `rel`.
    pub fold_net: f64,
}

impl StepError {
    /// `rel / rel_in`, `None` when the inputs were exact.
    pub fn amplification(&self) -> Option<f64> {
        (self.rel_in > 0.0).then(|| self.rel / self.rel_in)
    }
}

/// The result of [`Plan::accuracy`].
#[derive(Debug, Clone)]
pub struct Accuracy {
    /// Every step, in order.
    pub steps: Vec<StepError>,
    /// The float64 reference output (the logits).
    pub reference: Vec<f64>,
    /// The float32 plan's output.
    pub output: Vec<f32>,
}

impl Accuracy {
    /// `max |logits32 - logits64|`.
    pub fn logits_abs(&self) -> f64 {
        max_abs_diff(&self.output, &self.reference)
    }

    /// `max |logits32 - logits64| / max |logits64|`.
    pub fn logits_rel(&self) -> f64 {
        relative(self.logits_abs(), max_abs(&self.reference))
    }
}

fn max_abs(v: &[f64]) -> f64 {
    v.iter().fold(0.0, |m, x| m.max(x.abs()))
}

/// `max |a - b|`; NaN if any difference is NaN (a NaN is an error, not a small one).
fn max_abs_diff(a: &[f32], b: &[f64]) -> f64 {
    a.iter().zip(b).fold(0.0, |m, (&x, &y)| {
        let d = (f64::from(x) - y).abs();
        if d.is_nan() || m.is_nan() {
            f64::NAN
        } else {
            m.max(d)
        }
    })
}

fn relative(abs: f64, scale: f64) -> f64 {
    if scale > 0.0 {
        abs / scale
    } else {
        abs
    }
}

impl Plan {
    /// Whether the plan carries its float64 reference ([`crate::Model::plan_reference`]).
    pub fn has_reference(&self) -> bool {
        self.reference.is_some()
    }

    /// Runs the plan on `x` beside its float64 reference and returns every step's error (see
    /// the [module docs](self)). Slow (the reference is plain f64 loops): a study tool.
    pub fn accuracy(&mut self, x: &[f32]) -> Result<Accuracy> {
        let Some(reference) = self.reference.take() else {
            return Err(ModelError::config(
                "plan: no float64 reference (build the plan with Model::plan_reference)",
            ));
        };
        let r = self.accuracy_with(&reference, x);
        self.reference = Some(reference);
        r
    }

    fn accuracy_with(&mut self, reference: &Reference, x: &[f32]) -> Result<Accuracy> {
        if x.len() != self.input.len {
            return Err(ModelError::config(format!(
                "plan: input has {} values, the plan was built for {:?} ({} values)",
                x.len(),
                self.input_shape,
                self.input.len
            )));
        }
        if reference.steps.len() != self.steps.len() {
            return Err(ModelError::config(
                "plan: the reference does not match the plan's steps",
            ));
        }
        // The last step reading each buffer, so the f64 copies can be dropped after it.
        let mut last = vec![0usize; reference.buffers];
        for (i, s) in self.steps.iter().enumerate() {
            for b in s.buffers() {
                last[b.id] = i;
            }
        }
        last[self.output.id] = usize::MAX;
        let mut bufs: Vec<Vec<f64>> = vec![Vec::new(); reference.buffers];
        bufs[self.input.id] = x.iter().map(|&v| f64::from(v)).collect();
        let mut fold_bufs = bufs.clone();
        let i0 = self.offs[self.input.id];
        self.arena.fill(0.0);
        self.arena[i0..i0 + x.len()].copy_from_slice(x);
        let mut alone = self.arena.clone();
        let offs = self.offs.clone();
        let view = |arena: &[f32], id: usize, len: usize| -> Vec<f32> {
            arena[offs[id]..offs[id] + len].to_vec()
        };
        let mut out = Vec::with_capacity(self.steps.len());
        for (i, (step, rs)) in self.steps.iter().zip(&reference.steps).enumerate() {
            let inputs = rs.op.inputs();
            let y = rs.op.output();
            let mut rel_in = 0.0f64;
            for b in &inputs {
                let want = &bufs[b.id];
                let got = view(&self.arena, b.id, b.len);
                rel_in = rel_in.max(relative(max_abs_diff(&got, want), max_abs(want)));
                // The step alone starts from the reference, rounded to f32.
                let a = &mut alone[offs[b.id]..offs[b.id] + b.len];
                for (d, s) in a.iter_mut().zip(want) {
                    *d = *s as f32;
                }
            }
            if !inputs.contains(&y) {
                // Rows a step leaves unwritten (the class token's before it is set) compare
                // as zeros on both sides.
                self.arena[offs[y.id]..offs[y.id] + y.len].fill(0.0);
                alone[offs[y.id]..offs[y.id] + y.len].fill(0.0);
            }
            step.run(&mut self.arena, &offs)?;
            step.run(&mut alone, &offs)?;
            let folded = rs.op.run_folded(&bufs);
            rs.op.run(&mut bufs);
            rs.op.run_with_fold(&mut fold_bufs);
            let want = &bufs[y.id];
            let scale = max_abs(want);
            let diff = |f: &[f64]| {
                let d = f
                    .iter()
                    .zip(want)
                    .fold(0f64, |m, (a, b)| m.max((a - b).abs()));
                relative(d, scale)
            };
            let fold = folded.as_deref().map(diff);
            let fold_net = diff(&fold_bufs[y.id]);
            let abs = max_abs_diff(&view(&self.arena, y.id, y.len), want);
            let local = relative(max_abs_diff(&view(&alone, y.id, y.len), want), scale);
            out.push(StepError {
                kind: step.kind(),
                detail: step.describe(),
                shape: rs.shape.clone(),
                scale,
                abs,
                rel: relative(abs, scale),
                rel_in,
                local,
                fold,
                fold_net,
            });
            for b in step.buffers() {
                if last[b.id] == i {
                    bufs[b.id] = Vec::new();
                    fold_bufs[b.id] = Vec::new();
                }
            }
        }
        Ok(Accuracy {
            steps: out,
            reference: std::mem::take(&mut bufs[self.output.id]),
            output: view(&self.arena, self.output.id, self.output.len),
        })
    }
}
