//! Portable GEMM microkernel on `wide::f32x8`, 4 x 16 (two vectors per row of the tile).
//!
//! `wide` chooses its instructions at compile time: with the default x86-64 target an `f32x8`
//! is two SSE halves and `mul_add` is a multiply then an add, so this path is for targets
//! without a hand-written kernel, and as a cross-check of the driver.

use super::kernel::TileEpilogue;
use crate::activation::portable::apply;
use wide::f32x8;

const MR: usize = 4;
const NR: usize = 16;

#[inline(always)]
fn load(p: *const f32) -> f32x8 {
    // SAFETY: callers pass a pointer to 8 readable floats (asserted by the kernel's contract).
    f32x8::from(unsafe { std::ptr::read_unaligned(p as *const [f32; 8]) })
}

/// # Safety
/// See [`super::kernel::MicroKernelFn`].
pub(crate) unsafe fn kernel_4x16(
    kc: usize,
    a: *const f32,
    b: *const f32,
    c: *mut f32,
    rsc: usize,
    epi: &TileEpilogue,
) {
    let mut acc = [[f32x8::ZERO; 2]; MR];
    let (mut a, mut b) = (a, b);
    for _ in 0..kc {
        // SAFETY: a holds kc * MR floats and b kc * NR floats; one k-slice per step.
        unsafe {
            let b0 = load(b);
            let b1 = load(b.add(8));
            for (i, row) in acc.iter_mut().enumerate() {
                let ai = f32x8::splat(*a.add(i));
                row[0] = ai.mul_add(b0, row[0]);
                row[1] = ai.mul_add(b1, row[1]);
            }
            a = a.add(MR);
            b = b.add(NR);
        }
    }
    let alpha = f32x8::splat(epi.alpha);
    let beta = f32x8::splat(epi.beta);
    for (i, row) in acc.iter().enumerate() {
        for (h, &x) in row.iter().enumerate() {
            // SAFETY: row i, half h lies inside the MR x NR tile; bias pointers hold MR / NR.
            unsafe {
                let cp = c.add(i * rsc + 8 * h);
                let mut v = x * alpha;
                if epi.load_c {
                    v = load(cp).mul_add(beta, v);
                }
                if !epi.bias_row.is_null() {
                    v += f32x8::splat(*epi.bias_row.add(i));
                }
                if !epi.bias_col.is_null() {
                    v += load(epi.bias_col.add(8 * h));
                }
                std::ptr::write_unaligned(cp as *mut [f32; 8], apply(epi.activation, v).to_array());
            }
        }
    }
}
