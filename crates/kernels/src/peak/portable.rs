//! Portable form of the peak loop on `wide::f32x8` (`mul_add` is a fused multiply-add when the
//! build enables FMA, a multiply then an add otherwise): [`super::CHAINS`] vector chains.

use wide::f32x8;

use super::CHAINS;

/// Runs the chains of [`super::fma_chains_with`]; `state.len() == CHAINS * 8` (checked by the
/// caller).
pub(super) fn fma_chains(iters: usize, a: f32, b: f32, state: &mut [f32]) {
    let (va, vb) = (f32x8::splat(a), f32x8::splat(b));
    let mut acc = [f32x8::ZERO; CHAINS];
    for (v, s) in acc.iter_mut().zip(state.chunks_exact(8)) {
        let mut lanes = [0.0f32; 8];
        lanes.copy_from_slice(s);
        *v = f32x8::from(lanes);
    }
    for _ in 0..iters {
        for v in acc.iter_mut() {
            *v = v.mul_add(va, vb);
        }
    }
    for (v, s) in acc.iter().zip(state.chunks_exact_mut(8)) {
        s.copy_from_slice(&v.to_array());
    }
}
