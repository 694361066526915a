//! AVX2 packing fast paths for the two transposing cases of `pack.rs`: a row-major A (each
//! k-slice of an A micro-panel gathers one float from each of MR rows) and a column-major B
//! (each k-slice of a B micro-panel gathers one float from each of NR columns; this is the
//! `x * W^T` of every Linear layer). Both go through an 8 x 8 in-register transpose instead of
//! one scalar load and store per float, which made packing 40% of a 3136x64x576 GEMM.
//!
//! Everything else falls back to the generic packers in `pack.rs`.
#![cfg(target_arch = "x86_64")]

use super::pack;
use std::arch::x86_64::*;

/// Transposes the 8 x 8 block whose rows are `r`: on return `r[p]` holds column `p`.
#[inline]
#[target_feature(enable = "avx2")]
fn transpose8(r: &mut [__m256; 8]) {
    let t0 = _mm256_unpacklo_ps(r[0], r[1]);
    let t1 = _mm256_unpackhi_ps(r[0], r[1]);
    let t2 = _mm256_unpacklo_ps(r[2], r[3]);
    let t3 = _mm256_unpackhi_ps(r[2], r[3]);
    let t4 = _mm256_unpacklo_ps(r[4], r[5]);
    let t5 = _mm256_unpackhi_ps(r[4], r[5]);
    let t6 = _mm256_unpacklo_ps(r[6], r[7]);
    let t7 = _mm256_unpackhi_ps(r[6], r[7]);
    let s0 = _mm256_shuffle_ps::<0x44>(t0, t2);
    let s1 = _mm256_shuffle_ps::<0xEE>(t0, t2);
    let s2 = _mm256_shuffle_ps::<0x44>(t1, t3);
    let s3 = _mm256_shuffle_ps::<0xEE>(t1, t3);
    let s4 = _mm256_shuffle_ps::<0x44>(t4, t6);
    let s5 = _mm256_shuffle_ps::<0xEE>(t4, t6);
    let s6 = _mm256_shuffle_ps::<0x44>(t5, t7);
    let s7 = _mm256_shuffle_ps::<0xEE>(t5, t7);
    r[0] = _mm256_permute2f128_ps::<0x20>(s0, s4);
    r[1] = _mm256_permute2f128_ps::<0x20>(s1, s5);
    r[2] = _mm256_permute2f128_ps::<0x20>(s2, s6);
    r[3] = _mm256_permute2f128_ps::<0x20>(s3, s7);
    r[4] = _mm256_permute2f128_ps::<0x31>(s0, s4);
    r[5] = _mm256_permute2f128_ps::<0x31>(s1, s5);
    r[6] = _mm256_permute2f128_ps::<0x31>(s2, s6);
    r[7] = _mm256_permute2f128_ps::<0x31>(s3, s7);
}

/// [`pack::pack_a`] for MR = 6 with a transposing fast path when A is row-major.
///
/// # Safety
/// As [`pack::pack_a`]; the CPU supports AVX2.
#[target_feature(enable = "avx2")]
pub(crate) unsafe fn pack_a_6(
    mr: usize,
    mc: usize,
    kc: usize,
    a: *const f32,
    rsa: usize,
    csa: usize,
    dst: &mut [f32],
) {
    if csa != 1 || mr != 6 {
        // SAFETY: forwarded contract.
        return unsafe { pack::pack_a(mr, mc, kc, a, rsa, csa, dst) };
    }
    let full_panels = mc / 6;
    let kc8 = kc / 8 * 8;
    // Mask for the last k-slice of each 8-chunk: store 6 lanes, not 8.
    let mask6 = _mm256_setr_epi32(-1, -1, -1, -1, -1, -1, 0, 0);
    for q in 0..full_panels {
        let panel = &mut dst[q * 6 * kc..(q + 1) * 6 * kc];
        let out = panel.as_mut_ptr();
        // SAFETY: rows q*6..q*6+6 < mc and columns < kc are inside A's block (contract);
        // rows 6 and 7 of the transpose re-read row 0 and are discarded. Stores of slot p write
        // floats [6p, 6p+8) of the panel; the two extra floats belong to slot p+1 (written
        // next) and the last slot of each chunk is stored with a 6-lane mask, so nothing is
        // written past slot kc8-1.
        unsafe {
            let rows: [*const f32; 6] = std::array::from_fn(|i| a.add((q * 6 + i) * rsa));
            let mut p0 = 0;
            while p0 < kc8 {
                let mut r = [_mm256_setzero_ps(); 8];
                for i in 0..6 {
                    r[i] = _mm256_loadu_ps(rows[i].add(p0));
                }
                r[6] = r[0];
                r[7] = r[0];
                transpose8(&mut r);
                for (p, v) in r.iter().enumerate().take(7) {
                    _mm256_storeu_ps(out.add((p0 + p) * 6), *v);
                }
                _mm256_maskstore_ps(out.add((p0 + 7) * 6), mask6, r[7]);
                p0 += 8;
            }
            for p in kc8..kc {
                for (i, row) in rows.iter().enumerate() {
                    *out.add(p * 6 + i) = *row.add(p);
                }
            }
        }
    }
    if full_panels * 6 < mc {
        let q = full_panels;
        // SAFETY: the remaining rows start at row q*6 of the block; dst's tail holds one panel.
        unsafe {
            pack::pack_a(
                6,
                mc - q * 6,
                kc,
                a.add(q * 6 * rsa),
                rsa,
                1,
                &mut dst[q * 6 * kc..],
            )
        };
    }
}

/// [`pack::pack_b`] for NR a multiple of 8 with a transposing fast path when B is
/// column-major (`rsb == 1`).
///
/// # Safety
/// As [`pack::pack_b`]; the CPU supports AVX2.
#[target_feature(enable = "avx2")]
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
            let len = mc.div_ceil(6) * 6 * kc;
            let (mut want, mut got) = (vec![f32::NAN; len], vec![f32::NAN; len]);
            unsafe {
                pack::pack_a(6, mc, kc, a.as_ptr(), rsa, 1, &mut want);
                pack_a_6(6, mc, kc, a.as_ptr(), rsa, 1, &mut got);
            }
            assert_eq!(want, got, "pack_a mc={mc} kc={kc}");
        }
        for &(nc, kc) in &[(16, 8), (32, 16), (37, 21), (5, 9), (4080, 20), (17, 0)] {
            let csb = kc + 5;
            let b = data(nc * csb + 8);
            let len = nc.div_ceil(16) * 16 * kc;
            let (mut want, mut got) = (vec![f32::NAN; len], vec![f32::NAN; len]);
            unsafe {
                pack::pack_b(16, nc, kc, b.as_ptr(), 1, csb, &mut want);
                pack_b_t(16, nc, kc, b.as_ptr(), 1, csb, &mut got);
            }
            assert_eq!(want, got, "pack_b nc={nc} kc={kc}");
        }
    }
}
