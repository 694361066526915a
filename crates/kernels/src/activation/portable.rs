//! Portable vector forms of the activations on the `wide` crate (8 lanes of f32).

use super::Activation;
use wide::f32x8;

/// Applies `act` to the 8 lanes of `v`.
#[inline(always)]
pub fn apply(act: Activation, v: f32x8) -> f32x8 {
    match act {
        Activation::Identity => v,
        Activation::Relu => v.max(f32x8::ZERO),
        Activation::Relu6 => v.max(f32x8::ZERO).min(f32x8::splat(6.0)),
    }
}
