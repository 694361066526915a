//! The error type of the models crate: tensor errors, file errors, invalid configurations and
//! weight mismatches (all problems of one load listed together).

use crate::io::FileError;
use std::fmt;
use tessera_core::TensorError;

/// An error from building, running, loading or saving a model.
#[derive(Debug, Clone, PartialEq)]
pub enum ModelError {
    /// A tensor operation failed (names the op and the shapes).
    Tensor(TensorError),
    /// A file could not be read or written (names the file).
    File(FileError),
    /// An invalid architecture configuration ("img_size 30 is not divisible by patch_size 16").
    Config(String),
    /// A request larger than the memory budget (see [`crate::limits`]): names what asked and
    /// the bytes it needs.
    Limit(String),
    /// NaN or infinity found by anomaly detection (see [`crate::anomaly`]): names where.
    Anomaly(String),
    /// Weights that do not fit the model: every missing, unexpected, mis-shaped or
    /// wrongly-typed tensor, listed together.
    Weights {
        source: String,
        problems: Vec<String>,
    },
}

/// How many problems of a [`ModelError::Weights`] its `Display` lists.
pub const MAX_LISTED: usize = 20;

/// The result type of the models crate.
pub type Result<T> = std::result::Result<T, ModelError>;

impl ModelError {
    /// Shorthand for [`ModelError::Config`].
    pub fn config(msg: impl Into<String>) -> Self {
        ModelError::Config(msg.into())
    }
}

impl fmt::Display for ModelError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ModelError::Tensor(e) => write!(f, "{e}"),
            ModelError::File(e) => write!(f, "{e}"),
            ModelError::Config(m) => write!(f, "invalid configuration: {m}"),
            ModelError::Limit(m) => write!(f, "over the memory budget: {m}"),
            ModelError::Anomaly(m) => write!(f, "anomaly: {m}"),
            ModelError::Weights { source, problems } => {
                write!(
                    f,
                    "{source}: {} problem(s) with the weights:",
                    problems.len()
                )?;
                // A corrupt file can have any number of problems; the first few say what is
                // wrong, the full list stays in `problems`.
                for p in problems.iter().take(MAX_LISTED) {
                    write!(f, "\n  - {p}")?;
                }
                if problems.len() > MAX_LISTED {
                    write!(f, "\n  ... and {} more", problems.len() - MAX_LISTED)?;
                }
                Ok(())
            }
        }
    }
}

impl std::error::Error for ModelError {}

impl From<TensorError> for ModelError {
    fn from(e: TensorError) -> Self {
        ModelError::Tensor(e)
    }
}

impl From<FileError> for ModelError {
    fn from(e: FileError) -> Self {
        ModelError::File(e)
    }
}
