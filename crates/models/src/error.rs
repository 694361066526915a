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
    /// Weights that do not fit the model: every missing, unexpected, mis-shaped or
    /// wrongly-typed tensor, listed together.
    Weights {
        /// The file (or other source) the weights came from.
        source: String,
        /// One line per problem.
        problems: Vec<String>,
    },
}

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
            ModelError::Weights { source, problems } => {
                write!(
                    f,
                    "{source}: {} problem(s) with the weights:",
                    problems.len()
                )?;
                for p in problems {
                    write!(f, "\n  - {p}")?;
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
