//! The error type of every safe kernel entry point.
//!
//! Kernels never panic on bad input: a slice too short for the shape, an invalid stride or an
//! ISA the CPU lacks comes back as a [`KernelError`] that names the op and the numbers involved.

use std::fmt;

/// An error from a safe kernel entry point.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum KernelError {
    /// The arguments do not describe a valid problem: a slice is too short for its shape and
    /// strides, operands overlap, a dimension is invalid. `op` names the kernel.
    InvalidArgument { op: &'static str, msg: String },
    /// `TESSERA_ISA` (or an explicit request) asked for an instruction set this CPU lacks, or
    /// named no known instruction set.
    Isa(String),
}

impl KernelError {
    /// Shorthand for [`KernelError::InvalidArgument`].
    pub fn invalid(op: &'static str, msg: impl Into<String>) -> Self {
        KernelError::InvalidArgument {
            op,
            msg: msg.into(),
        }
    }
}

impl fmt::Display for KernelError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KernelError::InvalidArgument { op, msg } => write!(f, "{op}: {msg}"),
            KernelError::Isa(msg) => write!(f, "instruction set: {msg}"),
        }
    }
}

impl std::error::Error for KernelError {}
