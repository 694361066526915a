//! AVX-512F GEMM microkernels: one const-generic body, `MR` rows by `NV` zmm vectors (16
//! floats each) per row, and two register tiles for the table:
//!
//! - 12 x 32: 24 accumulators + 2 B vectors + a broadcast (32 zmm). Per k step 2 loads of B
//!   and 12 broadcasts feed 24 FMAs: 12 cycles on two full-width 512-bit FMA pipes (Intel
//!   Skylake-SP to Sapphire Rapids), 24 on one double-pumped pipe (Zen 4), with the loads
//!   well inside the load ports either way.
//! - 24 x 16: 24 accumulators + 1 B vector + broadcasts. A narrower B micro-panel (16 floats a
//!   row) lets KC grow on a 32 KiB 8-way L1d (168 against 80 for 12 x 32 in the analytical
//!   model), at 25 loads per 24 FMAs.
//!
//! `tessera tune` measures both on the host; the table's default is 12 x 32.
#![cfg(target_arch = "x86_64")]

use super::kernel::TileEpilogue;
use crate::activation::avx512::apply;
use std::arch::x86_64::*;

/// The shared body.
///
/// # Safety
/// See [`super::kernel::MicroKernelFn`] with `NR = 16 * NV`; the CPU supports AVX-512F.
#[inline(always)]
unsafe fn body<const MR: usize, const NV: usize>(
    kc: usize,
    a: *const f32,
    b: *const f32,
    c: *mut f32,
    rsc: usize,
    epi: &TileEpilogue,
) {
    let nr = 16 * NV;
    // SAFETY (whole function): AVX-512F is enabled by every caller; a holds kc * MR floats,
    // b kc * NR floats, the tile at c is MR rows of NR floats `rsc` apart.
    unsafe {
        // Bring the C tile towards L1 while the k loop runs: the epilogue reads it (beta, or
        // a middle depth block) and writes it, and rows of C are far apart.
        for i in 0..MR {
            _mm_prefetch::<_MM_HINT_T0>(c.add(i * rsc) as *const i8);
            _mm_prefetch::<_MM_HINT_T0>(c.add(i * rsc + nr - 1) as *const i8);
        }
        let mut acc = [[_mm512_setzero_ps(); NV]; MR];
        let step = |acc: &mut [[__m512; NV]; MR], a: *const f32, b: *const f32| {
            let bv: [__m512; NV] = std::array::from_fn(|v| _mm512_loadu_ps(b.add(16 * v)));
            for (i, row) in acc.iter_mut().enumerate() {
                let ai = _mm512_set1_ps(*a.add(i));
                for v in 0..NV {
                    row[v] = _mm512_fmadd_ps(ai, bv[v], row[v]);
                }
            }
        };
        let (mut a, mut b) = (a, b);
        // Unrolled by 4 to amortise the loop counter; the remainder one step at a time.
        for _ in 0..kc / 4 {
            step(&mut acc, a, b);
            step(&mut acc, a.add(MR), b.add(nr));
            step(&mut acc, a.add(2 * MR), b.add(2 * nr));
            step(&mut acc, a.add(3 * MR), b.add(3 * nr));
            a = a.add(4 * MR);
            b = b.add(4 * nr);
        }
        for _ in 0..kc % 4 {
            step(&mut acc, a, b);
            a = a.add(MR);
            b = b.add(nr);
        }
        let alpha = _mm512_set1_ps(epi.alpha);
        let beta = _mm512_set1_ps(epi.beta);
        for (i, row) in acc.iter().enumerate() {
            for (h, &x) in row.iter().enumerate() {
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
    // SAFETY: forwarded contract; AVX-512F is enabled here.
    unsafe { body::<12, 2>(kc, a, b, c, rsc, epi) }
}

/// # Safety
/// See [`super::kernel::MicroKernelFn`]; the CPU must support AVX-512F.
#[target_feature(enable = "avx512f")]
pub(crate) unsafe fn kernel_24x16(
    kc: usize,
    a: *const f32,
    b: *const f32,
    c: *mut f32,
    rsc: usize,
    epi: &TileEpilogue,
) {
    // SAFETY: forwarded contract; AVX-512F is enabled here.
    unsafe { body::<24, 1>(kc, a, b, c, rsc, epi) }
}
