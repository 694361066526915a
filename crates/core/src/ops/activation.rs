//! Activations: relu, relu6, leaky relu, sigmoid, tanh, silu, hardsigmoid, hardswish, gelu (erf
//! and tanh forms), on the SIMD kernels of `tessera_kernels::activation`.
//!
//! Definitions and derivative conventions at the kinks are PyTorch's (see the table in
//! `tessera_kernels::activation`): hardsigmoid `relu6(x + 3) / 6` and hardswish
//! `x * hardsigmoid(x)` (Howard et al., "Searching for MobileNetV3", 2019), gelu `x * Phi(x)`
//! and its tanh approximation (Hendrycks & Gimpel, 2016).
//!
//! Forward: one copy of the input into the output buffer, then the kernel in place. Saved:
//! sigmoid and tanh keep their output (`dx = dy s(1-s)`, `dy (1-t²)`); the others keep their
//! input for the kernel's `backward(act, x, dy, dx)`.

use tessera_kernels::activation::{self as act, Activation};
use tessera_kernels::Isa;

use crate::autograd::needs_grad;
use crate::ops::{elementwise_info, zip};
use crate::profile::{self, f32_bytes, Cost};
use crate::tensor::Tensor;

/// `y = act(x)` through the kernel (no graph), profiled as `name` with
/// [`profile::activation_flops`] per element.
fn forward(name: &'static str, x: &Tensor, a: Activation) -> Tensor {
    forward_on(name, x, a, None)
}

/// [`forward`] on a given kernel path (`None`: the detected one).
fn forward_on(name: &'static str, x: &Tensor, a: Activation, isa: Option<Isa>) -> Tensor {
    let frame = profile::begin();
    let xd = x.data();
    // A pooled output buffer (see `crate::pool`), not a fresh page-faulting allocation.
    let mut y = crate::pool::for_overwrite(xd.len());
    let done = match isa {
        Some(isa) => act::forward_with(isa, a, &xd, &mut y),
        None => act::forward(a, &xd, &mut y),
    };
    if done.is_err() {
        // Unreachable (the lengths match); the in-place form gives the same values.
        y.copy_from_slice(&xd);
        act::forward_inplace(a, &mut y);
    }
    let y = Tensor::from_contig(y, x.shape());
    if let Some(fr) = frame {
        let per = profile::activation_flops(a);
        fr.end_op(&y, || elementwise_info(name, &[x], &y, per));
    }
    y
}

/// An activation whose backward is the kernel's `dx = dy * f'(x)`.
fn activation(name: &'static str, x: &Tensor, a: Activation) -> Tensor {
    let y = forward(name, x, a);
    if !needs_grad(&[x]) {
        return y;
    }
    let xs = x.contiguous().detach();
    y.record(name, &[x], move |g| {
        let g = g.contiguous();
        let mut dx = crate::pool::for_overwrite(xs.numel());
        act::backward(a, &xs.data(), &g.data(), &mut dx)?;
        // The derivative (as many FLOPs as the function, nominally) times dy: reads x and dy.
        profile::add_cost(|| Cost {
            flops: (profile::activation_flops(a) + 1) * dx.len() as u64,
            macs: 0,
            bytes_read: f32_bytes(2 * dx.len()),
            bytes_written: f32_bytes(dx.len()),
        });
        Ok(vec![Some(Tensor::from_contig(dx, xs.shape()))])
    })
}

/// An activation whose derivative is a function `df(y)` of its output.
fn activation_by_output(
    name: &'static str,
    x: &Tensor,
    a: Activation,
    df: fn(f32) -> f32,
) -> Tensor {
    activation_by_output_on(name, x, a, df, None)
}

/// [`activation_by_output`] with the forward on a given kernel path.
fn activation_by_output_on(
    name: &'static str,
    x: &Tensor,
    a: Activation,
    df: fn(f32) -> f32,
    isa: Option<Isa>,
) -> Tensor {
    let y = forward_on(name, x, a, isa);
    if !needs_grad(&[x]) {
        return y;
    }
    let ys = y.detach();
    y.record(name, &[x], move |g| {
        Ok(vec![Some(zip(name, g, &ys, move |g, y| g * df(y))?)])
    })
}

impl Tensor {
    /// Applies `a` (the kernels' activation enum) as an autograd-tracked op.
    pub fn activate(&self, a: Activation) -> Tensor {
        match a {
            Activation::Identity => self.clone(),
            Activation::Relu => self.relu(),
            Activation::Relu6 => self.relu6(),
            Activation::LeakyRelu(s) => self.leaky_relu(s),
            Activation::Sigmoid => self.sigmoid(),
            Activation::Tanh => self.tanh(),
            Activation::Swish => self.silu(),
            Activation::HardSigmoid => self.hardsigmoid(),
            Activation::HardSwish => self.hardswish(),
            Activation::GeluErf => self.gelu(),
            Activation::GeluTanh => self.gelu_tanh(),
        }
    }

    /// `max(x, 0)` (gradient 0 at 0).
    pub fn relu(&self) -> Tensor {
        activation("relu", self, Activation::Relu)
    }

    /// `min(max(x, 0), 6)`.
    pub fn relu6(&self) -> Tensor {
        activation("relu6", self, Activation::Relu6)
    }

    /// `x` for `x > 0`, `slope * x` otherwise.
    pub fn leaky_relu(&self, slope: f32) -> Tensor {
        activation("leaky_relu", self, Activation::LeakyRelu(slope))
    }

    /// `1 / (1 + e^-x)`.
    pub fn sigmoid(&self) -> Tensor {
        activation_by_output("sigmoid", self, Activation::Sigmoid, |s| s * (1.0 - s))
    }

    /// `1 / (1 + e^-x)` correctly rounded on every ISA (the kernels' scalar path, which
    /// evaluates in f64), with the same backward as [`Tensor::sigmoid`]. For small tensors
    /// whose every element scales many others, such as a squeeze-and-excitation gate (`N x C`
    /// values, each multiplying a whole channel): the vector sigmoid's extra ulps there add
    /// up through a deep network (`docs/accuracy.md`). Several times the cost per element.
    pub fn sigmoid_exact(&self) -> Tensor {
        activation_by_output_on(
            "sigmoid",
            self,
            Activation::Sigmoid,
            |s| s * (1.0 - s),
            Some(Isa::Scalar),
        )
    }

    /// Hyperbolic tangent.
    pub fn tanh(&self) -> Tensor {
        activation_by_output("tanh", self, Activation::Tanh, |t| 1.0 - t * t)
    }

    /// `x * sigmoid(x)` (also called swish).
    pub fn silu(&self) -> Tensor {
        activation("silu", self, Activation::Swish)
    }

    /// Same as [`Tensor::silu`].
    pub fn swish(&self) -> Tensor {
        self.silu()
    }

    /// `relu6(x + 3) / 6`.
    pub fn hardsigmoid(&self) -> Tensor {
        activation("hardsigmoid", self, Activation::HardSigmoid)
    }

    /// `x * relu6(x + 3) / 6`.
    pub fn hardswish(&self) -> Tensor {
        activation("hardswish", self, Activation::HardSwish)
    }

    /// `x * Phi(x)` with the exact normal CDF (PyTorch `gelu(approximate='none')`).
    pub fn gelu(&self) -> Tensor {
        activation("gelu", self, Activation::GeluErf)
    }

    /// The tanh approximation of gelu (PyTorch `gelu(approximate='tanh')`).
    pub fn gelu_tanh(&self) -> Tensor {
        activation("gelu_tanh", self, Activation::GeluTanh)
    }
}
