//! AVX-512F form of the peak loop: [`super::CHAINS`] `__m512` accumulators, one `vfmadd` each
//! per iteration, all in registers. Mirrors `avx2.rs`. On an Intel Sapphire Rapids host
//! (2026-12-03) one thread measured 209-241 GFLOP/s: two 512-bit FMAs per cycle at 3.3-3.8 GHz.

use std::arch::x86_64::*;

use super::CHAINS;

/// Runs the chains of [`super::fma_chains_with`] on 16-lane vectors.
///
/// # Safety
/// The CPU must support AVX-512F, and `state.len() == CHAINS * 16`.
#[target_feature(enable = "avx512f")]
pub(super) unsafe fn fma_chains(iters: usize, a: f32, b: f32, state: &mut [f32]) {
    debug_assert_eq!(state.len(), CHAINS * 16);
    let (va, vb) = (_mm512_set1_ps(a), _mm512_set1_ps(b));
    let mut acc = [_mm512_setzero_ps(); CHAINS];
    for (v, s) in acc.iter_mut().zip(state.chunks_exact(16)) {
        // SAFETY: `s` has exactly 16 values; unaligned loads are allowed.
        *v = unsafe { _mm512_loadu_ps(s.as_ptr()) };
    }
    for _ in 0..iters {
        for v in acc.iter_mut() {
            *v = _mm512_fmadd_ps(*v, va, vb);
        }
    }
    for (v, s) in acc.iter().zip(state.chunks_exact_mut(16)) {
        // SAFETY: `s` has exactly 16 values; unaligned stores are allowed.
        unsafe { _mm512_storeu_ps(s.as_mut_ptr(), *v) };
    }
}
