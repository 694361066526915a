//! `nn.BatchNorm2d` (Ioffe & Szegedy, 2015): batch statistics and a running-statistics update
//! (momentum 0.1, unbiased running variance) in training, running statistics in eval.
//!
//! `num_batches_tracked`, which PyTorch saves, is accepted and ignored when loading (it only
//! matters for `momentum = None`, which timm does not use).

use crate::error::Result;
use crate::module::{Mode, Module, TensorKind};
use std::sync::Mutex;
use tessera_core::kernels::Activation;
use tessera_core::ops::norm::RunningStats;
use tessera_core::Tensor;

/// Batch normalisation over the channels of an NCHW tensor.
pub struct BatchNorm2d {
    /// Scale `[c]` (gamma), initialised to 1.
    pub weight: Tensor,
    /// Shift `[c]` (beta), initialised to 0.
    pub bias: Tensor,
    /// (running_mean, running_var), updated by a training-mode forward.
    running: Mutex<(Tensor, Tensor)>,
    /// Added to the variance before the square root.
    pub eps: f32,
    /// Weight of the new batch statistics in the running ones (PyTorch's convention).
    pub momentum: f32,
    mode: Mode,
}

impl BatchNorm2d {
    /// `c` channels, eps 1e-5, momentum 0.1 (PyTorch's defaults).
    pub fn new(c: usize) -> Self {
        BatchNorm2d {
            weight: Tensor::ones(&[c]),
            bias: Tensor::zeros(&[c]),
            running: Mutex::new((Tensor::zeros(&[c]), Tensor::ones(&[c]))),
            eps: 1e-5,
            momentum: 0.1,
            mode: Mode::Eval,
        }
    }

    /// The running (mean, variance).
    pub fn running_stats(&self) -> (Tensor, Tensor) {
        self.running
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

impl BatchNorm2d {
    /// `act(self.forward(x))` as one fused op (`Tensor::batch_norm_act`: the activation applied
    /// as each plane is written, its derivative applied inside batch norm's backward), same
    /// values and gradients as the two ops. Sigmoid and tanh, whose ops differentiate through
    /// their saved output, stay two ops.
    pub fn forward_act(&self, x: &Tensor, act: Activation) -> Result<Tensor> {
        match act {
            Activation::Sigmoid | Activation::Tanh => Ok(self.forward(x)?.activate(act)),
            _ => self.forward_with(x, act),
        }
    }

    fn forward_with(&self, x: &Tensor, act: Activation) -> Result<Tensor> {
        let mut guard = self.running.lock().unwrap_or_else(|e| e.into_inner());
        let (mean, var) = &mut *guard;
        let training = self.mode == Mode::Train;
        // Data-parallel training may ask for statistics over the global batch.
        #[cfg(feature = "distributed")]
        if training && crate::distributed::sync_bn::active() {
            let running = RunningStats {
                mean,
                var,
                momentum: self.momentum,
            };
            let y = crate::distributed::sync_bn::forward(
                x,
                Some(running),
                Some(&self.weight),
                Some(&self.bias),
                self.eps,
                act,
            );
            if let Some(y) = y {
                return Ok(y?);
            }
        }
        let running = RunningStats {
            mean,
            var,
            momentum: self.momentum,
        };
        Ok(x.batch_norm_act(
            Some(running),
            Some(&self.weight),
            Some(&self.bias),
            training,
            self.eps,
            act,
        )?)
    }
}

impl Module for BatchNorm2d {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.forward_with(x, Activation::Identity)
    }

    fn visit(&self, prefix: &str, f: &mut dyn FnMut(&str, &Tensor, TensorKind)) {
        f(
            &format!("{prefix}weight"),
            &self.weight,
            TensorKind::Parameter,
        );
        f(&format!("{prefix}bias"), &self.bias, TensorKind::Parameter);
        let guard = self.running.lock().unwrap_or_else(|e| e.into_inner());
        f(
            &format!("{prefix}running_mean"),
            &guard.0,
            TensorKind::Buffer,
        );
        f(
            &format!("{prefix}running_var"),
            &guard.1,
            TensorKind::Buffer,
        );
    }

    fn visit_mut(&mut self, prefix: &str, f: &mut dyn FnMut(&str, &mut Tensor, TensorKind)) {
        f(
            &format!("{prefix}weight"),
            &mut self.weight,
            TensorKind::Parameter,
        );
        f(
            &format!("{prefix}bias"),
            &mut self.bias,
            TensorKind::Parameter,
        );
        let stats = self.running.get_mut().unwrap_or_else(|e| e.into_inner());
        f(
            &format!("{prefix}running_mean"),
            &mut stats.0,
            TensorKind::Buffer,
        );
        f(
            &format!("{prefix}running_var"),
            &mut stats.1,
            TensorKind::Buffer,
        );
    }

    fn set_mode(&mut self, mode: Mode) {
        self.mode = mode;
    }
}
