//! Fine-tuning from pretrained weights: load a timm `state_dict` (a Hugging Face
//! `model.safetensors` or a `tessera train --save` file) into a model whose classifier may have
//! another number of classes, and save trained weights in the same layout.
//!
//! As timm's `create_model(name, pretrained=True, num_classes=k)` does, the classifier (the
//! last linear layer: ViT's `head`, the MobileNets' `classifier`, ResNet's `fc`) keeps its fresh
//! initialisation when its shape in the file differs from the model's; every other tensor must
//! match by name and shape.

use crate::error::Result;
use crate::io::safetensors::{self, Dtype, Tensor as FileTensor};
use crate::io::Values;
use crate::module::{named_parameters, named_tensors};
use crate::weights;
use crate::zoo::Model;
use std::collections::BTreeMap;
use std::path::Path;

/// The names of `model`'s classifier tensors: those sharing the module prefix of the last
/// parameter in visiting order (`head.weight`, `head.bias`).
pub fn classifier_names(model: &dyn Model) -> Vec<String> {
    let params = named_parameters(model);
    let Some((last, _)) = params.last() else {
        return Vec::new();
    };
    let prefix = match last.rfind('.') {
        Some(i) => &last[..=i],
        None => last.as_str(),
    };
    params
        .iter()
        .filter(|(n, _)| n.starts_with(prefix))
        .map(|(n, _)| n.clone())
        .collect()
}

/// What [`load_pretrained`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PretrainedLoad {
    /// Classifier tensors left at their fresh initialisation, sorted by name (empty when the
    /// file's classifier fits the model).
    pub reinitialised: Vec<String>,
    /// The classifier's output size in the file (`None` if the file has no classifier).
    pub file_classes: Option<usize>,
}

/// Loads the weights at `path` into `model` for fine-tuning; the classifier is kept as
/// initialised when the file's has another shape (or is absent). Everything else is checked
/// as [`weights::load`] checks it; on error the model is unchanged.
pub fn load_pretrained(model: &mut dyn Model, path: impl AsRef<Path>) -> Result<PretrainedLoad> {
    let path = path.as_ref();
    let mut file = safetensors::read(path)?;
    let source = path.display().to_string();
    let head = classifier_names(model);
    let current: BTreeMap<String, (Vec<usize>, Vec<f32>)> = named_tensors(model)
        .into_iter()
        .filter(|(n, _, _)| head.contains(n))
        .map(|(n, t, _)| (n, (t.shape().to_vec(), t.to_vec())))
        .collect();
    let file_classes = head
        .first()
        .and_then(|n| file.tensors.get(n))
        .and_then(|t| t.shape.first().copied());
    let fits = head.iter().all(|n| {
        file.tensors
            .get(n)
            .is_some_and(|t| Some(&t.shape) == current.get(n).map(|c| &c.0))
    });
    let mut reinitialised = Vec::new();
    if !fits {
        for (name, (shape, values)) in current {
            file.tensors.insert(
                name.clone(),
                FileTensor {
                    dtype: Dtype::F32,
                    shape,
                    values: Values::F32(values),
                },
            );
            reinitialised.push(name);
        }
    }
    weights::load_from(model, &file, &source)?;
    Ok(PretrainedLoad {
        reinitialised,
        file_classes,
    })
}

/// Saves `model`'s weights only, as a timm `state_dict` (every parameter and buffer by its
/// PyTorch name, f32, atomically), with the metadata of a Hugging Face timm file
/// (`{"format": "pt"}`) and `tessera.arch`: `timm.create_model(...).load_state_dict(
/// safetensors.torch.load_file(path), strict=True)` accepts it.
pub fn save_weights(model: &dyn Model, path: impl AsRef<Path>) -> Result<()> {
    let mut meta = BTreeMap::new();
    meta.insert("format".to_string(), "pt".to_string());
    meta.insert("tessera.arch".to_string(), model.arch().to_string());
    weights::save(model, path, &meta)
}
