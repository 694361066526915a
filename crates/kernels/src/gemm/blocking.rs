//! Cache-blocking parameters derived from the host's caches, after Low, Igual, Smith and
//! Quintana-Ortí, "Analytical Modeling Is Enough for High-Performance BLIS" (ACM TOMS 43(2),
//! 2016), section 4.
//!
//! The loop nest of `driver.rs` keeps a KC x NR micro-panel of packed B in L1 while MR x KC
//! micro-panels of A stream through it, an MC x KC block of packed A in L2 while the B
//! micro-panels stream, and a KC x NC block of packed B in L3. The model places each operand in
//! whole *ways* of a set-associative cache (a way is `sets * line` bytes), so that the
//! resident operand is never evicted by the streaming one under LRU replacement:
//!
//! ```text
//! L1:  C_Ar = floor((W_L1 - 1) / (1 + NR / MR))        ways for one A micro-panel
//!      KC   = C_Ar * N_L1 * C_L1 / (MR * S)             B micro-panel gets ceil(C_Ar*NR/MR) ways,
//!                                                       one way is left for C and the stack
//! L2:  C_Br = ceil(KC * NR * S / (N_L2 * C_L2))         ways for the streaming B micro-panel
//!      MC   = floor((W_L2 - 1 - C_Br) / 2) * N_L2 * C_L2 / (KC * S), a multiple of MR
//! L3:  C_Ac = ceil(MC * KC * S / (N_L3 * C_L3))
//!      NC   = (W_L3 - 1 - C_Ac) * N_L3 * C_L3 / (KC * S), rounded down to a multiple of NR
//! ```
//! with `W` ways, `N` sets, `C` bytes per line and `S = 4` bytes per float. The paper gives A
//! all the L2 ways the B micro-panel leaves; here A takes half of them, because each pass of
//! loop 2 also streams an MC x NR column block of C through L2 (228 KiB for MC = 1788 on a
//! 12 x 32 kernel), which the model does not count, and L2s from Skylake-SP on are not
//! inclusive of L1. On Sapphire Rapids (2 MiB 16-way L2) the half measured faster on one
//! thread at 1024^3 and 2048^3 (MC 888: 136 and 135 GFLOP/s against 135 and 130 for the full
//! 1788); `tessera tune` measures smaller values still. A shared L3 is
//! divided by the number of cores sharing it first (each core's packed B block must fit its
//! share). Bounds keep degenerate geometries usable: KC in 64..=512 (a multiple of 8, the
//! microkernel's unroll), MC in MR..=2048 MR-multiples, NC in 256..=8192. When the
//! associativity leaves no way for A (`C_Ar = 0`, e.g. a 2-way L1) the B micro-panel takes half
//! of L1 instead.

use crate::host::Caches;

/// Cache-blocking and register-tile sizes of one GEMM microkernel on one host.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Blocking {
    /// Rows of the register tile.
    pub mr: usize,
    /// Columns of the register tile (a multiple of the vector width).
    pub nr: usize,
    /// Depth of a packed block (the k extent of both micro-panels).
    pub kc: usize,
    /// Rows of a packed A block (a multiple of `mr`).
    pub mc: usize,
    /// Columns of a packed B block (a multiple of `nr`).
    pub nc: usize,
}

const F32: usize = 4;

/// KC from L1: the B micro-panel plus one A micro-panel fill all but one way.
pub fn derive_kc(mr: usize, nr: usize, caches: &Caches) -> usize {
    let l1 = &caches.l1d;
    let c_ar = (l1.ways.saturating_sub(1) * mr) / (mr + nr);
    let kc = if c_ar == 0 {
        l1.size / 2 / (nr * F32)
    } else {
        c_ar * l1.way_bytes() / (mr * F32)
    };
    (kc / 8 * 8).clamp(64, 512)
}

/// MC from L2: the packed A block takes half the ways the streaming B micro-panel and C leave.
pub fn derive_mc(mr: usize, nr: usize, kc: usize, caches: &Caches) -> usize {
    let l2 = &caches.l2;
    let way = l2.way_bytes();
    let c_br = (kc * nr * F32).div_ceil(way);
    let ways_for_a = (l2.ways.saturating_sub(1 + c_br) / 2).max(1);
    let mc = ways_for_a * way / (kc * F32);
    (mc / mr * mr).clamp(mr, 2048 / mr * mr)
}

/// NC from this core's share of L3 (or half of L2 when there is no L3).
pub fn derive_nc(nr: usize, kc: usize, mc: usize, caches: &Caches) -> usize {
    let nc = match caches.l3 {
        Some(l3) => {
            let share = l3.shared_by.max(1);
            // One core's share of the sets, whole ways kept (the model's unit).
            let way = (l3.way_bytes() / share).max(l3.line);
            let c_ac = (mc * kc * F32).div_ceil(way);
            let ways_for_b = l3.ways.saturating_sub(1 + c_ac).max(1);
            ways_for_b * way / (kc * F32)
        }
        None => caches.l2.size / 2 / (kc * F32),
    };
    (nc / nr * nr).clamp(256 / nr * nr.max(1), 8192 / nr * nr)
}

/// The depth block of products whose C outgrows L2 (`Tuning::blocking_for`), from the model's
/// `kc`: twice as deep, at most 512, and no deeper than lets the `kc x nr` B micro-panel fit
/// the one L2 way [`derive_mc`] leaves it (`C_Br = 1`), so the MC derivation still holds.
///
/// The model's KC keeps the B micro-panel in L1, which is right while C stays in L2. When C
/// is larger, every depth block's pass brings every C tile back from L3 or memory (two MR x
/// NR tile transfers per `2 * MR * NR * KC` FLOPs), a cost the L1 constraint does not weigh:
/// doubling KC halves those passes, and the deeper B micro-panel streams from L2 at a few
/// bytes per FMA cycle, which L2 delivers. Measured, one thread, KC 512 against the model's
/// 256 at 1024^3 and 2048^3: Zen 5 222-231 against 200-208 GFLOP/s; Emerald Rapids 145-150
/// against 140-143 (`docs/kernels/gemm.md`). `tessera tune` may replace it.
pub fn derive_deep_kc(kc: usize, nr: usize, caches: &Caches) -> usize {
    let l2_way = caches.l2.way_bytes();
    let fits_way = l2_way / (nr.max(1) * F32) / 8 * 8;
    (2 * kc).min(512).min(fits_way).max(kc)
}

/// The analytical blocking of an `mr x nr` microkernel on a host with `caches`.
pub fn derive(mr: usize, nr: usize, caches: &Caches) -> Blocking {
    let kc = derive_kc(mr, nr, caches);
    let mc = derive_mc(mr, nr, kc, caches);
    let nc = derive_nc(nr, kc, mc, caches);
    Blocking { mr, nr, kc, mc, nc }
}

/// One line saying how `b` follows from `caches` (printed by `tessera cpu`).
pub fn explain(b: &Blocking, caches: &Caches) -> String {
    let l1 = &caches.l1d;
    let l2 = &caches.l2;
    format!(
        "KC {kc}: B micro-panel {kc}x{nr} = {bp} KiB + A micro-panel {mr}x{kc} = {ap} KiB in a \
         {l1k} KiB {l1w}-way L1d ({l1way} KiB ways); MC {mc}: A block {ab} KiB in a {l2k} KiB \
         {l2w}-way L2; NC {nc}: B block {bb} KiB in L3",
        kc = b.kc,
        nr = b.nr,
        mr = b.mr,
        mc = b.mc,
        nc = b.nc,
        bp = b.kc * b.nr * F32 / 1024,
        ap = b.kc * b.mr * F32 / 1024,
        l1k = l1.size >> 10,
        l1w = l1.ways,
        l1way = l1.way_bytes() >> 10,
        ab = b.mc * b.kc * F32 / 1024,
        l2k = l2.size >> 10,
        l2w = l2.ways,
        bb = b.kc * b.nc * F32 / 1024,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host::{CacheLevel, CacheSource};

    /// Per-core cache geometry from the vendors' manuals (Intel 64 and IA-32 Optimization
    /// Reference Manual, tables of cache parameters; AMD Software Optimization Guides for
    /// families 19h and 1Ah). L3 `shared_by` counts cores sharing one L3 (per CCX on AMD;
    /// per socket slice count on Intel, where each core's share is one slice).
    fn host(l1: (usize, usize), l2: (usize, usize), l3: (usize, usize, usize)) -> Caches {
        Caches {
            l1d: CacheLevel::new(l1.0 << 10, l1.1, 1),
            l2: CacheLevel::new(l2.0 << 10, l2.1, 1),
            l3: Some(CacheLevel::new(l3.0 << 10, l3.1, l3.2)),
            source: CacheSource::Default,
        }
    }

    fn zen3() -> Caches {
        host((32, 8), (512, 8), (32 << 10, 16, 8))
    }
    fn zen4() -> Caches {
        host((32, 8), (1024, 8), (32 << 10, 16, 8))
    }
    fn zen5() -> Caches {
        host((48, 12), (1024, 16), (32 << 10, 16, 8))
    }
    fn skylake_sp() -> Caches {
        host((32, 8), (1024, 16), (1408 * 28, 11, 28))
    }
    fn ice_lake_sp() -> Caches {
        host((48, 12), (1280, 20), (1536 * 40, 12, 40))
    }
    fn sapphire_rapids() -> Caches {
        host((48, 12), (2048, 16), (1920 * 56, 15, 56))
    }

    /// The values worked by hand from the formulas in the module header.
    #[test]
    fn analytical_blocks_for_real_geometries() {
        // Zen 3, AVX2 6x16: C_Ar = floor(7 * 6 / 22) = 1 way (4 KiB), KC = 4096 / 24 = 170
        // -> 168; B panel 168*16*4 = 10.5 KiB -> 1 L2 way (64 KiB); MC = 6 / 2 = 3 ways *
        // 64 KiB / (168 * 4) = 292 -> 288.
        let b = derive(6, 16, &zen3());
        assert_eq!((b.kc, b.mc), (168, 288));
        // Zen 4, AVX-512 12x32: C_Ar = floor(7 * 12 / 44) = 1, KC = 4096 / 48 = 85 -> 80
        // (the B micro-panel, 10 KiB, takes 3 of the 8 ways of the 32 KiB L1);
        // L2 way = 128 KiB; C_Br = 1; MC = 3 * 128 KiB / 320 = 1228 -> 1224.
        let b = derive(12, 32, &zen4());
        assert_eq!((b.kc, b.mc), (80, 1224));
        // Zen 4, 24x16: C_Ar = floor(7 * 24 / 40) = 4, KC = 4 * 4096 / 96 = 170 -> 168.
        assert_eq!(derive_kc(24, 16, &zen4()), 168);
        // Zen 5 (full-width AVX-512), 12x32: the 48 KiB 12-way L1d gives C_Ar = floor(11 * 12
        // / 44) = 3, KC = 3 * 4096 / 48 = 256; L2 way = 64 KiB, C_Br = 32 KiB -> 1, MC = 7 *
        // 64 KiB / 1024 = 448 -> 444. (The blocks `tessera cpu` printed on a family 1Ah model 2
        // host, whose CPUID reported this L1d and L2.)
        let b = derive(12, 32, &zen5());
        assert_eq!((b.kc, b.mc), (256, 444));
        // Its 24x16 twin gets the same depth: C_Ar = floor(11 * 24 / 40) = 6, KC = 6 * 4096 /
        // 96 = 256; a tie, so the 12x32 (listed first) stays the default.
        assert_eq!(derive_kc(24, 16, &zen5()), 256);
        // Skylake-SP, 12x32: KC 80 as on Zen 4 (same 32 KiB 8-way L1d); L2 way 64 KiB,
        // C_Br = 1, MC = 7 * 64 KiB / 320 = 1433 -> 1428.
        let b = derive(12, 32, &skylake_sp());
        assert_eq!((b.kc, b.mc), (80, 1428));
        // Ice Lake-SP, 12x32: C_Ar = floor(11 * 12 / 44) = 3, KC = 3 * 4096 / 48 = 256;
        // L2 way = 64 KiB, C_Br = 32 KiB -> 1, MC = 9 * 64 KiB / 1024 = 576.
        let b = derive(12, 32, &ice_lake_sp());
        assert_eq!((b.kc, b.mc), (256, 576));
        // Sapphire Rapids, 12x32: KC = 256 as on Ice Lake; L2 way 128 KiB, MC = 7 * 128 KiB
        // / 1024 = 896 -> 888.
        let b = derive(12, 32, &sapphire_rapids());
        assert_eq!((b.kc, b.mc), (256, 888));
    }

    /// Whatever the geometry, the derived blocks respect the model's capacity constraints.
    #[test]
    fn blocks_fit_their_caches() {
        for caches in [
            zen3(),
            zen4(),
            zen5(),
            skylake_sp(),
            ice_lake_sp(),
            sapphire_rapids(),
        ] {
            for (mr, nr) in [(6, 16), (12, 32), (24, 16), (4, 16), (8, 48)] {
                let b = derive(mr, nr, &caches);
                assert_eq!(b.kc % 8, 0);
                assert_eq!(b.mc % mr, 0);
                assert_eq!(b.nc % nr, 0);
                let l1 = &caches.l1d;
                let panels = (b.kc * (mr + nr) * F32).div_ceil(l1.way_bytes());
                assert!(
                    panels < l1.ways || b.kc == 64,
                    "{mr}x{nr}: A+B micro-panels take {panels} of {} ways",
                    l1.ways
                );
                assert!(
                    b.mc * b.kc * F32 < caches.l2.size,
                    "{mr}x{nr}: A block > L2"
                );
            }
        }
    }

    /// The deep depth block for large C, worked by hand from [`derive_deep_kc`].
    #[test]
    fn deep_depth_blocks_for_real_geometries() {
        // 12x32 on Zen 5, Ice Lake-SP and Sapphire Rapids: KC 256 -> 512 (B micro-panel
        // 64 KiB, one L2 way of 64 or 128 KiB).
        for caches in [zen5(), ice_lake_sp(), sapphire_rapids()] {
            assert_eq!(derive_deep_kc(derive_kc(12, 32, &caches), 32, &caches), 512);
        }
        // Zen 4 and Skylake-SP, 12x32: KC 80 -> 160; Zen 4's 24x16: 168 -> 336.
        assert_eq!(derive_deep_kc(80, 32, &zen4()), 160);
        assert_eq!(derive_deep_kc(80, 32, &skylake_sp()), 160);
        assert_eq!(derive_deep_kc(168, 16, &zen4()), 336);
        // Zen 3, AVX2 6x16: 168 -> 336 (21 KiB of a 64 KiB L2 way).
        assert_eq!(derive_deep_kc(168, 16, &zen3()), 336);
        // Already at the cap: no deeper block.
        assert_eq!(derive_deep_kc(512, 16, &zen5()), 512);
        // A small L2 way bounds it: 16 KiB ways hold a 128-deep 32-wide panel.
        let small = host((32, 8), (256, 16), (8 << 10, 16, 8));
        assert_eq!(derive_deep_kc(80, 32, &small), 128);
        assert_eq!(derive_deep_kc(200, 32, &small), 200);
    }

    #[test]
    fn degenerate_geometries_stay_usable() {
        let tiny = Caches {
            l1d: CacheLevel::new(4 << 10, 2, 1),
            l2: CacheLevel::new(16 << 10, 2, 1),
            l3: None,
            source: CacheSource::Default,
        };
        let b = derive(12, 32, &tiny);
        assert!(b.kc >= 64 && b.mc >= 12 && b.nc >= 256);
    }
}
