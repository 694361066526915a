//! Max pooling, forward (value + argmax) and backward (scatter through the argmax), following
//! PyTorch's CPU kernel (`aten/src/ATen/native/cpu/MaxPoolKernel.cpp`): the window is clipped
//! to the input (padding never wins), the first maximum in row-major order is kept, and a NaN
//! wins and propagates (`val > max || isnan(val)`).

use super::{check_len, per_plane, rename, Pool2dShape};
use crate::error::KernelError;

/// The clipped window `[r0, r1) x [c0, c1)` of output `(oy, ox)`.
#[inline]
pub(super) fn window(s: &Pool2dShape, oy: usize, ox: usize) -> (usize, usize, usize, usize) {
    let y0 = (oy * s.stride.0) as isize - s.padding.0 as isize;
    let x0 = (ox * s.stride.1) as isize - s.padding.1 as isize;
    let y1 = (y0 + s.kh as isize).min(s.h as isize);
    let x1 = (x0 + s.kw as isize).min(s.w as isize);
    (
        y0.max(0) as usize,
        y1.max(0) as usize,
        x0.max(0) as usize,
        x1.max(0) as usize,
    )
}

/// `y = max over each window of x`, and `argmax` = the flat index of that maximum in its
/// `h * w` input plane. `x` is `[n, c, h, w]`; `y`, `argmax` are `[n, c, out_h, out_w]`
/// (both overwritten).
///
/// Same results, bit for bit, as [`max_pool2d_forward_scalar`] (the window-by-window
/// reference), but computed a whole output row at a time. Each input row of the window is
/// split into its `stride` phases (`phase[q][k] = row[k * stride + q]`, `-inf` padded on
/// both sides), so the values tap `j` of the window sees across the output row are one
/// contiguous slice of one phase; then, tap by tap in row-major window order, one branch-free
/// pass over that slice keeps `(value, index)` where `v > best || v is NaN`. Padding is
/// `-inf`, which never wins, as the reference skips it. That pass is a compare-and-select
/// over contiguous rows, which vectorises; the window-at-a-time loop is dominated by
/// mispredicted branches.
pub fn max_pool2d_forward(
    s: &Pool2dShape,
    x: &[f32],
    y: &mut [f32],
    argmax: &mut [u32],
) -> Result<(), KernelError> {
    const OP: &str = "max_pool2d_forward";
    s.validate().map_err(|e| rename(e, OP))?;
    check_len(OP, s, "x", x.len(), s.input_len())?;
    check_len(OP, s, "y", y.len(), s.output_len())?;
    check_len(OP, s, "argmax", argmax.len(), s.output_len())?;
    let (oh, ow, w, hw) = (s.out_h(), s.out_w(), s.w, s.h * s.w);
    let (sw, pw) = (s.stride.1, s.padding.1);
    let plane = oh * ow;
    // Phase slots before column 0 (the left padding), and the phase length: every tap's slice
    // `[front + floor((j - pw) / sw), + ow)` fits.
    let front = pw.div_ceil(sw);
    let plen = ow + front + s.kw;
    // Per tap j: (phase, first slot) of its slice.
    let taps: Vec<(usize, usize)> = (0..s.kw)
        .map(|j| {
            let t = j as isize - pw as isize;
            let q = t.rem_euclid(sw as isize) as usize;
            let start = (front as isize + t.div_euclid(sw as isize)) as usize;
            (q, start)
        })
        .collect();
    // Column offset of output ox's window: ox * sw.
    let offs: Vec<u32> = (0..ow).map(|ox| (ox * sw) as u32).collect();
    let mut pairs: Vec<(&mut [f32], &mut [u32])> =
        y.chunks_mut(plane).zip(argmax.chunks_mut(plane)).collect();
    per_plane(&mut pairs, 1, s.input_len(), |p, pair| {
        let (yo, ao) = &mut pair[0];
        let xp = &x[p * hw..(p + 1) * hw];
        let mut phases = vec![f32::NEG_INFINITY; sw * plen];
        for oy in 0..oh {
            let (r0, r1, _, _) = window(s, oy, 0);
            let best = &mut yo[oy * ow..(oy + 1) * ow];
            let idx = &mut ao[oy * ow..(oy + 1) * ow];
            // The first tap inside the input: the reference's starting index.
            for (ox, (b, i)) in best.iter_mut().zip(idx.iter_mut()).enumerate() {
                let c0 = (ox * sw).saturating_sub(pw);
                *b = f32::NEG_INFINITY;
                *i = (r0 * w + c0) as u32;
            }
            for r in r0..r1 {
                split_phases(&xp[r * w..(r + 1) * w], sw, front, plen, &mut phases);
                for (j, &(q, start)) in taps.iter().enumerate() {
                    let tap = &phases[q * plen + start..q * plen + start + ow];
                    // Index of tap j for output column ox: r * w + ox * sw + j - pw (wrapping
                    // for padded taps, which are -inf and never selected).
                    let base = ((r * w + j) as u32).wrapping_sub(pw as u32);
                    select_max(tap, base, &offs, best, idx);
                }
            }
        }
    });
    Ok(())
}

/// `phases[q * plen + front + k] = row[k * sw + q]`, every other slot `-inf`.
fn split_phases(row: &[f32], sw: usize, front: usize, plen: usize, phases: &mut [f32]) {
    if sw == 1 {
        phases[front..front + row.len()].copy_from_slice(row);
        return;
    }
    for (q, ph) in phases.chunks_exact_mut(plen).enumerate() {
        let n = row.len().saturating_sub(q).div_ceil(sw);
        for (o, &v) in ph[front..front + n]
            .iter_mut()
            .zip(row.iter().skip(q).step_by(sw))
        {
            *o = v;
        }
    }
}

/// `best[i], idx[i] = tap[i], base + offs[i]` where `tap[i] > best[i]` or `tap[i]` is NaN.
/// The selects are written as bit masks (`m = -(take as u32)`): with `if take { .. }` the
/// compiler emits per-lane conditional stores (branches) instead of vector blends.
#[inline]
fn select_max(tap: &[f32], base: u32, offs: &[u32], best: &mut [f32], idx: &mut [u32]) {
    let lanes = tap
        .iter()
        .zip(offs)
        .zip(best.iter_mut())
        .zip(idx.iter_mut());
    for (((&v, &off), b), k) in lanes {
        let old = *b;
        #[allow(clippy::eq_op)]
        let take = (v > old) | (v != v);
        let m = (take as u32).wrapping_neg();
        let at = base.wrapping_add(off);
        *b = f32::from_bits((v.to_bits() & m) | (old.to_bits() & !m));
        *k = (at & m) | (*k & !m);
    }
}

/// The window-by-window max pooling with argmax, written from the definition (the first
/// maximum in row-major order over the clipped window, a NaN winning): the reference
/// [`max_pool2d_forward`] is tested against, bit for bit.
pub fn max_pool2d_forward_scalar(
    s: &Pool2dShape,
    x: &[f32],
    y: &mut [f32],
    argmax: &mut [u32],
) -> Result<(), KernelError> {
    const OP: &str = "max_pool2d_forward_scalar";
    s.validate().map_err(|e| rename(e, OP))?;
    check_len(OP, s, "x", x.len(), s.input_len())?;
    check_len(OP, s, "y", y.len(), s.output_len())?;
    check_len(OP, s, "argmax", argmax.len(), s.output_len())?;
    let (oh, ow, hw) = (s.out_h(), s.out_w(), s.h * s.w);
    for p in 0..s.n * s.c {
        let xp = &x[p * hw..(p + 1) * hw];
        for oy in 0..oh {
            for ox in 0..ow {
                let (r0, r1, c0, c1) = window(s, oy, ox);
                let mut best = f32::NEG_INFINITY;
                let mut idx = r0 * s.w + c0;
                for r in r0..r1 {
                    for (c, &v) in xp[r * s.w + c0..r * s.w + c1].iter().enumerate() {
                        if v > best || v.is_nan() {
                            best = v;
                            idx = r * s.w + c0 + c;
                        }
                    }
                }
                let o = (p * oh + oy) * ow + ox;
                y[o] = best;
                argmax[o] = idx as u32;
            }
        }
    }
    Ok(())
}

/// The larger of `a` and `b`, NaN if either is NaN (PyTorch's max pooling propagates NaN).
#[inline(always)]
fn nan_max(a: f32, b: f32) -> f32 {
    if a > b || a.is_nan() {
        a
    } else {
        b
    }
}

thread_local! {
    /// Per-thread row-maximum scratch of [`max_pool2d_forward_values`].
    static ROWS: std::cell::Cell<Vec<f32>> = const { std::cell::Cell::new(Vec::new()) };
}

/// `y = max over each window of x` without the argmax: the inference path (nothing to send a
/// gradient back through). Same values as [`max_pool2d_forward`], NaN propagating, but
/// separable: per output row, the element-wise maximum of its `kh` input rows (a vectorised
/// pass over whole rows), then the `kw`-wide maximum along that row. `x` is `[n, c, h, w]`, `y`
/// `[n, c, out_h, out_w]`.
pub fn max_pool2d_forward_values(
    s: &Pool2dShape,
    x: &[f32],
    y: &mut [f32],
) -> Result<(), KernelError> {
    const OP: &str = "max_pool2d_forward_values";
    s.validate().map_err(|e| rename(e, OP))?;
    check_len(OP, s, "x", x.len(), s.input_len())?;
    check_len(OP, s, "y", y.len(), s.output_len())?;
    let (oh, ow, w, hw) = (s.out_h(), s.out_w(), s.w, s.h * s.w);
    per_plane(y, oh * ow, s.input_len(), |p, yo| {
        let xp = &x[p * hw..(p + 1) * hw];
        // The row maxima: per-thread scratch kept between calls (a warm call allocates
        // nothing), taken out while in use.
        let mut scratch = ROWS.take();
        scratch.resize(w, f32::NEG_INFINITY);
        let rows = &mut scratch[..w];
        for oy in 0..oh {
            let (r0, r1, _, _) = window(s, oy, 0);
            rows.fill(f32::NEG_INFINITY);
            for r in r0..r1 {
                for (m, &v) in rows.iter_mut().zip(&xp[r * w..(r + 1) * w]) {
                    *m = nan_max(v, *m);
                }
            }
            for (ox, out) in yo[oy * ow..(oy + 1) * ow].iter_mut().enumerate() {
                let (_, _, c0, c1) = window(s, oy, ox);
                *out = rows[c0..c1]
                    .iter()
                    .fold(f32::NEG_INFINITY, |b, &v| nan_max(v, b));
            }
        }
        ROWS.set(scratch);
    });
    Ok(())
}

/// `dx[argmax] += dy` plane by plane (overwrites `dx`, `[n, c, h, w]`). Errors: wrong lengths
/// or an argmax outside its `h * w` plane.
pub fn max_pool2d_backward(
    s: &Pool2dShape,
    dy: &[f32],
    argmax: &[u32],
    dx: &mut [f32],
) -> Result<(), KernelError> {
    const OP: &str = "max_pool2d_backward";
    s.validate().map_err(|e| rename(e, OP))?;
    check_len(OP, s, "dy", dy.len(), s.output_len())?;
    check_len(OP, s, "argmax", argmax.len(), s.output_len())?;
    check_len(OP, s, "dx", dx.len(), s.input_len())?;
    let hw = s.h * s.w;
    if let Some(pos) = argmax.iter().position(|&i| i as usize >= hw) {
        return Err(KernelError::invalid(
            OP,
            format!(
                "{s}: argmax[{pos}] = {} is outside the {hw}-element input plane",
                argmax[pos]
            ),
        ));
    }
    let plane = s.out_h() * s.out_w();
    per_plane(dx, hw, s.input_len(), |p, out| {
        out.fill(0.0);
        let (g, a) = (
            &dy[p * plane..(p + 1) * plane],
            &argmax[p * plane..(p + 1) * plane],
        );
        for (&gv, &i) in g.iter().zip(a) {
            out[i as usize] += gv;
        }
    });
    Ok(())
}
