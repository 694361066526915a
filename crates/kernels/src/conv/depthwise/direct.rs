//! The 3x3 / 5x5 depthwise forward ("same" padding, stride 1 or 2) read straight from the
//! input plane: no padded copy, register tiles of 8 (stride 2: 4) output rows x 2 vectors,
//! constant-mask loads at the plane's left and right edges.
//!
//! For large planes packing a zero-padded copy of every plane writes and re-reads as many
//! bytes as the arithmetic is worth (the layer is near the roofline's ridge,
//! `docs/kernels/depthwise.md`). Here the tile reads the plane in place:
//!
//! ```text
//! for j in 0..K                                 kernel column
//!   w[i] = broadcast(wt[i][j])  (K registers)
//!   for u in 0..(R - 1) SH + K                  source rows of the tile (rows outside: skipped)
//!     stride 1: xs[v] = load(x[r0 + u - K/2][cols[v] + j - K/2 ..])                  V loads
//!     stride 2: xs[v] = even lanes of x[2 r0 + u - K/2][2 cols[v] + j - K/2 .. + 2L] 2V loads,
//!                                                                             V permutes
//!             (masked to the plane's lanes: first vector of a row, j < K/2;
//!                                           last vector of a row, j > K/2)
//!     for r with 0 <= u - r SH < K:  acc[r][v] += w[u - r SH] * xs[v]        V FMAs each
//! y[r0 + r][cols[v] ..] = act(acc[r][v])
//! ```
//! The masked lanes read as zero, so the products and their order are those of the padded
//! form (`kernel.rs`, `stacked`): results are bit-identical to it on the fused-FMA paths
//! (tested). Each source vector feeds up to `K` output rows: with `R = 8` rows a 3x3 tile
//! does 144 FMAs for 60 loads (0.42 loads per FMA; 0.5 with the 4-row tiles of the padded
//! form). The loads bound the tile on the Zen 4 host (one thread, AVX-512): 8-row tiles ran
//! 144 x 56^2 3x3 in 144 us against 178 us with 4-row tiles, and masking only the edge loads
//! (with compile-time masks) instead of every load took it from 151 to 124 us in the same
//! harness. The `K` weights of a column are broadcast from memory per column rather than
//! held (9 or 25 registers), so the 16 accumulators never spill.
//!
//! At stride 2 the padded form splits every row into its even and odd columns first (a
//! phase-split copy); here one two-source permute (`vpermt2ps`) per loaded pair takes the
//! even lanes of the `2L` floats that tap column `j` reads. On the Xeon family 6 model 207
//! host (AVX-512, one thread) the padded form spent 57% of a 16 x 112^2 3x3 stride-2 layer
//! writing the copy (zeroing and storing both phases of every row, `perf annotate`).
//!
//! A tile addresses every load from one pointer and the row length, both taken per tile
//! through an optimisation barrier ([`opaque`], [`opaque_len`]): otherwise the compiler
//! hoists each tile variant's row addresses out of the sweep's loops into stack slots and
//! reloads one before every load.
//!
//! Row-stacked register tiles over a CHW plane follow XNNPACK's CHW depthwise microkernels
//! (`f32-dwconv2d-chw`, including its stride-2 forms that split even and odd columns in
//! registers).

// Loops over const-sized arrays index several arrays at once and must unroll.
#![allow(clippy::needless_range_loop)]

use super::FwdGeom;
use crate::activation::vector::VecAct;
use crate::simd::Simd;

/// Output rows per tile at stride 1.
const ROWS: usize = 8;
/// Output rows per tile at stride 2: a 3x3 tile of 8 rows reads 17 source rows per kernel
/// column, and the compiler no longer unrolled it (16 x 112^2 3x3: 42 against 39 us with 4
/// rows, one thread, Xeon family 6 model 207).
const ROWS_STRIDE2: usize = 4;

/// One output plane of a `K x K` depthwise forward with "same" padding (`K / 2` zero rows
/// and columns around the plane) at stride 1 or 2, read in place.
pub(crate) struct DirectPlane<'a, A> {
    /// The `h x w` input plane; the next plane (prefetched one band at a time while this one
    /// computes) follows it in memory. Without fast masked loads, the `k / 2` floats before
    /// the plane and after it are readable too (see [`Self::applies_reading_around`]).
    pub x: *const f32,
    pub h: usize,
    pub w: usize,
    /// `K * K` weights, kernel row major.
    pub wt: &'a [f32],
    /// The `oh x ow` output plane (`h x w` at stride 1, `ceil(h/2) x w/2` at stride 2).
    pub y: *mut f32,
    pub oh: usize,
    pub ow: usize,
    pub bias: f32,
    pub act: A,
}

impl<A> DirectPlane<'_, A> {
    /// Whether this form takes the forward pass of `g` on ISA `S`: masked loads as fast as
    /// plain ones (AVX-512; AVX2's `vmaskmovps` made an in-place form slower than the padded
    /// copy on Zen 4: 144 x 56^2 242 -> 275 us), no dilation, a square 3x3 or 5x5 filter with
    /// "same" padding (`k / 2`), at least one full tile of output rows (8 at stride 1, 4 at
    /// stride 2), and:
    /// - stride 1: a row end that leaves the second-to-last vector position clear of
    ///   the right edge (`w % L` is 0 or at least `k / 2`), so that only the first and the last
    ///   vector of a row ever need masks, and those masks are compile-time constants. Rows of
    ///   two vectors or more; of 3x3 filters also rows between one and two vectors, where the
    ///   two vectors overlap. Masked loads cost more than plain ones (Zen 4, one thread: the
    ///   3x3 tile with every load masked ran 144 x 56^2 in 151 us, with only the edge loads
    ///   masked 124 us): on two-vector rows of a 5x5 filter 8 of every 20 loads are masked,
    ///   and the padded copy is faster (240 x 28^2: 145 us copied, 151 in place), while a 3x3
    ///   filter there gains (192 x 28^2: 87-96 -> 76 us).
    /// - stride 2 (both axes): an even input width (with "same" padding then `ow = w / 2`,
    ///   so the last vector's masks are constants) of at least one output vector
    ///   (`ow >= L`).
    pub(crate) fn applies<S: Simd>(g: &FwdGeom) -> bool {
        S::FAST_MASKED_LOAD && Self::fits::<S>(g)
    }

    /// Whether this form takes the forward pass of `g` on an ISA without fast masked loads
    /// whose edge loads are a whole load and an AND ([`Simd::KEEP_EDGE_LOADS`], AVX2): at
    /// stride 1, with the geometry of [`Self::applies`], and only where the caller has `k / 2`
    /// readable floats before the plane and after it (the edge loads read them and clear
    /// their lanes). AVX2, one thread, AMD Zen 3, against the padded copy: see
    /// `docs/kernels/depthwise.md`.
    pub(crate) fn applies_reading_around<S: Simd>(g: &FwdGeom) -> bool {
        !S::FAST_MASKED_LOAD && S::KEEP_EDGE_LOADS && (g.sh, g.sw) == (1, 1) && Self::fits::<S>(g)
    }

    /// The geometry part of [`Self::applies`].
    fn fits<S: Simd>(g: &FwdGeom) -> bool {
        let (k, w, half) = (g.kh, g.w, g.kh / 2);
        let common = !g.dilated && g.kw == k && matches!(k, 3 | 5) && (g.ph, g.pw) == (half, half);
        common
            && match (g.sh, g.sw) {
                (1, 1) => {
                    g.oh >= ROWS
                        && (w >= 2 * S::L || (k == 3 && w >= S::L + half))
                        && (w.is_multiple_of(S::L) || w % S::L >= half)
                }
                (2, 2) => g.oh >= ROWS_STRIDE2 && w.is_multiple_of(2) && g.ow >= S::L,
                _ => false,
            }
    }
}

/// Output rows `r0..r0 + R` x vectors at output columns `cols` of a [`DirectPlane`] at
/// stride `SH` (both axes). `ALL_ROWS`: the tile's source rows all lie inside the plane (no
/// per-row test). `LEFT`: `cols[0]` is the row's first vector, whose loads for kernel columns
/// `j < K / 2` start left of the plane; `RIGHT`: `cols[V - 1]` is its last (`ow - L`), whose
/// loads (at stride 2 the second of the pair) for `j > K / 2` end right of it. Those loads
/// are masked to the lanes inside the plane (constant masks); all others are whole vectors
/// inside it.
///
/// # Safety
/// [`DirectPlane::applies`] with stride `SH`; `x` holds `h * w` floats, `y` `oh * ow`;
/// `r0 + R <= oh`; the vectors at `cols` are positions of the output row (`cols[v] + L <=
/// ow`) with the flags above telling the truth; `wt` holds `K * K` floats; the CPU supports
/// `S`.
#[inline(always)]
unsafe fn tile<
    S: Simd,
    A: VecAct,
    const K: usize,
    const SH: usize,
    const R: usize,
    const V: usize,
    const ALL_ROWS: bool,
    const LEFT: bool,
    const RIGHT: bool,
>(
    p: &DirectPlane<'_, A>,
    r0: usize,
    cols: [usize; V],
) {
    let half = K / 2;
    // SAFETY (whole body): every load reads a row inside the plane (rows outside are
    // skipped, or absent when ALL_ROWS) and, by `applies` and the flags, only lanes inside
    // its columns (stride 2: output column c reads input columns 2c + j - half, and
    // `w = 2 ow`, so only the first vector's first load and the last vector's second load
    // can reach past an edge); `edge_load`'s whole loads reach at most `half` floats before
    // a row's start or after its end, inside the plane or the readable floats around it
    // (`applies_reading_around`). Every store is inside the output (caller's contract).
    unsafe {
        let bias = S::splat(p.bias);
        let mut acc = [[bias; V]; R];
        // Element (r0 SH - half, SH cols[0] - half) of the plane (padded row r0 SH, lane 0 of
        // the first vector at kernel column 0; outside the plane when the tile touches an
        // edge, never dereferenced there). Every load address is this pointer plus a multiple
        // of the row length and a small constant: with both passed through the barrier, they
        // are computed here, per tile, so the compiler cannot hoist the tile's 27-45 load
        // addresses out of the sweep's loops into stack slots that every load would reload.
        let top = opaque(
            p.x.wrapping_add(r0 * SH * p.w + SH * cols[0])
                .wrapping_sub(half * p.w + half),
        );
        let row_len = opaque_len(p.w);
        for j in 0..K {
            let mut wj = [S::zero(); K];
            for i in 0..K {
                wj[i] = S::broadcast(p.wt.as_ptr().add(i * K + j));
            }
            // Lanes inside the plane of the edge vectors' loads for this kernel column.
            let left_lanes = S::lane_range(half.saturating_sub(j), S::L);
            let right_lanes = S::lane_range(0, S::L - j.saturating_sub(half));
            for u in 0..(R - 1) * SH + K {
                // Padded row y is input row y - half.
                let y = r0 * SH + u;
                if !ALL_ROWS && (y < half || y >= p.h + half) {
                    continue;
                }
                // Input column of lane 0 of vector v: SH cols[v] + j - half.
                let row = top.wrapping_add(u * row_len + j);
                let mut xs = [S::zero(); V];
                for v in 0..V {
                    let src = row.wrapping_add(SH * (cols[v] - cols[0]));
                    let (left, right) =
                        (LEFT && v == 0 && j < half, RIGHT && v == V - 1 && j > half);
                    let first = if left {
                        edge_load::<S>(src, left_lanes)
                    } else if SH == 1 && right {
                        edge_load::<S>(src, right_lanes)
                    } else {
                        S::load(src)
                    };
                    xs[v] = if SH == 1 {
                        first
                    } else {
                        let second = if right {
                            edge_load::<S>(src.wrapping_add(S::L), right_lanes)
                        } else {
                            S::load(src.wrapping_add(S::L))
                        };
                        S::deinterleave(first, second).0
                    };
                }
                for r in 0..R {
                    if u >= r * SH && u - r * SH < K {
                        for v in 0..V {
                            acc[r][v] = S::fma(xs[v], wj[u - r * SH], acc[r][v]);
                        }
                    }
                }
            }
        }
        for r in 0..R {
            let out = p.y.add((r0 + r) * p.ow);
            for v in 0..V {
                S::store(out.add(cols[v]), p.act.apply::<S>(acc[r][v]));
            }
        }
    }
}

/// The lanes `m` of the vector at `p`, zeros elsewhere: one masked load where those are fast
/// (`Simd::FAST_MASKED_LOAD`), else a whole load and an AND.
///
/// # Safety
/// The lanes of `m` at `p` are readable, and without fast masked loads all `L` floats at `p`
/// are ([`DirectPlane::applies_reading_around`]); the CPU supports `S`.
#[inline(always)]
unsafe fn edge_load<S: Simd>(p: *const f32, m: S::M) -> S::V {
    // SAFETY: as the contract says.
    unsafe {
        if S::FAST_MASKED_LOAD {
            S::load_masked(p, m)
        } else {
            S::keep(m, S::load(p))
        }
    }
}

/// `n` unchanged, but opaque to the optimiser: it cannot move arithmetic on the result out of
/// the enclosing loops (an empty `asm!` that claims to rewrite the register). On the row
/// length, the tile's row offsets (`u * row_len`) are computed per tile, in registers.
#[inline(always)]
fn opaque_len(mut n: usize) -> usize {
    // SAFETY: the template is empty: no instruction runs, no memory or flag is touched, and
    // the register keeps its value.
    unsafe {
        core::arch::asm!("/* {0} */", inout(reg) n, options(nomem, nostack, preserves_flags))
    };
    n
}

/// [`opaque_len`] for a pointer: its address through the barrier, its provenance kept.
#[inline(always)]
fn opaque(p: *const f32) -> *const f32 {
    p.with_addr(opaque_len(p.addr()))
}

/// Runs tiles of `R` rows x `V` vectors over the whole output plane (the last row band and
/// the last vector position moved back to end at the plane's edge, overlapping: same values).
///
/// # Safety
/// As for [`forward`].
#[inline(always)]
unsafe fn sweep<S: Simd, A: VecAct, const K: usize, const SH: usize, const R: usize>(
    p: &DirectPlane<'_, A>,
) {
    const V: usize = 2;
    let npos = p.ow.div_ceil(S::L);
    let pos = |k: usize| (k.min(npos - 1) * S::L).min(p.ow - S::L);
    // An odd vector count leaves one column of one-vector tiles (R accumulators).
    let paired = npos - npos % V;
    let half = K / 2;
    // The next plane, and how many of its floats are prefetched so far. Only a plane that
    // fits in half of L1d beside this one is prefetched: a larger one (112 x 112: 49 KiB)
    // would evict this plane's rows before its own are used, and the hardware prefetchers
    // stream it from L2 as well (16 x 112^2 3x3 one thread, Xeon family 6 model 207: stride 1
    // 53 us without, 60 us with; stride 2 39 against 43 us).
    let next = p.x.wrapping_add(p.h * p.w);
    let prefetch =
        p.h * p.w * std::mem::size_of::<f32>() <= crate::host::Host::get().caches.l1d.size / 2;
    let mut fetched = 0;
    let mut t = 0;
    while t < p.oh {
        let r0 = t.min(p.oh - R);
        // The next plane's rows of this band not fetched yet, one line per 16 floats.
        let end = ((r0 + R) * SH + K).min(p.h) * p.w;
        let mut q = fetched;
        fetched = end.max(fetched);
        while q < end && prefetch {
            // SAFETY: a prefetch is a hint; `next` need not be readable.
            unsafe { S::prefetch(next.wrapping_add(q)) };
            q += 16;
        }
        // Source rows r0 SH - half .. r0 SH + (R - 1) SH + K - half all inside the plane.
        let all = r0 * SH >= half && (r0 + R - 1) * SH + K <= p.h + half;
        let mut k0 = 0;
        while k0 < paired {
            let cols = [pos(k0), pos(k0 + 1)];
            let (left, right) = (k0 == 0, k0 + V == npos);
            // SAFETY: r0 + R <= oh; cols are positions of the row, first / last as flagged (a
            // row of two vectors is both); forwarded contract.
            unsafe {
                match (all, left, right) {
                    (true, false, false) => {
                        tile::<S, A, K, SH, R, V, true, false, false>(p, r0, cols)
                    }
                    (true, true, false) => {
                        tile::<S, A, K, SH, R, V, true, true, false>(p, r0, cols)
                    }
                    (true, false, true) => {
                        tile::<S, A, K, SH, R, V, true, false, true>(p, r0, cols)
                    }
                    (true, true, true) => tile::<S, A, K, SH, R, V, true, true, true>(p, r0, cols),
                    (false, false, false) => {
                        tile::<S, A, K, SH, R, V, false, false, false>(p, r0, cols)
                    }
                    (false, true, false) => {
                        tile::<S, A, K, SH, R, V, false, true, false>(p, r0, cols)
                    }
                    (false, false, true) => {
                        tile::<S, A, K, SH, R, V, false, false, true>(p, r0, cols)
                    }
                    (false, true, true) => {
                        tile::<S, A, K, SH, R, V, false, true, true>(p, r0, cols)
                    }
                }
            }
            k0 += V;
        }
        if paired < npos {
            // SAFETY: as above; the row's last vector (also its first when it is the only
            // one).
            unsafe {
                let cols = [pos(paired)];
                match (all, npos == 1) {
                    (true, false) => tile::<S, A, K, SH, R, 1, true, false, true>(p, r0, cols),
                    (true, true) => tile::<S, A, K, SH, R, 1, true, true, true>(p, r0, cols),
                    (false, false) => tile::<S, A, K, SH, R, 1, false, false, true>(p, r0, cols),
                    (false, true) => tile::<S, A, K, SH, R, 1, false, true, true>(p, r0, cols),
                }
            }
        }
        t += R;
    }
}

/// Computes the whole output plane of a `K x K` [`DirectPlane`] at stride `SH`.
///
/// # Safety
/// `x` holds `h * w` floats and `y` `oh * ow`; `wt` holds `K * K` floats;
/// [`DirectPlane::applies`] holds for the plane's geometry, whose stride is `SH`; the CPU
/// supports `S`.
#[inline(always)]
pub(crate) unsafe fn forward<S: Simd, A: VecAct, const K: usize, const SH: usize>(
    p: &DirectPlane<'_, A>,
) {
    debug_assert_eq!(p.wt.len(), K * K);
    // SAFETY: forwarded contract.
    unsafe {
        if SH == 1 && S::VREGS < 32 {
            // 4 x 2 accumulators beside K weights and two operands in 16 registers.
            sweep::<S, A, K, SH, 4>(p)
        } else if SH == 1 {
            sweep::<S, A, K, SH, ROWS>(p)
        } else {
            sweep::<S, A, K, SH, ROWS_STRIDE2>(p)
        }
    }
}
