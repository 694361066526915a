//! The microkernel contract, shared by every ISA.
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
//! `v += beta * C` if `load_c`, then the scale, then the bias, then the activation; then one store. The tile is
//! stored at `c` with row stride `rsc` and unit column stride; the driver routes edge tiles and
//! non-unit column strides through a padded temporary tile, so the kernel always sees a full
//! tile and each element's arithmetic is the same wherever its tile falls.

use crate::activation::Activation;

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
    /// MR per-row scale values, or null.
    pub scale_row: *const f32,
    /// NR per-column scale values, or null.
    pub scale_col: *const f32,
    pub activation: Activation,
    /// The B micro-panel the driver will read next when B is read in place (its first row;
    /// rows `prefetch_rs` floats apart, `kc` of them), or null: the kernel prefetches one of
    /// its rows per k step, because the hardware prefetchers do not follow rows that lie
    /// in different pages.
    pub prefetch: *const f32,
    /// Row stride of the panel at `prefetch`.
    pub prefetch_rs: usize,
    /// When non-null, the kernel copies the `kc` rows of NR floats at `prefetch` (`prefetch_rs`
    /// apart) to `copy_to` (rows NR apart) instead of prefetching them: the driver's
    /// panel-by-panel packing of B, done with loads and stores between the tile's FMAs
    /// rather than by a separate copy loop.
    pub copy_to: *mut f32,
    /// The prefetch of `prefetch` asks for L2 only: the panel is copied by a later tile
    /// rather than read by the next one, and L1 holds that tile's own panels meanwhile.
    pub prefetch_l2: bool,
}

/// One MR x NR microkernel. `kc` may be 0 (then the accumulators are zero). B's `kc` rows of
/// NR floats lie `rsb` floats apart: `rsb = NR` for a packed micro-panel, B's own row stride
/// when the driver reads an unpacked B in place (see `driver.rs`, "B in place").
///
/// # Safety
/// `a` points to `kc * MR` floats, `b` to `kc` rows of `NR` floats `rsb` apart, `c` to an MR x NR tile with row
/// stride `rsc` and unit column stride (readable when `load_c`, always writable), the bias
/// and scale pointers (when non-null) to MR / NR floats, and the CPU supports the kernel's ISA.
pub(crate) type MicroKernelFn = unsafe fn(
    kc: usize,
    a: *const f32,
    b: *const f32,
    rsb: usize,
    c: *mut f32,
    rsc: usize,
    epi: &TileEpilogue,
);

/// A short twin of a microkernel: the same body computing only the first `rows` rows of the
/// full kernel's MR-row A panels (read with the full panel's stride), each element in the
/// same order as the full tile, so a short tile's bits equal the full tile's rows.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ShortKernel {
    /// Rows computed (less than the full kernel's MR).
    pub rows: usize,
    /// The kernel: the [`MicroKernelFn`] contract with an `rows x NR` tile of C and A panels of
    /// `kc * MR` floats.
    pub run: MicroKernelFn,
}

/// A narrow twin of a microkernel: the same body computing only the first `cols` columns of
/// the full kernel's B micro-panels (read with their row stride), for the last column panel of
/// a product whose N is not a multiple of NR. Each element is accumulated in the same order as
/// in the full tile, so a narrow tile's bits equal the full tile's first columns.
#[derive(Debug, Clone, Copy)]
pub(crate) struct NarrowKernel {
    /// Columns computed (a whole number of vectors, less than the full kernel's NR).
    pub cols: usize,
    /// The kernel: the [`MicroKernelFn`] contract with an `MR x cols` tile of C.
    pub run: MicroKernelFn,
    /// Its short twins (rows of a last, short row panel), fewest rows first.
    pub short: &'static [ShortKernel],
}

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

/// A one-row kernel over several B micro-panels at once (`WIDE_PANELS` of them, `nr` columns
/// each, `panel_stride` floats apart): the row's `WIDE_PANELS * nr` columns of C, contiguous
/// at `c`. More accumulators than one panel gives independent FMA chains, with each element
/// accumulated in the same order as by the one-panel kernels.
///
/// # Safety
/// `a` points to `kc` floats, `b` to `WIDE_PANELS` panels of `kc * nr` floats `panel_stride`
/// apart, `c` to `WIDE_PANELS * nr` writable floats (readable when `load_c`), bias and scale
/// pointers (when non-null) to 1 / `WIDE_PANELS * nr` floats; the CPU supports the ISA.
pub(crate) type RowWideFn = unsafe fn(
    kc: usize,
    a: *const f32,
    b: *const f32,
    panel_stride: usize,
    c: *mut f32,
    epi: &TileEpilogue,
);

/// B micro-panels per call of a [`RowWideFn`].
pub(crate) const WIDE_PANELS: usize = 4;
