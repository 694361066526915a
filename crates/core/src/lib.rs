//! # tessera-core
//!
//! Strided tensors and reverse-mode autograd, calling `tessera-kernels` for the compute.
//!
//! What will live here (see issue "Core: strided tensors and reverse-mode autograd"):
//! - `Tensor`: f32 values over shared storage with shape, strides (in elements) and an offset;
//!   cheap to clone, `Send + Sync`; views (reshape, permute, narrow, expand) that never copy, with
//!   `contiguous()` the one place that does (after candle's storage + layout split).
//! - Element-wise ops with NumPy broadcasting, reductions, batched matmul over the strided GEMM,
//!   softmax, normalisation, convolution and pooling, each with forward and backward.
//! - Define-by-run autograd that records a node only when an input requires grad, and a public
//!   `gradcheck` against central finite differences.

pub use tessera_kernels as kernels;
