//! The error type of the models crate: tensor errors, file errors, invalid configurations and
//! weight mismatches (all problems of one load counted, the first few named).

use crate::io::FileError;
use std::fmt;
use tessera_core::TensorError;

/// How many problems a weights mismatch names in its message (all are kept in `problems`).
pub const SHOWN_PROBLEMS: usize = 10;

/// An error from building, running, loading or saving a model.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum ModelError {
    /// A tensor operation failed (names the op and the shapes).
    Tensor(TensorError),
    /// A file could not be read or written (names the file; keeps the `io::ErrorKind`).
    File(FileError),
    /// An invalid architecture configuration ("img_size 30 is not divisible by patch_size 16").
    Config(String),
    /// A request larger than the memory budget (see [`crate::limits`]): names what asked and
    /// the bytes it needs.
    Limit(String),
    /// NaN or infinity found by anomaly detection (see [`crate::anomaly`]): names where.
    Anomaly(String),
    /// Weights that do not fit the model: every missing, unexpected, mis-shaped or
    /// wrongly-typed tensor, one line each in `problems` (the message shows the counts and the
    /// first [`SHOWN_PROBLEMS`]).
    Weights {
        /// The file (or other source) the weights came from.
        source: String,
        /// One line per problem (`missing tensor ...`, `unexpected tensor ...`, ...).
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
                let count = |p: &str| problems.iter().filter(|l| l.starts_with(p)).count();
                let (missing, unexpected) = (count("missing tensor"), count("unexpected tensor"));
                let other = problems.len() - missing - unexpected;
                write!(
                    f,
                    "{source}: {} problem(s) with the weights",
                    problems.len()
                )?;
                if missing + unexpected > 0 {
                    write!(
                        f,
                        " ({missing} missing, {unexpected} unexpected, {other} other)"
                    )?;
                }
                write!(f, ":")?;
                for p in problems.iter().take(SHOWN_PROBLEMS) {
                    write!(f, "\n  - {p}")?;
                }
                if problems.len() > SHOWN_PROBLEMS {
                    write!(f, "\n  ... and {} more", problems.len() - SHOWN_PROBLEMS)?;
                }
                if unexpected > 0 && missing > 0 && other == 0 {
                    write!(
                        f,
                        "\n  (are these weights for another architecture? `tessera list` shows them)"
                    )?;
                }
                Ok(())
            }
        }
    }
}

impl std::error::Error for ModelError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            ModelError::Tensor(e) => Some(e),
            ModelError::File(e) => Some(e),
            _ => None,
        }
    }
}

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_long_mismatch_is_summarised() {
        let e = ModelError::Weights {
            source: "w.safetensors".into(),
            problems: (0..246)
                .map(|i| format!("unexpected tensor \"t{i}\""))
                .collect(),
        };
        let text = e.to_string();
        assert_eq!(text.lines().count(), 1 + SHOWN_PROBLEMS + 1, "{text}");
        assert!(
            text.contains("246 problem(s) with the weights (0 missing, 246 unexpected, 0 other):"),
            "{text}"
        );
        assert!(text.ends_with("... and 236 more"), "{text}");
    }
}
