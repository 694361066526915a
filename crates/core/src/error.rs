//! The error type of every fallible tensor operation.
//!
//! Shape, dimension and argument mistakes come back as a [`TensorError`] naming the op and the
//! shapes involved ("matmul: [2, 3] x [4, 5]: inner dimensions 3 and 4 differ"); no public
//! function panics on bad user input.

use std::fmt;

use tessera_kernels::KernelError;

/// An error from a tensor operation.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum TensorError {
    /// Shapes that do not fit together (broadcasting, matmul, cat, a data length).
    Shape { op: &'static str, msg: String },
    /// A dimension index out of range, or a repeated dimension.
    Dim { op: &'static str, msg: String },
    /// Any other invalid argument (a probability outside [0, 1), an index out of range, ...).
    Argument { op: &'static str, msg: String },
    /// Autograd misuse: backward on a tensor that needs no grad, a non-scalar without an output
    /// gradient, a graph already freed by an earlier backward.
    Autograd { op: &'static str, msg: String },
    /// An error reported by a kernel.
    Kernel(KernelError),
}

/// The result type of tensor operations.
pub type Result<T> = std::result::Result<T, TensorError>;

impl TensorError {
    /// Shorthand for [`TensorError::Shape`].
    pub fn shape(op: &'static str, msg: impl Into<String>) -> Self {
        TensorError::Shape {
            op,
            msg: msg.into(),
        }
    }
    /// Shorthand for [`TensorError::Dim`].
    pub fn dim(op: &'static str, msg: impl Into<String>) -> Self {
        TensorError::Dim {
            op,
            msg: msg.into(),
        }
    }
    /// Shorthand for [`TensorError::Argument`].
    pub fn arg(op: &'static str, msg: impl Into<String>) -> Self {
        TensorError::Argument {
            op,
            msg: msg.into(),
        }
    }
    /// Shorthand for [`TensorError::Autograd`].
    pub fn autograd(op: &'static str, msg: impl Into<String>) -> Self {
        TensorError::Autograd {
            op,
            msg: msg.into(),
        }
    }
}

impl fmt::Display for TensorError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TensorError::Shape { op, msg }
            | TensorError::Dim { op, msg }
            | TensorError::Argument { op, msg }
            | TensorError::Autograd { op, msg } => write!(f, "{op}: {msg}"),
            TensorError::Kernel(e) => write!(f, "kernel: {e}"),
        }
    }
}

impl std::error::Error for TensorError {}

impl From<KernelError> for TensorError {
    fn from(e: KernelError) -> Self {
        TensorError::Kernel(e)
    }
}

/// Formats a shape as `[2, 3]`.
pub(crate) fn fmt_shape(shape: &[usize]) -> String {
    format!("{shape:?}")
}

/// Checks `dim < rank`, naming the op and shape otherwise.
pub(crate) fn check_dim(op: &'static str, dim: usize, shape: &[usize]) -> Result<()> {
    if dim < shape.len() {
        Ok(())
    } else {
        Err(TensorError::dim(
            op,
            format!(
                "dim {dim} is out of range for shape {} (rank {})",
                fmt_shape(shape),
                shape.len()
            ),
        ))
    }
}
