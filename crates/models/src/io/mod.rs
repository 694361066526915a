//! File formats: safetensors (weights, with timm's names) and NumPy `.npy` (inputs, outputs,
//! labels), plus the small JSON reader they need, and the safe file replacement every save
//! goes through ([`atomic`]). No dependencies beyond std.

pub mod atomic;
pub mod json;
pub mod npy;
pub mod safetensors;

use std::fmt;
use std::path::Path;

/// An error reading or writing a weights or array file; names the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileError {
    pub path: String,
    pub msg: String,
}

impl FileError {
    pub(crate) fn new(path: impl AsRef<Path>, msg: impl Into<String>) -> Self {
        FileError {
            path: path.as_ref().display().to_string(),
            msg: msg.into(),
        }
    }
}

impl fmt::Display for FileError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.msg)
    }
}

impl std::error::Error for FileError {}

/// The values of a tensor read from a file: floating-point types are converted to f32,
/// integer and boolean types to i64.
#[derive(Debug, Clone, PartialEq)]
pub enum Values {
    F32(Vec<f32>),
    I64(Vec<i64>),
}

impl Values {
    /// Number of elements.
    pub fn len(&self) -> usize {
        match self {
            Values::F32(v) => v.len(),
            Values::I64(v) => v.len(),
        }
    }

    /// Whether there are no elements.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
