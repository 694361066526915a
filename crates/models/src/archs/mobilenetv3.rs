//! Placeholder: being implemented on its own branch.

use crate::error::{ModelError, Result};
use crate::zoo::{Model, Overrides};

/// Architecture names this family provides.
pub const NAMES: &[&str] = &[];

/// Builds one of [`NAMES`].
pub fn build(arch: &str, _overrides: &Overrides, _seed: u64) -> Result<Box<dyn Model>> {
    Err(ModelError::config(format!("{arch}: not available")))
}
