//! AVX2 + FMA GEMM microkernel, 6 x 16 (two ymm vectors per row of the tile).
//!
//! Register budget (16 ymm): 12 accumulators, 2 vectors of the B row, 1 broadcast of A.
//! Per k step: 2 loads of B, 6 broadcasts of A, 12 FMAs; with two FMA pipes the FMAs take 6
//! cycles while the 8 loads fit in the load ports' 3-4 cycles, so the kernel is FMA-bound.
#![cfg(target_arch = "x86_64")]

use super::kernel::TileEpilogue;
use crate::activation::avx2::apply;
use std::arch::x86_64::*;

const MR: usize = 6;
const NR: usize = 16;

/// # Safety
/// See [`super::kernel::MicroKernelFn`]; the CPU must support AVX2 and FMA.
#[target_feature(enable = "avx2,fma")]
pub(crate) unsafe fn kernel_6x16(
    kc: usize,
    a: *const f32,
    b: *const f32,
    c: *mut f32,
    rsc: usize,
    epi: &TileEpilogue,
) {
    let mut acc = [[_mm256_setzero_ps(); 2]; MR];
    let (mut a, mut b) = (a, b);
    // Bring the C tile towards L1 while the k loop runs; it is read by the epilogue.
    if epi.load_c {
        for i in 0..MR {
            // SAFETY: prefetch of addresses inside the tile; prefetches never fault.
            unsafe {
                _mm_prefetch::<_MM_HINT_T0>(c.add(i * rsc) as *const i8);
                _mm_prefetch::<_MM_HINT_T0>(c.add(i * rsc + 15) as *const i8);
            }
        }
    }
    // One k step: 2 loads of B, MR broadcasts of A, 2 * MR FMAs.
    // SAFETY (callers): a holds kc * MR floats and b kc * NR floats; each step reads one
    // k-slice of each and advances by MR / NR.
    let step = |acc: &mut [[__m256; 2]; MR], a: *const f32, b: *const f32| unsafe {
        let b0 = _mm256_loadu_ps(b);
        let b1 = _mm256_loadu_ps(b.add(8));
        for (i, row) in acc.iter_mut().enumerate() {
            let ai = _mm256_broadcast_ss(&*a.add(i));
            row[0] = _mm256_fmadd_ps(ai, b0, row[0]);
            row[1] = _mm256_fmadd_ps(ai, b1, row[1]);
        }
    };
    // Unrolled by 4 to amortise the loop counter; the remainder runs one step at a time.
    for _ in 0..kc / 4 {
        // SAFETY: see `step`; four k-slices remain.
        unsafe {
            step(&mut acc, a, b);
            step(&mut acc, a.add(MR), b.add(NR));
            step(&mut acc, a.add(2 * MR), b.add(2 * NR));
            step(&mut acc, a.add(3 * MR), b.add(3 * NR));
            a = a.add(4 * MR);
            b = b.add(4 * NR);
        }
    }
    for _ in 0..kc % 4 {
        // SAFETY: see `step`; at least one k-slice remains.
        unsafe {
            step(&mut acc, a, b);
            a = a.add(MR);
            b = b.add(NR);
        }
    }
    let alpha = _mm256_set1_ps(epi.alpha);
    let beta = _mm256_set1_ps(epi.beta);
    for (i, row) in acc.iter().enumerate() {
        for (h, &x) in row.iter().enumerate() {
            // SAFETY: the tile row i, half h lies inside the MR x NR tile; bias pointers hold
            // MR / NR floats when non-null.
            unsafe {
                let cp = c.add(i * rsc + 8 * h);
                let mut v = _mm256_mul_ps(x, alpha);
                if epi.load_c {
                    v = _mm256_fmadd_ps(_mm256_loadu_ps(cp), beta, v);
                }
                if !epi.bias_row.is_null() {
                    v = _mm256_add_ps(v, _mm256_set1_ps(*epi.bias_row.add(i)));
                }
                if !epi.bias_col.is_null() {
                    v = _mm256_add_ps(v, _mm256_loadu_ps(epi.bias_col.add(8 * h)));
                }
                _mm256_storeu_ps(cp, apply(epi.activation, v));
            }
        }
    }
}
