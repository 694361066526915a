//! The model zoo: architectures by timm name, with timm's construction overrides.
//!
//! [`create_pretrained`]`("mobilenetv3_large_100", "model.safetensors")` builds a model
//! straight from a weights file (timm's `model.safetensors` from the Hugging Face hub, or a
//! `tessera train --save` file): the tensors are allocated without drawing random values and
//! the file's buffers are moved in, so peak memory stays near one copy of the weights.
//! [`create`]`(arch, &Overrides::default(), seed)` builds one initialised as timm does from
//! `seed`, for training. Each family lives in one file of [`crate::archs`], its
//! configurations as data; [`suggest`] finds the nearest name to a misspelt one.

use crate::archs;
use crate::error::{ModelError, Result};
use crate::module::{Mode, Module};
use crate::plan::{Plan, PlanOptions};
use std::path::Path;
use tessera_core::Tensor;

/// timm's `create_model` keyword overrides (`None` keeps the architecture's default).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Overrides {
    /// timm's `img_size`: input resolution (square).
    pub img_size: Option<usize>,
    /// timm's `in_chans`: input channels.
    pub in_chans: Option<usize>,
    /// timm's `num_classes`: output classes.
    pub num_classes: Option<usize>,
    /// ViT only.
    pub patch_size: Option<usize>,
    /// ViT only.
    pub embed_dim: Option<usize>,
    /// ViT only.
    pub depth: Option<usize>,
    /// ViT only.
    pub num_heads: Option<usize>,
    /// ViT only.
    pub mlp_ratio: Option<f32>,
    /// Replaces the architecture's main activation (the hard-swish study runs MobileNetV3 with
    /// `swish`); names as [`crate::layers::Activation::from_name`] (`hardswish`, `swish` / `silu`, `leaky_relu:0.2`, ...).
    pub act: Option<String>,
}

/// A classification network: a [`Module`] mapping `[n, in_chans, h, w]` images to
/// `[n, num_classes]` logits, whose forward can report its stages.
pub trait Model: Module {
    /// The timm name it was built as (`mobilenetv2_100`).
    fn arch(&self) -> &str;

    /// The default input `[in_chans, img_size, img_size]`.
    fn input_chw(&self) -> [usize; 3];

    /// Number of output classes.
    fn num_classes(&self) -> usize;

    /// Runs the forward pass, calling `stage(name, output)` after each top-level stage (the
    /// stem, each block, the head...), with `name` the prefix of that stage's parameters
    /// (`blocks.3`). `Module::forward` is this with a no-op callback.
    fn forward_stages(&self, x: &Tensor, stage: &mut dyn FnMut(&str, &Tensor)) -> Result<Tensor>;

    /// Compiles the inference forward for input `[n, c, h, w]` into a [`Plan`] (batch norm
    /// folded, epilogues fused, weights packed, intermediates in one arena): eval-mode
    /// weights as they are now; rebuild it after changing them. Models without a planner
    /// (test doubles) return an error.
    fn plan(&self, input: [usize; 4]) -> Result<Plan> {
        self.plan_with(input, &PlanOptions::default())
    }

    /// [`Model::plan`] with explicit [`PlanOptions`] (architectures ignore the options that
    /// do not apply to them).
    fn plan_with(&self, input: [usize; 4], options: &PlanOptions) -> Result<Plan> {
        let _ = options;
        Err(ModelError::config(format!(
            "{}: no inference plan for this model (input {input:?})",
            self.arch()
        )))
    }

    /// [`Model::plan`] with a float64 reference of every step on the unfolded parameters (batch
    /// norm after the convolution, not folded into it), for [`Plan::accuracy`]: the per-step
    /// error of the float32 plan (`tessera accuracy`). The plan keeps every feature map NCHW
    /// and fuses nothing the reference could not follow step by step (the plan of
    /// `PlanOptions { channels_last: false }`, without the fused expansion + depthwise steps);
    /// the reference holds every parameter again in f64.
    fn plan_reference(&self, input: [usize; 4]) -> Result<Plan> {
        Err(ModelError::config(format!(
            "{}: no inference plan for this model (input {input:?})",
            self.arch()
        )))
    }
}

/// Every architecture name `create` accepts.
pub fn names() -> Vec<&'static str> {
    let mut v = Vec::new();
    v.extend_from_slice(archs::vit::NAMES);
    v.extend_from_slice(archs::mobilenetv2::NAMES);
    v.extend_from_slice(archs::mobilenetv3::NAMES);
    v.extend_from_slice(archs::resnet::NAMES);
    v
}

/// Builds `arch` with `overrides`, initialised from `seed` as timm initialises it.
///
/// The configuration is checked against the memory budget first ([`crate::limits::check_model`]):
/// parameters and one image's forward pass must fit, or the error names the override and the
/// bytes it would need, before anything is allocated.
pub fn create(arch: &str, overrides: &Overrides, seed: u64) -> Result<Box<dyn Model>> {
    if names().contains(&arch) {
        crate::limits::check_model(arch, overrides)?;
    }
    if archs::vit::NAMES.contains(&arch) {
        archs::vit::build(arch, overrides, seed)
    } else if archs::mobilenetv2::NAMES.contains(&arch) {
        archs::mobilenetv2::build(arch, overrides, seed)
    } else if archs::mobilenetv3::NAMES.contains(&arch) {
        archs::mobilenetv3::build(arch, overrides, seed)
    } else if archs::resnet::NAMES.contains(&arch) {
        archs::resnet::build(arch, overrides, seed)
    } else {
        Err(ModelError::config(unknown_message(arch)))
    }
}

/// Builds `arch` with its weights read from the safetensors file at `path` (timm `state_dict`
/// names; a hub `model.safetensors` or a `tessera train --save` file), ready for inference:
/// eval mode, no parameter requiring grad (a forward records no graph). No random values are
/// drawn and the file's buffers become the model's: peak memory is about one copy of the
/// weights. Every missing, unexpected or mis-shaped tensor is reported together. To fine-tune,
/// hand the model to [`crate::train::Trainer`] (it switches gradients and training mode on).
pub fn create_pretrained(arch: &str, path: impl AsRef<Path>) -> Result<Box<dyn Model>> {
    create_pretrained_with(arch, &Overrides::default(), path)
}

/// [`create_pretrained`] with construction overrides (`num_classes` for a fine-tuned head,
/// `img_size`, ...), which must match the file.
pub fn create_pretrained_with(
    arch: &str,
    overrides: &Overrides,
    path: impl AsRef<Path>,
) -> Result<Box<dyn Model>> {
    let mut model = crate::init::without_draws(|| create(arch, overrides, 0))?;
    crate::module::set_requires_grad(model.as_mut(), false);
    crate::weights::load(model.as_mut(), path)?;
    model.set_mode(Mode::Eval);
    Ok(model)
}

/// The error message for an unknown name: the nearest known name, if one is close.
pub fn unknown_message(arch: &str) -> String {
    match suggest(arch) {
        Some(near) => format!(
            "unknown architecture {arch:?}; did you mean {near:?}? (`tessera list` shows all {})",
            names().len()
        ),
        None => format!(
            "unknown architecture {arch:?}; known: {}",
            names().join(", ")
        ),
    }
}

/// The known name nearest to `name` by edit distance (case-insensitive), if it is within
/// half of `name`'s length.
pub fn suggest(name: &str) -> Option<&'static str> {
    let name = name.to_ascii_lowercase();
    let (best, d) = names()
        .into_iter()
        .map(|n| (n, edit_distance(&name, n)))
        .min_by_key(|&(n, d)| (d, n.len()))?;
    (d <= name.chars().count().div_ceil(2).max(1)).then_some(best)
}

/// Levenshtein distance (insertions, deletions, substitutions) over characters.
pub fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut diag = row[0];
        row[0] = i + 1;
        for (j, &cb) in b.iter().enumerate() {
            let next = (diag + usize::from(ca != cb))
                .min(row[j] + 1)
                .min(row[j + 1] + 1);
            diag = row[j + 1];
            row[j + 1] = next;
        }
    }
    row[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn edit_distance_counts_edits() {
        assert_eq!(edit_distance("kitten", "sitting"), 3);
        assert_eq!(edit_distance("", "abc"), 3);
        assert_eq!(edit_distance("same", "same"), 0);
    }

    #[test]
    fn misspelt_names_get_the_nearest() {
        assert_eq!(
            suggest("mobilenetv3_large_10"),
            Some("mobilenetv3_large_100")
        );
        assert_eq!(suggest("vit_base_patch16"), Some("vit_base_patch16_224"));
        assert_eq!(suggest("resnet_50"), Some("resnet50"));
        assert_eq!(suggest("MobileNetV2_100"), Some("mobilenetv2_100"));
        assert_eq!(suggest("qqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqq"), None);
        let Err(e) = create("vit_digit", &Overrides::default(), 0) else {
            panic!("an unknown name was accepted")
        };
        assert!(e.to_string().contains("did you mean \"vit_digits\""), "{e}");
    }
}
