//! Max pooling, forward (value + argmax) and backward (scatter through the argmax), following
//! PyTorch's CPU kernel (`aten/src/ATen/native/cpu/MaxPoolKernel.cpp`): the window is clipped
//! to the input (padding never wins), the first maximum in row-major order is kept, and a NaN
//! wins and propagates (`val > max || isnan(val)`). The forward runs the vector body of
//! `max_vec.rs` on the path of [`Isa::current`] (or a given one); the window-by-window
//! [`max_pool2d_forward_scalar`] stays as its oracle.

use super::max_vec::{self, Geom};
use super::{check_len, per_plane, rename, Pool2dShape};
use crate::error::KernelError;
use crate::isa::{Isa, Tables};
use crate::simd::tables;

/// One plane of max pooling (`max_vec::plane`'s arguments and contract).
type PlaneFn = unsafe fn(&Geom, *const f32, *mut f32, *mut u32, *mut f32, *const u32, *const u32);

/// One ISA's entry points: values alone, values with the argmax; each for any window and
/// for the 3-wide stride-2 window (`[generic, 3x3/2]`).
struct MaxKernels {
    values: [PlaneFn; 2],
    with_arg: [PlaneFn; 2],
}

/// The table slot of a shape: 1 for a 3-wide window at horizontal stride 2.
fn slot(s: &Pool2dShape) -> usize {
    usize::from(s.kw == 3 && s.stride.1 == 2)
}

macro_rules! max_kernels {
    ($S:ty $(, $feat:literal)?) => {{
        $(#[target_feature(enable = $feat)])?
        unsafe fn run<const ARG: bool, const KW: usize, const SW: usize>(
            g: &Geom,
            x: *const f32,
            y: *mut f32,
            arg: *mut u32,
            ring: *mut f32,
            offs: *const u32,
            first: *const u32,
        ) {
            // SAFETY: the table is used only on a CPU that supports the ISA; pointers as
            // `max_vec::plane` requires (the caller's contract).
            unsafe { max_vec::plane::<$S, ARG, KW, SW>(g, x, y, arg, ring, offs, first) }
        }
        MaxKernels {
            values: [run::<false, 0, 0>, run::<false, 3, 2>],
            with_arg: [run::<true, 0, 0>, run::<true, 3, 2>],
        }
    }};
}

static TABLES: Tables<MaxKernels> = tables!(MaxKernels, max_kernels);

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
/// (both overwritten). With the path [`Isa::current`] picks; see
/// [`max_pool2d_forward_with`].
pub fn max_pool2d_forward(
    s: &Pool2dShape,
    x: &[f32],
    y: &mut [f32],
    argmax: &mut [u32],
) -> Result<(), KernelError> {
    max_pool2d_forward_with(Isa::current()?, s, x, y, argmax)
}

/// [`max_pool2d_forward`] on the path of `isa` (an error if the CPU lacks it). Same results,
/// bit for bit, as [`max_pool2d_forward_scalar`] (the window-by-window reference), computed
/// `L` output columns at a time on split rows (`max_vec.rs`).
pub fn max_pool2d_forward_with(
    isa: Isa,
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
    let f = TABLES.get(isa)?.with_arg[slot(s)];
    let (g, plane, hw) = (Geom::new(s), s.out_h() * s.out_w(), s.h * s.w);
    let (offs, first) = g.column_tables();
    let mut pairs: Vec<(&mut [f32], &mut [u32])> =
        y.chunks_mut(plane).zip(argmax.chunks_mut(plane)).collect();
    per_plane(&mut pairs, 1, s.input_len(), |p, pair| {
        let (yo, ao) = &mut pair[0];
        with_ring(g.ring_len(), |ring| {
            // SAFETY: the table's ISA was checked; x holds plane p's h * w floats, yo and ao
            // its oh * ow outputs, the ring and column tables have the lengths `Geom` states.
            unsafe {
                f(
                    &g,
                    x[p * hw..].as_ptr(),
                    yo.as_mut_ptr(),
                    ao.as_mut_ptr(),
                    ring.as_mut_ptr(),
                    offs.as_ptr(),
                    first.as_ptr(),
                )
            }
        });
    });
    Ok(())
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

thread_local! {
    /// Per-thread ring of split rows, kept between calls (a warm call allocates nothing), taken
    /// out while in use.
    static RING: std::cell::Cell<Vec<f32>> = const { std::cell::Cell::new(Vec::new()) };
}

fn with_ring(len: usize, f: impl FnOnce(&mut [f32])) {
    let mut buf = RING.take();
    if buf.len() < len {
        buf.resize(len, f32::NEG_INFINITY);
    }
    f(&mut buf[..len]);
    RING.set(buf);
}

/// `y = max over each window of x` without the argmax: the inference path (nothing to send a
/// gradient back through), with the path [`Isa::current`] picks. `x` is `[n, c, h, w]`, `y`
/// `[n, c, out_h, out_w]`.
pub fn max_pool2d_forward_values(
    s: &Pool2dShape,
    x: &[f32],
    y: &mut [f32],
) -> Result<(), KernelError> {
    max_pool2d_forward_values_with(Isa::current()?, s, x, y)
}

/// [`max_pool2d_forward_values`] on the path of `isa`: the values of
/// [`max_pool2d_forward_scalar`], bit for bit (NaN payloads and signed zeros included).
pub fn max_pool2d_forward_values_with(
    isa: Isa,
    s: &Pool2dShape,
    x: &[f32],
    y: &mut [f32],
) -> Result<(), KernelError> {
    const OP: &str = "max_pool2d_forward_values";
    s.validate().map_err(|e| rename(e, OP))?;
    check_len(OP, s, "x", x.len(), s.input_len())?;
    check_len(OP, s, "y", y.len(), s.output_len())?;
    if (s.kh, s.kw, s.padding) == (1, 1, (0, 0)) {
        subsample(s, x, y);
        return Ok(());
    }
    let f = TABLES.get(isa)?.values[slot(s)];
    let (g, hw) = (Geom::new(s), s.h * s.w);
    per_plane(y, s.out_h() * s.out_w(), s.input_len(), |p, yo| {
        with_ring(g.ring_len(), |ring| {
            // SAFETY: as in `max_pool2d_forward_with`; the values path reads no column table
            // and writes no `arg`.
            unsafe {
                f(
                    &g,
                    x[p * hw..].as_ptr(),
                    yo.as_mut_ptr(),
                    std::ptr::null_mut(),
                    ring.as_mut_ptr(),
                    std::ptr::null(),
                    std::ptr::null(),
                )
            }
        });
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

/// Input floats per parallel task of [`subsample`] (whole planes, at least one).
const SUBSAMPLE_TASK_FLOATS: usize = 1 << 16;

/// A 1x1 window without padding: the maximum of one value is that value, bits and NaN
/// payloads included, so the pool is a strided copy (the plan subsamples a strided 1x1
/// convolution's input with it). Runs of whole planes in parallel; every output is a copy,
/// so any split gives the same bits. `s`, `x` and `y` are validated by the caller.
fn subsample(s: &Pool2dShape, x: &[f32], y: &mut [f32]) {
    let (oh, ow, (sy, sx)) = (s.out_h(), s.out_w(), s.stride);
    let (hw, ohw) = (s.h * s.w, oh * ow);
    if ohw == 0 {
        return;
    }
    let per = (SUBSAMPLE_TASK_FLOATS / hw.max(1)).max(1);
    let run = |i: usize, yc: &mut [f32]| {
        for (q, yp) in yc.chunks_exact_mut(ohw).enumerate() {
            let xp = &x[(i * per + q) * hw..][..hw];
            for (oy, yr) in yp.chunks_exact_mut(ow).enumerate() {
                let xr = &xp[oy * sy * s.w..];
                for (ox, v) in yr.iter_mut().enumerate() {
                    *v = xr[ox * sx];
                }
            }
        }
    };
    if x.len() >= super::PAR_MIN {
        crate::parallel::for_each_chunk_mut(y, per * ohw, run);
    } else {
        run(0, y);
    }
}
