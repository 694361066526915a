//! AVX2 packing fast paths (used by the AVX2 and AVX-512 kernels alike) for the two transposing cases of `pack.rs`: a row-major A (each
//! k-slice of an A micro-panel gathers one float from each of MR rows) and a column-major B
//! (each k-slice of a B micro-panel gathers one float from each of NR columns; this is the
//! `x * W^T` of every Linear layer). Both go through an 8 x 8 in-register transpose instead of
//! one scalar load and store per float, for any MR and any NR that is a multiple of 8.
//!
//! Everything else falls back to the generic packers in `pack.rs`.
#![cfg(target_arch = "x86_64")]

use super::pack;
use crate::simd::{Avx2, Simd};
use std::arch::x86_64::*;

/// Transposes the 8 x 8 block whose rows are `r`: on return `r[p]` holds column `p` (the
/// crate's one 8 x 8 transpose, [`Simd::transpose`] on AVX2).
#[inline]
#[target_feature(enable = "avx2,fma")]
fn transpose8(r: &mut [__m256; 8]) {
    // SAFETY: AVX2 and FMA are enabled here; r holds the 8 vectors the method needs.
    unsafe { <Avx2 as Simd>::transpose(r) }
}

/// Stores the first `n` (1..=8) lanes of `v` at `p`, touching nothing past them.
///
/// # Safety
/// `p` is valid for `n` floats; the CPU supports AVX2.
#[inline]
#[target_feature(enable = "avx2,fma")]
unsafe fn store_lanes(p: *mut f32, v: __m256, n: usize) {
    // SAFETY: each arm writes exactly n floats at p (contract).
    unsafe {
        match n {
            8 => _mm256_storeu_ps(p, v),
            4 => _mm_storeu_ps(p, _mm256_castps256_ps128(v)),
            6 => {
                _mm_storeu_ps(p, _mm256_castps256_ps128(v));
                let hi = _mm_castps_si128(_mm256_extractf128_ps::<1>(v));
                _mm_storel_epi64(p.add(4) as *mut __m128i, hi);
            }
            _ => {
                let mut tmp = [0.0f32; 8];
                _mm256_storeu_ps(tmp.as_mut_ptr(), v);
                std::ptr::copy_nonoverlapping(tmp.as_ptr(), p, n);
            }
        }
    }
}

/// [`pack::pack_a`] with a transposing fast path when A is row-major (`csa == 1`), for any MR:
/// each full panel is read in chunks of 8 rows x 8 depths, transposed in registers, and each
/// depth's chunk stored at its place in the panel's k-slice.
///
/// # Safety
/// As [`pack::pack_a`]; the CPU supports AVX2.
#[target_feature(enable = "avx2,fma")]
pub(crate) unsafe fn pack_a_t(
    mr: usize,
    mc: usize,
    kc: usize,
    a: *const f32,
    rsa: usize,
    csa: usize,
    dst: &mut [f32],
) {
    if csa != 1 || mr > super::segments::MAX_PANEL {
        // SAFETY: forwarded contract.
        return unsafe { pack::pack_a(mr, mc, kc, a, rsa, csa, dst) };
    }
    let full_panels = mc / mr;
    let kc8 = kc / 8 * 8;
    for q in 0..full_panels {
        let panel = &mut dst[q * mr * kc..(q + 1) * mr * kc];
        let out = panel.as_mut_ptr();
        // SAFETY: rows q*mr..q*mr+mr < mc and columns < kc are inside A's block (contract);
        // missing rows of a partial chunk re-read the chunk's first row and are discarded;
        // each store writes the chunk's rows of one k-slice, inside the panel.
        unsafe {
            for r0 in (0..mr).step_by(8) {
                let rows = 8.min(mr - r0);
                let src: [*const f32; 8] = std::array::from_fn(|i| {
                    a.add((q * mr + r0 + if i < rows { i } else { 0 }) * rsa)
                });
                let mut p0 = 0;
                while p0 < kc8 {
                    let mut r: [__m256; 8] =
                        std::array::from_fn(|i| _mm256_loadu_ps(src[i].add(p0)));
                    transpose8(&mut r);
                    for (p, v) in r.iter().enumerate() {
                        store_lanes(out.add((p0 + p) * mr + r0), *v, rows);
                    }
                    p0 += 8;
                }
                for p in kc8..kc {
                    for (i, row) in src.iter().enumerate().take(rows) {
                        *out.add(p * mr + r0 + i) = *row.add(p);
                    }
                }
            }
        }
    }
    if full_panels * mr < mc {
        let q = full_panels;
        // SAFETY: the remaining rows start at row q*mr of the block; dst's tail holds one panel.
        unsafe {
            pack::pack_a(
                mr,
                mc - q * mr,
                kc,
                a.add(q * mr * rsa),
                rsa,
                1,
                &mut dst[q * mr * kc..],
            )
        };
    }
}

/// [`pack::pack_b`] for NR a multiple of 8 with a transposing fast path when B is
/// column-major (`rsb == 1`).
///
/// # Safety
/// As [`pack::pack_b`]; the CPU supports AVX2.
#[target_feature(enable = "avx2,fma")]
pub(crate) unsafe fn pack_b_t(
    nr: usize,
    nc: usize,
    kc: usize,
    b: *const f32,
    rsb: usize,
    csb: usize,
    dst: &mut [f32],
) {
    if rsb != 1 || csb == 1 || !nr.is_multiple_of(8) {
        // SAFETY: forwarded contract.
        return unsafe { pack::pack_b(nr, nc, kc, b, rsb, csb, dst) };
    }
    let full_panels = nc / nr;
    let kc8 = kc / 8 * 8;
    for q in 0..full_panels {
        let panel = &mut dst[q * nr * kc..(q + 1) * nr * kc];
        let out = panel.as_mut_ptr();
        // SAFETY: columns q*nr..q*nr+nr < nc and rows < kc are inside B's block (contract);
        // each store writes 8 floats of one k-slice of the panel (nr floats per slice).
        unsafe {
            for j0 in (0..nr).step_by(8) {
                let cols: [*const f32; 8] = std::array::from_fn(|j| b.add((q * nr + j0 + j) * csb));
                let mut p0 = 0;
                while p0 < kc8 {
                    let mut r: [__m256; 8] =
                        std::array::from_fn(|j| _mm256_loadu_ps(cols[j].add(p0)));
                    transpose8(&mut r);
                    for (p, v) in r.iter().enumerate() {
                        _mm256_storeu_ps(out.add((p0 + p) * nr + j0), *v);
                    }
                    p0 += 8;
                }
                for p in kc8..kc {
                    for (j, col) in cols.iter().enumerate() {
                        *out.add(p * nr + j0 + j) = *col.add(p);
                    }
                }
            }
        }
    }
    if full_panels * nr < nc {
        let q = full_panels;
        // SAFETY: the remaining columns start at column q*nr; dst's tail holds one panel.
        unsafe {
            pack::pack_b(
                nr,
                nc - q * nr,
                kc,
                b.add(q * nr * csb),
                1,
                csb,
                &mut dst[q * nr * kc..],
            )
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(len: usize) -> Vec<f32> {
        (0..len).map(|x| x as f32 * 0.5 - 7.0).collect()
    }

    #[test]
    fn fast_packers_match_generic() {
        if !crate::Isa::Avx2.is_supported() {
            return;
        }
        for &(mc, kc) in &[
            (6, 8),
            (12, 16),
            (13, 21),
            (5, 9),
            (144, 256),
            (7, 3),
            (6, 0),
        ] {
            let rsa = kc + 3;
            let a = data(mc * rsa + 8);
            for mr in [4, 6, 8, 12, 14, 16, 24] {
                let len = mc.div_ceil(mr) * mr * kc;
                let (mut want, mut got) = (vec![f32::NAN; len], vec![f32::NAN; len]);
                unsafe {
                    pack::pack_a(mr, mc, kc, a.as_ptr(), rsa, 1, &mut want);
                    pack_a_t(mr, mc, kc, a.as_ptr(), rsa, 1, &mut got);
                }
                assert_eq!(want, got, "pack_a mr={mr} mc={mc} kc={kc}");
            }
        }
        for &(nc, kc) in &[(16, 8), (32, 16), (37, 21), (5, 9), (4080, 20), (17, 0)] {
            let csb = kc + 5;
            let b = data(nc * csb + 8);
            for nr in [16, 32, 48] {
                let len = nc.div_ceil(nr) * nr * kc;
                let (mut want, mut got) = (vec![f32::NAN; len], vec![f32::NAN; len]);
                unsafe {
                    pack::pack_b(nr, nc, kc, b.as_ptr(), 1, csb, &mut want);
                    pack_b_t(nr, nc, kc, b.as_ptr(), 1, csb, &mut got);
                }
                assert_eq!(want, got, "pack_b nr={nr} nc={nc} kc={kc}");
            }
        }
    }
}
