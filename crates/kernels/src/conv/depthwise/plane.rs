//! Per-plane depthwise work, generic over [`Simd`]: pack a plane into its padded, phase-split
//! scratch copy, then run the row correlations of `kernel.rs` on it. Each ISA file
//! instantiates these inside its `#[target_feature]` entry points.

use super::kernel::{corr, stacked, wgrad, wgrad_finish, Corr, Stacked, WGrad};
use super::{BwdGeom, FwdGeom};
use crate::activation::vector::{kind, VecAct};
use crate::simd::Simd;

/// Copies one `h x w` plane into a zero-padded, stride-phase-split layout: padded row `R`
/// (input row `R - top`), phase `b`, index `t` holds input column `t * sw + b - left` (zero
/// outside the plane) at `dst[R * sw * wq + b * wq + t]`, for `R < rows`, `t < wq`.
///
/// At stride 1 with rows at least a vector wide, zeros and data are written with whole
/// vectors (the zero vectors first, the data over them), avoiding tiny `memset` calls, and
/// the same row of the plane that follows `src` in memory (`next`, usually the next task's
/// plane) is prefetched, so that its cache misses overlap this plane's arithmetic.
///
/// `pad_ready`: `dst` already holds a plane packed with the same `h, w, top, left, sw, wq,
/// rows` (its zero padding is in place), so at strides 1 and 2 only the data columns of the
/// plane's rows are written: the padding rows and columns are skipped, which halves the
/// stores of a narrow plane (a 28-wide row with 2 padding columns each side: 2 vector stores
/// instead of 4). The general layouts (other strides, odd fits) rewrite the padding anyway.
///
/// # Safety
/// The CPU supports `S`.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
pub(crate) unsafe fn pack_plane<S: Simd>(
    src: &[f32],
    h: usize,
    w: usize,
    top: usize,
    left: usize,
    sw: usize,
    wq: usize,
    rows: usize,
    dst: &mut [f32],
    next: *const f32,
    pad_ready: bool,
) {
    let rs = sw * wq;
    let l = S::L;
    if pad_ready && sw == 1 && w >= l && left + w <= wq {
        // Only the plane's rows, with a loop of few live values (the general loop below
        // spends about as long on its bookkeeping as on the copy for 28-wide rows).
        let rows_in = h.min(rows.saturating_sub(top));
        // SAFETY: row y of the plane goes to padded row y + top < rows, columns
        // left..left + w <= wq; every vector below lies inside both rows (w >= L).
        unsafe {
            let (s0, d0) = (src.as_ptr(), dst.as_mut_ptr().add(left));
            for y in 0..rows_in {
                let (s, d) = (s0.add(y * w), d0.add((y + top) * rs));
                let pf = next.wrapping_add(y * w);
                let mut p = 0;
                while p < w {
                    S::prefetch(pf.wrapping_add(p));
                    p += 16;
                }
                copy_row::<S>(s, d, w);
            }
        }
        return;
    }
    let fast = sw == 1 && left + w <= wq;
    let fast2 = sw == 2
        && left / 2 + w.div_ceil(2) <= wq
        && left.div_ceil(2) + w / 2 <= wq
        && (w >= 2 * l || left.div_ceil(2) + l <= wq);
    for (r, drow) in dst[..rows * rs].chunks_exact_mut(rs).enumerate() {
        let y = r as isize - top as isize;
        if y < 0 || y >= h as isize {
            if pad_ready && (fast || fast2) {
                continue;
            }
            if fast {
                // SAFETY: rs = wq >= L; the clamped vectors stay inside the row.
                unsafe {
                    let mut p = 0;
                    while p < rs {
                        S::store(drow.as_mut_ptr().add(p.min(rs - l)), S::splat(0.0));
                        p += l;
                    }
                }
            } else {
                drow.fill(0.0);
            }
            continue;
        }
        let srow = &src[y as usize * w..(y as usize + 1) * w];
        if fast {
            let d = drow.as_mut_ptr();
            // SAFETY: wq >= left + w and wq >= L, so every vector below lies inside the row:
            // zero vectors at the right end and over the left padding, then the data (last
            // vector clamped to end at `w`, overlapping; or the first w lanes) over them.
            // With `pad_ready` the zeros are already there and the data stores below stay
            // inside columns left..left + w (or write zeros past them).
            unsafe {
                if !pad_ready {
                    let z = S::splat(0.0);
                    let mut p = left + w;
                    while p < wq {
                        S::store(d.add(p.min(wq - l)), z);
                        p += l;
                    }
                    let mut p = 0;
                    while p < left {
                        S::store(d.add(p.min(wq - l)), z);
                        p += l;
                    }
                }
                let s = srow.as_ptr();
                let pf = next.wrapping_add(y as usize * w);
                let mut p = 0;
                while p < w {
                    S::prefetch(pf.wrapping_add(p));
                    p += 16;
                }
                if w >= l {
                    copy_row::<S>(s, d.add(left), w);
                } else if left + l <= wq {
                    // The masked load zero-fills lanes w.., which are right padding: one plain
                    // store (AMD's masked stores are slow and block store forwarding).
                    S::store(d.add(left), S::load_first(s, w));
                } else {
                    S::store_first(d.add(left), S::load_first(s, w), w);
                }
            }
        } else if fast2 {
            // SAFETY: checked by `fast2`: both phases hold their shifted data, and every
            // vector stays inside its phase (clamped, overlapping, or one whole vector).
            unsafe {
                let pf = next.wrapping_add(y as usize * w);
                let mut p = 0;
                while p < w {
                    S::prefetch(pf.wrapping_add(p));
                    p += 16;
                }
                pack_row_stride2::<S>(srow, left, wq, drow, !pad_ready)
            };
        } else if sw == 1 {
            // [zeros left][the row, clipped][zeros]
            let lz = left.min(wq);
            drow[..lz].fill(0.0);
            let n = w.min(wq - lz);
            drow[lz..lz + n].copy_from_slice(&srow[..n]);
            drow[lz + n..].fill(0.0);
        } else {
            for (b, phase) in drow.chunks_exact_mut(wq).enumerate() {
                for (t, o) in phase.iter_mut().enumerate() {
                    let x = (t * sw + b) as isize - left as isize;
                    *o = if x >= 0 && x < w as isize {
                        srow[x as usize]
                    } else {
                        0.0
                    };
                }
            }
        }
    }
}

/// Copies `w >= L` floats from `s` to `d` with whole vectors, two at a time, then the last
/// one or two ending at `w` (overlapping). Written out rather than as a loop of one vector
/// per step: LLVM recognises that loop as a `memcpy` idiom and calls the C library once per
/// row, which cost 7-12% of a 240 x 28^2 5x5 forward pass in `perf` (28-float rows, AVX2).
///
/// # Safety
/// `s` readable and `d` writable for `w` floats, `w >= L`; the CPU supports `S`.
#[inline(always)]
unsafe fn copy_row<S: Simd>(s: *const f32, d: *mut f32, w: usize) {
    let l = S::L;
    // SAFETY: every vector below lies inside 0..w (w >= L).
    unsafe {
        let mut p = 0;
        while p + 2 * l <= w {
            let (a, b) = (S::load(s.add(p)), S::load(s.add(p + l)));
            S::store(d.add(p), a);
            S::store(d.add(p + l), b);
            p += 2 * l;
        }
        if p + l <= w {
            S::store(d.add(p), S::load(s.add(p)));
        }
        if !w.is_multiple_of(l) {
            S::store(d.add(w - l), S::load(s.add(w - l)));
        }
    }
}

/// One row at stride 2: input column `2i + par` goes to phase `(par + left) % 2`, index
/// `i + (par + left) / 2`. Both phases are zeroed (unless `zero` is false: the row already
/// holds its padding), then each `2L` input floats are split into their even and odd
/// elements with two shuffles per vector and stored into the two phases; the stores write
/// every data position and, past the data, only zeros.
///
/// # Safety
/// `left / 2 + ceil(w/2) <= wq` and `ceil(left/2) + w/2 <= wq`, and when `w < 2L` also
/// `ceil(left/2) + L <= wq` (one whole vector per phase); `dst` holds `2 * wq` floats,
/// `wq >= L`; the CPU supports `S`.
#[inline(always)]
unsafe fn pack_row_stride2<S: Simd>(
    src: &[f32],
    left: usize,
    wq: usize,
    dst: &mut [f32],
    zero: bool,
) {
    let (l, w) = (S::L, src.len());
    let d = dst.as_mut_ptr();
    let (pe, se) = (left % 2, left / 2);
    let (po, so) = ((left + 1) % 2, left.div_ceil(2));
    // SAFETY (whole body): the contract's bounds; every store below lies in [0, 2 * wq) and
    // inside its phase.
    unsafe {
        let z = S::splat(0.0);
        for ph in 0..2 * usize::from(zero) {
            let mut p = 0;
            while p < wq {
                S::store(d.add(ph * wq + p.min(wq - l)), z);
                p += l;
            }
        }
        let s = src.as_ptr();
        if w < 2 * l {
            // One pair of masked loads (zeros past w, which are padding in both phases).
            let a = S::load_first(s, w.min(l));
            let b = if w > l {
                S::load_first(s.add(l), w - l)
            } else {
                z
            };
            let (e, o) = S::deinterleave(a, b);
            S::store(d.add(pe * wq + se), e);
            S::store(d.add(po * wq + so), o);
            return;
        }
        let last = (w - 2 * l) / 2;
        let mut i = 0;
        while i <= last {
            let i0 = i.min(last);
            let (e, o) = S::deinterleave(S::load(s.add(2 * i0)), S::load(s.add(2 * i0 + l)));
            S::store(d.add(pe * wq + se + i0), e);
            S::store(d.add(po * wq + so + i0), o);
            if i == last {
                break;
            }
            i = (i + l).min(last);
        }
        // An odd width leaves the last even element.
        if w % 2 == 1 {
            *d.add(pe * wq + se + w / 2) = src[w - 1];
        }
    }
}

/// The inverse of [`pack_row_stride2`] without padding: `out[2i + par]` from phase
/// `(par + left) % 2`, index `i + (par + left) / 2` of `src` (phases `tq` apart).
///
/// # Safety
/// `out.len() >= 2L`; both phases hold the shifted data; the CPU supports `S`.
#[inline(always)]
unsafe fn unpack_row_stride2<S: Simd>(src: &[f32], left: usize, tq: usize, out: &mut [f32]) {
    let (l, w) = (S::L, out.len());
    let (pe, se) = (left % 2, left / 2);
    let (po, so) = ((left + 1) % 2, left.div_ceil(2));
    let s = src.as_ptr();
    let d = out.as_mut_ptr();
    let last = (w - 2 * l) / 2;
    // SAFETY (whole body): reads inside the two phases' data, writes inside `out`.
    unsafe {
        let mut i = 0;
        loop {
            let i0 = i.min(last);
            let e = S::load(s.add(pe * tq + se + i0));
            let o = S::load(s.add(po * tq + so + i0));
            let (a, b) = S::interleave(e, o);
            S::store(d.add(2 * i0), a);
            S::store(d.add(2 * i0 + l), b);
            if i0 == last {
                break;
            }
            i += l;
        }
        if w % 2 == 1 {
            out[w - 1] = src[pe * tq + se + w / 2];
        }
    }
}

/// The forward pass of one output plane: `y = act(bias + sum_taps w * x_shifted)`.
///
/// `pad_ready`: `scratch` holds a plane packed for `g` (see [`pack_plane`]). Returns whether
/// it does afterwards. Planes that the in-place form (`direct.rs`) takes never come here:
/// the ISA table's `fwd` sends them to it first, and the scratch stays untouched.
///
/// # Safety
/// `x` is the `h * w` input plane, `wt` the `kh * kw` filter, `y` the `oh * ow` output plane,
/// `scratch` holds `g.scratch_len()` floats; the CPU supports `S`.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
pub(crate) unsafe fn forward<S: Simd, A: VecAct>(
    g: &FwdGeom,
    x: &[f32],
    wt: &[f32],
    bias: f32,
    act: A,
    y: &mut [f32],
    scratch: &mut [f32],
    pad_ready: bool,
) -> bool {
    let stacks = g.kh == g.kw && !g.dilated && g.sh <= 2;
    let band = if stacks && matches!(g.kh, 3 | 5) {
        band_rows(g)
    } else {
        g.oh
    };
    if band >= g.oh {
        // SAFETY: forwarded contract; one band of every output row.
        unsafe { forward_band::<S, A>(g, (0, g.oh), x, wt, bias, act, y, scratch, pad_ready) };
        return true;
    }
    let mut r0 = 0;
    while r0 < g.oh {
        // A remainder too short for the row tiles joins the band before it (the scratch
        // holds the whole plane's rows, so a longer band still fits).
        let r1 = if g.oh - r0 < band + 4 {
            g.oh
        } else {
            r0 + band
        };
        // SAFETY: forwarded contract; the band's rows lie in the plane.
        unsafe { forward_band::<S, A>(g, (r0, r1), x, wt, bias, act, y, scratch, false) };
        r0 = r1;
    }
    // The scratch holds the last band alone, not a packed plane.
    false
}

/// Output rows per band of [`forward`]: as many as keep a band's packed rows within half of
/// the host's L1d (`crate::host`), or all of them (`g.oh`) when the whole packed plane fits
/// there. A packed plane larger than L1d (a 112 x 112 plane at stride 2: 51 KiB) would
/// otherwise be written out to L2 and read back from there by the row kernels.
fn band_rows(g: &FwdGeom) -> usize {
    let half_l1 = crate::host::Host::get().caches.l1d.size / 2 / std::mem::size_of::<f32>();
    if g.scratch_len() <= half_l1 || g.rs == 0 {
        return g.oh;
    }
    // A band of b output rows packs (b - 1) sh + kh rows.
    let rows_in = half_l1 / g.rs;
    if rows_in < g.kh + 4 * g.sh {
        return g.oh;
    }
    ((rows_in - g.kh) / g.sh + 1).min(g.oh)
}

/// Output rows `r0..r1` of [`forward`] through the padded copy: the padded rows they read,
/// `r0 sh .. (r1 - 1) sh + (kh - 1) dh + 1` (the plane's rows among them, zero rows above or below it),
/// packed alone into the front of `scratch` in the layout of the whole packed plane, then the
/// row tiles (`stacked`, where they take the filter) or the general correlation. Every output
/// sees the same packed values and the same kernel whatever band holds it: the same bits as
/// one band of the whole plane. `pad_ready` as for [`pack_plane`] (only for the whole plane).
///
/// # Safety
/// As for [`forward`]; `r0 < r1 <= g.oh`.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
unsafe fn forward_band<S: Simd, A: VecAct>(
    g: &FwdGeom,
    (r0, r1): (usize, usize),
    x: &[f32],
    wt: &[f32],
    bias: f32,
    act: A,
    y: &mut [f32],
    scratch: &mut [f32],
    pad_ready: bool,
) {
    // Padded rows pr0..pr1 (padded row R is input row R - ph): output row r reads rows
    // r sh .. r sh + (kh - 1) dh + 1, and the last row's end is hp (FwdGeom).
    let (pr0, pr1) = (r0 * g.sh, g.hp - (g.oh - r1) * g.sh);
    let top = g.ph.saturating_sub(pr0);
    let iy0 = pr0.saturating_sub(g.ph).min(g.h);
    let iy1 = pr1.saturating_sub(g.ph).min(g.h).max(iy0);
    // Prefetched meanwhile: the next band's rows, or after the last band the next plane.
    let next = if r1 == g.oh { x.len() } else { iy1 * g.w };
    // SAFETY: the band's pr1 - pr0 <= hp packed rows fit in the scratch (it holds hp rows);
    // the CPU supports S (caller's contract).
    unsafe {
        pack_plane::<S>(
            &x[iy0 * g.w..iy1 * g.w],
            iy1 - iy0,
            g.w,
            top,
            g.pw,
            g.sw,
            g.wq,
            pr1 - pr0,
            scratch,
            x.as_ptr().wrapping_add(next),
            pad_ready,
        )
    };
    let dst = y[r0 * g.ow..].as_mut_ptr();
    if g.kh == g.kw && !g.dilated && g.sh <= 2 {
        let st = Stacked {
            src: scratch.as_ptr(),
            unit: g.rs,
            col_off: &g.col_off,
            w: wt,
            dst,
            dst_row: g.ow,
            rows: r1 - r0,
            len: g.ow,
            bias,
            act,
            spill_ok: true,
        };
        // SAFETY: local output row r, kernel row i reads packed row r sh + i < pr1 - pr0 of
        // the band, columns below wq (FwdGeom); y holds rows r0..r1 of ow floats.
        let done = unsafe {
            match (g.kh, g.sh) {
                (3, 1) => stacked::<S, _, 3, 1>(&st),
                (3, 2) => stacked::<S, _, 3, 2>(&st),
                (5, 1) => stacked::<S, _, 5, 1>(&st),
                (5, 2) => stacked::<S, _, 5, 2>(&st),
                _ => false,
            }
        };
        if done {
            return;
        }
    }
    let c = Corr {
        src: scratch.as_ptr(),
        src_row: g.sh * g.rs,
        off: &g.off,
        w: wt,
        dst,
        dst_row: g.ow,
        rows: r1 - r0,
        len: g.ow,
        bias,
        act,
        dst_room: 0,
    };
    // SAFETY: `FwdGeom` sizes the packed rows so every tap of the band's outputs reads inside
    // them (see its docs); y holds rows r0..r1 of ow floats; scratch and y are distinct.
    unsafe {
        match g.off.len() {
            9 => corr::<S, _, 9>(&c),
            25 => corr::<S, _, 25>(&c),
            _ => corr::<S, _, 0>(&c),
        }
    }
}

/// The input gradient of one input plane from the `m` output planes it feeds (`dy`,
/// `m * oh * ow`, and their filters `wt`, `m * kh * kw`): one row correlation per stride phase
/// into a padded scratch plane, then the crop into `dx`.
///
/// # Safety
/// Lengths as described, `scratch` holds `g.scratch_len()` floats; the CPU supports `S`.
#[inline(always)]
pub(crate) unsafe fn backward_input<S: Simd>(
    g: &BwdGeom,
    wt: &[f32],
    dy: &[f32],
    dx: &mut [f32],
    scratch: &mut [f32],
) {
    let (dys, rest) = scratch.split_at_mut(g.m * g.dy_plane);
    let (dxs, wbuf) = rest.split_at_mut(g.hr * g.rsx);
    let oplane = g.oh * g.ow;
    for (mm, d) in dys.chunks_exact_mut(g.dy_plane).enumerate() {
        let src = &dy[mm * oplane..(mm + 1) * oplane];
        // SAFETY: the CPU supports S (caller's contract).
        unsafe {
            pack_plane::<S>(
                src,
                g.oh,
                g.ow,
                g.pt,
                g.pl,
                1,
                g.dyw,
                g.dyh,
                d,
                dy.as_ptr().wrapping_add(dy.len() + mm * oplane),
                false,
            )
        };
    }
    let mut done = false;
    if let Some(k) = g.stacked_k {
        // Source row q + i' for kernel row i' = k - 1 - i: the filter flipped both ways.
        for (o, idx) in wbuf.iter_mut().zip(0..k * k) {
            *o = wt[k * k - 1 - idx];
        }
        let col_off: [usize; 5] = [0, 1, 2, 3, 4];
        let st = Stacked {
            src: dys.as_ptr(),
            unit: g.dyw,
            col_off: &col_off[..k],
            w: &wbuf[..k * k],
            dst: dxs.as_mut_ptr(),
            dst_row: g.rsx,
            rows: g.hr,
            len: g.pw + g.w,
            bias: 0.0,
            act: kind::Identity,
            spill_ok: true,
        };
        // SAFETY: dx row q, kernel row i' reads padded dy row q + i' < hr + k - 1 = dyh and
        // columns t + j' < max(tq, L) + k - 1 = dyw (BwdGeom at stride 1); dxs holds
        // hr x tq floats.
        done = unsafe {
            match k {
                3 => stacked::<S, _, 3, 1>(&st),
                _ => stacked::<S, _, 5, 1>(&st),
            }
        };
    }
    for ph in g.phases.iter().filter(|_| !done) {
        for (o, &k) in wbuf.iter_mut().zip(&ph.taps) {
            *o = wt[k];
        }
        let c = Corr {
            src: dys.as_ptr(),
            src_row: g.dyw,
            off: &ph.off,
            w: &wbuf[..ph.taps.len()],
            // SAFETY: a < sh <= hr rows and b < sw phases lie inside dxs.
            dst: unsafe { dxs.as_mut_ptr().add(ph.a * g.rsx + ph.b * g.tq) },
            dst_row: g.sh * g.rsx,
            rows: ph.rows,
            len: ph.len,
            bias: 0.0,
            act: kind::Identity,
            dst_room: g.tq,
        };
        // SAFETY: `BwdGeom` sizes the padded dy planes so that every tap of every phase reads
        // inside them, and the phase rows/columns inside dxs (see its docs).
        unsafe {
            match ph.off.len() {
                9 => corr::<S, _, 9>(&c),
                25 => corr::<S, _, 25>(&c),
                _ => corr::<S, _, 0>(&c),
            }
        }
    }
    let plane_len = dx.len();
    let dptr = dx.as_mut_ptr();
    for y in 0..g.h {
        // SAFETY: row y of the h x w plane; every access below goes through `dptr`, which
        // covers the whole plane.
        let out = unsafe { std::slice::from_raw_parts_mut(dptr.add(y * g.w), g.w) };
        let row = &dxs[(y + g.ph) * g.rsx..(y + g.ph + 1) * g.rsx];
        if g.sw == 1 {
            out.copy_from_slice(&row[g.pw..g.pw + g.w]);
        } else if g.sw == 2 && g.w >= 2 * S::L {
            // SAFETY: the row holds both phases' data for every column of dx (BwdGeom).
            unsafe { unpack_row_stride2::<S>(row, g.pw, g.tq, out) };
        } else if g.sw == 2 && y * g.w + 2 * S::L <= plane_len {
            // A row narrower than two vectors: interleave one vector of each phase and store
            // both whole; the lanes past the row land in the next rows, rewritten after.
            let (pe, se) = (g.pw % 2, g.pw / 2);
            let (po, so) = ((g.pw + 1) % 2, g.pw.div_ceil(2));
            // SAFETY: each phase holds tq >= L + pw floats, so both loads stay in the row;
            // the stores end at y * w + 2L <= the plane's length (checked above).
            unsafe {
                let e = S::load(row.as_ptr().add(pe * g.tq + se));
                let o = S::load(row.as_ptr().add(po * g.tq + so));
                let (a, b) = S::interleave(e, o);
                let d = dptr.add(y * g.w);
                S::store(d, a);
                S::store(d.add(S::L), b);
            }
        } else {
            for (x, o) in out.iter_mut().enumerate() {
                let c = x + g.pw;
                *o = row[(c % g.sw) * g.tq + c / g.sw];
            }
        }
    }
}

/// The weight gradient of one output channel: for each image, pack its input plane and add
/// `sum_{oy, ox} x_shifted * dy` per tap; images in order, then one horizontal sum per tap.
///
/// # Safety
/// `x` holds the `n` input planes of the channel (`plane_stride` apart, `h * w` each), `dy`
/// the `n` output planes (`oplane_stride` apart), `dw` `kh * kw` floats, `scratch`
/// `g.scratch_len() + 2 * kh * kw * L` floats; the CPU supports `S`.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
pub(crate) unsafe fn backward_weight<S: Simd>(
    g: &FwdGeom,
    n: usize,
    x: &[f32],
    plane_stride: usize,
    dy: &[f32],
    oplane_stride: usize,
    dw: &mut [f32],
    scratch: &mut [f32],
) {
    let (xs, acc) = scratch.split_at_mut(g.scratch_len());
    let acc = &mut acc[..2 * g.off.len() * S::L];
    acc.fill(0.0);
    for img in 0..n {
        let xp = &x[img * plane_stride..img * plane_stride + g.h * g.w];
        // SAFETY: the CPU supports S (caller's contract).
        unsafe {
            pack_plane::<S>(
                xp,
                g.h,
                g.w,
                g.ph,
                g.pw,
                g.sw,
                g.wq,
                g.hp,
                xs,
                xp.as_ptr().wrapping_add(plane_stride),
                img > 0,
            )
        };
        let dp = &dy[img * oplane_stride..img * oplane_stride + g.oh * g.ow];
        let wg = WGrad {
            src: xs.as_ptr(),
            src_row: g.sh * g.rs,
            off: &g.off,
            dy: dp.as_ptr(),
            dy_row: g.ow,
            rows: g.oh,
            len: g.ow,
            acc: acc.as_mut_ptr(),
        };
        // SAFETY: the same reads as the forward pass (FwdGeom), dy holds oh * ow floats, acc
        // 2 * taps * L floats.
        unsafe { wgrad::<S>(&wg, g.kw) };
    }
    // SAFETY: acc holds 2 * taps * L floats and dw taps floats.
    unsafe { wgrad_finish::<S>(acc.as_ptr(), dw) };
}
