//! AdamW (Loshchilov & Hutter, "Decoupled Weight Decay Regularization", ICLR 2019) with
//! `torch.optim.AdamW`'s update: `p = p * (1 - lr * wd); m = b1 m + (1 - b1) g;
//! v = b2 v + (1 - b2) g^2; p = p - lr * (m / (1 - b1^t)) / (sqrt(v / (1 - b2^t)) + eps)`.

use super::{decays, update_params, Optimizer, OptimizerState, UPDATE_CHUNK};
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
        self.step += 1;
        let t = self.step as i32;
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
            if m.len() != p.len() {
                *m = vec![0.0; p.len()];
                *v = vec![0.0; p.len()];
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
        })
    }

    fn no_decay(&mut self) -> &mut Vec<String> {
        &mut self.no_decay
    }

    fn state(&self) -> OptimizerState {
        let mut tensors = BTreeMap::new();
        for (k, v) in &self.m {
            tensors.insert(format!("adamw.exp_avg.{k}"), v.clone());
        }
        for (k, v) in &self.v {
            tensors.insert(format!("adamw.exp_avg_sq.{k}"), v.clone());
        }
        OptimizerState {
            tensors,
            scalars: BTreeMap::from([("adamw.step".to_string(), self.step as f64)]),
        }
    }

    fn load_state(&mut self, state: &OptimizerState) -> Result<()> {
        let step = state
            .scalars
            .get("adamw.step")
            .ok_or_else(|| ModelError::config("optimizer state is not an AdamW state"))?;
        self.step = *step as u64;
        let pick = |prefix: &str| {
            state
                .tensors
                .iter()
                .filter_map(|(k, v)| k.strip_prefix(prefix).map(|n| (n.to_string(), v.clone())))
                .collect()
        };
        self.m = pick("adamw.exp_avg.");
        self.v = pick("adamw.exp_avg_sq.");
        Ok(())
    }
}
