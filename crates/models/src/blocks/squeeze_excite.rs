//! Placeholder: being implemented on its own branch.
