//! Activations as layers (`nn.ReLU`, `nn.ReLU6`, `nn.Hardswish`, ...), so architectures can be
//! configured with one (MobileNetV3's `--act swish` override swaps hard-swish for swish).

use crate::error::{ModelError, Result};
use crate::module::{Mode, Module, TensorKind};
use tessera_core::kernels::Activation;
use tessera_core::Tensor;

/// An activation function.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Act {
    Identity,
    Relu,
    Relu6,
    Sigmoid,
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
    /// Every activation a layer can be, by its name.
    pub const ALL: &'static [Act] = &[
        Act::Identity,
        Act::Relu,
        Act::Relu6,
        Act::Sigmoid,
        Act::Tanh,
        Act::Swish,
        Act::HardSigmoid,
        Act::HardSwish,
        Act::Gelu,
        Act::GeluTanh,
    ];

    /// Parses a name with the kernels' parser ([`Activation::from_name`]: `hardswish`,
    /// `hard-swish`, `swish` / `silu`, `gelu` / `gelu_erf`...), so the command line and the
    /// library accept the same names; an unknown name lists the valid ones.
    pub fn from_name(name: &str) -> Result<Act> {
        let valid = || {
            Act::ALL
                .iter()
                .map(|a| a.kernel().name())
                .collect::<Vec<_>>()
                .join(", ")
        };
        let parsed = Activation::from_name(name).ok();
        parsed
            .and_then(|k| Act::ALL.iter().copied().find(|a| a.kernel() == k))
            .ok_or_else(|| {
                ModelError::config(format!(
                    "unknown activation {name:?}; expected one of {}",
                    valid()
                ))
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
