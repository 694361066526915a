//! Activations as layers (`nn.ReLU`, `nn.ReLU6`, `nn.Hardswish`, ...), so architectures can be
//! configured with one (MobileNetV3's `--act swish` override swaps hard-swish for swish).

use crate::error::{ModelError, Result};
use crate::module::{Mode, Module, TensorKind};
use tessera_core::kernels::Activation;
use tessera_core::Tensor;

/// An activation function.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Act {
    /// `x`.
    Identity,
    /// `max(x, 0)`.
    Relu,
    /// `min(max(x, 0), 6)`.
    Relu6,
    /// `1 / (1 + exp(-x))`.
    Sigmoid,
    /// `tanh(x)`.
    Tanh,
    /// x * sigmoid(x) (SiLU).
    Swish,
    /// relu6(x + 3) / 6.
    HardSigmoid,
    /// x * relu6(x + 3) / 6 (Howard et al., MobileNetV3, 2019).
    HardSwish,
    /// The exact (erf) GELU, as `nn.GELU()`.
    Gelu,
    /// The tanh approximation of GELU.
    GeluTanh,
}

impl Act {
    /// Parses a name as used on the command line (`hardswish`, `swish`/`silu`, `gelu`...).
    pub fn from_name(name: &str) -> Result<Act> {
        Ok(match name.to_ascii_lowercase().as_str() {
            "identity" | "none" | "linear" => Act::Identity,
            "relu" => Act::Relu,
            "relu6" => Act::Relu6,
            "sigmoid" => Act::Sigmoid,
            "tanh" => Act::Tanh,
            "swish" | "silu" => Act::Swish,
            "hardsigmoid" | "hard_sigmoid" => Act::HardSigmoid,
            "hardswish" | "hard_swish" | "h-swish" => Act::HardSwish,
            "gelu" => Act::Gelu,
            "gelu_tanh" => Act::GeluTanh,
            other => return Err(ModelError::config(format!("unknown activation {other:?}"))),
        })
    }

    /// The kernels' activation (for fused epilogues: `linear_act`, `conv2d_act`).
    pub fn kernel(self) -> Activation {
        match self {
            Act::Identity => Activation::Identity,
            Act::Relu => Activation::Relu,
            Act::Relu6 => Activation::Relu6,
            Act::Sigmoid => Activation::Sigmoid,
            Act::Tanh => Activation::Tanh,
            Act::Swish => Activation::Swish,
            Act::HardSigmoid => Activation::HardSigmoid,
            Act::HardSwish => Activation::HardSwish,
            Act::Gelu => Activation::GeluErf,
            Act::GeluTanh => Activation::GeluTanh,
        }
    }

    /// Applies the activation.
    pub fn apply(self, x: &Tensor) -> Tensor {
        match self {
            Act::Identity => x.clone(),
            Act::Relu => x.relu(),
            Act::Relu6 => x.relu6(),
            Act::Sigmoid => x.sigmoid(),
            Act::Tanh => x.tanh(),
            Act::Swish => x.silu(),
            Act::HardSigmoid => x.hardsigmoid(),
            Act::HardSwish => x.hardswish(),
            Act::Gelu => x.gelu(),
            Act::GeluTanh => x.gelu_tanh(),
        }
    }
}

/// An activation as a parameter-free module.
pub struct ActLayer(pub Act);

impl Module for ActLayer {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        Ok(self.0.apply(x))
    }

    fn visit(&self, _prefix: &str, _f: &mut dyn FnMut(&str, &Tensor, TensorKind)) {}

    fn visit_mut(&mut self, _prefix: &str, _f: &mut dyn FnMut(&str, &mut Tensor, TensorKind)) {}

    fn set_mode(&mut self, _mode: Mode) {}
}
