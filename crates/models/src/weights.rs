//! Loading and saving a [`Module`]'s tensors as safetensors, with timm's `state_dict` names and
//! PyTorch layouts, so `timm.create_model(...).state_dict()` saved with
//! `safetensors.torch.save_file` loads directly.
//!
//! Loading checks every key, dtype and shape before changing anything: missing, unexpected,
//! mis-shaped and non-float tensors are reported together in one [`ModelError::Weights`].
//! `num_batches_tracked` buffers (PyTorch batch norm bookkeeping) are accepted and ignored.

use crate::error::{ModelError, Result};
use crate::io::safetensors::{self, SafeTensors, TensorRef};
use crate::module::{named_tensors, Module};
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use tessera_core::Tensor;

/// Loads `path` into `module` (see the module docs for the checks).
pub fn load(module: &mut dyn Module, path: impl AsRef<Path>) -> Result<()> {
    let path = path.as_ref();
    let file = safetensors::read(path)?;
    load_from(module, &file, &path.display().to_string())
}

/// Loads already-read safetensors into `module`; `source` names them in errors.
pub fn load_from(module: &mut dyn Module, file: &SafeTensors, source: &str) -> Result<()> {
    let mut problems = Vec::new();
    let mut expected = BTreeSet::new();
    for (name, t, _) in named_tensors(module) {
        match file.tensors.get(&name) {
            None => problems.push(format!("missing tensor {name:?} (shape {:?})", t.shape())),
            Some(st) => {
                if st.shape != t.shape() {
                    problems.push(format!(
                        "tensor {name:?} has shape {:?} in the file but the model expects {:?}",
                        st.shape,
                        t.shape()
                    ));
                } else if st.as_f32().is_none() {
                    problems.push(format!(
                        "tensor {name:?} has dtype {} but a floating-point type is required",
                        st.dtype.name()
                    ));
                }
            }
        }
        expected.insert(name);
    }
    for name in file.tensors.keys() {
        if !expected.contains(name) && !name.ends_with("num_batches_tracked") {
            problems.push(format!(
                "unexpected tensor {name:?} (not part of this model)"
            ));
        }
    }
    if !problems.is_empty() {
        return Err(ModelError::Weights {
            source: source.to_string(),
            problems,
        });
    }
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
    match err {
        Some(e) => Err(e.into()),
        None => Ok(()),
    }
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
