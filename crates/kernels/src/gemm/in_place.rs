//! B in place: when the microkernel may read B's rows straight from the caller's matrix
//! instead of from a packed copy.
//!
//! Packing B (Goto & van de Geijn, 2008; BLIS's loop 4) copies each KC x NR micro-panel into
//! contiguous memory so that it sits in L1 without conflict misses while every MR-row panel of
//! A passes over it. The copy reads and writes all of B once per call. When a product has
//! few rows of A per column of B, as the pointwise convolutions of the MobileNets have (a
//! 96 x 12544 x 16 expansion: B is the 16-channel activation, read by eight 12-row panels),
//! that copy is a large share of the work, and the micro-panel's rows, `rs` floats apart in
//! B, fit L1 as they are. The microkernel takes B's row stride as an argument (`rsb`: NR for a
//! packed panel), so it reads the same values in the same order either way: the result is
//! bit-identical, only the memory traffic differs.
//!
//! B is read in place when it is not pre-packed, has unit column stride and unsegmented rows,
//! and either one micro-panel read in place, `kc` rows of `NR` floats `rs` apart, occupies at
//! most half of L1 and at most half the ways of any L1 set (rows whose stride is a multiple of
//! the way size all fall in a few sets: 16 rows of a 12544-wide B share 4 of 64 sets), or so
//! few row panels of A read each B panel that re-reading it from L2 costs less than the copy.
//! Many-panel reuse also asks for rows that start on a cache line: otherwise every vector load
//! of the panel straddles two lines (a 196-wide B, 784 bytes per row), which costs more than
//! the copy saves. Edge panels
//! (fewer than NR columns, or straddling a segment of a batched operand) are still packed, one
//! panel at a time.

use super::blocking::Blocking;
use crate::host::CacheLevel;

/// Whether a `kc x nr` micro-panel whose rows are `rs` floats apart fits `l1` as it lies:
/// its cache lines take at most half of L1, and at most half the ways of any set.
pub(crate) fn panel_fits_l1(kc: usize, nr: usize, rs: usize, l1: &CacheLevel) -> bool {
    const F32: usize = std::mem::size_of::<f32>();
    // Counted on the stack (the GEMM allocates nothing when warm).
    const MAX_SETS: usize = 1024;
    let (line, sets, ways) = (l1.line.max(1), l1.sets.max(1), l1.ways.max(1));
    if kc == 0 || nr == 0 {
        return true;
    }
    if sets > MAX_SETS || kc * nr * F32 > l1.size / 2 {
        return false;
    }
    // Lines per row (the row may start anywhere in a line) and the rows' start offsets, in
    // bytes, modulo the way size: enough to count lines per set.
    let way = line * sets;
    let mut per_set = [0u32; MAX_SETS];
    let mut total = 0;
    for r in 0..kc {
        let start = (r * rs * F32) % way;
        let first = start / line;
        let last = (start + nr * F32 - 1) / line;
        for l in first..=last {
            per_set[l % sets] += 1;
            total += 1;
        }
        if total * line > l1.size / 2 {
            return false;
        }
    }
    per_set[..sets].iter().all(|&n| n as usize <= ways / 2)
}

/// A B micro-panel read by at most this many MR-row panels of A is read in place even when
/// it does not fit L1 as it lies: its second pass then comes from L2, still less traffic
/// than packing it (read B, write the copy, read the copy).
const FEW_A_PANELS: usize = 2;

/// Whether the driver reads B in place for a product with this blocking (see the module
/// docs): `m`, `k`, `n` the product's extents, `rs` B's row stride.
pub(crate) fn b_in_place(
    blk: &Blocking,
    (m, k, n): (usize, usize, usize),
    rs: usize,
    l1: &CacheLevel,
) -> bool {
    let a_panels = m.min(blk.mc).div_ceil(blk.mr.max(1));
    // Rows that start mid-line make every vector load of the panel straddle two lines: worth
    // it for a panel read once or twice, not for one read by many A panels.
    let aligned = (rs * std::mem::size_of::<f32>()).is_multiple_of(l1.line.max(1));
    blk.mr > 1
        && n >= blk.nr
        && (a_panels <= FEW_A_PANELS || (aligned && panel_fits_l1(blk.kc.min(k), blk.nr, rs, l1)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn l1(size_kib: usize, ways: usize) -> CacheLevel {
        CacheLevel {
            size: size_kib * 1024,
            ways,
            line: 64,
            sets: size_kib * 1024 / (64 * ways),
            shared_by: 1,
        }
    }

    #[test]
    fn rows_a_way_apart_conflict_and_others_do_not() {
        let l1 = l1(48, 12); // 64 sets, 4 KiB ways
                             // 12544 floats = 49 KiB: every row starts in one of 4 sets.
        assert!(panel_fits_l1(16, 32, 12544, &l1));
        assert!(!panel_fits_l1(64, 32, 12544, &l1));
        // 784 floats: rows spread over all sets.
        assert!(panel_fits_l1(144, 32, 784, &l1));
        // Half of L1 at most: 384 rows of 32 floats is 48 KiB.
        assert!(!panel_fits_l1(384, 32, 32, &l1));
        assert!(panel_fits_l1(192, 32, 32, &l1));
    }

    #[test]
    fn a_tiny_l1_takes_nothing_in_place() {
        assert!(!panel_fits_l1(64, 32, 100, &l1(4, 2)));
    }
}
