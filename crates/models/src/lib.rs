//! # tessera-models
//!
//! Layers, architectures, optimizers, data and weight I/O, built on `tessera-core`.
//!
//! - A `Module` notion whose parameter names are exactly PyTorch `state_dict` keys; Linear,
//!   Conv2d, BatchNorm2d, LayerNorm, multi-head self-attention, SqueezeExcite and the blocks of
//!   the four architectures of the seed documents: ViT (Dosovitskiy et al., 2021), MobileNetV2
//!   (Sandler et al., 2018), MobileNetV3 (Howard et al., 2019) and SE-ResNet (Hu et al., 2018),
//!   configured as data and named after timm.
//! - safetensors weight loading and saving with timm's names and PyTorch layouts.
//! - SGD and AdamW with schedules, the digits, CIFAR-10 and image-folder data sets, the
//!   training loop, and fine-tuning from pretrained weights ([`finetune`]).

pub mod anomaly;
pub mod archs;
pub mod attention_maps;
pub mod blocks;
pub mod checkpoint;
pub mod data;
#[cfg(feature = "distributed")]
pub mod distributed;
pub mod error;
pub mod finetune;
pub mod grads;
pub mod init;
pub mod io;
pub mod labels;
pub mod layers;
pub mod limits;
pub mod module;
pub mod optim;
pub mod plan;
pub mod preprocess;
pub mod recipes;
pub mod train;
pub mod weights;
pub mod zoo;

pub use error::{ModelError, Result};
pub use module::{Mode, Module, TensorKind};
pub use tessera_core as core;
pub use zoo::{create, create_pretrained, Model, Overrides};
