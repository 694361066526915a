//! The basic layers every architecture is built from, each a [`crate::Module`] whose tensor
//! names match PyTorch's (`weight`, `bias`, `running_mean`, `running_var`).

mod activation;
mod batchnorm;
mod conv;
mod conv_bn_act;
mod dropout;
mod layernorm;
mod linear;

pub(crate) use activation::parse_override;
pub use activation::{ActLayer, Activation};
pub use batchnorm::BatchNorm2d;
pub use conv::Conv2d;
pub use conv_bn_act::{fold_batch_norm, BnAffine, ConvBnAct};
pub use dropout::Dropout;
pub use layernorm::LayerNorm;
pub use linear::Linear;
