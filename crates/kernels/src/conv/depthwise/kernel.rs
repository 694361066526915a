//! The generic depthwise loop nests, written once over [`Simd`] and instantiated per ISA.
//!
//! Everything is a *row correlation* over a zero-padded, phase-split copy of one plane
//! (`mod.rs` draws the layouts):
//!
//! ```text
//! dst[r * dst_row + t] = act(bias + sum_k w[k] * src[r * src_row + off[k] + t])   r < rows, t < len
//! ```
//! The forward pass is one such problem per output plane; the input gradient is one per
//! (row phase, column phase) of the stride; the weight gradient is its transpose, a dot
//! product of each tap's shifted rows with `dy`.
//!
//! Register tiling: a tile is `R` rows x `V` vectors of `L` lanes (8 accumulators with
//! R * V = 8, 6 for V = 3), so the FMA latency (4 cycles, 2 pipes) is hidden; each FMA reads its
//! input straight from the padded rows, and the tap's broadcast weight is reused by the R * V
//! FMAs of the tile. Tiles at the right and bottom edges overlap the previous tile instead of
//! running a remainder loop (they recompute a few outputs with the same operations, so the
//! stored values do not change); only planes narrower than a vector store partial vectors.
//! With `NT` (9, 25) known at compile time the tap loop unrolls fully (the 3x3 and 5x5 paths);
//! `NT = 0` is the generic path with the tap count read at run time.

// Loops over const-sized arrays index several arrays at once and must unroll.
#![allow(clippy::needless_range_loop)]

use crate::activation::vector::VecAct;
use crate::simd::Simd;

/// One row-correlation problem (see the module header).
pub(crate) struct Corr<'a, A> {
    pub src: *const f32,
    pub src_row: usize,
    pub off: &'a [usize],
    pub w: &'a [f32],
    pub dst: *mut f32,
    pub dst_row: usize,
    pub rows: usize,
    pub len: usize,
    pub bias: f32,
    pub act: A,
    /// Floats writable from each `dst` row start that nobody reads back beyond `len` (0 if
    /// none): a row narrower than a vector is then stored whole instead of masked.
    pub dst_room: usize,
}

/// Computes `R` rows x `V` vector positions of a [`Corr`]; `partial > 0` stores only the first
/// `partial` lanes (planes narrower than a vector).
///
/// # Safety
/// `src` is readable at `rows[r] * src_row + off[k] + cols[v] + 0..L` and `dst` writable at
/// `rows[r] * dst_row + cols[v] + 0..L` (`..partial` when partial), for all r, v, k; the CPU
/// supports `S`.
#[inline(always)]
unsafe fn tile<S: Simd, A: VecAct, const NT: usize, const R: usize, const V: usize>(
    c: &Corr<'_, A>,
    wv: &[S::V; NT],
    offs: &[usize; NT],
    rows: [usize; R],
    cols: [usize; V],
    partial: usize,
) {
    // SAFETY (whole body): the caller guarantees every address below is in bounds.
    unsafe {
        let bias = S::splat(c.bias);
        let mut acc = [[bias; V]; R];
        let nt = if NT > 0 { NT } else { c.off.len() };
        for k in 0..nt {
            let (w, o) = if NT > 0 {
                (wv[k], offs[k])
            } else {
                (S::splat(*c.w.get_unchecked(k)), *c.off.get_unchecked(k))
            };
            for r in 0..R {
                let base = c.src.add(rows[r] * c.src_row + o);
                for v in 0..V {
                    acc[r][v] = S::fma(S::load(base.add(cols[v])), w, acc[r][v]);
                }
            }
        }
        for r in 0..R {
            let out = c.dst.add(rows[r] * c.dst_row);
            for v in 0..V {
                let y = c.act.apply::<S>(acc[r][v]);
                if partial > 0 && cols[v] + S::L > c.dst_room {
                    S::store_first(out.add(cols[v]), y, partial);
                } else {
                    S::store(out.add(cols[v]), y);
                }
            }
        }
    }
}

/// Sweeps a whole [`Corr`] with `R x V` tiles.
///
/// # Safety
/// As for [`corr`].
#[inline(always)]
unsafe fn sweep<S: Simd, A: VecAct, const NT: usize, const R: usize, const V: usize>(
    c: &Corr<'_, A>,
    wv: &[S::V; NT],
    offs: &[usize; NT],
) {
    let (npos, partial) = if c.len >= S::L {
        (c.len.div_ceil(S::L), 0)
    } else {
        (1, c.len)
    };
    // Position k starts at k * L, the last one clamped to end at `len` (overlapping).
    let pos = |k: usize| (k.min(npos - 1) * S::L).min(c.len.saturating_sub(S::L));
    let mut r0 = 0;
    while r0 < c.rows {
        let rows: [usize; R] = std::array::from_fn(|r| (r0 + r).min(c.rows - 1));
        let mut k0 = 0;
        while k0 < npos {
            let cols: [usize; V] = std::array::from_fn(|v| pos(k0 + v));
            // SAFETY: rows < c.rows and cols + L <= max(len, L): inside the caller's bounds.
            unsafe { tile::<S, A, NT, R, V>(c, wv, offs, rows, cols, partial) };
            k0 += V;
        }
        r0 += R;
    }
}

/// Solves a [`Corr`] with `NT` taps known at compile time (`NT = 0`: any count).
///
/// # Safety
/// For every `r < rows`, tap `k` and `t < max(len, L)`: `src + r * src_row + off[k] + t` is
/// readable; for `t < len`, `dst + r * dst_row + t` is writable and overlaps no source; when
/// `NT > 0`, `off.len() == w.len() == NT`; the CPU supports `S`.
#[inline(always)]
pub(crate) unsafe fn corr<S: Simd, A: VecAct, const NT: usize>(c: &Corr<'_, A>) {
    if c.rows == 0 || c.len == 0 {
        return;
    }
    // SAFETY: splat only builds registers; NT taps exist when NT > 0.
    // (Loops, not `array::from_fn`: its out-of-line body would call the intrinsics without
    // the target features, so they would not inline.)
    let mut wv: [S::V; NT] = [unsafe { S::splat(0.0) }; NT];
    for (k, v) in wv.iter_mut().enumerate() {
        *v = unsafe { S::splat(c.w[k]) };
    }
    let offs: [usize; NT] = std::array::from_fn(|k| c.off[k]);
    let npos = if c.len >= S::L {
        c.len.div_ceil(S::L)
    } else {
        1
    };
    // SAFETY: forwarded contract.
    unsafe {
        match npos {
            1 => sweep::<S, A, NT, 8, 1>(c, &wv, &offs),
            2 => sweep::<S, A, NT, 4, 2>(c, &wv, &offs),
            3 => sweep::<S, A, NT, 2, 3>(c, &wv, &offs),
            _ => sweep::<S, A, NT, 2, 4>(c, &wv, &offs),
        }
    }
}

/// One weight-gradient accumulation: for each tap `k`,
/// `acc[k] += sum_{r < rows, t < len} src[r * src_row + off[k] + t] * dy[r * dy_row + t]`,
/// with two vector partial sums per tap (`acc` holds `2 * taps * L` floats).
pub(crate) struct WGrad<'a> {
    pub src: *const f32,
    pub src_row: usize,
    pub off: &'a [usize],
    pub dy: *const f32,
    pub dy_row: usize,
    pub rows: usize,
    pub len: usize,
    pub acc: *mut f32,
}

/// Accumulates taps `k0..k0 + G` of a [`WGrad`].
///
/// # Safety
/// `src` readable at `r * src_row + off[k] + t` for `t < max(len, L)`; `dy` readable at
/// `r * dy_row + t` for `t < len`; `acc` holds `2 * off.len() * L` floats; CPU supports `S`.
#[inline(always)]
unsafe fn wgrad_group<S: Simd, const G: usize>(g: &WGrad<'_>, k0: usize) {
    // SAFETY (whole body): addresses as in the contract.
    unsafe {
        let mut a0 = [S::splat(0.0); G];
        let mut a1 = [S::splat(0.0); G];
        for i in 0..G {
            a0[i] = S::load(g.acc.add((2 * (k0 + i)) * S::L));
            a1[i] = S::load(g.acc.add((2 * (k0 + i) + 1) * S::L));
        }
        let offs: [usize; G] = std::array::from_fn(|i| g.off[k0 + i]);
        let nfull = g.len / S::L;
        let tail = g.len % S::L;
        for r in 0..g.rows {
            let srow = g.src.add(r * g.src_row);
            let drow = g.dy.add(r * g.dy_row);
            let mut p = 0;
            while p + 1 < nfull {
                let d0 = S::load(drow.add(p * S::L));
                let d1 = S::load(drow.add((p + 1) * S::L));
                for i in 0..G {
                    let s = srow.add(offs[i] + p * S::L);
                    a0[i] = S::fma(S::load(s), d0, a0[i]);
                    a1[i] = S::fma(S::load(s.add(S::L)), d1, a1[i]);
                }
                p += 2;
            }
            if p < nfull {
                let d0 = S::load(drow.add(p * S::L));
                for i in 0..G {
                    a0[i] = S::fma(S::load(srow.add(offs[i] + p * S::L)), d0, a0[i]);
                }
            }
            if tail > 0 {
                // The last `tail` columns: a vector ending at `len` (masked to the lanes not
                // yet counted), or, on planes narrower than a vector, a zero-padded copy.
                let (start, mask, d) = if nfull > 0 {
                    let start = g.len - S::L;
                    (start, S::mask(S::L - tail, S::L), S::load(drow.add(start)))
                } else {
                    (0, S::mask(0, tail), S::load_first(drow, tail))
                };
                for i in 0..G {
                    let prod = S::mul(S::load(srow.add(offs[i] + start)), d);
                    a1[i] = S::add(a1[i], S::and(prod, mask));
                }
            }
        }
        for i in 0..G {
            S::store(g.acc.add((2 * (k0 + i)) * S::L), a0[i]);
            S::store(g.acc.add((2 * (k0 + i) + 1) * S::L), a1[i]);
        }
    }
}

/// Accumulates every tap of a [`WGrad`], in groups of up to `group` taps (a kernel row), so
/// that each `dy` vector is loaded once per group and `2 * group` sums are in flight.
///
/// # Safety
/// As for [`wgrad_group`].
#[inline(always)]
pub(crate) unsafe fn wgrad<S: Simd>(g: &WGrad<'_>, group: usize) {
    let nt = g.off.len();
    let mut k0 = 0;
    while k0 < nt {
        let gs = group.clamp(1, 5).min(nt - k0);
        // SAFETY: forwarded contract; taps k0..k0 + gs exist.
        unsafe {
            match gs {
                1 => wgrad_group::<S, 1>(g, k0),
                2 => wgrad_group::<S, 2>(g, k0),
                3 => wgrad_group::<S, 3>(g, k0),
                4 => wgrad_group::<S, 4>(g, k0),
                _ => wgrad_group::<S, 5>(g, k0),
            }
        }
        k0 += gs;
    }
}

/// `dw[k] = reduce(acc[2k] + acc[2k + 1])`.
///
/// # Safety
/// `acc` holds `2 * dw.len() * L` floats; CPU supports `S`.
#[inline(always)]
pub(crate) unsafe fn wgrad_finish<S: Simd>(acc: *const f32, dw: &mut [f32]) {
    for (k, o) in dw.iter_mut().enumerate() {
        // SAFETY: inside acc by the contract.
        unsafe {
            let v = S::add(
                S::load(acc.add(2 * k * S::L)),
                S::load(acc.add((2 * k + 1) * S::L)),
            );
            *o = S::reduce(v);
        }
    }
}

/// A row correlation whose taps form a dense `K x K` grid in which kernel row `i` of output
/// row `r` reads source row `r * SH + i` (stride `SH` in {1, 2}, no vertical dilation): the
/// forward pass of 3x3 / 5x5 filters and their stride-1 input gradient. Output rows of one
/// tile then share source rows, so the tile loads each source vector once and feeds it to
/// every output row that needs it (`R + K - 1` row loads for `R * K` row FMAs at stride 1).
pub(crate) struct Stacked<'a, A> {
    pub src: *const f32,
    /// Floats between consecutive source rows.
    pub unit: usize,
    /// Offset of kernel column `j` within a source row.
    pub col_off: &'a [usize],
    /// `K * K` weights, kernel row major.
    pub w: &'a [f32],
    pub dst: *mut f32,
    pub dst_row: usize,
    pub rows: usize,
    pub len: usize,
    pub bias: f32,
    pub act: A,
    /// Whether `dst` is one dense block of `rows * dst_row` floats owned by this problem, so
    /// that a row narrower than a vector may be stored with a whole vector spilling into the
    /// next rows (rewritten afterwards) instead of a masked store.
    pub spill_ok: bool,
}

/// Computes output rows `r0..r0 + R` x `V` vector positions of a [`Stacked`] problem.
///
/// # Safety
/// `src` readable at `(r * SH + i) * unit + col_off[j] + cols[v] + 0..L` for `r < r0 + R`,
/// `i, j < K`; `dst` writable at `r * dst_row + cols[v] + 0..L` (`..partial` when partial,
/// unless `spill_ok`); CPU supports `S`.
#[inline(always)]
unsafe fn stacked_tile<
    S: Simd,
    A: VecAct,
    const K: usize,
    const SH: usize,
    const R: usize,
    const V: usize,
>(
    c: &Stacked<'_, A>,
    wv: &[[S::V; K]; K],
    r0: usize,
    cols: [usize; V],
    partial: usize,
) {
    // SAFETY (whole body): addresses as in the contract.
    unsafe {
        let bias = S::splat(c.bias);
        let mut acc = [[bias; V]; R];
        let base = c.src.add(r0 * SH * c.unit);
        for j in 0..K {
            // wv[j][i]: column j's K weights stay in registers for the whole column.
            let wj = wv[j];
            let cbase = base.add(c.col_off[j]);
            for u in 0..(R - 1) * SH + K {
                let row = cbase.add(u * c.unit);
                let mut xs = [S::splat(0.0); V];
                for v in 0..V {
                    xs[v] = S::load(row.add(cols[v]));
                }
                for r in 0..R {
                    if u >= r * SH && u - r * SH < K {
                        let w = wj[u - r * SH];
                        for v in 0..V {
                            acc[r][v] = S::fma(xs[v], w, acc[r][v]);
                        }
                    }
                }
            }
        }
        for (r, row) in acc.iter().enumerate() {
            let first = (r0 + r) * c.dst_row;
            for v in 0..V {
                let y = c.act.apply::<S>(row[v]);
                // A narrow row may be stored whole when the lanes past its end land in later
                // rows of this plane, which are stored after it (rows go in increasing order
                // and the last tile rewrites its overlap), see `spill_ok`.
                let end = first + cols[v] + S::L;
                if partial > 0 && !(c.spill_ok && end <= c.rows * c.dst_row) {
                    S::store_first(c.dst.add(first + cols[v]), y, partial);
                } else {
                    S::store(c.dst.add(first + cols[v]), y);
                }
            }
        }
    }
}

#[inline(always)]
unsafe fn stacked_sweep<
    S: Simd,
    A: VecAct,
    const K: usize,
    const SH: usize,
    const R: usize,
    const V: usize,
>(
    c: &Stacked<'_, A>,
    wv: &[[S::V; K]; K],
) {
    let (npos, partial) = if c.len >= S::L {
        (c.len.div_ceil(S::L), 0)
    } else {
        (1, c.len)
    };
    let pos = |k: usize| (k.min(npos - 1) * S::L).min(c.len.saturating_sub(S::L));
    // With two vectors per tile, an odd last vector column runs as a column of 8-row tiles
    // (8 accumulators again) instead of a duplicated position.
    let single = V == 2 && npos % 2 == 1 && c.rows >= 8;
    let paired = if single { npos - 1 } else { npos };
    let mut t = 0;
    while t < c.rows {
        // The last tile is moved up to end at the last row (overlapping, same values).
        let r0 = t.min(c.rows - R);
        let mut k0 = 0;
        while k0 < paired {
            let cols: [usize; V] = std::array::from_fn(|v| pos(k0 + v));
            // SAFETY: r0 + R <= rows; cols within max(len, L); forwarded contract.
            unsafe { stacked_tile::<S, A, K, SH, R, V>(c, wv, r0, cols, partial) };
            k0 += V;
        }
        t += R;
    }
    if single {
        let mut t = 0;
        while t < c.rows {
            let r0 = t.min(c.rows - 8);
            // SAFETY: r0 + 8 <= rows; the column is a valid position.
            unsafe { stacked_tile::<S, A, K, SH, 8, 1>(c, wv, r0, [pos(npos - 1)], partial) };
            t += 8;
        }
    }
}

/// Solves a [`Stacked`] problem for a `K x K` filter at vertical stride `SH`; returns `false`
/// (doing nothing) when the plane is too short for the row tiles, so the caller falls back to
/// [`corr`].
///
/// # Safety
/// For every output row `r < rows`, `i, j < K`, `t < max(len, L)`:
/// `src + (r * SH + i) * unit + col_off[j] + t` is readable; `dst + r * dst_row + t` is
/// writable for `t < len` and overlaps no source; `w` holds `K * K` floats; CPU supports `S`.
#[inline(always)]
pub(crate) unsafe fn stacked<S: Simd, A: VecAct, const K: usize, const SH: usize>(
    c: &Stacked<'_, A>,
) -> bool {
    let npos = if c.len >= S::L {
        c.len.div_ceil(S::L)
    } else {
        1
    };
    if c.len == 0 || c.rows == 0 {
        return true;
    }
    if c.rows < 4 || c.col_off.len() != K || c.w.len() != K * K {
        return false;
    }
    // SAFETY: splat only builds registers; w holds K * K floats.
    // (Loops, not `array::from_fn`, so the intrinsics inline; see `corr`.)
    let mut wv: [[S::V; K]; K] = [[unsafe { S::splat(0.0) }; K]; K];
    for (j, col) in wv.iter_mut().enumerate() {
        for (i, v) in col.iter_mut().enumerate() {
            *v = unsafe { S::splat(c.w[i * K + j]) };
        }
    }
    // SAFETY: forwarded contract.
    unsafe {
        if npos == 1 {
            // One vector per row: as many rows per tile as fit (up to 8 accumulators).
            match c.rows {
                4 => stacked_sweep::<S, A, K, SH, 4, 1>(c, &wv),
                5 => stacked_sweep::<S, A, K, SH, 5, 1>(c, &wv),
                6 => stacked_sweep::<S, A, K, SH, 6, 1>(c, &wv),
                7 => stacked_sweep::<S, A, K, SH, 7, 1>(c, &wv),
                _ => stacked_sweep::<S, A, K, SH, 8, 1>(c, &wv),
            }
        } else {
            stacked_sweep::<S, A, K, SH, 4, 2>(c, &wv);
        }
    }
    true
}
