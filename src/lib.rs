//! # tessera
//!
//! A from-scratch CPU tensor engine with hand-written SIMD kernels, and the vision networks of
//! its seed documents (ViT, MobileNetV2, MobileNetV3, SE-ResNet) built on it.
//!
//! This crate re-exports the engine's crates for embedding; it has no command-line
//! dependencies (the `tessera` program lives in `crates/cli`).
//!
//! - [`kernels`]: slice-level SIMD kernels (GEMM, convolution, softmax, activations).
//! - [`core`]: strided tensors and reverse-mode autograd.
//! - [`models`]: layers, architectures, optimizers, data and weight I/O.

pub use tessera_core as core;
pub use tessera_kernels as kernels;
pub use tessera_models as models;

/// The README's Rust snippet, compiled by `cargo test` (not run: it needs a weights file).
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeSnippets;
