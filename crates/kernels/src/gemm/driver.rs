//! The blocked GEMM driver: partitions C across threads, then runs the five Goto/BLIS loops
//! around the microkernel on each part.
//!
//! ```text
//! for each task (a rectangle of C; tasks split M or N, never K)      -- loop 6 (threads)
//!   for jc in 0..n step NC          B block columns                     -- loop 5
//!     for pc in 0..k step KC        depth block; pack B[pc.., jc..]     -- loop 4
//!       for ic in 0..m step MC      A block rows; pack A[ic.., pc..]    -- loop 3
//!         for jr in 0..nc step NR   one B micro-panel (stays in L1)     -- loop 2
//!           for ir in 0..mc step MR one A micro-panel (from L2)         -- loop 1
//!             microkernel: C[ir.., jr..] (MR x NR) from the two panels
//! ```
//! The first K block applies `beta` (and never reads C when `beta == 0`); the last applies the
//! bias and the activation. Every element of C therefore sees the same operations in the same
//! order whatever the partition, which makes results bit-identical for any thread count.

use super::blocking::Blocking;
use super::in_place;
use super::kernel::{
    MicroKernelFn, NarrowKernel, PackFn, RowWideFn, ShortKernel, TileEpilogue, WIDE_PANELS,
};
use super::partition::{Partition, Task};
use super::segments::{self, Axis, Layout, Segments};
use super::table::Tuning;
use super::{Bias, Epilogue, PackedMatrix, Scale};
use crate::activation::Activation;
use crate::host::Host;
use std::cell::Cell;

/// A GEMM problem over raw pointers (see [`super::gemm_unchecked`] for the contract).
#[derive(Clone, Copy)]
pub(crate) struct Problem<'a> {
    pub m: usize,
    pub n: usize,
    pub k: usize,
    pub alpha: f32,
    pub a: *const f32,
    pub rsa: usize,
    pub csa: usize,
    /// A's segmented dimension, if any.
    pub a_seg: Option<Segments>,
    /// A packed once by the caller (then `a`, `rsa`, `csa` are unused).
    pub a_packed: Option<&'a PackedMatrix>,
    pub b: *const f32,
    pub rsb: usize,
    pub csb: usize,
    /// B's segmented dimension, if any.
    pub b_seg: Option<Segments>,
    /// B packed once by the caller (then `b`, `rsb`, `csb` are unused).
    pub b_packed: Option<&'a PackedMatrix>,
    pub beta: f32,
    pub c: *mut f32,
    pub rsc: usize,
    pub csc: usize,
    /// C's segmented dimension, if any.
    pub c_seg: Option<Segments>,
    pub epilogue: Epilogue<'a>,
}

// SAFETY: the tasks built from a Problem write disjoint rectangles of C and only read A, B and
// the bias, which nobody writes during the call (the contract of `gemm_unchecked`).
unsafe impl Send for Problem<'_> {}
unsafe impl Sync for Problem<'_> {}

impl<'a> Problem<'a> {
    /// The same product seen as `C^T = B^T * A^T`, so that a column-major C becomes row-major.
    fn transposed(self) -> Self {
        let bias = match self.epilogue.bias {
            Bias::None => Bias::None,
            Bias::PerRow(v) => Bias::PerCol(v),
            Bias::PerCol(v) => Bias::PerRow(v),
        };
        let scale = match self.epilogue.scale {
            Scale::None => Scale::None,
            Scale::PerRow(v) => Scale::PerCol(v),
            Scale::PerCol(v) => Scale::PerRow(v),
        };
        Problem {
            m: self.n,
            n: self.m,
            a: self.b,
            rsa: self.csb,
            csa: self.rsb,
            b: self.a,
            rsb: self.csa,
            csb: self.rsa,
            a_seg: self.b_seg.map(Segments::transposed),
            b_seg: self.a_seg.map(Segments::transposed),
            c_seg: self.c_seg.map(Segments::transposed),
            a_packed: None,
            b_packed: None,
            rsc: self.csc,
            csc: self.rsc,
            epilogue: Epilogue {
                bias,
                activation: self.epilogue.activation,
                scale,
            },
            ..self
        }
    }

    fn a_layout(&self) -> Layout {
        Layout {
            rs: self.rsa,
            cs: self.csa,
            seg: self.a_seg,
        }
    }

    fn b_layout(&self) -> Layout {
        Layout {
            rs: self.rsb,
            cs: self.csb,
            seg: self.b_seg,
        }
    }

    fn c_layout(&self) -> Layout {
        Layout {
            rs: self.rsc,
            cs: self.csc,
            seg: self.c_seg,
        }
    }
}

/// Runs the whole problem with `tuning`'s microkernel and blocks on `threads` tasks (0 = the
/// rayon pool's size).
///
/// # Safety
/// The contract of [`super::gemm_unchecked`]; the kernel's ISA is supported by this CPU;
/// pre-packed operands were packed with `tuning`.
pub(crate) unsafe fn gemm_dispatch(tuning: &Tuning, problem: Problem<'_>, threads: usize) {
    if problem.m == 0 || problem.n == 0 {
        return;
    }
    // Put C's unit stride along the kernel's vector dimension when C is column-major (not
    // possible with a pre-packed operand, whose side is fixed: those go through the
    // temporary-tile path instead).
    let prepacked = problem.a_packed.is_some() || problem.b_packed.is_some();
    let p = if problem.csc != 1 && problem.rsc == 1 && !prepacked {
        problem.transposed()
    } else {
        problem
    };
    // One row: the kernel's one-row twin on the same B panels (the padded tile would spend
    // MR - 1 of every MR FMAs on padding); not with A pre-packed in MR-row panels.
    let blocking = tuning.blocking_for(p.m, p.n, prepacked);
    let (blk, kernel) = match tuning.kernel.run_row {
        Some(row) if p.m == 1 && p.a_packed.is_none() => (
            Blocking { mr: 1, ..blocking },
            Kernels {
                tile: row,
                row_wide: tuning.kernel.run_row_wide,
                short: &[],
                narrow: &[],
                tile_t: None,
            },
        ),
        _ => (
            blocking,
            Kernels {
                tile: tuning.kernel.run,
                row_wide: None,
                short: tuning.kernel.run_short,
                narrow: tuning.kernel.run_narrow,
                tile_t: tuning.kernel.run_t,
            },
        ),
    };
    let packs = (tuning.kernel.pack_a, tuning.kernel.pack_b);
    let lb = p.b_layout();
    let in_place = p.b_packed.is_none()
        && depth(&p) > 0
        && lb.cs == 1
        && !matches!(lb.seg, Some(s) if s.axis == Axis::Rows)
        && in_place::b_in_place(&blk, (p.m, p.k, p.n), lb.rs, &Host::get().caches.l1d);
    let threads = if threads == 0 {
        rayon::current_num_threads()
    } else {
        threads
    };
    let part = Partition::new(p.m, p.n, p.k, &blk, threads, p.b_packed.is_some());
    if part.parts == 1 {
        // SAFETY: forwarded contract; the single task covers C.
        unsafe { run_task(&p, &blk, kernel, packs, part.task(0), in_place) };
    } else if !in_place
        && !part.split_n
        && p.b_packed.is_none()
        && p.k.saturating_mul(p.n) > OWN_B_FLOATS
        && !own_b_stays_local(&p, &part)
    {
        // SAFETY: forwarded contract; the partition splits M.
        unsafe { run_shared_b(&p, &blk, kernel, packs, &part) };
    } else {
        // Split N, or split M with a pre-packed, small or in-place B: each task packs what it
        // reads itself (a small B twice over costs less than the extra meeting of the threads
        // that sharing it needs), in one parallel region.
        // SAFETY: forwarded contract; tasks are disjoint rectangles of C.
        crate::parallel::for_each_task(part.parts, |t| unsafe {
            run_task(&p, &blk, kernel, packs, part.task(t), in_place)
        });
    }
}

/// Where a macro block reads its B micro-panels.
#[derive(Clone, Copy)]
enum BBlock {
    /// A packed block: panel `jr / nr` at `jr * kc`, rows `nr` floats apart.
    Packed(*const f32),
    /// B itself (see `in_place.rs`); edge panels are packed with `pack_b` into `edge`, the
    /// task's buffer of two halves of `kc * nr` floats. With `pack_all`, every panel is packed
    /// there just before its tiles run, or copied by a tile of the previous panel (B is not
    /// read in place, but a packed block would be read by one MC block only: packing panel by
    /// panel keeps each in L1 instead of writing the whole block out to L2 or L3 and reading
    /// it back).
    InPlace {
        edge: *mut f32,
        pack_b: PackFn,
        pack_all: bool,
    },
}

/// The microkernels of one call: the tile kernel (the one-row twin on the row path) and, on
/// the row path, the kernel that covers several B panels at once.
#[derive(Clone, Copy)]
struct Kernels {
    tile: MicroKernelFn,
    row_wide: Option<RowWideFn>,
    /// Short twins of `tile` for a last row panel shorter than MR, fewest rows first.
    short: &'static [ShortKernel],
    /// Narrow twins of `tile` for a last column panel narrower than NR, fewest columns first.
    narrow: &'static [NarrowKernel],
    /// `tile` storing C transposed, for full tiles of a C with unit row stride.
    tile_t: Option<MicroKernelFn>,
}

impl Kernels {
    /// The kernel for a `rows x cols` tile (at most MR x NR) and the tile it computes: the
    /// narrowest narrow twin covering `cols`, the shortest short twin covering `rows`, or the
    /// full tile (whose padding a temporary absorbs).
    fn for_tile(
        &self,
        rows: usize,
        cols: usize,
        mr: usize,
        nr: usize,
    ) -> (MicroKernelFn, usize, usize) {
        let shortest = |short: &[ShortKernel], full: MicroKernelFn| match short
            .iter()
            .find(|s| s.rows >= rows)
        {
            Some(s) if rows < mr => (s.run, s.rows),
            _ => (full, mr),
        };
        match self.narrow.iter().find(|n| n.cols >= cols) {
            Some(n) if cols < nr => {
                let (run, rows) = shortest(n.short, n.run);
                (run, rows, n.cols)
            }
            _ => {
                let (run, rows) = shortest(self.short, self.tile);
                (run, rows, nr)
            }
        }
    }
}

/// A 64-byte aligned, reusable f32 buffer for packed panels.
#[derive(Default)]
struct PackBuf {
    storage: Vec<f32>,
}

impl PackBuf {
    fn slice(&mut self, len: usize) -> &mut [f32] {
        let (off, _) = crate::memory::line_aligned(&mut self.storage, len);
        &mut self.storage[off..off + len]
    }
}

thread_local! {
    /// Per-thread packing buffers, kept between calls so a warm GEMM allocates nothing. Taken
    /// out while in use, so a nested call on the same thread (rayon work stealing) gets its own.
    static PACK_BUFS: Cell<Option<Box<(PackBuf, PackBuf)>>> = const { Cell::new(None) };
}

/// Row alignment, in bytes, under which the tiles copy the next B panel (a cache line).
const COPY_ALIGN: usize = 64;

/// Largest MR * NR of any kernel (the candidates have at most 32 rows and 512 elements).
const MAX_TILE: usize = 512;

/// The per-depth-block state shared by the tiles of one macro block.
struct DepthBlock {
    kb: usize,
    pc: usize,
    kc: usize,
    epi: TileEpilogue,
    last: bool,
}

// SAFETY: the epilogue's bias pointers are null here (each tile sets its own copy); the block
// is only read while tasks run.
unsafe impl Sync for DepthBlock {}

impl DepthBlock {
    fn new(p: &Problem<'_>, blk: &Blocking, k: usize, kb: usize) -> Self {
        let k_blocks = k.div_ceil(blk.kc).max(1);
        let pc = kb * blk.kc;
        let kc = blk.kc.min(k - pc.min(k));
        let first = kb == 0;
        let last = kb + 1 == k_blocks;
        DepthBlock {
            kb,
            pc,
            kc,
            last,
            epi: TileEpilogue {
                alpha: p.alpha,
                beta: if first { p.beta } else { 1.0 },
                load_c: !first || p.beta != 0.0,
                bias_row: std::ptr::null(),
                bias_col: std::ptr::null(),
                scale_row: std::ptr::null(),
                scale_col: std::ptr::null(),
                prefetch: std::ptr::null(),
                prefetch_rs: 0,
                copy_to: std::ptr::null_mut(),
                prefetch_l2: false,
                activation: if last {
                    p.epilogue.activation
                } else {
                    Activation::Identity
                },
            },
        }
    }
}

/// The depth actually multiplied: 0 when `alpha == 0` (A and B are then not read; one pass
/// applies beta, bias and activation).
fn depth(p: &Problem<'_>) -> usize {
    if p.alpha == 0.0 {
        0
    } else {
        p.k
    }
}

/// Packs the B block `[pc, pc + kc) x [jc, jc + nc)` into `buf` (or points into B's pre-packed
/// form).
///
/// # Safety
/// The contract of [`super::gemm_unchecked`] for `p`; the block lies inside B; `buf` holds
/// `ceil(nc / nr) * nr * kc` floats.
unsafe fn b_block(
    p: &Problem<'_>,
    nr: usize,
    pack_b: PackFn,
    d: &DepthBlock,
    jc: usize,
    nc: usize,
    buf: &mut [f32],
) -> *const f32 {
    match p.b_packed {
        // jc is a multiple of NR (tasks and NC blocks start on panel boundaries).
        Some(packed) => packed.block_ptr(d.kb, jc),
        None => {
            // SAFETY: rows pc..pc+kc and columns jc..jc+nc lie inside B.
            unsafe {
                segments::pack_b_block(pack_b, nr, p.b, &p.b_layout(), (d.pc, d.kc), (jc, nc), buf)
            };
            buf.as_ptr()
        }
    }
}

/// Runs loops 5..1 on one rectangle of C.
///
/// # Safety
/// The contract of [`super::gemm_unchecked`] for `p`; `task` lies inside C; no other task
/// touches it.
unsafe fn run_task(
    p: &Problem<'_>,
    blk: &Blocking,
    kernel: Kernels,
    (pack_a, pack_b): (PackFn, PackFn),
    task: Task,
    in_place: bool,
) {
    let mut bufs = PACK_BUFS.with(|cell| cell.take()).unwrap_or_default();
    let (abuf, bbuf) = &mut *bufs;
    let k = depth(p);
    // One MC block and several B panels: pack B panel by panel (see `BBlock::InPlace`).
    let rows = task.m1 - task.m0;
    let per_panel = !in_place
        && p.b_packed.is_none()
        && task.n1 - task.n0 > blk.nr
        && row_block(blk, rows, blk.kc.min(k), task.n1 - task.n0) >= rows;
    // Loop 5: columns of C in NC blocks.
    let mut jc = task.n0;
    while jc < task.n1 {
        let nc = blk.nc.min(task.n1 - jc);
        // Loop 4: the depth in KC blocks.
        for kb in 0..k.div_ceil(blk.kc).max(1) {
            let d = DepthBlock::new(p, blk, k, kb);
            let bsrc = if in_place || per_panel {
                BBlock::InPlace {
                    edge: bbuf.slice(2 * d.kc * blk.nr).as_mut_ptr(),
                    pack_b,
                    pack_all: !in_place,
                }
            } else {
                let buf = bbuf.slice(nc.div_ceil(blk.nr) * blk.nr * d.kc);
                // SAFETY: forwarded contract; the block lies inside B and buf fits it.
                BBlock::Packed(unsafe { b_block(p, blk.nr, pack_b, &d, jc, nc, buf) })
            };
            // SAFETY: forwarded contract; rows m0..m1 of this block belong to this task.
            unsafe {
                macro_block(
                    p,
                    blk,
                    kernel,
                    pack_a,
                    abuf,
                    &d,
                    (task.m0, task.m1),
                    (jc, nc),
                    bsrc,
                )
            };
        }
        jc += nc;
    }
    PACK_BUFS.with(|cell| cell.set(Some(bufs)));
}

/// The rows of A packed per MC block of a task with `rows` rows and `cols` columns: all of
/// them when their packed block (`rows x kc`) fits in half of L2 and the B block (`kc x
/// cols`, at most NC columns) does not, else the blocking's MC. One block streams every B
/// panel once; MC blocks stream the whole B block once each, which for a B larger than L2
/// (ViT-B's 768 x 3072 weights against 197 token rows, with MC = 96) means reading it from
/// memory three times. A B block that fits in L2 is re-read from there cheaply, and one tall
/// block would instead walk C in long column strips (a 12544 x 96 x 16 product: 48.6 GFLOP/s
/// as one block, 76.2 in MC blocks, one thread, Sapphire Rapids). Changes no result: each
/// element sees the same depth order.
fn row_block(blk: &Blocking, rows: usize, kc: usize, cols: usize) -> usize {
    let padded = rows.div_ceil(blk.mr.max(1)) * blk.mr;
    let f32s = std::mem::size_of::<f32>();
    let bytes = padded.saturating_mul(kc).saturating_mul(f32s);
    let b_bytes = cols.min(blk.nc).saturating_mul(kc).saturating_mul(f32s);
    let half_l2 = Host::get().caches.l2.size / 2;
    if rows > blk.mc && bytes <= half_l2 && b_bytes > half_l2 {
        padded
    } else {
        blk.mc
    }
}

/// Loops 3..1 for rows `[m0, m1)` of C against one packed B block (columns `jc..jc + nc`,
/// depth block `d`): pack A per MC block, then every MR x NR tile.
///
/// # Safety
/// The contract of [`super::gemm_unchecked`] for `p`; `bpack` holds the packed B block; rows
/// `m0..m1` of that block of C are touched by nobody else meanwhile.
#[allow(clippy::too_many_arguments)]
unsafe fn macro_block(
    p: &Problem<'_>,
    blk: &Blocking,
    kernel: Kernels,
    pack_a: PackFn,
    abuf: &mut PackBuf,
    d: &DepthBlock,
    (m0, m1): (usize, usize),
    (jc, nc): (usize, usize),
    bsrc: BBlock,
) {
    let (mr, nr, kc) = (blk.mr, blk.nr, d.kc);
    let lc = p.c_layout();
    let (bias_row, bias_col) = match p.epilogue.bias {
        Bias::None => (None, None),
        Bias::PerRow(v) => (Some(v), None),
        Bias::PerCol(v) => (None, Some(v)),
    };
    let (scale_row, scale_col) = match p.epilogue.scale {
        Scale::None => (None, None),
        Scale::PerRow(v) => (Some(v), None),
        Scale::PerCol(v) => (None, Some(v)),
    };
    // Loop 3: rows of C in MC blocks.
    let mc_block = row_block(blk, m1 - m0, kc, nc);
    let mut ic = m0;
    while ic < m1 {
        let mc = mc_block.min(m1 - ic);
        let apack: *const f32 = match p.a_packed {
            // ic is a multiple of MR (tasks and MC blocks start on panel boundaries).
            Some(packed) => packed.block_ptr(d.kb, ic),
            None => {
                let buf = abuf.slice(mc.div_ceil(mr) * mr * kc);
                // SAFETY: rows ic..ic+mc and columns pc..pc+kc lie inside A.
                unsafe {
                    segments::pack_a_block(
                        pack_a,
                        mr,
                        p.a,
                        &p.a_layout(),
                        (ic, mc),
                        (d.pc, kc),
                        buf,
                    )
                };
                buf.as_ptr()
            }
        };
        // Loop 2: NR-wide micro-panels of B. A B packed panel by panel alternates between the
        // two halves of the task's panel buffer: while the tiles of one panel run, the second
        // of them copies the next panel into the other half (`TileEpilogue::copy_to`).
        let mut copied = false;
        let mut jr = 0;
        while jr < nc {
            // The row path: whole groups of panels at once when their columns are contiguous.
            let span = WIDE_PANELS * nr;
            if let (Some(wide), BBlock::Packed(bpack)) =
                (kernel.row_wide.filter(|_| mr == 1 && mc == 1), bsrc)
            {
                let j0 = jc + jr;
                if jr + span <= nc && p.csc == 1 && lc.contiguous_run(Axis::Cols, j0, span) {
                    let mut epi = d.epi;
                    if d.last {
                        epi.bias_row = bias_row.map_or(std::ptr::null(), |v| v[ic..].as_ptr());
                        epi.bias_col = bias_col.map_or(std::ptr::null(), |v| v[j0..].as_ptr());
                        epi.scale_row = scale_row.map_or(std::ptr::null(), |v| v[ic..].as_ptr());
                        epi.scale_col = scale_col.map_or(std::ptr::null(), |v| v[j0..].as_ptr());
                    }
                    // SAFETY: the group's panels lie in the packed block (jr + span <= nc);
                    // its columns of C's row ic are contiguous (checked) and inside C.
                    unsafe {
                        wide(
                            kc,
                            apack,
                            bpack.add(jr * kc),
                            nr * kc,
                            p.c.add(lc.offset(ic, j0)),
                            &epi,
                        )
                    };
                    jr += span;
                    continue;
                }
            }
            // This micro-panel of B: packed, in place in B, or (an edge panel of an in-place
            // B) packed now into the task's panel buffer.
            let (b_panel, rsb) = match bsrc {
                // SAFETY: the panel lies in the packed block (jr < nc).
                BBlock::Packed(bpack) => (unsafe { bpack.add(jr * kc) }, nr),
                BBlock::InPlace {
                    edge,
                    pack_b,
                    pack_all,
                } => {
                    let (j0, cols) = (jc + jr, nr.min(nc - jr));
                    let lb = p.b_layout();
                    // This panel's half of the buffer (see loop 2).
                    let half = edge.wrapping_add((jr / nr % 2) * kc * nr);
                    if !pack_all && cols == nr && lb.contiguous_run(Axis::Cols, j0, nr) {
                        // SAFETY: element (pc, j0) lies inside B, and so do the panel's kc
                        // rows of nr contiguous columns.
                        (unsafe { p.b.add(lb.offset(d.pc, j0)) }, lb.rs)
                    } else if copied {
                        // Copied by a tile of the previous panel.
                        (half.cast_const(), nr)
                    } else {
                        // SAFETY: the task's buffer holds kc * nr floats (run_task) and nobody
                        // else uses it meanwhile; the panel's rows and columns lie inside B.
                        unsafe {
                            let buf = std::slice::from_raw_parts_mut(half, kc * nr);
                            segments::pack_b_block(
                                pack_b,
                                nr,
                                p.b,
                                &lb,
                                (d.pc, kc),
                                (j0, cols),
                                buf,
                            );
                        }
                        (half.cast_const(), nr)
                    }
                }
            };
            copied = false;
            // A B read in place or packed panel by panel: the next panel's first row in B,
            // for the first tile of this panel to prefetch (see `TileEpilogue::prefetch`).
            // B packed ahead (a layer's weights, cold at batch 1): the next packed panel.
            let next_in_place = match bsrc {
                BBlock::InPlace { .. } if jr + 2 * nr <= nc => {
                    let (j1, lb) = (jc + jr + nr, p.b_layout());
                    if lb.contiguous_run(Axis::Cols, j1, nr) {
                        // SAFETY: element (pc, j1) lies inside B (j1 + nr <= jc + nc).
                        Some((unsafe { p.b.add(lb.offset(d.pc, j1)) }, lb.rs))
                    } else {
                        None
                    }
                }
                // The next panel of the packed block (jr + nr < nc: it exists).
                BBlock::Packed(bpack) if p.b_packed.is_some() && jr + nr < nc => {
                    Some((bpack.wrapping_add((jr + nr) * kc), nr))
                }
                _ => None,
            };
            // A B packed panel by panel whose rows are contiguous, evenly spaced (not
            // segmented) and start on cache lines: the tiles copy the next panel (see loop 2).
            // Rows that start mid-line make every load of the copy straddle two lines; those
            // panels, like strided or segmented ones, are packed by `pack_b`.
            let copy_next = matches!(bsrc, BBlock::InPlace { pack_all: true, .. })
                && next_in_place.is_some()
                && p.csb == 1
                && !matches!(p.b_seg, Some(s) if s.axis == Axis::Rows)
                && (p.rsb * std::mem::size_of::<f32>()).is_multiple_of(COPY_ALIGN);
            // Loop 1: MR-tall micro-panels of A.
            for ir in (0..mc).step_by(mr) {
                let (i0, j0) = (ic + ir, jc + jr);
                let (rows, cols) = (mr.min(mc - ir), nr.min(nc - jr));
                // A short last row panel or a narrow last column panel: the smallest twin
                // that covers it.
                let (run, tile_rows, tile_cols) = kernel.for_tile(rows, cols, mr, nr);
                let tile = TileSpec {
                    i0,
                    j0,
                    rows,
                    cols,
                    mr: tile_rows,
                    nr: tile_cols,
                };
                let mut epi = d.epi;
                if d.last {
                    epi.bias_row = bias_row.map_or(std::ptr::null(), |v| v[i0..].as_ptr());
                    epi.bias_col = bias_col.map_or(std::ptr::null(), |v| v[j0..].as_ptr());
                    epi.scale_row = scale_row.map_or(std::ptr::null(), |v| v[i0..].as_ptr());
                    epi.scale_col = scale_col.map_or(std::ptr::null(), |v| v[j0..].as_ptr());
                }
                if let (Some((next, rs)), 0) = (next_in_place, ir) {
                    epi.prefetch = next;
                    epi.prefetch_rs = rs;
                    epi.prefetch_l2 = copy_next;
                } else if let (Some((next, rs)), BBlock::InPlace { edge, .. }, true) =
                    (next_in_place, bsrc, copy_next)
                {
                    // The second tile of a panel packed panel by panel copies the next panel
                    // (which the first tile brought to L2) into the other half of the buffer.
                    // (Sharing the copy out over all the panel's tiles measured slower: the
                    // later tiles found the rows evicted again.)
                    if ir == mr && tile_cols == nr {
                        epi.prefetch = next;
                        epi.prefetch_rs = rs;
                        epi.copy_to = edge.wrapping_add(((jr / nr + 1) % 2) * kc * nr);
                        copied = true;
                    }
                } else if p.a_packed.is_some() && jr == 0 && ir + mr < mc {
                    // A packed ahead (a layer's weights) is read from memory on the first B
                    // panel's pass: each tile prefetches the next A panel.
                    epi.prefetch = apack.wrapping_add((ir + mr) * kc);
                    epi.prefetch_rs = mr;
                }
                // SAFETY: panel offsets stay inside the packed blocks; the tile lies in C.
                unsafe {
                    let a_panel = apack.add(ir * kc);
                    match kernel.tile_t {
                        // A full tile of a C stored column by column: the transposed store.
                        Some(run_t)
                            if (rows, cols) == (mr, nr)
                                && p.rsc == 1
                                && p.csc != 1
                                && p.c_seg.is_none() =>
                        {
                            let c = p.c.add(lc.offset(i0, j0));
                            run_t(kc, a_panel, b_panel, rsb, c, p.csc, &epi)
                        }
                        _ => store_tile(p, run, kc, a_panel, (b_panel, rsb), &tile, &epi),
                    }
                }
            }
            jr += nr;
        }
        ic += mc;
    }
}

thread_local! {
    /// The calling thread's buffer for B blocks packed by all threads together.
    static SHARED_B: Cell<Vec<f32>> = const { Cell::new(Vec::new()) };
}

/// A packed B block the tasks read concurrently (written only before they start).
#[derive(Clone, Copy)]
struct SharedPanels(*const f32);
// SAFETY: the block is fully written before the parallel section that reads it and not
// written again until that section has joined.
unsafe impl Send for SharedPanels {}
unsafe impl Sync for SharedPanels {}

impl SharedPanels {
    /// The block (a method, so closures capture the `Sync` wrapper, not the raw pointer).
    fn ptr(self) -> *const f32 {
        self.0
    }
}

/// Up to this many floats of B (k x n), a partition along M lets every task pack all of B
/// for itself instead of sharing one packed copy: duplicating ~0.1 ms of copying costs less
/// than the second parallel region (and thread wake-up) that sharing needs.
const OWN_B_FLOATS: usize = 1 << 17;

/// Least rows of C per task for [`own_b_stays_local`].
const OWN_B_MIN_ROWS: usize = 96;

/// Whether a partition along M should let every task pack all of B for itself although B is
/// larger than [`OWN_B_FLOATS`]: when B fits in one core's L2 and every task has at least
/// [`OWN_B_MIN_ROWS`] rows. The copy is then a few percent of the task's multiply (one pass
/// over B against `2 * rows` FLOPs per element of B), and each task reads panels it packed
/// into its own L2 instead of panels packed by another core, with one meeting of the threads
/// fewer. Measured on a 2-core Sapphire Rapids (AVX-512, 2 MiB L2), a 3x3 convolution of
/// ResNet's third stage (256 x 196 x 2304, B the 1.8 MB of im2col columns): 160 -> 186
/// GFLOP/s at 2 threads. When B is larger than L2 it comes from L3 whoever packed it, and
/// packing it once in parallel wins (the ViT-B MLP at batch 8, 1576 x 3072 x 768 with a
/// 9.4 MB weight: 217-221 shared against 209-215 own); with many threads over few rows the
/// duplicated copies would dominate.
fn own_b_stays_local(p: &Problem<'_>, part: &Partition) -> bool {
    let l2 = crate::host::Host::get().caches.l2.size;
    p.m / part.parts.max(1) >= OWN_B_MIN_ROWS
        && p.k
            .saturating_mul(p.n)
            .saturating_mul(std::mem::size_of::<f32>())
            <= l2
}

/// Packed B floats packed and consumed per pair of parallel regions in [`run_shared_b`]: the
/// depth blocks of one NC column block are grouped up to this size, so a product with many
/// depth blocks wakes the threads twice per group instead of twice per depth block.
const SHARED_GROUP_FLOATS: usize = 1 << 20;

/// Below this many packed B floats per group the calling thread packs alone: cheaper than
/// waking the pool for a few microseconds of copying.
const SERIAL_PACK_FLOATS: usize = 1 << 16;

/// Most depth blocks in one group (a fixed array, so a warm call allocates nothing).
const MAX_GROUP: usize = 64;

/// The threaded GEMM for a partition along M (BLIS's parallel loop 3): per NC column block of
/// B, a group of its depth blocks is packed by all threads together into one shared buffer,
/// then each task runs loops 4..1 over the group on its rows. B is packed once for all tasks
/// instead of once per task, which matters when M is small relative to K x N (a
/// convolution's filters against its im2col columns, the ViT MLP's weights at batch 8), and
/// the threads meet twice per group rather than twice per depth block (a 3x3 convolution on
/// 14x14 planes has 9 depth blocks). Each element of C sees the same depth blocks in the same
/// order as in [`run_task`], so the bits do not change.
///
/// # Safety
/// The contract of [`super::gemm_unchecked`] for `p`; `part` splits M.
unsafe fn run_shared_b(
    p: &Problem<'_>,
    blk: &Blocking,
    kernel: Kernels,
    (pack_a, pack_b): (PackFn, PackFn),
    part: &Partition,
) {
    let mut shared = SHARED_B.take();
    let k = depth(p);
    let (nr, kc_max) = (blk.nr, blk.kc);
    let k_blocks = k.div_ceil(kc_max).max(1);
    let mut jc = 0;
    while jc < p.n {
        let nc = blk.nc.min(p.n - jc);
        let panels = nc.div_ceil(nr);
        let block_floats = panels * nr * kc_max;
        let per_group = (SHARED_GROUP_FLOATS / block_floats.max(1)).clamp(1, k_blocks);
        let mut kb0 = 0;
        while kb0 < k_blocks {
            let groups = per_group.min(k_blocks - kb0).min(MAX_GROUP);
            let d_of = |i: usize| DepthBlock::new(p, blk, k, kb0 + i);
            // Group offsets: depth block i of the group starts at offs[i].
            let mut offs = [0usize; MAX_GROUP];
            let mut len = 0;
            for (i, off) in offs.iter_mut().enumerate().take(groups) {
                *off = len;
                len += panels * nr * d_of(i).kc;
            }
            let mut bpacks = [SharedPanels(std::ptr::null()); MAX_GROUP];
            match p.b_packed {
                Some(packed) => {
                    for (i, bp) in bpacks.iter_mut().enumerate().take(groups) {
                        *bp = SharedPanels(packed.block_ptr(kb0 + i, jc));
                    }
                }
                None => {
                    // The block starts on a cache line, as [`PackBuf`]'s do.
                    let (start, _) = crate::memory::line_aligned(&mut shared, len);
                    // One job per (depth block, run of 4 panels), into disjoint parts.
                    let chunks = panels.div_ceil(4);
                    let base = SharedMut(shared.as_mut_ptr().wrapping_add(start));
                    let pack_job = |job: usize| {
                        let (i, q) = (job / chunks, job % chunks);
                        let d = d_of(i);
                        let panel = nr * d.kc;
                        let (q0, q1) = (4 * q, (4 * q + 4).min(panels));
                        let j0 = jc + q0 * nr;
                        let cols = (jc + nc - j0).min((q1 - q0) * nr);
                        // SAFETY: job (i, q) writes panels q0..q1 of depth block i, a range
                        // no other job touches, inside `shared` (`start + len` floats above);
                        // columns j0..j0+cols and rows pc..pc+kc lie inside B.
                        unsafe {
                            let dst = std::slice::from_raw_parts_mut(
                                base.ptr().add(offs[i] + q0 * panel),
                                (q1 - q0) * panel,
                            );
                            segments::pack_b_block(
                                pack_b,
                                nr,
                                p.b,
                                &p.b_layout(),
                                (d.pc, d.kc),
                                (j0, cols),
                                dst,
                            )
                        };
                    };
                    if len <= SERIAL_PACK_FLOATS {
                        (0..groups * chunks).for_each(pack_job);
                    } else {
                        crate::parallel::for_each_task(groups * chunks, pack_job);
                    }
                    for (i, bp) in bpacks.iter_mut().enumerate().take(groups) {
                        *bp = SharedPanels(shared.as_ptr().wrapping_add(start + offs[i]));
                    }
                }
            }
            let bpacks = &bpacks[..groups];
            crate::parallel::for_each_task(part.parts, |t| {
                let task = part.task(t);
                let mut bufs = PACK_BUFS.with(|cell| cell.take()).unwrap_or_default();
                for (i, bpack) in bpacks.iter().enumerate() {
                    let d = d_of(i);
                    // SAFETY: forwarded contract; tasks own disjoint row ranges of C; the
                    // packed blocks stay alive and unchanged until this section joins.
                    unsafe {
                        macro_block(
                            p,
                            blk,
                            kernel,
                            pack_a,
                            &mut bufs.0,
                            &d,
                            (task.m0, task.m1),
                            (jc, nc),
                            BBlock::Packed(bpack.ptr()),
                        )
                    };
                }
                PACK_BUFS.with(|cell| cell.set(Some(bufs)));
            });
            kb0 += groups;
        }
        jc += nc;
    }
    SHARED_B.set(shared);
}

/// The shared buffer's base, written by disjoint pack jobs (see [`run_shared_b`]).
#[derive(Clone, Copy)]
struct SharedMut(*mut f32);
// SAFETY: each job writes a disjoint range; nobody reads until the packing section joins.
unsafe impl Send for SharedMut {}
unsafe impl Sync for SharedMut {}

impl SharedMut {
    fn ptr(self) -> *mut f32 {
        self.0
    }
}

/// Where one microkernel tile lands in C and how much of it is inside C.
struct TileSpec {
    i0: usize,
    j0: usize,
    rows: usize,
    cols: usize,
    mr: usize,
    nr: usize,
}

/// Calls the kernel on a tile of C: directly when the tile is full and C has a unit column
/// stride, otherwise through a padded temporary so the kernel still computes a full tile.
///
/// # Safety
/// The panels hold `kc * mr` / `kc * nr` floats; the tile's valid part lies inside C; when
/// non-null, the bias pointers hold the tile's `rows` / `cols` values.
unsafe fn store_tile(
    p: &Problem<'_>,
    kernel: MicroKernelFn,
    kc: usize,
    a: *const f32,
    (b, rsb): (*const f32, usize),
    t: &TileSpec,
    epi: &TileEpilogue,
) {
    let lc = p.c_layout();
    // SAFETY: see the function contract.
    unsafe {
        if t.rows == t.mr
            && t.cols == t.nr
            && p.csc == 1
            && lc.contiguous_run(Axis::Rows, t.i0, t.mr)
            && lc.contiguous_run(Axis::Cols, t.j0, t.nr)
        {
            return kernel(kc, a, b, rsb, p.c.add(lc.offset(t.i0, t.j0)), p.rsc, epi);
        }
        // The padded tile: MR x NR floats that the kernel always writes in full; read back
        // only where it wrote. Left uninitialised (a memset of the whole array per edge tile
        // was a measurable share of GEMMs whose M is not a multiple of MR); zeroed first only
        // when the kernel reads it (`load_c`), padding included.
        let mut tmp = std::mem::MaybeUninit::<[f32; MAX_TILE]>::uninit();
        let tmp = tmp.as_mut_ptr().cast::<f32>();
        if epi.load_c {
            std::ptr::write_bytes(tmp, 0, t.mr * t.nr);
        }
        // Bias and scale vectors padded to the tile (the padding lanes feed only padding).
        let mut brow = [0.0f32; segments::MAX_PANEL];
        let mut bcol = [0.0f32; segments::MAX_PANEL];
        let mut epi = *epi;
        if !epi.bias_row.is_null() {
            std::ptr::copy_nonoverlapping(epi.bias_row, brow.as_mut_ptr(), t.rows);
            epi.bias_row = brow.as_ptr();
        }
        if !epi.bias_col.is_null() {
            std::ptr::copy_nonoverlapping(epi.bias_col, bcol.as_mut_ptr(), t.cols);
            epi.bias_col = bcol.as_ptr();
        }
        let mut srow = [0.0f32; segments::MAX_PANEL];
        let mut scol = [0.0f32; segments::MAX_PANEL];
        if !epi.scale_row.is_null() {
            std::ptr::copy_nonoverlapping(epi.scale_row, srow.as_mut_ptr(), t.rows);
            epi.scale_row = srow.as_ptr();
        }
        if !epi.scale_col.is_null() {
            std::ptr::copy_nonoverlapping(epi.scale_col, scol.as_mut_ptr(), t.cols);
            epi.scale_col = scol.as_ptr();
        }
        // The tile's columns in runs that are contiguous in C (one run unless C's columns
        // are segmented, or its column stride is not 1), and each row's offset: computed
        // once per tile, so no division per element and one copy per row and run.
        let mut row_at = [0usize; segments::MAX_PANEL];
        for (i, at) in row_at.iter_mut().enumerate().take(t.rows) {
            *at = lc.row_part(t.i0 + i);
        }
        let mut runs = [(0usize, 0usize, 0usize); segments::MAX_PANEL];
        let mut n_runs = 0;
        let mut j = 0;
        while j < t.cols {
            let end = if p.csc == 1 {
                lc.run_end(Axis::Cols, t.j0 + j, t.j0 + t.cols) - t.j0
            } else {
                j + 1
            };
            runs[n_runs] = (j, end, lc.col_part(t.j0 + j));
            n_runs += 1;
            j = end;
        }
        let runs = &runs[..n_runs];
        if epi.load_c {
            for (i, &r) in row_at.iter().enumerate().take(t.rows) {
                for &(j0, j1, at) in runs {
                    let src = p.c.add(r + at);
                    std::ptr::copy_nonoverlapping(src, tmp.add(i * t.nr + j0), j1 - j0);
                }
            }
        }
        kernel(kc, a, b, rsb, tmp, t.nr, &epi);
        for (i, &r) in row_at.iter().enumerate().take(t.rows) {
            for &(j0, j1, at) in runs {
                let dst = p.c.add(r + at);
                std::ptr::copy_nonoverlapping(tmp.add(i * t.nr + j0), dst, j1 - j0);
            }
        }
    }
}
