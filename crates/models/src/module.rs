//! The `Module` notion: a forward function, parameters and buffers named exactly as PyTorch's
//! `state_dict` keys, and a train/eval mode.
//!
//! Names are built by construction, as in PyTorch: a container visits each child with
//! `prefix + "child_name."`, so a ViT's first qkv weight is visited as
//! `blocks.0.attn.qkv.weight`, the key timm writes. Loading timm weights therefore needs no
//! hand-written key table (see [`crate::weights`]).
//!
//! `forward` takes `&self`, so one model serves many threads at inference (a `Module` is
//! `Send + Sync`); training-only state that forward updates (batch-norm running statistics, the
//! dropout seed) sits behind a lock or an atomic inside the layer.

use crate::error::Result;
use tessera_core::Tensor;

/// Training or inference behaviour (dropout, batch-norm statistics).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Mode {
    /// Batch statistics in batch norm (running statistics updated), dropout active.
    Train,
    /// Running statistics in batch norm, dropout off.
    #[default]
    Eval,
}

/// What a named tensor of a module is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TensorKind {
    /// A learnable parameter (`nn.Parameter`): optimised, counted in the parameter count.
    Parameter,
    /// A buffer (`register_buffer`): saved and loaded, not optimised (running statistics).
    Buffer,
}

/// A layer or a network.
pub trait Module: Send + Sync {
    /// Runs the module on `x`.
    fn forward(&self, x: &Tensor) -> Result<Tensor>;

    /// Calls `f` with the full name (`prefix` + local name), value and kind of every parameter
    /// and buffer, in a fixed order.
    fn visit(&self, prefix: &str, f: &mut dyn FnMut(&str, &Tensor, TensorKind));

    /// As [`Module::visit`], with mutable access (to load weights or apply an optimiser step).
    fn visit_mut(&mut self, prefix: &str, f: &mut dyn FnMut(&str, &mut Tensor, TensorKind));

    /// Sets training or inference behaviour, recursively.
    fn set_mode(&mut self, mode: Mode);
}

/// Every named tensor of `m` (parameters and buffers), in visiting order.
pub fn named_tensors(m: &dyn Module) -> Vec<(String, Tensor, TensorKind)> {
    let mut out = Vec::new();
    m.visit("", &mut |name, t, kind| {
        out.push((name.to_string(), t.clone(), kind))
    });
    out
}

/// Every named parameter of `m` (no buffers), in visiting order.
pub fn named_parameters(m: &dyn Module) -> Vec<(String, Tensor)> {
    named_tensors(m)
        .into_iter()
        .filter(|(_, _, k)| *k == TensorKind::Parameter)
        .map(|(n, t, _)| (n, t))
        .collect()
}

/// Number of learnable parameters (as `sum(p.numel() for p in model.parameters())`).
pub fn parameter_count(m: &dyn Module) -> usize {
    let mut n = 0;
    m.visit("", &mut |_, t, kind| {
        if kind == TensorKind::Parameter {
            n += t.numel();
        }
    });
    n
}

/// Marks every parameter as requiring grad (or not), e.g. before training.
pub fn set_requires_grad(m: &mut dyn Module, on: bool) {
    m.visit_mut("", &mut |_, t, kind| {
        if kind == TensorKind::Parameter {
            *t = t.detach().requires_grad_(on);
        }
    });
}

/// Joins a prefix and a local name: `("blocks.0.", "attn")` -> `"blocks.0.attn."`.
pub fn child(prefix: &str, name: &str) -> String {
    format!("{prefix}{name}.")
}

/// A sequence of modules applied in order, named `0`, `1`, ... as `nn.Sequential`.
#[derive(Default)]
pub struct Sequential {
    /// The modules, in order.
    pub layers: Vec<Box<dyn Module>>,
}

impl Sequential {
    /// An empty sequence.
    pub fn new() -> Self {
        Sequential { layers: Vec::new() }
    }

    /// Appends a module.
    pub fn push(&mut self, m: impl Module + 'static) {
        self.layers.push(Box::new(m));
    }

    /// Number of modules.
    pub fn len(&self) -> usize {
        self.layers.len()
    }

    /// Whether there are no modules.
    pub fn is_empty(&self) -> bool {
        self.layers.is_empty()
    }
}

impl Module for Sequential {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let mut h = x.clone();
        for l in &self.layers {
            h = l.forward(&h)?;
        }
        Ok(h)
    }

    fn visit(&self, prefix: &str, f: &mut dyn FnMut(&str, &Tensor, TensorKind)) {
        for (i, l) in self.layers.iter().enumerate() {
            l.visit(&child(prefix, &i.to_string()), f);
        }
    }

    fn visit_mut(&mut self, prefix: &str, f: &mut dyn FnMut(&str, &mut Tensor, TensorKind)) {
        for (i, l) in self.layers.iter_mut().enumerate() {
            l.visit_mut(&child(prefix, &i.to_string()), f);
        }
    }

    fn set_mode(&mut self, mode: Mode) {
        for l in &mut self.layers {
            l.set_mode(mode);
        }
    }
}
