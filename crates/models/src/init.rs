//! Weight initialisers, as PyTorch and timm define them, drawn from a seeded generator so a
//! model built without weights is reproducible.
//!
//! - PyTorch's default for `nn.Linear` / `nn.Conv2d`: `kaiming_uniform_(a = sqrt(5))`, i.e.
//!   `U(-1/sqrt(fan_in), 1/sqrt(fan_in))` for the weight and the same bound for the bias.
//! - `trunc_normal_(std)`: normal truncated to `[-2, 2]` (absolute, timm's default bounds).
//! - `kaiming_normal_(mode = "fan_out", nonlinearity = "relu")`: `N(0, 2 / fan_out)` (timm ResNet).
//! - timm's EfficientNet/MobileNet `_init_weight_goog`: conv `N(0, 2 / fan_out)` with
//!   `fan_out = kh * kw * out / groups`; linear `U(-1/sqrt(out), 1/sqrt(out))`, bias 0.

use tessera_core::{Rng, Tensor};

thread_local! {
    /// Set while [`without_draws`] runs: initialisers return zeros instead of drawing.
    static NO_DRAWS: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Runs `build` with every initialiser of this module returning zeros without drawing a random
/// number: the tensors get their shapes but no values (zeroed allocations, whose pages are not
/// touched until written). For building a model whose weights are read from a file next
/// ([`crate::zoo::create_pretrained`]).
pub fn without_draws<T>(build: impl FnOnce() -> T) -> T {
    struct Reset(bool);
    impl Drop for Reset {
        fn drop(&mut self) {
            NO_DRAWS.with(|f| f.set(self.0));
        }
    }
    let _reset = Reset(NO_DRAWS.with(|f| f.replace(true)));
    build()
}

fn from_fn(shape: &[usize], mut f: impl FnMut() -> f32) -> Tensor {
    if NO_DRAWS.with(|f| f.get()) {
        return Tensor::zeros(shape);
    }
    let n: usize = shape.iter().product();
    let data: Vec<f32> = (0..n).map(|_| f()).collect();
    // The length matches the shape by construction.
    Tensor::from_vec(data, shape).unwrap_or_else(|_| Tensor::zeros(shape))
}

/// `U(-bound, bound)`.
pub fn uniform(shape: &[usize], bound: f32, rng: &mut Rng) -> Tensor {
    from_fn(shape, || (rng.uniform() * 2.0 - 1.0) * bound)
}

/// `N(0, std^2)`.
pub fn normal(shape: &[usize], std: f32, rng: &mut Rng) -> Tensor {
    from_fn(shape, || rng.normal() * std)
}

/// `N(0, std^2)` truncated to `[-2, 2]` by rejection (timm's `trunc_normal_` with its default
/// absolute bounds; for the usual `std = 0.02` the truncation never triggers in practice).
pub fn trunc_normal(shape: &[usize], std: f32, rng: &mut Rng) -> Tensor {
    from_fn(shape, || loop {
        let v = rng.normal() * std;
        if (-2.0..=2.0).contains(&v) {
            break v;
        }
    })
}

/// PyTorch's default `nn.Linear` / `nn.Conv2d` bound: `1 / sqrt(fan_in)`.
pub fn default_bound(fan_in: usize) -> f32 {
    if fan_in == 0 {
        0.0
    } else {
        1.0 / (fan_in as f32).sqrt()
    }
}
