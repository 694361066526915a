//! The stride-1 3x3 / 5x5 depthwise forward ("same" padding) read straight from the input
//! plane: no padded copy, register tiles of 8 output rows x 2 vectors, constant-mask loads
//! at the plane's left and right edges.
//!
//! For large planes packing a zero-padded copy of every plane writes and re-reads as many
//! bytes as the arithmetic is worth (the layer is near the roofline's ridge,
//! `docs/kernels/depthwise.md`). Here the tile reads the plane in place:
//!
//! ```text
//! for j in 0..K                                 kernel column
//!   w[i] = broadcast(wt[i][j])  (K registers)
//!   for u in 0..R + K - 1                       source rows of the tile (rows outside: skipped)
//!     xs[v] = load(x[r0 + u - K/2][cols[v] + j - K/2 ..])                  V loads
//!             (masked to the plane's lanes: first vector of a row, j < K/2;
//!                                           last vector (at w - L), j > K/2)
//!     for r with 0 <= u - r < K:  acc[r][v] += w[u - r] * xs[v]             V FMAs each
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
//! Row-stacked register tiles over a CHW plane follow XNNPACK's CHW depthwise microkernels
//! (`f32-dwconv2d-chw`).

// Loops over const-sized arrays index several arrays at once and must unroll.
#![allow(clippy::needless_range_loop)]

use super::FwdGeom;
use crate::activation::vector::VecAct;
use crate::simd::Simd;

/// Output rows per tile.
const ROWS: usize = 8;

/// One output plane of a stride-1 `K x K` depthwise forward with "same" padding (`K / 2`
/// zero rows and columns around the plane), read in place.
pub(crate) struct DirectPlane<'a, A> {
    /// The `h x w` input plane; the next plane (prefetched one band at a time while this one
    /// computes) follows it in memory.
    pub x: *const f32,
    pub h: usize,
    pub w: usize,
    /// `K * K` weights, kernel row major.
    pub wt: &'a [f32],
    /// The `h x w` output plane.
    pub y: *mut f32,
    pub bias: f32,
    pub act: A,
}

impl<A> DirectPlane<'_, A> {
    /// Whether this form takes the forward pass of `g` on ISA `S`: masked loads as fast as
    /// plain ones (AVX-512; AVX2's `vmaskmovps` made an in-place form slower than the padded
    /// copy on Zen 4: 144 x 56^2 242 -> 275 us), stride 1, no dilation, a square 3x3 or 5x5
    /// filter with "same" padding (`k / 2`, so the output is `h x w`), at least one full
    /// tile of rows, and a row end that leaves the second-to-last vector position clear of
    /// the right edge (`w % L` is 0 or at least `k / 2`), so that only the first and the last
    /// vector of a row ever need masks, and those masks are compile-time constants. Rows of
    /// two vectors or more; of 3x3 filters also rows between one and two vectors, where the
    /// two vectors overlap. Masked loads cost more than plain ones (Zen 4, one thread: the
    /// 3x3 tile with every load masked ran 144 x 56^2 in 151 us, with only the edge loads
    /// masked 124 us): on two-vector rows of a 5x5 filter 8 of every 20 loads are masked, and
    /// the padded copy is faster (240 x 28^2: 145 us copied, 151 in place), while a 3x3
    /// filter there gains (192 x 28^2: 87-96 -> 76 us).
    pub(crate) fn applies<S: Simd>(g: &FwdGeom) -> bool {
        let (k, w, half) = (g.kh, g.w, g.kh / 2);
        S::FAST_MASKED_LOAD
            && (g.sh, g.sw) == (1, 1)
            && !g.dilated
            && g.kw == k
            && matches!(k, 3 | 5)
            && (g.ph, g.pw) == (half, half)
            && (w >= 2 * S::L || (k == 3 && w >= S::L + half))
            && g.h >= ROWS
            && (w.is_multiple_of(S::L) || w % S::L >= half)
    }
}

/// Output rows `r0..r0 + R` x vectors at columns `cols` of a [`DirectPlane`]. `ALL_ROWS`: the
/// tile's source rows all lie inside the plane (no per-row test). `LEFT`: `cols[0]` is the
/// row's first vector, whose loads for kernel columns `j < K / 2` start left of the plane;
/// `RIGHT`: `cols[V - 1]` is its last (`w - L`), whose loads for `j > K / 2` end right of it.
/// Those loads are masked to the lanes inside the plane (constant masks); all others are
/// whole vectors inside it.
///
/// # Safety
/// [`DirectPlane::applies`]; `x` holds `h * w` floats, `y` as many; `r0 + R <= h`; the
/// vectors at `cols` are positions of the row (`cols[v] + L <= w`) with the flags above
/// telling the truth; `wt` holds `K * K` floats; the CPU supports `S`.
#[inline(always)]
unsafe fn tile<
    S: Simd,
    A: VecAct,
    const K: usize,
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
    // its columns; every store is inside the output (caller's contract).
    unsafe {
        let bias = S::splat(p.bias);
        let mut acc = [[bias; V]; R];
        for j in 0..K {
            let mut wj = [S::zero(); K];
            for i in 0..K {
                wj[i] = S::broadcast(p.wt.as_ptr().add(i * K + j));
            }
            // Lanes inside the plane of the edge vectors' loads for this kernel column.
            let left_lanes = S::lane_range(half.saturating_sub(j), S::L);
            let right_lanes = S::lane_range(0, S::L - j.saturating_sub(half));
            for u in 0..R - 1 + K {
                // Padded row y is input row y - half.
                let y = r0 + u;
                if !ALL_ROWS && (y < half || y >= p.h + half) {
                    continue;
                }
                // Input column of lane 0 of vector v: cols[v] + j - half.
                let row = p.x.wrapping_add((y - half) * p.w + j).wrapping_sub(half);
                let mut xs = [S::zero(); V];
                for v in 0..V {
                    let src = row.wrapping_add(cols[v]);
                    xs[v] = if LEFT && v == 0 && j < half {
                        S::load_masked(src, left_lanes)
                    } else if RIGHT && v == V - 1 && j > half {
                        S::load_masked(src, right_lanes)
                    } else {
                        S::load(src)
                    };
                }
                for r in 0..R {
                    if u >= r && u - r < K {
                        for v in 0..V {
                            acc[r][v] = S::fma(xs[v], wj[u - r], acc[r][v]);
                        }
                    }
                }
            }
        }
        for r in 0..R {
            let out = p.y.add((r0 + r) * p.w);
            for v in 0..V {
                S::store(out.add(cols[v]), p.act.apply::<S>(acc[r][v]));
            }
        }
    }
}

/// Runs tiles of `R` rows x `V` vectors over the whole plane (the last row band and the last
/// vector position moved back to end at the plane's edge, overlapping: same values).
///
/// # Safety
/// As for [`forward`].
#[inline(always)]
unsafe fn sweep<S: Simd, A: VecAct, const K: usize, const R: usize>(p: &DirectPlane<'_, A>) {
    const V: usize = 2;
    let npos = p.w.div_ceil(S::L);
    let pos = |k: usize| (k.min(npos - 1) * S::L).min(p.w - S::L);
    // An odd vector count leaves one column of one-vector tiles (R accumulators).
    let paired = npos - npos % V;
    let half = K / 2;
    // The next plane, and how many of its floats are prefetched so far.
    let next = p.x.wrapping_add(p.h * p.w);
    let mut fetched = 0;
    let mut t = 0;
    while t < p.h {
        let r0 = t.min(p.h - R);
        // The next plane's rows of this band not fetched yet, one line per 16 floats.
        let end = (r0 + R + K).min(p.h) * p.w;
        let mut q = fetched;
        fetched = end.max(fetched);
        while q < end {
            // SAFETY: a prefetch is a hint; `next` need not be readable.
            unsafe { S::prefetch(next.wrapping_add(q)) };
            q += 16;
        }
        // Source rows r0 - half .. r0 + R - 1 + K - half all inside the plane.
        let all = r0 >= half && r0 + R - 1 + K <= p.h + half;
        let mut k0 = 0;
        while k0 < paired {
            let cols = [pos(k0), pos(k0 + 1)];
            let (left, right) = (k0 == 0, k0 + V == npos);
            // SAFETY: r0 + R <= h; cols are positions of the row, first / last as flagged (a
            // row of two vectors is both); forwarded contract.
            unsafe {
                match (all, left, right) {
                    (true, false, false) => tile::<S, A, K, R, V, true, false, false>(p, r0, cols),
                    (true, true, false) => tile::<S, A, K, R, V, true, true, false>(p, r0, cols),
                    (true, false, true) => tile::<S, A, K, R, V, true, false, true>(p, r0, cols),
                    (true, true, true) => tile::<S, A, K, R, V, true, true, true>(p, r0, cols),
                    (false, false, false) => {
                        tile::<S, A, K, R, V, false, false, false>(p, r0, cols)
                    }
                    (false, true, false) => tile::<S, A, K, R, V, false, true, false>(p, r0, cols),
                    (false, false, true) => tile::<S, A, K, R, V, false, false, true>(p, r0, cols),
                    (false, true, true) => tile::<S, A, K, R, V, false, true, true>(p, r0, cols),
                }
            }
            k0 += V;
        }
        if paired < npos {
            // SAFETY: as above; the row's last vector.
            unsafe {
                let cols = [pos(paired)];
                if all {
                    tile::<S, A, K, R, 1, true, false, true>(p, r0, cols);
                } else {
                    tile::<S, A, K, R, 1, false, false, true>(p, r0, cols);
                }
            }
        }
        t += R;
    }
}

/// Computes the whole output plane of a stride-1 `K x K` [`DirectPlane`].
///
/// # Safety
/// `x` holds `h * w` floats and `y` as many; `wt` holds `K * K` floats;
/// [`DirectPlane::applies`] holds for the plane's geometry; the CPU supports `S`.
#[inline(always)]
pub(crate) unsafe fn forward<S: Simd, A: VecAct, const K: usize>(p: &DirectPlane<'_, A>) {
    debug_assert_eq!(p.wt.len(), K * K);
    // SAFETY: forwarded contract.
    unsafe { sweep::<S, A, K, ROWS>(p) }
}
