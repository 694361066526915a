//! Stochastic gradient descent with momentum, Nesterov momentum and L2 weight decay, with
//! `torch.optim.SGD`'s update (dampening 0):
//! `d = g + wd * p; b = mu * b + d (b = d on the first step); d = nesterov ? d + mu * b : b;
//! p = p - lr * d`.

use super::{decays, update_params, Optimizer, OptimizerState, UPDATE_CHUNK};
use crate::error::{ModelError, Result};
use crate::module::Module;
use rayon::prelude::*;
use std::collections::BTreeMap;

/// SGD (see the module docs).
#[derive(Debug, Clone)]
pub struct Sgd {
    /// Momentum factor (0 = none).
    pub momentum: f32,
    /// Nesterov momentum.
    pub nesterov: bool,
    /// L2 weight decay added to the gradient.
    pub weight_decay: f32,
    /// Names that get no weight decay besides rank <= 1 tensors.
    pub no_decay: Vec<String>,
    buffers: BTreeMap<String, Vec<f32>>,
}

impl Sgd {
    /// Errors if Nesterov is asked for without momentum, or a coefficient is negative.
    pub fn new(momentum: f32, nesterov: bool, weight_decay: f32) -> Result<Self> {
        if momentum < 0.0 || weight_decay < 0.0 || (nesterov && momentum == 0.0) {
            return Err(ModelError::config(format!("sgd: momentum {momentum}, nesterov {nesterov}, weight decay {weight_decay}: Nesterov needs momentum > 0, and neither may be negative")));
        }
        Ok(Sgd {
            momentum,
            nesterov,
            weight_decay,
            no_decay: Vec::new(),
            buffers: BTreeMap::new(),
        })
    }
}

impl Optimizer for Sgd {
    fn step(&mut self, model: &mut dyn Module, lr: f32, grad_scale: f32) -> Result<()> {
        let (mu, nesterov, wd) = (self.momentum, self.nesterov, self.weight_decay);
        let (buffers, no_decay) = (&mut self.buffers, &self.no_decay);
        update_params(model, &mut |name, shape, p, g| {
            let wd = if decays(name, shape, no_decay) {
                wd
            } else {
                0.0
            };
            // One fused pass (the same arithmetic, in the same order, as the textbook form
            // d = g s + wd p; b = mu b + d; p -= lr (nesterov ? d + mu b : b)).
            if mu != 0.0 {
                let buf = buffers.entry(name.to_string()).or_default();
                let fresh = buf.len() != p.len();
                if fresh {
                    buf.clear();
                    buf.resize(p.len(), 0.0);
                }
                p.par_chunks_mut(UPDATE_CHUNK)
                    .zip(g.par_chunks(UPDATE_CHUNK))
                    .zip(buf.par_chunks_mut(UPDATE_CHUNK))
                    .for_each(|((p, g), buf)| {
                        for ((p, &g), b) in p.iter_mut().zip(g).zip(buf.iter_mut()) {
                            let d = g * grad_scale + wd * *p;
                            *b = if fresh { d } else { mu * *b + d };
                            let step = if nesterov { d + mu * *b } else { *b };
                            *p -= lr * step;
                        }
                    });
            } else {
                p.par_chunks_mut(UPDATE_CHUNK)
                    .zip(g.par_chunks(UPDATE_CHUNK))
                    .for_each(|(p, g)| {
                        for (p, &g) in p.iter_mut().zip(g) {
                            let d = g * grad_scale + wd * *p;
                            *p -= lr * d;
                        }
                    });
            }
        })
    }

    fn no_decay(&mut self) -> &mut Vec<String> {
        &mut self.no_decay
    }

    fn state(&self) -> OptimizerState {
        OptimizerState {
            tensors: self
                .buffers
                .iter()
                .map(|(k, v)| (format!("sgd.momentum_buffer.{k}"), v.clone()))
                .collect(),
            scalars: BTreeMap::from([("sgd".to_string(), 1.0)]),
        }
    }

    fn load_state(&mut self, state: &OptimizerState) -> Result<()> {
        if !state.scalars.contains_key("sgd") {
            return Err(ModelError::config("optimizer state is not an SGD state"));
        }
        self.buffers = state
            .tensors
            .iter()
            .filter_map(|(k, v)| {
                k.strip_prefix("sgd.momentum_buffer.")
                    .map(|n| (n.to_string(), v.clone()))
            })
            .collect();
        Ok(())
    }
}
