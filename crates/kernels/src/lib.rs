//! # tessera-kernels
//!
//! Slice-level compute kernels for tessera: no tensor type lives here, only functions over
//! `&[f32]` / raw pointers with explicit shapes and strides.
//!
//! Layout follows tract-linalg and BLIS: each op family is one module holding its portable
//! framework (the driver, the safe slice-checked entry point) and a scalar reference kernel
//! that stays forever as the test oracle. The SIMD kernels of the activation, exp, softmax and
//! depthwise families are written once over the vector trait of `simd/` (one impl per ISA:
//! AVX-512F, AVX2 + FMA, portable on the `wide` crate, scalar) and reached through one table
//! of `#[target_feature]` entry points per ISA ([`isa`]'s `Tables`). The ISA is detected once
//! and cached in [`isa`]; `TESSERA_ISA` forces a path.
//!
//! Modules:
//! - [`isa`]: CPU detection, the cached choice and the `TESSERA_ISA` override.
//! - [`gemm`]: strided f32 GEMM with a fused bias + activation epilogue (Goto/BLIS structure).
//! - [`activation`]: the activation family (forward, backward, fused-epilogue vector forms).
//! - [`exp`]: the vectorised exp shared by sigmoid, swish, tanh, gelu and softmax.
//! - [`softmax`]: softmax and log-softmax over rows, forward and backward.
//! - [`attention`]: the fused multi-head self-attention core (scores, softmax, values), forward
//!   and backward, per (image, head) on the GEMM and softmax kernels.
//! - [`conv`]: 2-D convolution (depthwise, 1x1 as GEMM, im2col + GEMM), forward and backward.
//! - [`norm`]: batch norm and layer norm, forward and backward.
//! - [`peak`]: the machine's FMA peak and memory bandwidth loops (for roofline verdicts).
//! - [`pool`]: max, average and adaptive average pooling, forward and backward.
//! - [`squeeze_excite`]: the squeeze-and-excitation gate in f64 and its residual join with one
//!   rounding.
//! - [`error`]: the error type every safe entry point returns.

#![deny(unsafe_op_in_unsafe_fn)]

pub mod activation;
pub mod attention;
pub mod conv;
pub mod error;
pub mod exp;
pub mod gemm;
pub mod host;
pub mod isa;
pub mod memory;
pub mod norm;
pub mod parallel;
pub mod peak;
pub mod pool;
pub(crate) mod simd;
pub mod softmax;
pub mod squeeze_excite;

pub use activation::Activation;
pub use error::KernelError;
pub use isa::Isa;
