//! AVX-512F GEMM microkernel, 12 x 32 (two zmm vectors per row of the tile).
//!
//! Register budget (32 zmm): 24 accumulators, 2 vectors of the B row, broadcasts of A (folded
//! into the FMA as an embedded-broadcast memory operand by the compiler). Per k step: 2 loads
//! of B, 12 broadcasts, 24 FMAs: 12 cycles on two 512-bit FMA pipes.
#![cfg(target_arch = "x86_64")]

use super::kernel::TileEpilogue;
use crate::activation::avx512::apply;
use std::arch::x86_64::*;

const MR: usize = 12;
const NR: usize = 32;

/// # Safety
/// See [`super::kernel::MicroKernelFn`]; the CPU must support AVX-512F.
#[target_feature(enable = "avx512f")]
pub(crate) unsafe fn kernel_12x32(
    kc: usize,
    a: *const f32,
    b: *const f32,
    c: *mut f32,
    rsc: usize,
    epi: &TileEpilogue,
) {
    let mut acc = [[_mm512_setzero_ps(); 2]; MR];
    let (mut a, mut b) = (a, b);
    // SAFETY (whole loop): a holds kc * MR floats and b kc * NR floats; each step reads one
    // k-slice of each and advances by MR / NR.
    for _ in 0..kc {
        unsafe {
            let b0 = _mm512_loadu_ps(b);
            let b1 = _mm512_loadu_ps(b.add(16));
            for (i, row) in acc.iter_mut().enumerate() {
                let ai = _mm512_set1_ps(*a.add(i));
                row[0] = _mm512_fmadd_ps(ai, b0, row[0]);
                row[1] = _mm512_fmadd_ps(ai, b1, row[1]);
            }
            a = a.add(MR);
            b = b.add(NR);
        }
    }
    let alpha = _mm512_set1_ps(epi.alpha);
    let beta = _mm512_set1_ps(epi.beta);
    for (i, row) in acc.iter().enumerate() {
        for (h, &x) in row.iter().enumerate() {
            // SAFETY: the tile row i, half h lies inside the MR x NR tile; bias pointers hold
            // MR / NR floats when non-null.
            unsafe {
                let cp = c.add(i * rsc + 16 * h);
                let mut v = _mm512_mul_ps(x, alpha);
                if epi.load_c {
                    v = _mm512_fmadd_ps(_mm512_loadu_ps(cp), beta, v);
                }
                if !epi.bias_row.is_null() {
                    v = _mm512_add_ps(v, _mm512_set1_ps(*epi.bias_row.add(i)));
                }
                if !epi.bias_col.is_null() {
                    v = _mm512_add_ps(v, _mm512_loadu_ps(epi.bias_col.add(16 * h)));
                }
                _mm512_storeu_ps(cp, apply(epi.activation, v));
            }
        }
    }
}
