//! AVX-512F vector forms of the activations, for fused epilogues (16 lanes of f32).

use super::Activation;
use std::arch::x86_64::*;

/// Applies `act` to the 16 lanes of `v`.
///
/// # Safety
/// The CPU must support AVX-512F (the caller is a `#[target_feature(enable = "avx512f")]`
/// kernel selected by [`crate::isa`]).
#[inline]
#[target_feature(enable = "avx512f")]
pub unsafe fn apply(act: Activation, v: __m512) -> __m512 {
    match act {
        Activation::Identity => v,
        Activation::Relu => _mm512_max_ps(v, _mm512_setzero_ps()),
        Activation::Relu6 => {
            _mm512_min_ps(_mm512_max_ps(v, _mm512_setzero_ps()), _mm512_set1_ps(6.0))
        }
    }
}
