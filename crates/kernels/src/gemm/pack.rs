//! Packing of A and B blocks into the contiguous micro-panels the microkernels read.
//!
//! ```text
//! packed A (mc x kc block, MR-row panels)        packed B (kc x nc block, NR-column panels)
//! panel 0: a[0..MR, 0], a[0..MR, 1], ...          panel 0: b[0, 0..NR], b[1, 0..NR], ...
//! panel 1: a[MR..2MR, 0], ...                     panel 1: b[0, NR..2NR], ...
//! ```
//! Each panel holds `kc * MR` (resp. `kc * NR`) floats; rows (columns) past the edge of the
//! block are zero, so the microkernel always computes a full tile. Reading a source with
//! arbitrary strides happens only here: the loop order puts the unit-stride direction innermost
//! when there is one, and a contiguous row of B is a plain `memcpy`.

/// Packs the `mc x kc` block of A at `a` (strides `rsa`, `csa`) into `mr`-row panels.
///
/// # Safety
/// `a + i*rsa + p*csa` is readable for `i < mc, p < kc`; `dst` holds `ceil(mc/mr)*mr*kc` floats.
pub(crate) unsafe fn pack_a(
    mr: usize,
    mc: usize,
    kc: usize,
    a: *const f32,
    rsa: usize,
    csa: usize,
    dst: &mut [f32],
) {
    let panels = mc.div_ceil(mr);
    debug_assert!(dst.len() >= panels * mr * kc);
    for q in 0..panels {
        let rows = mr.min(mc - q * mr);
        let panel = &mut dst[q * mr * kc..(q + 1) * mr * kc];
        // SAFETY (both branches): i < rows <= mc - q*mr and p < kc keep every read inside A's block.
        unsafe {
            let base = a.add(q * mr * rsa);
            if rsa == 1 && rows == mr {
                // Column-major (or transposed) A: each k-slice of the panel is contiguous;
                // fixed-size copies for the kernels' MR instead of a `memcpy` call per slice.
                match mr {
                    4 => copy_rows::<4>(kc, base, csa, panel),
                    6 => copy_rows::<6>(kc, base, csa, panel),
                    12 => copy_rows::<12>(kc, base, csa, panel),
                    24 => copy_rows::<24>(kc, base, csa, panel),
                    _ => {
                        for p in 0..kc {
                            std::ptr::copy_nonoverlapping(
                                base.add(p * csa),
                                panel.as_mut_ptr().add(p * mr),
                                mr,
                            );
                        }
                    }
                }
            } else {
                for i in 0..rows {
                    let src = base.add(i * rsa);
                    for p in 0..kc {
                        panel[p * mr + i] = *src.add(p * csa);
                    }
                }
                for i in rows..mr {
                    for p in 0..kc {
                        panel[p * mr + i] = 0.0;
                    }
                }
            }
        }
    }
}

/// Packs the `kc x nc` block of B at `b` (strides `rsb`, `csb`) into `nr`-column panels.
///
/// # Safety
/// `b + p*rsb + j*csb` is readable for `p < kc, j < nc`; `dst` holds `ceil(nc/nr)*nr*kc` floats.
pub(crate) unsafe fn pack_b(
    nr: usize,
    nc: usize,
    kc: usize,
    b: *const f32,
    rsb: usize,
    csb: usize,
    dst: &mut [f32],
) {
    let panels = nc.div_ceil(nr);
    debug_assert!(dst.len() >= panels * nr * kc);
    for q in 0..panels {
        let cols = nr.min(nc - q * nr);
        let panel = &mut dst[q * nr * kc..(q + 1) * nr * kc];
        // SAFETY (all branches): p < kc and j < cols <= nc - q*nr keep every read inside B's block.
        unsafe {
            let base = b.add(q * nr * csb);
            if csb == 1 && cols == nr && (nr == 16 || nr == 32) {
                // Row-major B, full panel: fixed-size copies the compiler turns into a few
                // vector moves instead of a `memcpy` call per k-slice.
                match nr {
                    16 => copy_rows::<16>(kc, base, rsb, panel),
                    _ => copy_rows::<32>(kc, base, rsb, panel),
                }
            } else if csb == 1 {
                // Row-major B: each k-slice of the panel is a contiguous run of `cols` floats.
                for p in 0..kc {
                    let row = &mut panel[p * nr..(p + 1) * nr];
                    std::ptr::copy_nonoverlapping(base.add(p * rsb), row.as_mut_ptr(), cols);
                    row[cols..].fill(0.0);
                }
            } else {
                for j in 0..cols {
                    let src = base.add(j * csb);
                    for p in 0..kc {
                        panel[p * nr + j] = *src.add(p * rsb);
                    }
                }
                for p in 0..kc {
                    panel[p * nr + cols..(p + 1) * nr].fill(0.0);
                }
            }
        }
    }
}

/// Copies `kc` rows of `N` contiguous floats, `rs` apart, into `N`-float slots of `dst`.
///
/// # Safety
/// `src + p*rs + j` is readable for `p < kc`, `j < N`; `dst` holds `kc * N` floats.
#[inline(always)]
unsafe fn copy_rows<const N: usize>(kc: usize, src: *const f32, rs: usize, dst: &mut [f32]) {
    // Rows `rs` floats apart are usually in different 4 KiB pages, where the hardware
    // prefetchers do not follow: ask for the rows a few steps ahead explicitly.
    const AHEAD: usize = 8;
    for (p, slot) in dst.chunks_exact_mut(N).take(kc).enumerate() {
        #[cfg(target_arch = "x86_64")]
        if rs > N && p + AHEAD < kc {
            let next = src.wrapping_add((p + AHEAD) * rs);
            for line in (0..N).step_by(16) {
                // SAFETY: prefetch is a hint and never faults, whatever the address.
                unsafe {
                    std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(
                        next.wrapping_add(line) as *const i8,
                    )
                };
            }
        }
        // SAFETY: the caller guarantees row p of the source holds N readable floats.
        let row = unsafe { std::ptr::read_unaligned(src.add(p * rs) as *const [f32; N]) };
        slot.copy_from_slice(&row);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pack_a_layout_and_padding() {
        // A is 5 x 3 row-major; MR = 4 gives two panels, the second with 3 zero rows.
        let a: Vec<f32> = (0..15).map(|x| x as f32).collect();
        let mut dst = vec![f32::NAN; 2 * 4 * 3];
        unsafe { pack_a(4, 5, 3, a.as_ptr(), 3, 1, &mut dst) };
        assert_eq!(&dst[0..4], &[0.0, 3.0, 6.0, 9.0]); // k = 0 of rows 0..4
        assert_eq!(&dst[4..8], &[1.0, 4.0, 7.0, 10.0]);
        assert_eq!(&dst[12..16], &[12.0, 0.0, 0.0, 0.0]); // panel 1, k = 0
                                                          // The same block read through transposed strides packs identically.
        let at: Vec<f32> = (0..3)
            .flat_map(|p| (0..5).map(move |i| (i * 3 + p) as f32))
            .collect();
        let mut dst2 = vec![f32::NAN; 2 * 4 * 3];
        unsafe { pack_a(4, 5, 3, at.as_ptr(), 1, 5, &mut dst2) };
        assert_eq!(dst, dst2);
    }

    #[test]
    fn pack_b_layout_and_padding() {
        // B is 2 x 5 row-major; NR = 4 gives two panels.
        let b: Vec<f32> = (0..10).map(|x| x as f32).collect();
        let mut dst = vec![f32::NAN; 2 * 4 * 2];
        unsafe { pack_b(4, 5, 2, b.as_ptr(), 5, 1, &mut dst) };
        assert_eq!(&dst[0..8], &[0.0, 1.0, 2.0, 3.0, 5.0, 6.0, 7.0, 8.0]);
        assert_eq!(&dst[8..16], &[4.0, 0.0, 0.0, 0.0, 9.0, 0.0, 0.0, 0.0]);
        let bt: Vec<f32> = (0..5)
            .flat_map(|j| (0..2).map(move |p| (p * 5 + j) as f32))
            .collect();
        let mut dst2 = vec![f32::NAN; 2 * 4 * 2];
        unsafe { pack_b(4, 5, 2, bt.as_ptr(), 1, 2, &mut dst2) };
        assert_eq!(dst, dst2);
    }
}
