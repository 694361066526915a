//! Loading and saving a [`Module`]'s tensors as safetensors, with timm's `state_dict` names and
//! PyTorch layouts, so `timm.create_model(...).state_dict()` saved with
//! `safetensors.torch.save_file` loads directly.
//!
//! Loading checks every key, dtype and shape before changing anything: missing, unexpected,
//! mis-shaped and non-float tensors are reported together in one [`ModelError::Weights`].
//! `num_batches_tracked` buffers (PyTorch batch norm bookkeeping) and the optimizer state of a
//! training checkpoint (`__optim__.*`) are accepted and ignored, so a `tessera train --save`
//! checkpoint loads as model weights.

use crate::error::{ModelError, Result};
use crate::io::safetensors::{self, SafeTensors, TensorRef};
use crate::io::Values;
use crate::module::{named_tensors, Module};
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use tessera_core::Tensor;

/// Prefix of the optimizer state in a training checkpoint (see [`crate::train`]); loading a
/// checkpoint as model weights skips these entries.
pub const OPTIMIZER_PREFIX: &str = "__optim__.";

/// Whether a file entry that the model does not have is bookkeeping to skip rather than an
/// unexpected tensor: batch norm's `num_batches_tracked`, a checkpoint's optimizer state.
fn ignorable(name: &str) -> bool {
    name.ends_with("num_batches_tracked") || name.starts_with(OPTIMIZER_PREFIX)
}

/// Every problem between the model's tensors (name, shape) and the file's, or `Ok`.
fn check(expected: &[(String, Vec<usize>)], file: &SafeTensors, source: &str) -> Result<()> {
    let mut problems = Vec::new();
    for (name, shape) in expected {
        match file.tensors.get(name) {
            None => problems.push(format!("missing tensor {name:?} (shape {shape:?})")),
            Some(st) if st.shape != *shape => problems.push(format!(
                "tensor {name:?} has shape {:?} in the file but the model expects {shape:?}",
                st.shape
            )),
            Some(st) if st.as_f32().is_none() => problems.push(format!(
                "tensor {name:?} has dtype {} but a floating-point type is required",
                st.dtype.name()
            )),
            Some(_) => {}
        }
    }
    let names: BTreeSet<&str> = expected.iter().map(|(n, _)| n.as_str()).collect();
    for name in file.tensors.keys() {
        if !names.contains(name.as_str()) && !ignorable(name) {
            problems.push(format!(
                "unexpected tensor {name:?} (not part of this model)"
            ));
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(ModelError::Weights {
            source: source.to_string(),
            problems,
        })
    }
}

fn expected_tensors(module: &dyn Module) -> Vec<(String, Vec<usize>)> {
    named_tensors(module)
        .into_iter()
        .map(|(n, t, _)| (n, t.shape().to_vec()))
        .collect()
}

/// Every problem between `module`'s tensors and `file` (missing, unexpected, mis-shaped,
/// non-float), as one [`ModelError::Weights`]; changes nothing.
pub fn check_against(module: &dyn Module, file: &SafeTensors, source: &str) -> Result<()> {
    check(&expected_tensors(module), file, source)
}

/// Loads `path` into `module` (see the module docs for the checks). On error the module is
/// unchanged.
pub fn load(module: &mut dyn Module, path: impl AsRef<Path>) -> Result<()> {
    let path = path.as_ref();
    let file = safetensors::read(path)?;
    load_from(module, &file, &path.display().to_string())
}

/// Loads already-read safetensors into `module`; `source` names them in errors. On error the
/// module is unchanged.
pub fn load_from(module: &mut dyn Module, file: &SafeTensors, source: &str) -> Result<()> {
    check(&expected_tensors(module), file, source)?;
    let mut err = None;
    module.visit_mut("", &mut |name, t, _| {
        let st = &file.tensors[name];
        if let Some(values) = st.as_f32() {
            match Tensor::from_slice(values, &st.shape) {
                // Keep the parameter's requires-grad state.
                Ok(new) => *t = new.requires_grad_(t.requires_grad()),
                Err(e) => err = Some(e),
            }
        }
    });
    err.map_or(Ok(()), |e| Err(e.into()))
}

/// [`load`] for inference with peak memory near one copy of the weights: the module's current
/// tensors are released before the file is read, and the file's buffers are moved in, not
/// copied. The checks are the same, but on error the module is left without usable weights.
pub fn load_lean(module: &mut dyn Module, path: impl AsRef<Path>) -> Result<()> {
    let path = path.as_ref();
    let expected = expected_tensors(module);
    module.visit_mut("", &mut |_, t, _| *t = Tensor::zeros(&[0]));
    let mut file = safetensors::read(path)?;
    check(&expected, &file, &path.display().to_string())?;
    let mut err = None;
    module.visit_mut("", &mut |name, t, _| {
        if let Some(st) = file.tensors.remove(name) {
            if let Values::F32(v) = st.values {
                match Tensor::from_vec(v, &st.shape) {
                    Ok(new) => *t = new,
                    Err(e) => err = Some(e),
                }
            }
        }
    });
    err.map_or(Ok(()), |e| Err(e.into()))
}

/// Saves every parameter and buffer of `module` to `path` (atomically), with `metadata`.
pub fn save(
    module: &dyn Module,
    path: impl AsRef<Path>,
    metadata: &BTreeMap<String, String>,
) -> Result<()> {
    let named = named_tensors(module);
    let data: Vec<(String, Vec<usize>, Vec<f32>)> = named
        .into_iter()
        .map(|(n, t, _)| (n, t.shape().to_vec(), t.to_vec()))
        .collect();
    let refs: Vec<TensorRef<'_>> = data
        .iter()
        .map(|(n, s, d)| TensorRef {
            name: n,
            shape: s,
            data: d,
        })
        .collect();
    safetensors::write(path, &refs, metadata)?;
    Ok(())
}
