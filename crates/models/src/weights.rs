//! Loading and saving a [`Module`]'s tensors as safetensors, with timm's `state_dict` names and
//! PyTorch layouts: the `model.safetensors` files timm publishes on the Hugging Face hub
//! (`timm/<arch>.<tag>`, `{"format": "pt"}` metadata) and `timm.create_model(...).state_dict()`
//! saved with `safetensors.torch.save_file` load directly.
//!
//! To build a model from a weights file, use [`crate::zoo::create_pretrained`]: it allocates
//! the model's tensors without drawing random values and moves the file's buffers in, so peak
//! memory stays near one copy of the weights. [`load`] replaces the weights of an existing
//! model.
//!
//! Loading checks every key, dtype and shape before changing anything: missing, unexpected,
//! mis-shaped and non-float tensors are reported together in one [`ModelError::Weights`].
//! `num_batches_tracked` buffers (PyTorch batch norm bookkeeping) and the optimizer state of a
//! training checkpoint (`__optim__.*`) are accepted and ignored.

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

/// Loads `path` into `module` (see the module docs for the checks), moving the file's buffers
/// into the model. On error the module is unchanged.
pub fn load(module: &mut dyn Module, path: impl AsRef<Path>) -> Result<()> {
    let path = path.as_ref();
    let file = safetensors::read(path)?;
    load_owned(module, file, &path.display().to_string())
}

/// Loads already-read safetensors into `module` (copying the values); `source` names them in
/// errors. On error the module is unchanged.
pub fn load_from(module: &mut dyn Module, file: &SafeTensors, source: &str) -> Result<()> {
    check(&expected_tensors(module), file, source)?;
    assign(module, |name| {
        let st = file.tensors.get(name)?;
        Some((st.as_f32()?.to_vec(), st.shape.clone()))
    })
}

/// [`load_from`] moving the buffers out of `file` instead of copying them.
pub fn load_owned(module: &mut dyn Module, mut file: SafeTensors, source: &str) -> Result<()> {
    check(&expected_tensors(module), &file, source)?;
    assign(module, |name| {
        let st = file.tensors.remove(name)?;
        match st.values {
            Values::F32(v) => Some((v, st.shape)),
            Values::I64(_) => None,
        }
    })
}

/// Replaces every tensor of `module` with the values `take(name)` gives (already checked),
/// keeping each parameter's requires-grad state.
fn assign(
    module: &mut dyn Module,
    mut take: impl FnMut(&str) -> Option<(Vec<f32>, Vec<usize>)>,
) -> Result<()> {
    let mut err = None;
    module.visit_mut("", &mut |name, t, _| {
        if let Some((values, shape)) = take(name) {
            match Tensor::from_vec(values, &shape) {
                Ok(new) => *t = new.requires_grad_(t.requires_grad()),
                Err(e) => err = Some(e),
            }
        }
    });
    err.map_or(Ok(()), |e| Err(e.into()))
}

/// [`load`] into a model built with random weights, with peak memory near one copy of the
/// weights: the module's current tensors are released before the file is read. The checks are
/// the same, but on error the module is left without usable weights. A model built from a
/// file with [`crate::zoo::create_pretrained`] needs none of this.
pub fn load_lean(module: &mut dyn Module, path: impl AsRef<Path>) -> Result<()> {
    let path = path.as_ref();
    let expected = expected_tensors(module);
    module.visit_mut("", &mut |_, t, _| *t = Tensor::zeros(&[0]));
    let file = safetensors::read(path)?;
    let source = path.display().to_string();
    check(&expected, &file, &source)?;
    // The placeholders have the wrong shapes; the file was checked against the real ones.
    let mut i = 0;
    module.visit_mut("", &mut |_, t, _| {
        *t = Tensor::zeros(&expected[i].1);
        i += 1;
    });
    load_owned(module, file, &source)
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
