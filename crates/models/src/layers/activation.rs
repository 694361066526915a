//! Activations as layers (`nn.ReLU`, `nn.ReLU6`, `nn.Hardswish`, ...), so architectures can be
//! configured with one (MobileNetV3's `--act swish` override swaps hard-swish for swish).
//!
//! The activation type is the kernels' [`Activation`] (re-exported here), the same value the
//! fused epilogues take, with its one parser [`Activation::from_name`]: the command line, the
//! zoo's overrides and the library accept the same names, and an unknown name lists the valid
//! ones.

use crate::error::{ModelError, Result};
use crate::module::{Mode, Module, TensorKind};
use tessera_core::Tensor;

pub use tessera_core::kernels::Activation;

/// Parses an architecture's activation override (`Overrides::act`) with
/// [`Activation::from_name`], as a configuration error naming the architecture.
pub(crate) fn parse_override(arch: &str, name: &str) -> Result<Activation> {
    Activation::from_name(name).map_err(|e| ModelError::config(format!("{arch}: {e}")))
}

/// An activation as a parameter-free module.
pub struct ActLayer(pub Activation);

impl Module for ActLayer {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        Ok(x.activate(self.0))
    }

    fn visit(&self, _prefix: &str, _f: &mut dyn FnMut(&str, &Tensor, TensorKind)) {}

    fn visit_mut(&mut self, _prefix: &str, _f: &mut dyn FnMut(&str, &mut Tensor, TensorKind)) {}

    fn set_mode(&mut self, _mode: Mode) {}
}
