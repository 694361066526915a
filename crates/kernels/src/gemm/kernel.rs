//! The microkernel contract, shared by every ISA, and the cache-blocking parameters.
//!
//! A microkernel computes one MR x NR tile of C from a packed A micro-panel and a packed B
//! micro-panel of depth `kc` (see `pack.rs` for their layouts):
//!
//! ```text
//!            B micro-panel: kc rows of NR contiguous floats
//!            +----------------+
//!            |b00 b01 ... b0N | k = 0
//!            |b10 b11 ... b1N | k = 1
//!            |  ...           |
//!            +----------------+
//!  A micro-panel            C tile (MR x NR accumulators in registers)
//!  kc columns of MR        +----------------+
//!  contiguous floats  -->  |c00 c01 ... c0N |   for each k:
//!  a0k a1k ... aMk         |c10             |     load one row of B (NR floats = NR/W vectors),
//!                          |...             |     broadcast a[i,k] for each of the MR rows,
//!                          |cM0         cMN |     acc[i] += a[i,k] * b[k, :]   (MR * NR/W FMAs)
//!                          +----------------+
//! ```
//!
//! After the k loop, the tile epilogue runs on the registers: `v = alpha * acc`, then
//! `v += beta * C` if `load_c`, then the bias, then the activation; then one store. The tile is
//! stored at `c` with row stride `rsc` and unit column stride; the driver routes edge tiles and
//! non-unit column strides through a padded temporary tile, so the kernel always sees a full
//! tile and each element's arithmetic is the same wherever its tile falls.

use crate::activation::Activation;
use crate::isa::Isa;

/// What the microkernel does with its accumulators before storing them.
#[derive(Debug, Clone, Copy)]
pub(crate) struct TileEpilogue {
    pub alpha: f32,
    pub beta: f32,
    /// Whether C is read (`beta * C` added). False on the first K block when `beta == 0`.
    pub load_c: bool,
    /// MR per-row bias values, or null.
    pub bias_row: *const f32,
    /// NR per-column bias values, or null.
    pub bias_col: *const f32,
    pub activation: Activation,
}

/// One MR x NR microkernel. `kc` may be 0 (then the accumulators are zero).
///
/// # Safety
/// `a` points to `kc * MR` floats, `b` to `kc * NR` floats, `c` to an MR x NR tile with row
/// stride `rsc` and unit column stride (readable when `load_c`, always writable), the bias
/// pointers (when non-null) to MR / NR floats, and the CPU supports the kernel's ISA.
pub(crate) type MicroKernelFn =
    unsafe fn(kc: usize, a: *const f32, b: *const f32, c: *mut f32, rsc: usize, epi: &TileEpilogue);

/// A packing routine (see `pack.rs` for the layout and the safety contract).
pub(crate) type PackFn = unsafe fn(
    tile: usize,
    extent: usize,
    kc: usize,
    src: *const f32,
    rs: usize,
    cs: usize,
    dst: &mut [f32],
);

/// The packing routines of `isa`: (pack A, pack B).
pub(crate) fn packers(isa: Isa) -> (PackFn, PackFn) {
    match isa {
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => (super::pack_avx2::pack_a_6, super::pack_avx2::pack_b_t),
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 => (super::pack::pack_a, super::pack_avx2::pack_b_t),
        _ => (super::pack::pack_a, super::pack::pack_b),
    }
}

/// Cache-blocking and register-tile sizes of one ISA's GEMM.
///
/// The loop nest (see `driver.rs`) keeps a KC x NR micro-panel of B in L1, an MC x KC block of
/// packed A in L2, and a KC x NC block of packed B in L3. `docs/kernels/gemm.md` gives the
/// reasoning for each value.
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

/// The blocking used by `isa`.
pub fn blocking(isa: Isa) -> Blocking {
    match isa {
        // 12 x 32: 24 zmm accumulators + 2 B vectors + broadcasts out of 32 registers.
        // KC x NR of B = 256 * 32 * 4 B = 32 KiB streams through L1 (48 KiB on Ice Lake and
        // later); MC x KC of A = 240 * 256 * 4 B = 240 KiB sits in a 1-2 MiB L2.
        Isa::Avx512 => Blocking {
            mr: 12,
            nr: 32,
            kc: 256,
            mc: 240,
            nc: 4096,
        },
        // 6 x 16: 12 ymm accumulators + 2 B vectors + 1 broadcast out of 16 registers.
        // KC x NR of B = 256 * 16 * 4 B = 16 KiB, half of a 32 KiB L1d; MC x KC of A =
        // 144 * 256 * 4 B = 144 KiB in a 512 KiB (Zen 3) or 1 MiB L2; KC x NC of B =
        // 256 * 4080 * 4 B = 4 MiB in L3.
        Isa::Avx2 => Blocking {
            mr: 6,
            nr: 16,
            kc: 256,
            mc: 144,
            nc: 4080,
        },
        // 4 x 16 on `wide::f32x8`: 8 vector accumulators (16 xmm halves without AVX).
        Isa::Portable => Blocking {
            mr: 4,
            nr: 16,
            kc: 256,
            mc: 128,
            nc: 4096,
        },
        // Scalar 4 x 4 reference kernel: 16 scalar accumulators.
        Isa::Scalar => Blocking {
            mr: 4,
            nr: 4,
            kc: 256,
            mc: 128,
            nc: 4096,
        },
    }
}

/// The microkernel of `isa`.
pub(crate) fn microkernel(isa: Isa) -> MicroKernelFn {
    match isa {
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 => super::avx512::kernel_12x32,
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => super::avx2::kernel_6x16,
        #[cfg(not(target_arch = "x86_64"))]
        Isa::Avx512 | Isa::Avx2 => super::scalar::kernel_4x4,
        Isa::Portable => super::portable::kernel_4x16,
        Isa::Scalar => super::scalar::kernel_4x4,
    }
}
