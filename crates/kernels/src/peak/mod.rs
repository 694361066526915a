//! Machine limits for the roofline: a register-resident FMA loop (the compute peak) and
//! streaming loops over large buffers (the memory bandwidth).
//!
//! **Compute peak.** [`fma_chains_with`] runs [`CHAINS`] independent chains of
//! `acc = acc * a + b` per vector register for `iters` iterations. With 12 chains, more than
//! the FMA latency (4 cycles on Zen 3 and Skylake) times the FMA ports (2) needs, both pipes
//! stay busy every cycle and nothing touches memory, so FLOPs / time is the core's FMA peak
//! (the method of `likwid-bench peakflops` and of Jakob Hammer's "A Tour of FMA"). Each path
//! reports the FLOPs it performed (`iters * CHAINS * lanes * 2`).
//!
//! **Bandwidth.** [`stream_read`] sums a slice (read-only traffic) and [`stream_triad`] computes
//! `a = b + s * c` (McCalpin's STREAM triad: two streams read, one written). Over buffers far
//! larger than the last-level cache they run at the memory bandwidth; they are plain Rust
//! (auto-vectorised), since memory, not instructions, bounds them.
//!
//! Oracle: [`fma_chains_reference`] computes the same chains one scalar at a time. With
//! `a = 0.5` the product is exact, so a fused multiply-add and a separate multiply and add
//! round identically and every path is bit-identical to the reference.

#[cfg(target_arch = "x86_64")]
mod avx2;
#[cfg(target_arch = "x86_64")]
mod avx512;
mod portable;

use crate::error::KernelError;
use crate::isa::Isa;

/// Independent FMA chains per lane (vector registers in flight).
pub const CHAINS: usize = 12;

/// The multiplier of every chain: a power of two, so `acc * A` is exact.
const A: f32 = 0.5;

/// Vector lanes of a path's FMA loop (the scalar path runs 8 chains per "lane" group, as the
/// portable one).
pub fn lanes(isa: Isa) -> usize {
    match isa {
        Isa::Avx512 => 16,
        Isa::Avx2 | Isa::Portable | Isa::Scalar => 8,
    }
}

/// Length of the state slice [`fma_chains_with`] takes for `isa`.
pub fn state_len(isa: Isa) -> usize {
    CHAINS * lanes(isa)
}

/// Runs the chains `state[i] = state[i] * 0.5 + b`, `iters` times each, on the `isa` path;
/// returns the FLOPs performed. `state` must hold [`state_len`]`(isa)` values (chain-major,
/// lane-minor).
pub fn fma_chains_with(
    isa: Isa,
    iters: usize,
    b: f32,
    state: &mut [f32],
) -> Result<u64, KernelError> {
    let isa = isa.check()?;
    if state.len() != state_len(isa) {
        return Err(KernelError::invalid(
            "fma_chains",
            format!(
                "state has {} values; the {isa} path needs {} ({CHAINS} chains x {} lanes)",
                state.len(),
                state_len(isa),
                lanes(isa)
            ),
        ));
    }
    match isa {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: `isa.check()` confirmed the CPU supports AVX-512F; the length was checked.
        Isa::Avx512 => unsafe { avx512::fma_chains(iters, A, b, state) },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: `isa.check()` confirmed the CPU supports AVX2 and FMA; the length was checked.
        Isa::Avx2 => unsafe { avx2::fma_chains(iters, A, b, state) },
        Isa::Portable => portable::fma_chains(iters, A, b, state),
        Isa::Scalar => scalar_chains(iters, A, b, state),
        #[cfg(not(target_arch = "x86_64"))]
        Isa::Avx512 | Isa::Avx2 => unreachable!("check() rejects x86 paths elsewhere"),
    }
    Ok(2 * (iters * state.len()) as u64)
}

/// The scalar path: the chains interleaved as the vector paths run them.
fn scalar_chains(iters: usize, a: f32, b: f32, state: &mut [f32]) {
    let mut acc = [0.0f32; CHAINS * 8];
    acc.copy_from_slice(state);
    for _ in 0..iters {
        for v in acc.iter_mut() {
            *v = *v * a + b;
        }
    }
    state.copy_from_slice(&acc);
}

/// The oracle: each chain run alone, `iters` times `x = x * 0.5 + b` (separate multiply and
/// add, which round like a fused one here because `x * 0.5` is exact).
pub fn fma_chains_reference(iters: usize, b: f32, state: &mut [f32]) {
    for x in state.iter_mut() {
        for _ in 0..iters {
            *x = *x * A + b;
        }
    }
}

/// Sum of `x` (read-only streaming): four `wide::f32x8` partial sums, so the adds never wait
/// on each other and the loop runs at the speed of the loads.
pub fn stream_read(x: &[f32]) -> f32 {
    use wide::f32x8;
    let mut acc = [f32x8::ZERO; 4];
    let chunks = x.chunks_exact(32);
    let tail = chunks.remainder();
    for c in chunks {
        for (k, a) in acc.iter_mut().enumerate() {
            let mut v = [0.0f32; 8];
            v.copy_from_slice(&c[8 * k..8 * k + 8]);
            *a += f32x8::from(v);
        }
    }
    let total = (acc[0] + acc[1]) + (acc[2] + acc[3]);
    total.reduce_add() + tail.iter().sum::<f32>()
}

/// STREAM triad `a[i] = b[i] + s * c[i]`. Errors if the lengths differ.
pub fn stream_triad(a: &mut [f32], b: &[f32], c: &[f32], s: f32) -> Result<(), KernelError> {
    if a.len() != b.len() || a.len() != c.len() {
        return Err(KernelError::invalid(
            "stream_triad",
            format!("lengths {}, {} and {} differ", a.len(), b.len(), c.len()),
        ));
    }
    for ((a, &b), &c) in a.iter_mut().zip(b).zip(c) {
        *a = b + s * c;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn start(n: usize) -> Vec<f32> {
        (0..n).map(|i| i as f32 * 0.25 - 3.0).collect()
    }

    #[test]
    fn every_path_matches_the_reference_bit_for_bit() {
        for isa in Isa::available() {
            for iters in [0, 1, 7, 100] {
                let mut got = start(state_len(isa));
                let flops = fma_chains_with(isa, iters, 0.75, &mut got).unwrap();
                let mut want = start(state_len(isa));
                fma_chains_reference(iters, 0.75, &mut want);
                assert_eq!(got, want, "{isa}, {iters} iterations");
                assert_eq!(flops, 2 * (iters * state_len(isa)) as u64);
            }
        }
    }

    #[test]
    fn bad_state_length_is_an_error() {
        let mut s = vec![0.0; 5];
        let e = fma_chains_with(Isa::Scalar, 1, 1.0, &mut s).unwrap_err();
        assert!(e.to_string().contains("needs 96"), "{e}");
    }

    #[test]
    fn streams() {
        // Small integers: every partial sum is exact, whatever the order.
        let x: Vec<f32> = (0..1001).map(|i| (i % 7) as f32).collect();
        let want: f32 = x.iter().map(|&v| v as f64).sum::<f64>() as f32;
        assert_eq!(stream_read(&x), want);
        let (b, c) = (vec![1.0f32; 9], vec![2.0f32; 9]);
        let mut a = vec![0.0f32; 9];
        stream_triad(&mut a, &b, &c, 3.0).unwrap();
        assert!(a.iter().all(|&v| v == 7.0));
        assert!(stream_triad(&mut a, &b, &c[..3], 3.0).is_err());
    }
}
