//! Building blocks of the four architectures, each a [`crate::Module`] with timm's names.

pub mod attention;
pub mod bottleneck;
pub mod efficientnet_init;
pub mod inverted_residual;
pub mod mlp;
pub mod patch_embed;
pub mod se_module;
pub mod squeeze_excite;
pub mod trunk;
