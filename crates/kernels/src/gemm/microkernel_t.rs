//! The transposed store of the GEMM microkernel: the same `MR x NR` tile of accumulators
//! written to a C stored column by column (element `(i, j)` at `c + j * ldc + i`), through
//! in-register `L x L` transposes ([`Simd::transpose`]) and masked stores of `MR < L` floats
//! per column, instead of a padded temporary and one scalar copy per element. A tile taller
//! than a vector (the implicit convolution's 14 pixels on 8-lane AVX2) goes through in blocks
//! of `L` rows.
//!
//! It serves products computed as `C^T = B^T A^T` so that their short side runs along the
//! kernel's rows: a pointwise convolution on a 7 x 7 plane is `W[co, ci] X[ci, 49]` with 49
//! columns (a 32-wide tile would spend 15 of every 64 columns on padding), and as
//! `X^T[49, ci] W^T[ci, co]` it has 49 rows (12-row tiles, the last through a short twin) and
//! its channels along the vectors. Each element goes through the same operations as in the
//! row-major store, so the bits are the same (see `kernel.rs` for the epilogue order).

use crate::activation::vector::VecAct;
use crate::simd::Simd;

/// `acc[i][h] += beta * C[i, h * L..]`, reading C's columns (`MR` floats each).
///
/// # Safety
/// `c` holds `NV * S::L` columns of `MR` floats, `ldc` apart; `S`'s ISA is enabled in the
/// caller.
#[inline(always)]
pub(super) unsafe fn add_beta_c<S: Simd, const MR: usize, const NV: usize>(
    acc: &mut [[S::V; NV]; MR],
    c: *const f32,
    ldc: usize,
    beta: S::V,
) {
    // SAFETY: the function's contract; every load reads at most MR floats of one column.
    unsafe {
        for h in 0..NV {
            for r0 in (0..MR).step_by(S::L) {
                let n = S::L.min(MR - r0);
                let mut v = [S::zero(); 16];
                for (l, x) in v.iter_mut().enumerate().take(S::L) {
                    let p = c.add((h * S::L + l) * ldc + r0);
                    *x = if n == S::L {
                        S::load(p)
                    } else {
                        S::load_first(p, n)
                    };
                }
                S::transpose(&mut v[..S::L]);
                for (i, row) in acc[r0..r0 + n].iter_mut().enumerate() {
                    row[h] = S::fma(v[i], beta, row[h]);
                }
            }
        }
    }
}

/// Stores `f(acc)` transposed: column `j` of the tile (`MR` floats) at `c + j * ldc`.
///
/// # Safety
/// `c` holds `NV * S::L` writable columns of `MR` floats, `ldc` apart; `S`'s ISA is enabled
/// in the caller.
#[inline(always)]
pub(super) unsafe fn store<S: Simd, const MR: usize, const NV: usize, A: VecAct>(
    acc: &[[S::V; NV]; MR],
    c: *mut f32,
    ldc: usize,
    f: A,
) {
    // SAFETY: the function's contract; every store writes at most MR floats of one column.
    unsafe {
        for h in 0..NV {
            for r0 in (0..MR).step_by(S::L) {
                let n = S::L.min(MR - r0);
                let mut v = [S::zero(); 16];
                for (i, row) in acc[r0..r0 + n].iter().enumerate() {
                    v[i] = f.apply::<S>(row[h]);
                }
                S::transpose(&mut v[..S::L]);
                for (l, &x) in v.iter().enumerate().take(S::L) {
                    let p = c.add((h * S::L + l) * ldc + r0);
                    if n == S::L {
                        S::store(p, x);
                    } else {
                        S::store_first(p, x, n);
                    }
                }
            }
        }
    }
}

/// The second epilogue pass over a transposed tile: `C = f(C)`, column by column.
///
/// # Safety
/// As [`store`], with the columns also readable.
#[inline(always)]
pub(super) unsafe fn activate<S: Simd, const MR: usize, const NV: usize, A: VecAct>(
    c: *mut f32,
    ldc: usize,
    f: A,
) {
    // SAFETY: the function's contract.
    unsafe {
        for j in 0..NV * S::L {
            for r0 in (0..MR).step_by(S::L) {
                let (p, n) = (c.add(j * ldc + r0), S::L.min(MR - r0));
                if n == S::L {
                    S::store(p, f.apply::<S>(S::load(p)));
                } else {
                    S::store_first(p, f.apply::<S>(S::load_first(p, n)), n);
                }
            }
        }
    }
}
