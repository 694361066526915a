//! AVX2 + FMA form of the peak loop: [`super::CHAINS`] `__m256` accumulators, one
//! `vfmadd` each per iteration, all in registers (16 ymm registers: 12 chains + `a` + `b`).

use std::arch::x86_64::*;

use super::CHAINS;

/// Runs the chains of [`super::fma_chains_with`] on 8-lane vectors.
///
/// # Safety
/// The CPU must support AVX2 and FMA, and `state.len() == CHAINS * 8`.
#[target_feature(enable = "avx2,fma")]
pub(super) unsafe fn fma_chains(iters: usize, a: f32, b: f32, state: &mut [f32]) {
    debug_assert_eq!(state.len(), CHAINS * 8);
    let (va, vb) = (_mm256_set1_ps(a), _mm256_set1_ps(b));
    let mut acc = [_mm256_setzero_ps(); CHAINS];
    for (v, s) in acc.iter_mut().zip(state.chunks_exact(8)) {
        // SAFETY: `s` has exactly 8 values; unaligned loads are allowed.
        *v = unsafe { _mm256_loadu_ps(s.as_ptr()) };
    }
    for _ in 0..iters {
        for v in acc.iter_mut() {
            *v = _mm256_fmadd_ps(*v, va, vb);
        }
    }
    for (v, s) in acc.iter().zip(state.chunks_exact_mut(8)) {
        // SAFETY: `s` has exactly 8 values; unaligned stores are allowed.
        unsafe { _mm256_storeu_ps(s.as_mut_ptr(), *v) };
    }
}
