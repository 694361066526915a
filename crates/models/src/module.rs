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
use tessera_core::profile::module_scope;
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

/// Runs `f` as the child `name` of the module running now, `name` as the child's parameters
/// are named (`"qkv"`, `blocks.3`; empty for a child in its parent's namespace): the ops it
/// runs are recorded with that module path (`tessera_core::profile::module_scope`), which
/// anomaly detection reports. When nothing records, one thread-local flag check.
pub fn in_child<T>(name: impl std::fmt::Display, f: impl FnOnce() -> T) -> T {
    let _m = module_scope(name);
    f()
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

/// Joins a prefix and a local name: `("blocks.0.", "attn")` -> `"blocks.0.attn."`; an empty
/// name keeps the prefix (a child whose tensors are named in its parent's namespace).
pub fn child(prefix: &str, name: &str) -> String {
    if name.is_empty() {
        prefix.to_string()
    } else {
        format!("{prefix}{name}.")
    }
}

/// A field a module lists as a child: a module, an optional one, or a list of them (named
/// `name.0`, `name.1`, ... as `nn.ModuleList`). [`module_children!`](crate::module_children)
/// walks a list of such fields to write `visit`, `visit_mut` and `set_mode` at once.
pub trait Child {
    /// Visits the child named `name` under `prefix`.
    fn visit_child(&self, prefix: &str, name: &str, f: &mut dyn FnMut(&str, &Tensor, TensorKind));
    /// Visits the child named `name` under `prefix`, mutably.
    fn visit_child_mut(
        &mut self,
        prefix: &str,
        name: &str,
        f: &mut dyn FnMut(&str, &mut Tensor, TensorKind),
    );
    /// Sets the child's mode.
    fn set_child_mode(&mut self, mode: Mode);
}

impl<T: Module> Child for T {
    fn visit_child(&self, prefix: &str, name: &str, f: &mut dyn FnMut(&str, &Tensor, TensorKind)) {
        self.visit(&child(prefix, name), f)
    }

    fn visit_child_mut(
        &mut self,
        prefix: &str,
        name: &str,
        f: &mut dyn FnMut(&str, &mut Tensor, TensorKind),
    ) {
        self.visit_mut(&child(prefix, name), f)
    }

    fn set_child_mode(&mut self, mode: Mode) {
        self.set_mode(mode)
    }
}

impl<T: Child> Child for Option<T> {
    fn visit_child(&self, prefix: &str, name: &str, f: &mut dyn FnMut(&str, &Tensor, TensorKind)) {
        if let Some(c) = self {
            c.visit_child(prefix, name, f)
        }
    }

    fn visit_child_mut(
        &mut self,
        prefix: &str,
        name: &str,
        f: &mut dyn FnMut(&str, &mut Tensor, TensorKind),
    ) {
        if let Some(c) = self {
            c.visit_child_mut(prefix, name, f)
        }
    }

    fn set_child_mode(&mut self, mode: Mode) {
        if let Some(c) = self {
            c.set_child_mode(mode)
        }
    }
}

impl<T: Child> Child for Vec<T> {
    fn visit_child(&self, prefix: &str, name: &str, f: &mut dyn FnMut(&str, &Tensor, TensorKind)) {
        let p = child(prefix, name);
        for (i, c) in self.iter().enumerate() {
            c.visit_child(&p, &i.to_string(), f)
        }
    }

    fn visit_child_mut(
        &mut self,
        prefix: &str,
        name: &str,
        f: &mut dyn FnMut(&str, &mut Tensor, TensorKind),
    ) {
        let p = child(prefix, name);
        for (i, c) in self.iter_mut().enumerate() {
            c.visit_child_mut(&p, &i.to_string(), f)
        }
    }

    fn set_child_mode(&mut self, mode: Mode) {
        for c in self {
            c.set_child_mode(mode)
        }
    }
}

/// Children named `{stem}1`, `{stem}2`, ... in their parent's namespace (timm ResNet's
/// `layer1` .. `layer4`); list it under the empty name. Dereferences to the `Vec`.
pub struct Numbered<T> {
    /// Name prefix; child `i` is `{stem}{i + 1}`.
    pub stem: &'static str,
    /// The children, in order.
    pub items: Vec<T>,
}

impl<T> std::ops::Deref for Numbered<T> {
    type Target = Vec<T>;
    fn deref(&self) -> &Vec<T> {
        &self.items
    }
}

impl<T> std::ops::DerefMut for Numbered<T> {
    fn deref_mut(&mut self) -> &mut Vec<T> {
        &mut self.items
    }
}

impl<T: Child> Child for Numbered<T> {
    fn visit_child(&self, prefix: &str, name: &str, f: &mut dyn FnMut(&str, &Tensor, TensorKind)) {
        let p = child(prefix, name);
        for (i, c) in self.items.iter().enumerate() {
            c.visit_child(&p, &format!("{}{}", self.stem, i + 1), f)
        }
    }

    fn visit_child_mut(
        &mut self,
        prefix: &str,
        name: &str,
        f: &mut dyn FnMut(&str, &mut Tensor, TensorKind),
    ) {
        let p = child(prefix, name);
        for (i, c) in self.items.iter_mut().enumerate() {
            c.visit_child_mut(&p, &format!("{}{}", self.stem, i + 1), f)
        }
    }

    fn set_child_mode(&mut self, mode: Mode) {
        self.items.set_child_mode(mode)
    }
}

/// Writes a module's `visit`, `visit_mut` and `set_mode` from one list of its children, in
/// visiting order: `"name" => field` (a [`Child`]: a module, `Option` or `Vec` of them; `""`
/// names a child whose tensors live in this module's namespace, such as a
/// [`ConvBnAct`](crate::layers::ConvBnAct) pair).
///
/// ```ignore
/// impl Module for Mlp {
///     fn forward(&self, x: &Tensor) -> Result<Tensor> { ... }
///     module_children!("fc1" => fc1, "fc2" => fc2);
/// }
/// ```
#[macro_export]
macro_rules! module_children {
    ($($name:literal => $field:ident),* $(,)?) => {
        fn visit(
            &self,
            prefix: &str,
            f: &mut dyn FnMut(&str, &$crate::core::Tensor, $crate::module::TensorKind),
        ) {
            $( $crate::module::Child::visit_child(&self.$field, prefix, $name, f); )*
        }

        fn visit_mut(
            &mut self,
            prefix: &str,
            f: &mut dyn FnMut(&str, &mut $crate::core::Tensor, $crate::module::TensorKind),
        ) {
            $( $crate::module::Child::visit_child_mut(&mut self.$field, prefix, $name, f); )*
        }

        fn set_mode(&mut self, mode: $crate::module::Mode) {
            let _ = mode;
            $( $crate::module::Child::set_child_mode(&mut self.$field, mode); )*
        }
    };
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
        for (i, l) in self.layers.iter().enumerate() {
            h = in_child(i, || l.forward(&h))?;
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
