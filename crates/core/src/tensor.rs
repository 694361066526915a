//! The `Tensor` handle: shared storage + layout + autograd links, and creation functions.
//!
//! After candle's `Tensor`: an `Arc` around an immutable inner record, so cloning is a reference
//! count bump and a `Tensor` is `Send + Sync` (one model can serve many threads). Storage is a
//! second `Arc`, shared by every view of the same buffer. Ops never write into an existing
//! storage; they build a new one, which is what makes sharing across threads safe without locks
//! on the data path. The only interior mutability is a leaf's gradient slot (a `Mutex`, written
//! by `backward` and read by the optimiser).

use std::borrow::Cow;
use std::sync::Arc;

use crate::autograd::{Edge, LeafGrad, Node};
use crate::error::{fmt_shape, Result, TensorError};
use crate::layout::Layout;
use crate::rng::Rng;
use crate::storage::{DType, Storage};

/// An n-dimensional f32 array view with optional reverse-mode autograd.
#[derive(Clone)]
pub struct Tensor(pub(crate) Arc<TensorInner>);

pub(crate) struct TensorInner {
    pub(crate) storage: Arc<Storage>,
    pub(crate) layout: Layout,
    /// The node that produced this tensor, when it was recorded (some input required grad).
    pub(crate) grad_fn: Option<Arc<Node>>,
    /// For a leaf that requires grad: where backward accumulates its gradient.
    pub(crate) leaf: Option<Arc<LeafGrad>>,
}

impl Tensor {
    // ---------------------------------------------------------------- construction (internal)

    /// A tensor over `storage` with `layout`, outside any graph.
    pub(crate) fn from_parts(storage: Arc<Storage>, layout: Layout) -> Tensor {
        Tensor(Arc::new(TensorInner {
            storage,
            layout,
            grad_fn: None,
            leaf: None,
        }))
    }

    /// A dense tensor owning `data` (length must equal the shape's element count).
    pub(crate) fn from_contig(data: Vec<f32>, shape: &[usize]) -> Tensor {
        debug_assert_eq!(data.len(), shape.iter().product::<usize>());
        Tensor::from_parts(Arc::new(Storage::from_f32(data)), Layout::contiguous(shape))
    }

    /// A new view of the same storage with another layout (no graph links).
    pub(crate) fn with_layout(&self, layout: Layout) -> Tensor {
        Tensor::from_parts(self.0.storage.clone(), layout)
    }

    /// This tensor, recorded as the output of an op `name` applied to `inputs`: the hook for
    /// writing a new differentiable op outside this crate (check it with
    /// [`crate::gradcheck()`]).
    ///
    /// Call it only when [`crate::autograd::needs_grad`] holds for the inputs (so inference
    /// builds no graph). `backward` maps the output gradient to one optional gradient per input
    /// (`None` = no gradient; otherwise the input's shape, checked by the engine); it runs
    /// with grad mode off. Capture only what it needs, and capture tensors `detach()`ed.
    ///
    /// ```
    /// use tessera_core::{autograd::needs_grad, no_grad_scope, Result, Tensor};
    /// fn square(x: &Tensor) -> Result<Tensor> {
    ///     let y = no_grad_scope(|| x.mul(x))?; // the forward, recording nothing
    ///     if !needs_grad(&[x]) {
    ///         return Ok(y);
    ///     }
    ///     let xs = x.detach();
    ///     Ok(y.record("square", &[x], move |g| Ok(vec![Some(g.mul(&xs)?.mul_scalar(2.0))])))
    /// }
    /// let x = Tensor::from_vec(vec![3.0], &[1])?.requires_grad_(true);
    /// square(&x)?.sum_all().backward()?;
    /// assert_eq!(x.grad().unwrap().to_vec(), vec![6.0]);
    /// # Ok::<(), tessera_core::TensorError>(())
    /// ```
    pub fn record(
        self,
        name: &'static str,
        inputs: &[&Tensor],
        backward: impl Fn(&Tensor) -> Result<Vec<Option<Tensor>>> + Send + Sync + 'static,
    ) -> Tensor {
        self.with_node(Node::new(name, inputs, Box::new(backward)))
    }

    /// This tensor's data as the output of `node`.
    fn with_node(self, node: Node) -> Tensor {
        Tensor(Arc::new(TensorInner {
            storage: self.0.storage.clone(),
            layout: self.0.layout.clone(),
            grad_fn: Some(Arc::new(node)),
            leaf: None,
        }))
    }

    /// [`record`](Self::record) for `narrow` (`dim`, `start`), whose gradient backward may add
    /// straight into its input's accumulated gradient.
    pub(crate) fn record_narrow(
        self,
        input: &Tensor,
        dim: usize,
        start: usize,
        backward: impl Fn(&Tensor) -> Result<Vec<Option<Tensor>>> + Send + Sync + 'static,
    ) -> Tensor {
        self.with_node(Node::narrow(input, dim, start, Box::new(backward)))
    }

    /// The edge backward follows into this tensor: its node, its leaf slot, or none.
    pub(crate) fn edge(&self) -> Option<Edge> {
        if let Some(n) = &self.0.grad_fn {
            Some(Edge::Node(n.clone()))
        } else {
            self.0.leaf.as_ref().map(|l| Edge::Leaf(l.clone()))
        }
    }

    // ---------------------------------------------------------------- creation (public)

    /// A tensor of `shape` owning `data` (row-major). Errors if the length does not match.
    pub fn from_vec(data: Vec<f32>, shape: &[usize]) -> Result<Tensor> {
        let n = crate::layout::checked_numel(shape).ok_or_else(|| {
            TensorError::shape(
                "from_vec",
                format!("{}: the element count overflows", fmt_shape(shape)),
            )
        })?;
        if data.len() != n {
            return Err(TensorError::shape(
                "from_vec",
                format!(
                    "{} values cannot fill shape {} ({n} elements)",
                    data.len(),
                    fmt_shape(shape)
                ),
            ));
        }
        Ok(Tensor::from_contig(data, shape))
    }

    /// A tensor of `shape` copied from `data` (row-major).
    pub fn from_slice(data: &[f32], shape: &[usize]) -> Result<Tensor> {
        Tensor::from_vec(data.to_vec(), shape)
    }

    /// A rank-0 tensor holding `v`.
    pub fn scalar(v: f32) -> Tensor {
        Tensor::from_contig(vec![v], &[])
    }

    /// A tensor of `shape` filled with `v`.
    pub fn full(shape: &[usize], v: f32) -> Tensor {
        Tensor::from_contig(vec![v; shape.iter().product()], shape)
    }

    /// A tensor of zeros.
    pub fn zeros(shape: &[usize]) -> Tensor {
        Tensor::full(shape, 0.0)
    }

    /// A tensor of ones.
    pub fn ones(shape: &[usize]) -> Tensor {
        Tensor::full(shape, 1.0)
    }

    /// Zeros with this tensor's shape.
    pub fn zeros_like(&self) -> Tensor {
        Tensor::zeros(self.shape())
    }

    /// Ones with this tensor's shape.
    pub fn ones_like(&self) -> Tensor {
        Tensor::ones(self.shape())
    }

    /// `[start, start + step, ...]` up to (excluding) `end`, as a 1-D tensor.
    pub fn arange(start: f32, end: f32, step: f32) -> Result<Tensor> {
        if step == 0.0 || !step.is_finite() || !start.is_finite() || !end.is_finite() {
            return Err(TensorError::arg(
                "arange",
                format!("start {start}, end {end}, step {step}: need finite values and step != 0"),
            ));
        }
        let n = ((end - start) / step).ceil().max(0.0) as usize;
        let data: Vec<f32> = (0..n).map(|i| start + i as f32 * step).collect();
        Ok(Tensor::from_contig(data, &[n]))
    }

    /// Uniform values in `[0, 1)` from the seeded generator in [`crate::rng`].
    pub fn rand(shape: &[usize], seed: u64) -> Tensor {
        let mut rng = Rng::new(seed);
        let data = (0..shape.iter().product()).map(|_| rng.uniform()).collect();
        Tensor::from_contig(data, shape)
    }

    /// Standard normal values from the seeded generator in [`crate::rng`].
    pub fn randn(shape: &[usize], seed: u64) -> Tensor {
        let mut rng = Rng::new(seed);
        let data = (0..shape.iter().product()).map(|_| rng.normal()).collect();
        Tensor::from_contig(data, shape)
    }

    /// Uniform values in `[lo, hi)`.
    pub fn rand_uniform(shape: &[usize], lo: f32, hi: f32, seed: u64) -> Tensor {
        let mut rng = Rng::new(seed);
        let data = (0..shape.iter().product())
            .map(|_| lo + (hi - lo) * rng.uniform())
            .collect();
        Tensor::from_contig(data, shape)
    }

    // ---------------------------------------------------------------- accessors

    /// The dimensions.
    pub fn shape(&self) -> &[usize] {
        &self.0.layout.shape
    }

    /// The strides, in elements.
    pub fn strides(&self) -> &[usize] {
        &self.0.layout.strides
    }

    /// The storage index of the first element.
    pub fn offset(&self) -> usize {
        self.0.layout.offset
    }

    /// Shape, strides and offset.
    pub fn layout(&self) -> &Layout {
        &self.0.layout
    }

    /// Number of dimensions.
    pub fn rank(&self) -> usize {
        self.shape().len()
    }

    /// Size of dimension `d`.
    pub fn dim(&self, d: usize) -> Result<usize> {
        crate::error::check_dim("dim", d, self.shape())?;
        Ok(self.shape()[d])
    }

    /// Number of elements.
    pub fn numel(&self) -> usize {
        self.0.layout.numel()
    }

    /// Whether the elements are dense and row-major.
    pub fn is_contiguous(&self) -> bool {
        self.0.layout.is_contiguous()
    }

    /// The element type (only f32 today).
    pub fn dtype(&self) -> DType {
        self.0.storage.dtype()
    }

    /// The shared storage.
    pub fn storage(&self) -> &Arc<Storage> {
        &self.0.storage
    }

    /// Whether two tensors share one storage buffer.
    pub fn same_storage(&self, other: &Tensor) -> bool {
        Arc::ptr_eq(&self.0.storage, &other.0.storage)
    }

    /// Runs `f` on this tensor's elements in place, when nothing else can see them: no other
    /// handle to this tensor or its storage exists (no view, no clone, no graph node that saved
    /// it) and it covers its storage contiguously. Returns `false` without calling `f`
    /// otherwise, so the caller falls back to building a new tensor. Optimizers use it to update
    /// parameters without allocating (and page-faulting) a new buffer per step.
    pub fn update_in_place(&mut self, f: impl FnOnce(&mut [f32])) -> bool {
        let Some(inner) = Arc::get_mut(&mut self.0) else {
            return false;
        };
        let (offset, numel) = (inner.layout.offset, inner.layout.numel());
        if !inner.layout.is_contiguous() {
            return false;
        }
        let Some(Storage::F32(v)) = Arc::get_mut(&mut inner.storage) else {
            return false;
        };
        match v.get_mut(offset..offset + numel) {
            Some(values) => {
                f(values);
                true
            }
            None => false,
        }
    }

    /// The raw storage elements (all of them, ignoring the layout).
    pub(crate) fn raw(&self) -> &[f32] {
        self.0.storage.as_f32()
    }

    /// The elements in row-major order: borrowed when contiguous, gathered otherwise.
    pub fn data(&self) -> Cow<'_, [f32]> {
        let l = &self.0.layout;
        if l.numel() == 0 {
            // An empty view may have an offset past the end of its (empty) storage.
            Cow::Borrowed(&[])
        } else if l.is_contiguous() {
            Cow::Borrowed(&self.raw()[l.offset..l.offset + l.numel()])
        } else {
            Cow::Owned(crate::layout::gather(self.raw(), l))
        }
    }

    /// The elements in row-major order, copied.
    pub fn to_vec(&self) -> Vec<f32> {
        self.data().into_owned()
    }

    /// The single value of a one-element tensor.
    pub fn item(&self) -> Result<f32> {
        if self.numel() != 1 {
            return Err(TensorError::shape(
                "item",
                format!(
                    "tensor of shape {} has {} elements, not 1",
                    fmt_shape(self.shape()),
                    self.numel()
                ),
            ));
        }
        Ok(self.raw()[self.offset()])
    }

    // ---------------------------------------------------------------- autograd handles

    /// Whether gradients flow to or through this tensor.
    pub fn requires_grad(&self) -> bool {
        self.0.grad_fn.is_some() || self.0.leaf.is_some()
    }

    /// Whether this tensor is a leaf (not produced by a recorded op).
    pub fn is_leaf(&self) -> bool {
        self.0.grad_fn.is_none()
    }

    /// A leaf handle over the same data that does (or does not) require grad. Gradients are
    /// accumulated per handle: clones of the returned tensor share the gradient slot.
    pub fn requires_grad_(self, on: bool) -> Tensor {
        Tensor(Arc::new(TensorInner {
            storage: self.0.storage.clone(),
            layout: self.0.layout.clone(),
            grad_fn: None,
            leaf: on.then(|| Arc::new(LeafGrad::default())),
        }))
    }

    /// The same data cut out of the graph: no grad, no node.
    pub fn detach(&self) -> Tensor {
        self.with_layout(self.0.layout.clone())
    }

    /// The accumulated gradient of a leaf, if backward has reached it.
    pub fn grad(&self) -> Option<Tensor> {
        self.0.leaf.as_ref().and_then(|l| l.get())
    }

    /// Clears the accumulated gradient of a leaf.
    pub fn zero_grad(&self) {
        if let Some(l) = &self.0.leaf {
            l.clear();
        }
    }

    /// The name of the op that produced this tensor, if it was recorded.
    pub fn op_name(&self) -> Option<&'static str> {
        self.0.grad_fn.as_ref().map(|n| n.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn send_sync() {
        fn check<T: Send + Sync>() {}
        check::<Tensor>();
    }

    #[test]
    fn creation() {
        assert!(Tensor::from_vec(vec![1.0; 5], &[2, 3]).is_err());
        let t = Tensor::arange(0.0, 5.0, 2.0).unwrap();
        assert_eq!(t.to_vec(), vec![0.0, 2.0, 4.0]);
        assert_eq!(
            Tensor::rand(&[4], 7).to_vec(),
            Tensor::rand(&[4], 7).to_vec()
        );
        assert_eq!(Tensor::full(&[2], 3.0).to_vec(), vec![3.0, 3.0]);
        assert_eq!(Tensor::scalar(2.0).item().unwrap(), 2.0);
    }

    #[test]
    fn update_in_place_only_when_nothing_else_sees_the_data() {
        let mut t = Tensor::from_vec(vec![1.0, 2.0, 3.0, 4.0], &[2, 2]).unwrap();
        let before = t.raw().as_ptr();
        assert!(t.update_in_place(|v| v.iter_mut().for_each(|x| *x *= 2.0)));
        assert_eq!(t.to_vec(), vec![2.0, 4.0, 6.0, 8.0]);
        assert_eq!(t.raw().as_ptr(), before, "the buffer was not reused");
        // A clone, a view or a detached handle shares the data: no in-place update.
        let clone = t.clone();
        assert!(!t.update_in_place(|_| unreachable!()));
        drop(clone);
        let view = t.detach();
        assert!(!t.update_in_place(|_| unreachable!()));
        assert_eq!(view.to_vec(), vec![2.0, 4.0, 6.0, 8.0]);
        drop(view);
        // A non-contiguous view (a transpose) is never updated in place.
        let mut tr = t.transpose(0, 1).unwrap();
        drop(t);
        assert!(!tr.update_in_place(|_| unreachable!()));
    }
}
