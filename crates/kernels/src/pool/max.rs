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
/// `h * w` input plane. `x` is `[n, c, h, w]`; `y`, `argmax` are `[n, c, out_h, out_w]`.
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
    let (oh, ow, hw) = (s.out_h(), s.out_w(), s.h * s.w);
    let plane = oh * ow;
    // Values and indices are written together, plane by plane: zip the two outputs' planes.
    let mut pairs: Vec<(&mut [f32], &mut [u32])> =
        y.chunks_mut(plane).zip(argmax.chunks_mut(plane)).collect();
    per_plane(&mut pairs, 1, s.input_len(), |p, pair| {
        let (yo, ao) = &mut pair[0];
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
                yo[oy * ow + ox] = best;
                ao[oy * ow + ox] = idx as u32;
            }
        }
    });
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
        let mut rows = vec![f32::NEG_INFINITY; w];
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
