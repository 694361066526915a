//! timm's `Mlp` (`timm.layers.Mlp`): the position-wise feed-forward of a transformer block,
//! `fc1 -> act -> fc2` (Vaswani et al., 2017, eq. 2; GELU as in Dosovitskiy et al., 2021,
//! eq. 3). Dropouts (`drop1`, `drop2`) have rate 0 in every configuration tessera builds and
//! hold no weights, so they are omitted; `norm` is timm's `Identity`.
//!
//! Also [`LinearInit`], the choice between PyTorch's default `nn.Linear` initialisation and
//! timm's ViT one (truncated normal weight, zero bias), shared with [`super::attention`].

use crate::error::Result;
use crate::init;
use crate::layers::{Activation, Linear};
use crate::module::{in_child, Module};
use crate::module_children;
use tessera_core::{Rng, Tensor};

/// How a block initialises its `nn.Linear` layers.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum LinearInit {
    /// PyTorch's default: `U(-1/sqrt(in), 1/sqrt(in))` for weight and bias.
    PyTorch,
    /// timm's `init_weights_vit_timm`: `trunc_normal_(std)` weight, zero bias.
    TruncNormal(f32),
}

impl LinearInit {
    /// A `[out, in]` linear layer initialised this way.
    pub fn linear(
        self,
        in_features: usize,
        out_features: usize,
        bias: bool,
        rng: &mut Rng,
    ) -> Linear {
        match self {
            LinearInit::PyTorch => Linear::new(in_features, out_features, bias, rng),
            LinearInit::TruncNormal(std) => Linear {
                weight: init::trunc_normal(&[out_features, in_features], std, rng),
                bias: bias.then(|| Tensor::zeros(&[out_features])),
            },
        }
    }
}

/// `fc2(act(fc1(x)))` over the last dim.
pub struct Mlp {
    /// `in -> hidden`.
    pub fc1: Linear,
    /// The activation (GELU with erf in ViT).
    pub act: Activation,
    /// `hidden -> out`.
    pub fc2: Linear,
}

impl Mlp {
    /// `in_features -> hidden -> out_features` with biases.
    pub fn new(
        in_features: usize,
        hidden: usize,
        out_features: usize,
        act: Activation,
        init: LinearInit,
        rng: &mut Rng,
    ) -> Self {
        Mlp {
            fc1: init.linear(in_features, hidden, true, rng),
            act,
            fc2: init.linear(hidden, out_features, true, rng),
        }
    }
}

impl Module for Mlp {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        // At inference the activation runs in fc1's GEMM epilogue (exact composition when a
        // graph is recorded).
        let h = in_child("fc1", || {
            x.linear_act(&self.fc1.weight, self.fc1.bias.as_ref(), self.act)
        })?;
        in_child("fc2", || self.fc2.forward(&h))
    }

    module_children!("fc1" => fc1, "fc2" => fc2);
}
