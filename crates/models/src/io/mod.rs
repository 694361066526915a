//! File formats: safetensors (weights, with timm's names) and NumPy `.npy` (inputs, outputs,
//! labels), plus the small JSON reader they need, and the safe file replacement every save
//! goes through ([`atomic`]). No dependencies beyond std.

pub mod atomic;
pub mod json;
pub mod npy;
pub mod safetensors;

use std::fmt;
use std::path::Path;
use std::sync::Arc;

/// An error reading or writing a weights or array file; names the file. When an operating-system
/// error caused it, [`FileError::kind`] is its `io::ErrorKind` and `source()` returns it.
#[derive(Debug, Clone)]
pub struct FileError {
    /// The file, as given.
    pub path: String,
    /// What is wrong with it.
    pub msg: String,
    io: Option<Arc<std::io::Error>>,
}

impl FileError {
    pub(crate) fn new(path: impl AsRef<Path>, msg: impl Into<String>) -> Self {
        FileError {
            path: path.as_ref().display().to_string(),
            msg: msg.into(),
            io: None,
        }
    }

    /// An error caused by `err` while doing `what` (`"cannot open"`) on `path`.
    pub(crate) fn io(path: impl AsRef<Path>, what: &str, err: std::io::Error) -> Self {
        FileError {
            path: path.as_ref().display().to_string(),
            msg: format!("{what}: {err}"),
            io: Some(Arc::new(err)),
        }
    }

    /// The operating system's error kind (`NotFound`, `PermissionDenied`...), if one caused
    /// this error.
    pub fn kind(&self) -> Option<std::io::ErrorKind> {
        self.io.as_ref().map(|e| e.kind())
    }
}

impl PartialEq for FileError {
    fn eq(&self, other: &Self) -> bool {
        self.path == other.path && self.msg == other.msg && self.kind() == other.kind()
    }
}

impl Eq for FileError {}

impl fmt::Display for FileError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.msg)
    }
}

impl std::error::Error for FileError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.io
            .as_ref()
            .map(|e| e.as_ref() as &(dyn std::error::Error + 'static))
    }
}

/// The values of a tensor read from a file: floating-point types are converted to f32,
/// integer and boolean types to i64.
#[derive(Debug, Clone, PartialEq)]
pub enum Values {
    /// Floating-point values, converted to f32.
    F32(Vec<f32>),
    /// Integer and boolean values, widened to i64.
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
