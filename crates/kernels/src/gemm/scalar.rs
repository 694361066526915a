//! Scalar 4 x 4 GEMM microkernel: the reference path (`TESSERA_ISA=scalar`).
//!
//! Plain Rust with no SIMD; it obeys the same contract as the vector kernels (see `kernel.rs`)
//! so the driver, packing and edge handling are exercised identically on every path.

use super::kernel::TileEpilogue;

const MR: usize = 4;
const NR: usize = 4;

/// # Safety
/// See [`super::kernel::MicroKernelFn`].
pub(crate) unsafe fn kernel_4x4(
    kc: usize,
    a: *const f32,
    b: *const f32,
    rsb: usize,
    c: *mut f32,
    rsc: usize,
    epi: &TileEpilogue,
) {
    if !epi.copy_to.is_null() {
        for p in 0..kc {
            // SAFETY: the contract of `TileEpilogue::copy_to`: kc rows of NR floats at
            // `prefetch`, `prefetch_rs` apart, and kc * NR writable floats at `copy_to`.
            unsafe {
                std::ptr::copy_nonoverlapping(
                    epi.prefetch.add(p * epi.prefetch_rs),
                    epi.copy_to.add(p * NR),
                    NR,
                )
            };
        }
    }
    let mut acc = [[0.0f32; NR]; MR];
    for p in 0..kc {
        // SAFETY: the A panel holds kc * MR floats, B kc rows of NR floats rsb apart.
        let (ap, bp) = unsafe { (a.add(p * MR), b.add(p * rsb)) };
        for (i, row) in acc.iter_mut().enumerate() {
            let ai = unsafe { *ap.add(i) };
            for (j, x) in row.iter_mut().enumerate() {
                *x = ai.mul_add(unsafe { *bp.add(j) }, *x);
            }
        }
    }
    for (i, row) in acc.iter().enumerate() {
        for (j, &x) in row.iter().enumerate() {
            // SAFETY: c addresses an MR x NR tile with row stride rsc; bias pointers hold MR/NR.
            unsafe {
                let cij = c.add(i * rsc + j);
                let mut v = x * epi.alpha;
                if epi.load_c {
                    v = epi.beta.mul_add(*cij, v);
                }
                if !epi.scale_row.is_null() {
                    v *= *epi.scale_row.add(i);
                }
                if !epi.scale_col.is_null() {
                    v *= *epi.scale_col.add(j);
                }
                if !epi.bias_row.is_null() {
                    v += *epi.bias_row.add(i);
                }
                if !epi.bias_col.is_null() {
                    v += *epi.bias_col.add(j);
                }
                *cij = epi.activation.apply_scalar(v);
            }
        }
    }
}
