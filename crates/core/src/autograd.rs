//! Define-by-run reverse-mode autograd: nodes, the no-grad scope and the backward walk.
//!
//! After micrograd: every op's backward rule sits beside its forward (in `ops/`); this file only
//! records and walks. An op records a `Node` only when grad mode is on and some input requires
//! grad (`needs_grad`); otherwise it saves nothing and builds no graph. A node holds
//! - one optional `Edge` per input: the input's own node, or the gradient slot of a leaf;
//! - a backward closure that captures exactly what the rule needs (detached tensors, so a
//!   saved output never points back at its own node and no reference cycle forms).
//!
//! `backward` sorts the nodes reachable from the root topologically with an explicit stack (no
//! recursion, so deep graphs cannot overflow), then walks them from the root, summing each
//! node's incoming gradients before calling its rule. Unless the graph is retained, each node's
//! closure (and with it every saved tensor) is dropped as soon as it has run. `Node`'s `Drop`
//! also unlinks chains iteratively. See `docs/autograd.md`.

use std::cell::Cell;
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use crate::error::{fmt_shape, Result, TensorError};
use crate::profile;
use crate::tensor::Tensor;

/// A backward rule: output gradient in, one optional gradient per input out.
pub(crate) type BackwardFn = Box<dyn Fn(&Tensor) -> Result<Vec<Option<Tensor>>> + Send + Sync>;

static LIVE_NODES: AtomicUsize = AtomicUsize::new(0);

/// Number of graph nodes currently alive in the process (for memory-leak tests).
pub fn live_nodes() -> usize {
    LIVE_NODES.load(Ordering::Relaxed)
}

thread_local! {
    static GRAD_ENABLED: Cell<bool> = const { Cell::new(true) };
}

/// Whether ops on this thread record nodes.
pub fn is_grad_enabled() -> bool {
    GRAD_ENABLED.with(|g| g.get())
}

/// Restores the previous grad mode when dropped.
#[must_use = "grad mode is restored when the guard is dropped"]
pub struct GradModeGuard {
    prev: bool,
}

impl Drop for GradModeGuard {
    fn drop(&mut self) {
        GRAD_ENABLED.with(|g| g.set(self.prev));
    }
}

/// Turns recording off on this thread until the guard drops: `let _g = no_grad();`.
pub fn no_grad() -> GradModeGuard {
    set_grad_enabled(false)
}

/// Sets grad mode on this thread until the guard drops.
pub fn set_grad_enabled(on: bool) -> GradModeGuard {
    let prev = GRAD_ENABLED.with(|g| g.replace(on));
    GradModeGuard { prev }
}

/// Whether an op over `inputs` must record a node: grad mode is on and some input requires
/// grad.
pub fn needs_grad(inputs: &[&Tensor]) -> bool {
    is_grad_enabled() && inputs.iter().any(|t| t.requires_grad())
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The gradient slot of a leaf tensor.
#[derive(Default)]
pub(crate) struct LeafGrad {
    grad: Mutex<Option<Tensor>>,
}

impl LeafGrad {
    pub(crate) fn get(&self) -> Option<Tensor> {
        lock(&self.grad).clone()
    }
    pub(crate) fn clear(&self) {
        *lock(&self.grad) = None;
    }
    fn accumulate(&self, g: Tensor) -> Result<()> {
        let mut slot = lock(&self.grad);
        let new = match slot.take() {
            Some(old) => old.add(&g)?,
            None => g.contiguous(),
        };
        *slot = Some(new.detach());
        Ok(())
    }
}

/// Where a gradient goes: into another node, or into a leaf's slot.
#[derive(Clone)]
pub(crate) enum Edge {
    Leaf(Arc<LeafGrad>),
    Node(Arc<Node>),
}

/// One recorded op.
pub(crate) struct Node {
    name: &'static str,
    /// One per input, `None` for inputs that need no gradient.
    edges: Vec<Option<Edge>>,
    /// Input shapes, to check every gradient a rule returns.
    shapes: Vec<Vec<usize>>,
    /// The rule and its saved tensors; taken (freed) when backward has run it.
    backward: Mutex<Option<BackwardFn>>,
    /// Where the node was built, kept only while a profile is being recorded (so its
    /// backward record gets the forward op's layer).
    prof: Option<profile::NodeTag>,
    /// For a `narrow` node, `(dim, start)`: its gradient is the output gradient placed in that
    /// region of a zero tensor, so backward can add it straight into the input's accumulated
    /// gradient (see [`add_region`]) instead of padding a full-size copy and summing.
    region: Option<(usize, usize)>,
}

impl Node {
    pub(crate) fn new(name: &'static str, inputs: &[&Tensor], backward: BackwardFn) -> Node {
        LIVE_NODES.fetch_add(1, Ordering::Relaxed);
        Node {
            name,
            edges: inputs.iter().map(|t| t.edge()).collect(),
            shapes: inputs.iter().map(|t| t.shape().to_vec()).collect(),
            backward: Mutex::new(Some(backward)),
            prof: profile::node_tag(),
            region: None,
        }
    }

    /// A `narrow` node (see `region`).
    pub(crate) fn narrow(input: &Tensor, dim: usize, start: usize, backward: BackwardFn) -> Node {
        let mut node = Node::new("narrow", &[input], backward);
        node.region = Some((dim, start));
        node
    }

    pub(crate) fn name(&self) -> &'static str {
        self.name
    }

    fn children(&self) -> impl Iterator<Item = &Arc<Node>> {
        self.edges.iter().filter_map(|e| match e {
            Some(Edge::Node(n)) => Some(n),
            _ => None,
        })
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        LIVE_NODES.fetch_sub(1, Ordering::Relaxed);
        // Unlink a long chain without recursing once per node.
        let mut stack: Vec<Arc<Node>> = std::mem::take(&mut self.edges)
            .into_iter()
            .filter_map(|e| match e {
                Some(Edge::Node(n)) => Some(n),
                _ => None,
            })
            .collect();
        while let Some(n) = stack.pop() {
            if let Ok(mut inner) = Arc::try_unwrap(n) {
                for e in std::mem::take(&mut inner.edges).into_iter().flatten() {
                    if let Edge::Node(c) = e {
                        stack.push(c);
                    }
                }
            }
        }
    }
}

/// Nodes reachable from `root`, each after every node that consumes it (root first).
fn topo_order(root: &Arc<Node>) -> Vec<Arc<Node>> {
    let mut post = Vec::new();
    let mut seen: HashSet<*const Node> = HashSet::new();
    // (node, index of the next child to visit)
    let mut stack: Vec<(Arc<Node>, usize)> = vec![(root.clone(), 0)];
    seen.insert(Arc::as_ptr(root));
    while let Some((node, i)) = stack.pop() {
        let next = node.children().nth(i).cloned();
        match next {
            Some(child) => {
                stack.push((node, i + 1));
                if seen.insert(Arc::as_ptr(&child)) {
                    stack.push((child, 0));
                }
            }
            None => post.push(node),
        }
    }
    post.reverse();
    post
}

/// The fast backward of a `narrow` node whose input already has an accumulated gradient that
/// nothing else shares: adds `g` into `region` of it in place. Returns whether it did (if not,
/// the node's rule runs as usual). Several slices of one tensor (attention's q, k and v out of
/// one qkv projection) then cost one full-size buffer instead of a zero-padded copy each plus
/// their sums.
fn add_region(
    node: &Node,
    (dim, start): (usize, usize),
    g: &Tensor,
    grads: &mut HashMap<*const Node, Tensor>,
) -> bool {
    let Some(Some(Edge::Node(target))) = node.edges.first() else {
        return false;
    };
    let key = Arc::as_ptr(target);
    let Some(mut acc) = grads.remove(&key) else {
        return false;
    };
    let full = &node.shapes[0];
    let done = acc.shape() == full.as_slice() && {
        let gd = g.data();
        acc.update_in_place(|vals| crate::ops::view::add_narrowed(vals, full, &gd, dim, start))
    };
    if done {
        // One add per element of the slice: reads it and the region, writes the region.
        let n = g.numel() as u64;
        profile::add_cost(|| profile::Cost {
            flops: n,
            macs: 0,
            bytes_read: 8 * n,
            bytes_written: 4 * n,
        });
    }
    grads.insert(key, acc);
    done
}

fn add_into(map: &mut HashMap<*const Node, Tensor>, key: *const Node, g: Tensor) -> Result<()> {
    let v = match map.remove(&key) {
        Some(old) => old.add(&g)?,
        None => g,
    };
    map.insert(key, v);
    Ok(())
}

impl Tensor {
    /// Backpropagates from this one-element tensor (seed gradient 1), accumulating into the
    /// gradients of the leaves that require grad, then frees the graph's saved tensors.
    pub fn backward(&self) -> Result<()> {
        if self.numel() != 1 {
            return Err(TensorError::autograd(
                "backward",
                format!(
                    "output of shape {} is not a scalar; use backward_with(grad)",
                    fmt_shape(self.shape())
                ),
            ));
        }
        self.backward_opts(&Tensor::ones(self.shape()), false)
    }

    /// Backpropagates `grad` (same shape as this tensor), then frees the graph.
    pub fn backward_with(&self, grad: &Tensor) -> Result<()> {
        self.backward_opts(grad, false)
    }

    /// Backpropagates `grad`; with `retain_graph` the saved tensors are kept so backward can
    /// run again over the same graph (gradients then accumulate).
    pub fn backward_opts(&self, grad: &Tensor, retain_graph: bool) -> Result<()> {
        self.backward_inner(grad, retain_graph, None)
    }

    /// [`backward_with`](Self::backward_with) that calls `on_ready(key)` as soon as a leaf's
    /// gradient is complete (no node left in the walk feeds it), with the leaf's
    /// [`grad_key`](Self::grad_key). Data-parallel training starts reducing a group of
    /// gradients across processes while backward still computes the others. Leaves are
    /// reported in a fixed order (the walk's), each at most once; an error from `on_ready`
    /// stops the walk.
    pub fn backward_hooked(
        &self,
        grad: &Tensor,
        on_ready: &mut dyn FnMut(usize) -> Result<()>,
    ) -> Result<()> {
        self.backward_inner(grad, false, Some(on_ready))
    }

    /// An identity of this leaf's gradient slot, shared by its clones (`None` for a tensor
    /// that is not a leaf requiring grad): the key [`backward_hooked`](Self::backward_hooked)
    /// reports.
    pub fn grad_key(&self) -> Option<usize> {
        match self.edge() {
            Some(Edge::Leaf(l)) => Some(Arc::as_ptr(&l) as usize),
            _ => None,
        }
    }

    fn backward_inner(
        &self,
        grad: &Tensor,
        retain_graph: bool,
        mut on_ready: Option<&mut dyn FnMut(usize) -> Result<()>>,
    ) -> Result<()> {
        if grad.shape() != self.shape() {
            return Err(TensorError::shape(
                "backward",
                format!(
                    "gradient of shape {} for an output of shape {}",
                    fmt_shape(grad.shape()),
                    fmt_shape(self.shape())
                ),
            ));
        }
        let _guard = no_grad();
        let root = match self.edge() {
            None => {
                return Err(TensorError::autograd(
                    "backward",
                    "tensor does not require grad and has no graph",
                ))
            }
            Some(Edge::Leaf(l)) => {
                l.accumulate(grad.detach())?;
                if let Some(f) = on_ready {
                    f(Arc::as_ptr(&l) as usize)?;
                }
                return Ok(());
            }
            Some(Edge::Node(n)) => n,
        };
        let order = topo_order(&root);
        // For the hook: the leaves whose last consumer is the i-th node of the walk.
        let ready_after: Vec<Vec<usize>> = match on_ready {
            None => Vec::new(),
            Some(_) => {
                let mut last: HashMap<usize, usize> = HashMap::new();
                let mut keys = Vec::new();
                for (i, node) in order.iter().enumerate() {
                    for e in node.edges.iter().flatten() {
                        if let Edge::Leaf(l) = e {
                            let k = Arc::as_ptr(l) as usize;
                            if last.insert(k, i).is_none() {
                                keys.push(k);
                            }
                        }
                    }
                }
                let mut after = vec![Vec::new(); order.len()];
                for k in keys {
                    after[last[&k]].push(k);
                }
                after
            }
        };
        let mut grads: HashMap<*const Node, Tensor> = HashMap::new();
        grads.insert(Arc::as_ptr(&root), grad.detach());
        for (i, node) in order.into_iter().enumerate() {
            if let Some(g) = grads.remove(&Arc::as_ptr(&node)) {
                run_node(&node, g, &mut grads, retain_graph)?;
            }
            if let Some(f) = on_ready.as_mut() {
                for &k in &ready_after[i] {
                    f(k)?;
                }
            }
        }
        Ok(())
    }
}

/// Runs one node's rule on its summed output gradient `g` and passes what it returns on to
/// its inputs (leaf slots, or the pending gradients of other nodes).
fn run_node(
    node: &Arc<Node>,
    g: Tensor,
    grads: &mut HashMap<*const Node, Tensor>,
    retain_graph: bool,
) -> Result<()> {
    // When profiling, the rule and the accumulation of what it returns are one
    // `<op>.backward` record.
    let mut frame = profile::begin();
    let freed = || {
        TensorError::autograd(
            "backward",
            format!(
                "the graph through `{}` was freed by an earlier backward \
                 (use backward_opts(.., retain_graph = true))",
                node.name
            ),
        )
    };
    let in_place = node.region.is_some_and(|r| add_region(node, r, &g, grads));
    let input_grads = if in_place {
        if !retain_graph {
            drop(lock(&node.backward).take());
        }
        Vec::new()
    } else if retain_graph {
        let f = lock(&node.backward);
        (f.as_ref().ok_or_else(freed)?)(&g)?
    } else {
        let f = lock(&node.backward).take().ok_or_else(freed)?;
        f(&g)?
    };
    if let Some(fr) = frame.as_mut() {
        // Anomaly detection: the gradients this rule made (a checking recording only).
        fr.check(input_grads.iter().flatten());
    }
    for (i, (edge, gi)) in node.edges.iter().zip(input_grads).enumerate() {
        let (Some(edge), Some(gi)) = (edge, gi) else {
            continue;
        };
        if gi.shape() != node.shapes[i].as_slice() {
            return Err(TensorError::autograd(
                "backward",
                format!(
                    "`{}` returned a gradient of shape {} for input {i} of shape {}",
                    node.name,
                    fmt_shape(gi.shape()),
                    fmt_shape(&node.shapes[i])
                ),
            ));
        }
        match edge {
            Edge::Leaf(l) => l.accumulate(gi)?,
            Edge::Node(n) => add_into(grads, Arc::as_ptr(n), gi)?,
        }
    }
    if let Some(fr) = frame {
        fr.end_backward(node.prof.as_ref(), node.name, g.shape(), &node.shapes);
    }
    Ok(())
}

/// Runs `f` with recording off on this thread.
pub fn no_grad_scope<T>(f: impl FnOnce() -> T) -> T {
    let _g = no_grad();
    f()
}
