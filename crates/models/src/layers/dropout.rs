//! `nn.Dropout` (Srivastava et al., 2014): active in training only; each training forward
//! draws a fresh mask from a seeded counter, so runs are reproducible.

use crate::error::Result;
use crate::module::{Mode, Module, TensorKind};
use std::sync::atomic::{AtomicU64, Ordering};
use tessera_core::Tensor;

/// Dropout with probability `p`.
pub struct Dropout {
    /// Probability of zeroing an element in training mode.
    pub p: f32,
    seed: AtomicU64,
    mode: Mode,
}

impl Dropout {
    /// Drop probability `p` in `[0, 1)`; masks are drawn from `seed`, `seed + 1`, ...
    pub fn new(p: f32, seed: u64) -> Self {
        Dropout {
            p,
            seed: AtomicU64::new(seed),
            mode: Mode::Eval,
        }
    }
}

impl Module for Dropout {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        if self.mode == Mode::Eval || self.p == 0.0 {
            return Ok(x.clone());
        }
        let seed = self.seed.fetch_add(1, Ordering::Relaxed);
        Ok(x.dropout(self.p, true, seed)?)
    }

    fn visit(&self, _prefix: &str, _f: &mut dyn FnMut(&str, &Tensor, TensorKind)) {}

    fn visit_mut(&mut self, _prefix: &str, _f: &mut dyn FnMut(&str, &mut Tensor, TensorKind)) {}

    fn set_mode(&mut self, mode: Mode) {
        self.mode = mode;
    }
}
