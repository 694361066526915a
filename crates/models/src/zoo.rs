//! The model zoo: architectures by timm name, with timm's construction overrides.
//!
//! `create("vit_base_patch16_224", &Overrides::default(), seed)` builds a model initialised as
//! timm does from `seed`; load real weights with [`crate::weights::load`]. Each family lives in
//! one file of [`crate::archs`], its configurations as data.

use crate::archs;
use crate::error::{ModelError, Result};
use crate::module::Module;
use tessera_core::Tensor;

/// timm's `create_model` keyword overrides (`None` keeps the architecture's default).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Overrides {
    pub img_size: Option<usize>,
    pub in_chans: Option<usize>,
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
    /// `swish`); names as [`crate::layers::Act::from_name`].
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
        Err(ModelError::config(format!(
            "unknown architecture {arch:?}; known: {}",
            names().join(", ")
        )))
    }
}
