//! How the threaded GEMM cuts C into tasks: rectangles along M or N, on microkernel tile
//! boundaries, so no two threads write the same element and every element sees the same
//! operations whatever the thread count (Smith, van de Geijn et al., "Anatomy of
//! High-Performance Many-Threaded Matrix Multiplication", IPDPS 2014: parallelising loop 3
//! (M) or loop 5 (N)).

use super::blocking::Blocking;

/// A rectangle `[m0, m1) x [n0, n1)` of C computed by one task.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Task {
    pub m0: usize,
    pub m1: usize,
    pub n0: usize,
    pub n1: usize,
}

/// How C is cut into tasks: `parts` rectangles along M or N, on tile boundaries.
///
/// Splitting N shares no packed A (each task packs all of A: m*k extra reads per task), splitting
/// M repacks B (k*n per task); the dimension with more tiles is split so each task gets a
/// balanced share. With B packed beforehand (a layer's weights) splitting M costs nothing
/// extra, so M is split instead whenever that balances the tasks better: a 1x1 convolution of
/// a 7 x 7 image run as `C^T` (m = 49 pixels, n = 160 channels, five 32-wide panels) splits
/// its rows 24 / 25 instead of its panels 64 / 96. Tiny problems stay in one task. Computed
/// without allocating, so a warm GEMM call allocates nothing.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Partition {
    m: usize,
    n: usize,
    pub split_n: bool,
    tiles: usize,
    tile: usize,
    pub parts: usize,
}

impl Partition {
    /// Splits an `m x n` C (depth `k`) for at most `threads` tasks.
    pub fn new(
        m: usize,
        n: usize,
        k: usize,
        blk: &Blocking,
        threads: usize,
        b_packed: bool,
    ) -> Self {
        let (m_tiles, n_tiles) = (m.div_ceil(blk.mr), n.div_ceil(blk.nr));
        let work = m.saturating_mul(n).saturating_mul(k.max(1));
        let parts_of = |tiles: usize| {
            if work < 48 * 48 * 48 {
                1
            } else {
                threads.clamp(1, tiles.max(1))
            }
        };
        let mut split_n = n_tiles >= m_tiles || m_tiles < 2;
        if b_packed && split_n && m_tiles >= 2 {
            // Largest task over the mean task, along N and along M.
            let skew = |extent: usize, tiles: usize, tile: usize| {
                let parts = parts_of(tiles);
                let largest = (0..parts)
                    .map(|t| {
                        let lo = (tiles * t / parts * tile).min(extent);
                        (tiles * (t + 1) / parts * tile).min(extent) - lo
                    })
                    .max()
                    .unwrap_or(extent);
                (largest * parts) as f64 / extent.max(1) as f64
            };
            split_n = skew(m, m_tiles, blk.mr) + 0.05 >= skew(n, n_tiles, blk.nr);
        }
        let (tiles, tile) = if split_n {
            (n_tiles, blk.nr)
        } else {
            (m_tiles, blk.mr)
        };
        let parts = parts_of(tiles);
        Partition {
            m,
            n,
            split_n,
            tiles,
            tile,
            parts,
        }
    }

    /// Task `t` (`t < parts`); the tasks are disjoint, non-empty and cover C.
    pub fn task(&self, t: usize) -> Task {
        if self.parts == 1 {
            return Task {
                m0: 0,
                m1: self.m,
                n0: 0,
                n1: self.n,
            };
        }
        let extent = if self.split_n { self.n } else { self.m };
        let lo = (self.tiles * t / self.parts * self.tile).min(extent);
        let hi = (self.tiles * (t + 1) / self.parts * self.tile).min(extent);
        if self.split_n {
            Task {
                m0: 0,
                m1: self.m,
                n0: lo,
                n1: hi,
            }
        } else {
            Task {
                m0: lo,
                m1: hi,
                n0: 0,
                n1: self.n,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gemm::table::blocking;
    use crate::isa::Isa;

    #[test]
    fn partition_covers_c_on_tile_boundaries() {
        let blk = blocking(Isa::Avx2);
        for (&(m, n, threads), packed) in [
            (1000, 1000, 2),
            (3136, 64, 2),
            (197, 2304, 4),
            (100, 100, 3),
            (7, 5000, 2),
            (12, 40, 64),
            (49, 160, 2),
            (49, 96, 3),
        ]
        .iter()
        .flat_map(|s| [(s, false), (s, true)])
        {
            let part = Partition::new(m, n, 500, &blk, threads, packed);
            assert!(part.parts <= threads && part.parts >= 1);
            let tasks: Vec<Task> = (0..part.parts).map(|t| part.task(t)).collect();
            let area: usize = tasks.iter().map(|t| (t.m1 - t.m0) * (t.n1 - t.n0)).sum();
            assert_eq!(area, m * n, "{m}x{n} on {threads}");
            for t in &tasks {
                assert!(t.m1 > t.m0 && t.n1 > t.n0, "empty task {t:?}");
                assert!(t.m0 % blk.mr == 0 && t.n0 % blk.nr == 0);
            }
        }
        assert_eq!(Partition::new(10, 10, 10, &blk, 8, false).parts, 1);
    }

    /// With B packed, the dimension that balances the tasks better is split: the rows of a
    /// 49 x 160 C (24 / 25 on AVX-512's 12-row tiles) rather than its five 32-wide panels
    /// (64 / 96); evenly divisible N stays split along N.
    #[test]
    fn a_packed_b_splits_the_better_balanced_dimension() {
        let blk = Blocking {
            mr: 12,
            nr: 32,
            kc: 512,
            mc: 96,
            nc: 4096,
        };
        let p = Partition::new(49, 160, 960, &blk, 2, true);
        assert!(!p.split_n);
        assert_eq!((p.task(0).m1, p.task(1).m0, p.task(1).m1), (24, 24, 49));
        assert!(Partition::new(49, 160, 960, &blk, 2, false).split_n);
        assert!(Partition::new(49, 960, 160, &blk, 2, true).split_n);
        assert!(Partition::new(49, 320, 960, &blk, 2, true).split_n);
        assert!(!Partition::new(3136, 64, 576, &blk, 2, true).split_n);
    }
}
