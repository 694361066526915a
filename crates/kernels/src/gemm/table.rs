//! The GEMM kernel table: for each ISA, the microkernel candidates (register tile, packers)
//! and the one in force with its blocking, chosen once per process (XNNPACK-style configs:
//! one table drives dispatch, tests and `tessera tune`).
//!
//! The choice, in order: a valid entry of the tuning cache written by `tessera tune` for this
//! exact CPU (see `tune_cache.rs`), else the analytical default: of the ISA's candidates, the
//! one whose model KC (`blocking.rs`) is deepest on this host's L1, with that blocking. `TESSERA_ISA` picks the ISA as before;
//! `TESSERA_TUNE=off` ignores the cache.

use super::blocking::{derive, derive_deep_kc, Blocking};
use super::kernel::{MicroKernelFn, NarrowKernel, PackFn, RowWideFn, ShortKernel};
use super::tune_cache;
use crate::host::Host;
use crate::isa::Isa;
use std::sync::OnceLock;

/// One microkernel candidate: its register tile and the packers that lay operands out for it.
#[derive(Debug)]
pub struct MicroKernel {
    /// Name in the XNNPACK style: `<isa>_<mr>x<nr>`.
    pub name: &'static str,
    /// The instruction set it needs.
    pub isa: Isa,
    /// Rows of the register tile.
    pub mr: usize,
    /// Columns of the register tile.
    pub nr: usize,
    pub(crate) run: MicroKernelFn,
    /// The same kernel body with a one-row tile (`1 x nr`), for products with one row (a
    /// batch-1 linear layer or squeeze-excitation): it reads B's panels as packed for this
    /// kernel and accumulates each element in the same order, so the row's bits are those the
    /// full tile gives, at 1 / MR of its work.
    pub(crate) run_row: Option<MicroKernelFn>,
    /// The one-row kernel over several B panels at once (more independent FMA chains), used
    /// with `run_row` where whole groups of panels fit.
    pub(crate) run_row_wide: Option<RowWideFn>,
    /// Short twins for the last row panel when M is not a multiple of MR, fewest rows first
    /// (empty: such panels run the full tile through a padded temporary).
    pub(crate) run_short: &'static [ShortKernel],
    /// Narrow twins for the last column panel when N is not a multiple of NR, fewest columns
    /// first (empty: such panels run the full tile through a padded temporary).
    pub(crate) run_narrow: &'static [NarrowKernel],
    /// The full tile storing C transposed (element `(i, j)` at `c + j * rsc + i`, see
    /// `microkernel_t.rs`), for a C whose rows are contiguous and columns strided.
    pub(crate) run_t: Option<MicroKernelFn>,
    /// What `run_t`'s transposed store costs over the row-major store, in k steps of the
    /// tile (shuffles of its `L x L` transposes over the FMA cycles of one k step).
    pub(crate) transpose_steps: usize,
    pub(crate) pack_a: PackFn,
    pub(crate) pack_b: PackFn,
}

impl MicroKernel {
    /// Rows the kernel computes for `m` rows of C: whole MR panels, the last one through the
    /// shortest short twin that covers it (or a full, padded panel).
    pub fn padded_rows(&self, m: usize) -> usize {
        let rem = m % self.mr;
        let last = match self.run_short.iter().find(|s| s.rows >= rem) {
            _ if rem == 0 => 0,
            Some(s) => s.rows,
            None => self.mr,
        };
        m - rem + last
    }

    /// Columns the kernel computes for `n` columns of C: whole NR panels, the last one through
    /// the narrowest narrow twin that covers it (or a full, padded panel).
    pub fn padded_cols(&self, n: usize) -> usize {
        let rem = n % self.nr;
        let last = match self.run_narrow.iter().find(|t| t.cols >= rem) {
            _ if rem == 0 => 0,
            Some(t) => t.cols,
            None => self.nr,
        };
        n - rem + last
    }

    /// The extra cost of a C stored column by column, in k steps per full tile (the tile's
    /// transposes, see `microkernel_t.rs`), or `None` when the kernel has no transposed-store
    /// twin (such a C then goes through a padded temporary, element by element).
    pub fn transposed_store_cost(&self) -> Option<usize> {
        self.run_t.map(|_| self.transpose_steps)
    }
}

impl PartialEq for MicroKernel {
    fn eq(&self, other: &Self) -> bool {
        self.name == other.name
    }
}

/// A microkernel with the block sizes it runs with.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Tuning {
    /// The microkernel.
    pub kernel: &'static MicroKernel,
    /// Its cache blocking (`mr`, `nr` equal the kernel's).
    pub blocking: Blocking,
    /// The depth block of products whose C outgrows L2 (see [`Tuning::blocking_for`]): the
    /// model's (`blocking::derive_deep_kc`) unless `tessera tune` measured another faster on
    /// this host.
    pub deep_kc: usize,
}

impl Tuning {
    /// `kernel` with the analytical blocking for this host.
    pub fn analytical(kernel: &'static MicroKernel) -> Tuning {
        let caches = &Host::get().caches;
        let blocking = derive(kernel.mr, kernel.nr, caches);
        Tuning {
            kernel,
            blocking,
            deep_kc: derive_deep_kc(blocking.kc, kernel.nr, caches),
        }
    }

    /// `kernel` with explicit depth and row blocks (NC and the deep depth block from the
    /// model); `None` if they are unusable (`kc` or `mc` zero, `mc` not a multiple of MR).
    pub fn with_blocks(kernel: &'static MicroKernel, kc: usize, mc: usize) -> Option<Tuning> {
        if kc == 0 || kc > 4096 || mc == 0 || !mc.is_multiple_of(kernel.mr) || mc > 1 << 16 {
            return None;
        }
        let caches = &Host::get().caches;
        let nc = super::blocking::derive_nc(kernel.nr, kc, mc, caches);
        Some(Tuning {
            kernel,
            blocking: Blocking {
                mr: kernel.mr,
                nr: kernel.nr,
                kc,
                mc,
                nc,
            },
            deep_kc: derive_deep_kc(kc, kernel.nr, caches),
        })
    }

    /// The same, with `deep_kc` as the depth block of products whose C outgrows L2 (`kc`
    /// itself: none); `None` if it is unusable (shallower than `blocking.kc` or deeper than
    /// 4096).
    pub fn with_deep_kc(self, deep_kc: usize) -> Option<Tuning> {
        (deep_kc >= self.blocking.kc && deep_kc <= 4096).then_some(Tuning { deep_kc, ..self })
    }

    /// The blocking a product of `m x n` (C's extent) runs with. When C is larger than L2,
    /// each depth block's pass reloads every C tile from L3 or memory, a cost the model's
    /// L1-sized KC does not weigh; a deeper KC halves the passes (on a Zen 5 core with 1 MiB
    /// of L2, one thread, KC 512 against the model's 256 ran 2048^3 at 222 against 200-208
    /// GFLOP/s and left products whose C fits in L2 unchanged; `docs/kernels/gemm.md`). So such
    /// products take `deep_kc`, with MC and NC scaled to keep the A and B blocks' bytes; the
    /// rest, and every product with a pre-packed operand (whose panels are laid out for
    /// `blocking.kc`), take `blocking`. The choice depends on the shape alone, never on the
    /// thread count, so results stay bit-identical for any thread count.
    pub fn blocking_for(&self, m: usize, n: usize, prepacked: bool) -> Blocking {
        let b = self.blocking;
        let c_bytes = m
            .saturating_mul(n)
            .saturating_mul(std::mem::size_of::<f32>());
        if prepacked || self.deep_kc == b.kc || c_bytes <= Host::get().caches.l2.size {
            return b;
        }
        let kc = self.deep_kc;
        let mc = (b.mc * b.kc / kc / b.mr * b.mr).max(b.mr);
        let nc = (b.nc * b.kc / kc / b.nr * b.nr).max(b.nr);
        Blocking { kc, mc, nc, ..b }
    }
}

/// Where the tuning in force came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// The analytical model (no usable tuning cache).
    Analytical,
    /// `tessera tune`'s cache file at this path.
    Tuned(String),
}

/// The tuning in force for one ISA.
#[derive(Debug, Clone)]
pub struct Selected {
    /// Kernel and blocks.
    pub tuning: Tuning,
    /// Why these.
    pub origin: Origin,
}

#[cfg(target_arch = "x86_64")]
static AVX512: [MicroKernel; 2] = [
    MicroKernel {
        name: "avx512_12x32",
        isa: Isa::Avx512,
        mr: 12,
        nr: 32,
        run: super::microkernel::avx512_12x32,
        run_row: Some(super::microkernel::avx512_1x32),
        run_row_wide: Some(super::microkernel::avx512_1x32_wide),
        run_short: &[
            ShortKernel {
                rows: 4,
                run: super::microkernel::avx512_4x32_of12,
            },
            ShortKernel {
                rows: 8,
                run: super::microkernel::avx512_8x32_of12,
            },
        ],
        run_narrow: &[
            NarrowKernel {
                cols: 8,
                run: super::microkernel::avx512_12x8_of32,
                short: &[
                    ShortKernel {
                        rows: 4,
                        run: super::microkernel::avx512_4x8_of12x32,
                    },
                    ShortKernel {
                        rows: 8,
                        run: super::microkernel::avx512_8x8_of12x32,
                    },
                ],
            },
            NarrowKernel {
                cols: 16,
                run: super::microkernel::avx512_12x16_of32,
                short: &[
                    ShortKernel {
                        rows: 4,
                        run: super::microkernel::avx512_4x16_of12x32,
                    },
                    ShortKernel {
                        rows: 8,
                        run: super::microkernel::avx512_8x16_of12x32,
                    },
                ],
            },
        ],
        run_t: Some(super::microkernel::avx512_12x32_t),
        // Two 16 x 16 transposes (64 shuffles each, one port) against 24 FMAs (12 cycles on
        // two pipes) per k step.
        transpose_steps: 11,
        pack_a: super::pack_avx2::pack_a_t,
        pack_b: super::pack_avx2::pack_b_t,
    },
    MicroKernel {
        name: "avx512_24x16",
        isa: Isa::Avx512,
        mr: 24,
        nr: 16,
        run: super::microkernel::avx512_24x16,
        run_row: Some(super::microkernel::avx512_1x16),
        run_row_wide: Some(super::microkernel::avx512_1x16_wide),
        run_short: &[
            ShortKernel {
                rows: 8,
                run: super::microkernel::avx512_8x16_of24,
            },
            ShortKernel {
                rows: 16,
                run: super::microkernel::avx512_16x16_of24,
            },
        ],
        run_narrow: &[],
        run_t: None,
        transpose_steps: 0,
        pack_a: super::pack_avx2::pack_a_t,
        pack_b: super::pack_avx2::pack_b_t,
    },
];

#[cfg(target_arch = "x86_64")]
static AVX2: [MicroKernel; 1] = [MicroKernel {
    name: "avx2_6x16",
    isa: Isa::Avx2,
    mr: 6,
    nr: 16,
    run: super::microkernel::avx2_6x16,
    run_row: Some(super::microkernel::avx2_1x16),
    run_row_wide: Some(super::microkernel::avx2_1x16_wide),
    run_short: &[
        ShortKernel {
            rows: 2,
            run: super::microkernel::avx2_2x16_of6,
        },
        ShortKernel {
            rows: 4,
            run: super::microkernel::avx2_4x16_of6,
        },
    ],
    run_narrow: &[NarrowKernel {
        cols: 8,
        run: super::microkernel::avx2_6x8_of16,
        short: &[
            ShortKernel {
                rows: 2,
                run: super::microkernel::avx2_2x8_of6x16,
            },
            ShortKernel {
                rows: 4,
                run: super::microkernel::avx2_4x8_of6x16,
            },
        ],
    }],
    run_t: Some(super::microkernel::avx2_6x16_t),
    // Two 8 x 8 transposes (24 shuffles each) against 12 FMAs (6 cycles) per k step.
    transpose_steps: 8,
    pack_a: super::pack_avx2::pack_a_t,
    pack_b: super::pack_avx2::pack_b_t,
}];

static PORTABLE: [MicroKernel; 1] = [MicroKernel {
    name: "portable_4x16",
    isa: Isa::Portable,
    mr: 4,
    nr: 16,
    run: super::microkernel::portable_4x16,
    run_row: Some(super::microkernel::portable_1x16),
    run_row_wide: None,
    run_short: &[],
    run_narrow: &[NarrowKernel {
        cols: 8,
        run: super::microkernel::portable_4x8_of16,
        short: &[],
    }],
    run_t: Some(super::microkernel::portable_4x16_t),
    // Transposes through memory: about 4 x 64 scalar moves against 8 vector FMAs per k step.
    transpose_steps: 32,
    pack_a: super::pack::pack_a,
    pack_b: super::pack::pack_b,
}];

static SCALAR: [MicroKernel; 1] = [MicroKernel {
    name: "scalar_4x4",
    isa: Isa::Scalar,
    mr: 4,
    nr: 4,
    run: super::scalar::kernel_4x4,
    run_row: None,
    run_row_wide: None,
    run_short: &[],
    run_narrow: &[],
    run_t: None,
    transpose_steps: 0,
    pack_a: super::pack::pack_a,
    pack_b: super::pack::pack_b,
}];

/// Every microkernel candidate of `isa`, the one preferred on a tie of the model first.
pub fn candidates(isa: Isa) -> &'static [MicroKernel] {
    match isa {
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 => &AVX512,
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => &AVX2,
        #[cfg(not(target_arch = "x86_64"))]
        Isa::Avx512 | Isa::Avx2 => &SCALAR,
        Isa::Portable => &PORTABLE,
        Isa::Scalar => &SCALAR,
    }
}

/// The candidate the analytical model picks for `isa` on this host (see [`deepest`]).
pub fn analytical_default(isa: Isa) -> &'static MicroKernel {
    deepest(candidates(isa), &Host::get().caches)
}

/// Of `kernels`, the one whose analytical KC is deepest on a host with `caches`, ties to the
/// first listed. Every candidate holds the same number of accumulators (the register file is
/// the limit), so per k step they do the same FMAs; what differs is how many k steps a tile
/// runs between loads and stores of its C block and packing passes, and KC is that count. The
/// tile shape sets KC through L1's associativity: a 12 x 32 tile's B micro-panel is 2.7 times
/// its A micro-panel, so on an 8-way L1 (Zen 3/4, Skylake-SP) only one 4 KiB way is left for A
/// and KC = 80, where a 24 x 16 tile gets four ways and KC = 168; on a 12-way L1 (Ice Lake-SP,
/// Sapphire Rapids) both get KC = 256 and the first (12 x 32: fewer broadcasts per FMA) stays.
pub fn deepest<'a>(kernels: &'a [MicroKernel], caches: &crate::host::Caches) -> &'a MicroKernel {
    let mut best = &kernels[0];
    let mut best_kc = super::blocking::derive_kc(best.mr, best.nr, caches);
    for k in &kernels[1..] {
        let kc = super::blocking::derive_kc(k.mr, k.nr, caches);
        if kc > best_kc {
            (best, best_kc) = (k, kc);
        }
    }
    best
}

/// Looks a candidate up by name.
pub fn find(name: &str) -> Option<&'static MicroKernel> {
    [Isa::Avx512, Isa::Avx2, Isa::Portable, Isa::Scalar]
        .into_iter()
        .flat_map(candidates)
        .find(|k| k.name == name)
}

fn index(isa: Isa) -> usize {
    match isa {
        Isa::Avx512 => 0,
        Isa::Avx2 => 1,
        Isa::Portable => 2,
        Isa::Scalar => 3,
    }
}

/// The tuning in force for `isa` (chosen on first use, then fixed for the process).
pub fn selected(isa: Isa) -> &'static Selected {
    static CHOICE: [OnceLock<Selected>; 4] = [const { OnceLock::new() }; 4];
    CHOICE[index(isa)].get_or_init(|| match tune_cache::load_for(isa) {
        Some((tuning, path)) => Selected {
            tuning,
            origin: Origin::Tuned(path),
        },
        None => Selected {
            tuning: Tuning::analytical(analytical_default(isa)),
            origin: Origin::Analytical,
        },
    })
}

/// The blocking in force for `isa`.
pub fn blocking(isa: Isa) -> Blocking {
    selected(isa).tuning.blocking
}

#[cfg(all(test, target_arch = "x86_64"))]
mod tests {
    use super::*;
    use crate::host::{CacheLevel, CacheSource, Caches};

    fn host(l1: (usize, usize), l2: (usize, usize)) -> Caches {
        Caches {
            l1d: CacheLevel::new(l1.0 << 10, l1.1, 1),
            l2: CacheLevel::new(l2.0 << 10, l2.1, 1),
            l3: Some(CacheLevel::new(32 << 20, 16, 8)),
            source: CacheSource::Default,
        }
    }

    /// The analytical default per real L1 geometry (the KCs are worked in `blocking.rs`).
    #[test]
    fn the_deepest_model_kc_picks_the_default_kernel() {
        // Zen 3 / Zen 4 / Skylake-SP: 32 KiB 8-way L1d, KC 80 (12x32) against 168 (24x16).
        assert_eq!(
            deepest(&AVX512, &host((32, 8), (1024, 8))).name,
            "avx512_24x16"
        );
        // Ice Lake-SP / Sapphire Rapids: 48 KiB 12-way, KC 256 for both: the first stays.
        assert_eq!(
            deepest(&AVX512, &host((48, 12), (2048, 16))).name,
            "avx512_12x32"
        );
        // A single candidate is its own default.
        assert_eq!(deepest(&AVX2, &host((32, 8), (512, 8))).name, "avx2_6x16");
    }
}
