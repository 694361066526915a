//! AVX2 + FMA vector forms of the activations, for fused epilogues (8 lanes of f32).

use super::Activation;
use std::arch::x86_64::*;

/// Applies `act` to the 8 lanes of `v`.
///
/// # Safety
/// The CPU must support AVX2 and FMA (the caller is a `#[target_feature(enable = "avx2,fma")]`
/// kernel selected by [`crate::isa`]).
#[inline]
#[target_feature(enable = "avx2,fma")]
pub unsafe fn apply(act: Activation, v: __m256) -> __m256 {
    match act {
        Activation::Identity => v,
        Activation::Relu => _mm256_max_ps(v, _mm256_setzero_ps()),
        Activation::Relu6 => {
            _mm256_min_ps(_mm256_max_ps(v, _mm256_setzero_ps()), _mm256_set1_ps(6.0))
        }
    }
}
