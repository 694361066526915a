//! # tessera-core
//!
//! Strided tensors and reverse-mode autograd, calling `tessera-kernels` for the compute.
//!
//! - [`Tensor`]: f32 values over shared [`Storage`] with a [`Layout`] (shape, strides in
//!   elements, offset); cheap to clone, `Send + Sync`. Views (reshape, permute, narrow, expand,
//!   squeeze) never copy; [`Tensor::contiguous`] is the one place that does (after candle's
//!   storage + layout split).
//! - Ops in [`ops`], one file per family with forward and backward side by side: element-wise
//!   with NumPy broadcasting, activations, reductions, batched matmul on the strided GEMM,
//!   softmax and losses, normalisation, convolution and pooling.
//! - [`autograd`]: define-by-run; a node is recorded only when an input requires grad, nothing
//!   under [`no_grad`]. [`gradcheck()`] checks any op against central finite differences.
//!
//! Every fallible function returns [`Result`] with a [`TensorError`] naming the op and shapes.
//!
//! ```
//! use tessera_core::{no_grad, Tensor};
//! # fn main() -> tessera_core::Result<()> {
//! let x = Tensor::randn(&[4, 3], 0);
//! let w = Tensor::randn(&[2, 3], 1).requires_grad_(true);
//! let loss = x.linear(&w, None)?.relu().cross_entropy(&[0, 1, 1, 0], 0.0)?;
//! loss.backward()?;
//! assert_eq!(w.grad().unwrap().shape(), &[2, 3]);
//! // Inference records nothing.
//! let _g = no_grad();
//! assert!(!x.linear(&w, None)?.requires_grad());
//! # Ok(())
//! # }
//! ```
//! See `docs/autograd.md` for how nodes are recorded and walked.

pub mod autograd;
mod display;
pub mod error;
pub mod gradcheck;
pub mod layout;
pub mod ops;
pub mod pool;
pub mod profile;
pub mod rng;
pub mod storage;
mod tensor;

pub use autograd::{is_grad_enabled, live_nodes, no_grad, no_grad_scope, set_grad_enabled};
pub use error::{Result, TensorError};
pub use gradcheck::{gradcheck, GradcheckOptions, GradcheckReport};
pub use layout::Layout;
pub use ops::conv::Conv2dParams;
pub use ops::norm::{BatchReduce, RunningStats};
pub use ops::pool::Pool2dParams;
pub use rng::Rng;
pub use storage::{live_storages, DType, Storage};
pub use tensor::Tensor;
pub use tessera_kernels as kernels;
