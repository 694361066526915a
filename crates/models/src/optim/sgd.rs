//! Stochastic gradient descent with momentum, Nesterov momentum and L2 weight decay, with
//! `torch.optim.SGD`'s update (dampening 0):
//! `d = g + wd * p; b = mu * b + d (b = d on the first step); d = nesterov ? d + mu * b : b;
//! p = p - lr * d`.

use super::{
    check_param_tensor, check_state_lengths, decays, update_params, Optimizer, OptimizerState,
    UPDATE_CHUNK,
};
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
        check_state_lengths("sgd", model, &[("momentum buffer", &self.buffers)])?;
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
                let fresh = !buffers.contains_key(name);
                let buf = buffers
                    .entry(name.to_string())
                    .or_insert_with(|| vec![0.0; p.len()]);
                if buf.len() != p.len() {
                    return Err(format!(
                        "sgd: momentum buffer of {name:?} has {} values, the parameter {}",
                        buf.len(),
                        p.len()
                    ));
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
            Ok(())
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
                .map(|(k, v)| (format!("{BUFFER}{k}"), v.clone()))
                .collect(),
            scalars: BTreeMap::from([(MARKER.to_string(), 1.0)]),
        }
    }

    fn check_state(
        &self,
        state: &OptimizerState,
        params: Option<&[(String, usize)]>,
    ) -> Vec<String> {
        let mut problems = Vec::new();
        match state.scalars.get(MARKER) {
            None => problems.push(format!(
                "not an SGD state: no {MARKER:?} (scalars: {:?})",
                state.scalars.keys().collect::<Vec<_>>()
            )),
            Some(&v) if v != 1.0 => {
                problems.push(format!("optimizer scalar {MARKER:?} is {v}, expected 1"))
            }
            Some(_) => {}
        }
        for k in state.scalars.keys().filter(|k| *k != MARKER) {
            problems.push(format!("unknown SGD optimizer scalar {k:?}"));
        }
        for (key, values) in &state.tensors {
            match key.strip_prefix(BUFFER) {
                Some(name) => check_param_tensor(key, name, values.len(), params, &mut problems),
                None => problems.push(format!("unknown SGD optimizer tensor {key:?}")),
            }
        }
        problems
    }

    fn load_state(&mut self, state: &OptimizerState) -> Result<()> {
        let problems = self.check_state(state, None);
        if !problems.is_empty() {
            return Err(ModelError::config(format!(
                "sgd: cannot load the optimizer state: {}",
                problems.join("; ")
            )));
        }
        self.buffers = state
            .tensors
            .iter()
            .filter_map(|(k, v)| k.strip_prefix(BUFFER).map(|n| (n.to_string(), v.clone())))
            .collect();
        Ok(())
    }
}

const BUFFER: &str = "sgd.momentum_buffer.";
const MARKER: &str = "sgd";
