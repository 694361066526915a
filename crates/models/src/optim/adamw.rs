//! AdamW (Loshchilov & Hutter, "Decoupled Weight Decay Regularization", ICLR 2019) with
//! `torch.optim.AdamW`'s update: `p = p * (1 - lr * wd); m = b1 m + (1 - b1) g;
//! v = b2 v + (1 - b2) g^2; p = p - lr * (m / (1 - b1^t)) / (sqrt(v / (1 - b2^t)) + eps)`.

use super::{
    check_param_tensor, check_state_lengths, check_step_count, decays, update_params, Optimizer,
    OptimizerState, UPDATE_CHUNK,
};
use crate::error::{ModelError, Result};
use crate::module::Module;
use rayon::prelude::*;
use std::collections::BTreeMap;

/// AdamW (see the module docs).
#[derive(Debug, Clone)]
pub struct AdamW {
    /// Decay of the first moment.
    pub beta1: f32,
    /// Decay of the second moment.
    pub beta2: f32,
    /// Added to the root of the second moment.
    pub eps: f32,
    /// Decoupled weight decay (per step: `p -= lr * weight_decay * p`).
    pub weight_decay: f32,
    /// Names that get no weight decay besides rank <= 1 tensors.
    pub no_decay: Vec<String>,
    step: u64,
    m: BTreeMap<String, Vec<f32>>,
    v: BTreeMap<String, Vec<f32>>,
}

impl AdamW {
    /// PyTorch defaults are betas (0.9, 0.999), eps 1e-8, weight decay 0.01.
    pub fn new(beta1: f32, beta2: f32, eps: f32, weight_decay: f32) -> Result<Self> {
        if !(0.0..1.0).contains(&beta1)
            || !(0.0..1.0).contains(&beta2)
            || eps <= 0.0
            || weight_decay < 0.0
        {
            return Err(ModelError::config(format!("adamw: betas ({beta1}, {beta2}) must be in [0, 1), eps {eps} > 0, weight decay {weight_decay} >= 0")));
        }
        Ok(AdamW {
            beta1,
            beta2,
            eps,
            weight_decay,
            no_decay: Vec::new(),
            step: 0,
            m: BTreeMap::new(),
            v: BTreeMap::new(),
        })
    }

    /// Steps taken so far.
    pub fn steps(&self) -> u64 {
        self.step
    }
}

impl Optimizer for AdamW {
    fn step(&mut self, model: &mut dyn Module, lr: f32, grad_scale: f32) -> Result<()> {
        check_state_lengths(
            "adamw",
            model,
            &[("exp_avg", &self.m), ("exp_avg_sq", &self.v)],
        )?;
        let step = self
            .step
            .checked_add(1)
            .filter(|&s| s <= i32::MAX as u64)
            .ok_or_else(|| ModelError::config("adamw: step count overflow"))?;
        self.step = step;
        let t = step as i32;
        let (b1, b2, eps, wd) = (self.beta1, self.beta2, self.eps, self.weight_decay);
        let (bc1, bc2) = (1.0 - (b1 as f64).powi(t), 1.0 - (b2 as f64).powi(t));
        let step_size = (lr as f64 / bc1) as f32;
        let bc2_sqrt = bc2.sqrt() as f32;
        let (ms, vs, no_decay) = (&mut self.m, &mut self.v, &self.no_decay);
        update_params(model, &mut |name, shape, p, g| {
            let wd = if decays(name, shape, no_decay) {
                wd
            } else {
                0.0
            };
            let m = ms
                .entry(name.to_string())
                .or_insert_with(|| vec![0.0; p.len()]);
            let v = vs
                .entry(name.to_string())
                .or_insert_with(|| vec![0.0; p.len()]);
            if m.len() != p.len() || v.len() != p.len() {
                return Err(format!(
                    "adamw: state of {name:?} has {} / {} values, the parameter {}",
                    m.len(),
                    v.len(),
                    p.len()
                ));
            }
            p.par_chunks_mut(UPDATE_CHUNK)
                .zip(g.par_chunks(UPDATE_CHUNK))
                .zip(m.par_chunks_mut(UPDATE_CHUNK))
                .zip(v.par_chunks_mut(UPDATE_CHUNK))
                .for_each(|(((p, g), m), v)| {
                    for i in 0..p.len() {
                        let gi = g[i] * grad_scale;
                        m[i] = b1 * m[i] + (1.0 - b1) * gi;
                        v[i] = b2 * v[i] + (1.0 - b2) * gi * gi;
                        let denom = v[i].sqrt() / bc2_sqrt + eps;
                        p[i] = p[i] * (1.0 - lr * wd) - step_size * m[i] / denom;
                    }
                });
            Ok(())
        })
    }

    fn no_decay(&mut self) -> &mut Vec<String> {
        &mut self.no_decay
    }

    fn state(&self) -> OptimizerState {
        let mut tensors = BTreeMap::new();
        for (k, v) in &self.m {
            tensors.insert(format!("{EXP_AVG}{k}"), v.clone());
        }
        for (k, v) in &self.v {
            tensors.insert(format!("{EXP_AVG_SQ}{k}"), v.clone());
        }
        OptimizerState {
            tensors,
            scalars: BTreeMap::from([(STEP.to_string(), self.step as f64)]),
        }
    }

    fn check_state(
        &self,
        state: &OptimizerState,
        params: Option<&[(String, usize)]>,
    ) -> Vec<String> {
        let mut problems = Vec::new();
        match state.scalars.get(STEP) {
            None => problems.push(format!(
                "not an AdamW state: no {STEP:?} (scalars: {:?})",
                state.scalars.keys().collect::<Vec<_>>()
            )),
            Some(&v) => {
                if let Err(m) = check_step_count(STEP, v) {
                    problems.push(m);
                }
            }
        }
        for k in state.scalars.keys().filter(|k| *k != STEP) {
            problems.push(format!("unknown AdamW optimizer scalar {k:?}"));
        }
        for (key, values) in &state.tensors {
            // `exp_avg_sq.` first: `exp_avg.` is not its prefix, but keep the match explicit.
            let name = key
                .strip_prefix(EXP_AVG_SQ)
                .or_else(|| key.strip_prefix(EXP_AVG));
            match name {
                Some(name) => check_param_tensor(key, name, values.len(), params, &mut problems),
                None => problems.push(format!("unknown AdamW optimizer tensor {key:?}")),
            }
        }
        for key in state.tensors.keys() {
            let pair = if let Some(n) = key.strip_prefix(EXP_AVG) {
                format!("{EXP_AVG_SQ}{n}")
            } else if let Some(n) = key.strip_prefix(EXP_AVG_SQ) {
                format!("{EXP_AVG}{n}")
            } else {
                continue;
            };
            if !state.tensors.contains_key(&pair) {
                problems.push(format!("optimizer tensor {key:?} comes without {pair:?}"));
            }
        }
        problems
    }

    fn load_state(&mut self, state: &OptimizerState) -> Result<()> {
        let problems = self.check_state(state, None);
        if !problems.is_empty() {
            return Err(ModelError::config(format!(
                "adamw: cannot load the optimizer state: {}",
                problems.join("; ")
            )));
        }
        let pick = |prefix: &str| {
            state
                .tensors
                .iter()
                .filter_map(|(k, v)| k.strip_prefix(prefix).map(|n| (n.to_string(), v.clone())))
                .collect()
        };
        self.step = state.scalars[STEP] as u64;
        self.m = pick(EXP_AVG);
        self.v = pick(EXP_AVG_SQ);
        Ok(())
    }
}

const EXP_AVG: &str = "adamw.exp_avg.";
const EXP_AVG_SQ: &str = "adamw.exp_avg_sq.";
const STEP: &str = "adamw.step";
