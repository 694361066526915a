//! Direct convolution for few input channels: the stems of the vision networks (3 -> 64 7x7
//! stride 2 in ResNet, 3 -> 32 / 3 -> 16 3x3 stride 2 in MobileNet V2 / V3). With `c_in <= 4`
//! the reduction (`c_in * kh * kw` = 27 to 147) is far shorter than the output plane (12 544
//! pixels), and im2col would write (and the GEMM re-read and pack) a `K x oh*ow` matrix 49
//! times the input's size. Here the input rows are split into their stride phases once and an
//! outer-product register tile reads them in place (the direct convolution of Zhang,
//! Franchetti & Low, "High Performance Zero-Memory Overhead Direct Convolutions", ICML 2018;
//! the XNNPACK / oneDNN "first layer" kernels do the same with channels-last inputs).
//!
//! ```text
//! weights packed once:  wp[block b][tap t = (c, i, j)][m < MR]  = w[b*MR + m][c][i][j] (0 past c_out)
//! input, per task of output rows: every needed padded row (zero rows and columns for the padding)
//!   split into sw phases:  ph[c][row][q][k] = padded[c][row][k*sw + q]
//! tile (MR = 4 channels x NV vectors of L output columns ox0..):
//!   for t = (c, i, j):  x[v] = ph[c][oy*sh + i][j % sw][ox0 + j/sw + v*L ..]   NV unit-stride loads
//!                       acc[m][v] += wp[b][t][m] * x[v]                        MR broadcasts, MR*NV FMAs
//!   y[b*MR + m][oy][ox0 + v*L ..] = act(scale[m] * acc[m][v] + bias[m])       in registers, one store
//! ```
//! `NV` is 6 on AVX-512 (24 accumulators, 10 loads per 24 FMAs), 2 on AVX2; the last chunk of
//! a row takes a tile with fewer vectors. Every output is one FMA chain over the taps in
//! `(c, i, j)` order, whatever the task split: results are bit-identical for any thread count.

use super::dense::ChannelEpilogue;
use super::Conv2dShape;
use crate::activation::vector::{kind, VecAct};
use crate::activation::Activation;
use crate::isa::{Isa, Tables};
use crate::pool::split_row;
use crate::simd::{tables, Simd};
use std::cell::Cell;

/// Output channels per register tile (the packed weights' block).
pub(crate) const MR: usize = 4;
/// The widest vector of any ISA.
const MAX_L: usize = 16;
/// Output rows per task: with a 7x7 stride-2 filter a task splits 13 input rows for 4 output
/// rows (8 new), a small price for enough tasks to balance two or more threads.
const ROWS_PER_TASK: usize = 4;

/// Whether a dense convolution runs here: [`applies_to_weight`] and no dilation.
pub(crate) fn applies(s: &Conv2dShape) -> bool {
    s.dilation == (1, 1) && applies_to_weight([s.c_out, s.c_in_per_group(), s.kh, s.kw], s.groups)
}

/// Whether a weight `[c_out, c_in / groups, kh, kw]` qualifies: one group, at most 4 input
/// channels, a filter of at least 2 taps (a 1x1 conv with few input channels is not worth
/// it), a reduction short enough that a block's packed weights stay in L1, rows of at most 16
/// taps.
pub(crate) fn applies_to_weight(shape: [usize; 4], groups: usize) -> bool {
    let [_, cig, kh, kw] = shape;
    groups == 1 && cig <= 4 && kh * kw >= 2 && cig * kh * kw <= 256 && kw <= 16
}

/// Packs `w` (`[c_out, c_in, kh, kw]`) into `[ceil(c_out / MR)][c_in * kh * kw][MR]`, zero
/// past `c_out`.
pub(crate) fn pack_weights(w: &[f32], c_out: usize, kdim: usize, out: &mut Vec<f32>) {
    let blocks = c_out.div_ceil(MR);
    out.clear();
    out.resize(blocks * kdim * MR, 0.0);
    for (co, filt) in w.chunks_exact(kdim).enumerate().take(c_out) {
        let (b, m) = (co / MR, co % MR);
        for (t, &v) in filt.iter().enumerate() {
            out[(b * kdim + t) * MR + m] = v;
        }
    }
}

/// The geometry the tiles see.
#[derive(Clone, Copy, Debug)]
struct Geom {
    c_in: usize,
    h: usize,
    w: usize,
    sh: usize,
    sw: usize,
    ph: usize,
    pw: usize,
    ow: usize,
    /// Floats per phase of a split row: every stored column `(pw + w - 1) / sw` and every
    /// vector read `ow - 1 + (kw - 1) / sw + L - 1` is below it.
    plen: usize,
    /// Split rows per channel in the task's buffer.
    rows: usize,
    /// Weights per output channel, `c_in * kh * kw`.
    kdim: usize,
    /// `toff[t]`: where tap `t = (c, i, j)` of an output row starts in the task's split rows,
    /// `(c * rows + i) * sw * plen + (j % sw) * plen + j / sw` (for the task's first output
    /// row; output row `r` adds `r * sh * sw * plen`).
    toff: [u32; 256],
}

/// One task: output rows `oy0 .. oy1` of one image, every channel.
///
/// # Safety
/// The CPU supports the ISA; `x` holds the image's `c_in * h * w` floats; `buf` is writable
/// for `c_in * rows * sw * plen` floats; `wp` holds the packed weights
/// (`ceil(c_out / MR) * kdim * MR` floats); `scale` and `bias` are null or `c_out` floats; `y`
/// is the image's `c_out * oh * ow` output, of which rows `oy0 .. oy1 <= oy0 + ROWS_PER_TASK`
/// of every channel are written.
type TaskFn = unsafe fn(
    g: &Geom,
    x: *const f32,
    oy0: usize,
    oy1: usize,
    buf: *mut f32,
    wp: *const f32,
    c_out: usize,
    scale: *const f32,
    bias: *const f32,
    act: Activation,
    y: *mut f32,
    ohw: usize,
);

/// One ISA's task functions, per activation as in the depthwise table (identity, ReLU, ReLU6,
/// hard-swish, then the runtime `Activation`).
struct StemKernels {
    task: [TaskFn; 5],
}

/// The `MR x NV` tile of block `b` at output columns `ox0 ..`; `n` = valid columns (the last
/// vector may be partial).
///
/// # Safety
/// As [`row`], with `b * MR < c_out` and `ox0 + n <= ow`, `n > (NV - 1) * L`.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
unsafe fn tile<S: Simd, A: VecAct, const NV: usize>(
    g: &Geom,
    src: *const f32,
    wb: *const f32,
    co0: usize,
    c_out: usize,
    scale: *const f32,
    bias: *const f32,
    act: A,
    y: *mut f32,
    ohw: usize,
    n: usize,
) {
    let l = S::L;
    // SAFETY: the loads read split rows below `rows` and phase slots below `plen` (see
    // `Geom::plen`); the weights read `kdim * MR` floats of the block; the stores write the
    // first `n` columns of the block's valid channels.
    unsafe {
        let mut acc = [[S::zero(); NV]; MR];
        for (t, &off) in g.toff[..g.kdim].iter().enumerate() {
            let p = src.add(off as usize);
            let wt = wb.add(t * MR);
            let mut x = [S::zero(); NV];
            for (v, xv) in x.iter_mut().enumerate() {
                *xv = S::load(p.add(v * l));
            }
            for (m, am) in acc.iter_mut().enumerate() {
                let w = S::broadcast(wt.add(m));
                for (a, &xv) in am.iter_mut().zip(&x) {
                    *a = S::fma(w, xv, *a);
                }
            }
        }
        for (m, am) in acc.iter().enumerate() {
            let co = co0 + m;
            if co >= c_out {
                break;
            }
            let sc = (!scale.is_null()).then(|| S::splat(*scale.add(co)));
            let bi = (!bias.is_null()).then(|| S::splat(*bias.add(co)));
            let out = y.add(co * ohw);
            for (v, &a) in am.iter().enumerate() {
                let mut r = a;
                if let Some(sc) = sc {
                    r = S::mul(r, sc);
                }
                if let Some(bi) = bi {
                    r = S::add(r, bi);
                }
                let r = act.apply::<S>(r);
                let left = n - v * l;
                if left >= l {
                    S::store(out.add(v * l), r);
                } else {
                    S::store_first(out.add(v * l), r, left);
                }
            }
        }
    }
}

/// See [`TaskFn`]: split the task's input rows, then its output rows.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
unsafe fn task<S: Simd, A: VecAct>(
    g: &Geom,
    x: *const f32,
    oy0: usize,
    oy1: usize,
    buf: *mut f32,
    wp: *const f32,
    c_out: usize,
    scale: *const f32,
    bias: *const f32,
    act: Activation,
    y: *mut f32,
    ohw: usize,
) {
    let (unit, hw) = (g.sw * g.plen, g.h * g.w);
    // SAFETY: the buffer holds c_in * rows split rows of `unit` floats; padded row
    // oy0 * sh + r is input row oy0 * sh + r - ph, read only when inside the image.
    unsafe {
        for i in 0..g.c_in * g.rows * unit {
            *buf.add(i) = 0.0;
        }
        for c in 0..g.c_in {
            for r in 0..g.rows {
                let ih = (oy0 * g.sh + r) as isize - g.ph as isize;
                if ih >= 0 && (ih as usize) < g.h {
                    let src = x.add(c * hw + ih as usize * g.w);
                    let dst = buf.add((c * g.rows + r) * unit);
                    split_row::<S>(src, g.w, g.sw, g.pw, g.plen, dst);
                }
            }
        }
        for oy in oy0..oy1 {
            let b = buf.add((oy - oy0) * g.sh * unit);
            row::<S, A>(g, b, wp, c_out, scale, bias, act, y.add(oy * g.ow), ohw);
        }
    }
}

/// One output row of every channel block: `buf` is the split rows shifted to this output row,
/// `y + co * ohw` output channel `co`'s row.
///
/// # Safety
/// As [`TaskFn`].
#[inline(always)]
#[allow(clippy::too_many_arguments)]
unsafe fn row<S: Simd, A: VecAct>(
    g: &Geom,
    buf: *const f32,
    wp: *const f32,
    c_out: usize,
    scale: *const f32,
    bias: *const f32,
    act: Activation,
    y: *mut f32,
    ohw: usize,
) {
    let (l, ow) = (S::L, g.ow);
    let nv_max = if l >= 16 {
        6
    } else if l >= 8 {
        2
    } else {
        4
    };
    let a = A::of(act);
    let nvec = ow.div_ceil(l);
    // SAFETY: forwarded contract; each tile covers vectors v0 .. v0 + nv of the row.
    unsafe {
        for b in 0..c_out.div_ceil(MR) {
            let wb = wp.add(b * g.kdim * MR);
            let mut v0 = 0;
            while v0 < nvec {
                let nv = (nvec - v0).min(nv_max);
                let (ox0, n) = (v0 * l, (ow - v0 * l).min(nv * l));
                let (src, yo) = (buf.add(ox0), y.add(ox0));
                let args = (g, src, wb, b * MR, c_out, scale, bias, a, yo, ohw, n);
                match nv {
                    1 => call::<S, A, 1>(args),
                    2 => call::<S, A, 2>(args),
                    3 => call::<S, A, 3>(args),
                    4 => call::<S, A, 4>(args),
                    5 => call::<S, A, 5>(args),
                    _ => call::<S, A, 6>(args),
                }
                v0 += nv;
            }
        }
    }
}

type TileArgs<'a, A> = (
    &'a Geom,
    *const f32,
    *const f32,
    usize,
    usize,
    *const f32,
    *const f32,
    A,
    *mut f32,
    usize,
    usize,
);

/// [`tile`] on a tuple of its arguments.
///
/// # Safety
/// As [`tile`].
#[inline(always)]
unsafe fn call<S: Simd, A: VecAct, const NV: usize>(t: TileArgs<'_, A>) {
    let (g, src, wb, co0, c_out, scale, bias, a, y, ohw, n) = t;
    // SAFETY: forwarded contract.
    unsafe { tile::<S, A, NV>(g, src, wb, co0, c_out, scale, bias, a, y, ohw, n) }
}

macro_rules! stem_kernels {
    ($S:ty $(, $feat:literal)?) => {{
        $(#[target_feature(enable = $feat)])?
        #[allow(clippy::too_many_arguments)]
        unsafe fn run<A: VecAct>(
            g: &Geom,
            x: *const f32,
            oy0: usize,
            oy1: usize,
            buf: *mut f32,
            wp: *const f32,
            c_out: usize,
            scale: *const f32,
            bias: *const f32,
            act: Activation,
            y: *mut f32,
            ohw: usize,
        ) {
            // SAFETY: the table is used only on a CPU that supports the ISA; the pointers as
            // `TaskFn` requires (the caller's contract).
            unsafe { task::<$S, A>(g, x, oy0, oy1, buf, wp, c_out, scale, bias, act, y, ohw) }
        }
        StemKernels {
            task: [
                run::<kind::Identity>,
                run::<kind::Relu>,
                run::<kind::Relu6>,
                run::<kind::HardSwish>,
                run::<Activation>,
            ],
        }
    }};
}

static TABLES: Tables<StemKernels> = tables!(StemKernels, stem_kernels);

thread_local! {
    /// Per-thread split rows of a task, kept between calls; taken out while in use.
    static SPLIT: Cell<Vec<f32>> = const { Cell::new(Vec::new()) };
    /// Per-thread packed weights of a raw-weight call.
    static PACKED: Cell<Vec<f32>> = const { Cell::new(Vec::new()) };
}

/// Runs `f` with the raw `[c_out, c_in, kh, kw]` weights packed by [`pack_weights`] (per
/// thread storage, reused: a warm call allocates nothing).
pub(crate) fn with_packed<R>(s: &Conv2dShape, w: &[f32], f: impl FnOnce(&[f32]) -> R) -> R {
    let mut buf = PACKED.take();
    pack_weights(w, s.c_out, s.c_in * s.kh * s.kw, &mut buf);
    let r = f(&buf);
    PACKED.set(buf);
    r
}

/// `y = act(scale * conv(x, w) + bias)` for a shape [`applies`] accepts (checked by the
/// caller, as the lengths), with `wp` from [`pack_weights`].
pub(crate) fn forward(
    isa: Isa,
    s: &Conv2dShape,
    x: &[f32],
    wp: &[f32],
    epi: ChannelEpilogue<'_>,
    y: &mut [f32],
) -> Result<(), crate::error::KernelError> {
    let f = TABLES.get(isa)?.task[super::depthwise::slot(epi.act)];
    let (oh, ow, hw) = (s.out_h(), s.out_w(), s.h * s.w);
    let (sh, sw) = s.stride;
    let plen = ((s.padding.1 + s.w - 1) / sw + 1).max(ow + (s.kw - 1) / sw + MAX_L);
    let rows = (ROWS_PER_TASK - 1) * sh + s.kh;
    let kdim = s.c_in * s.kh * s.kw;
    let mut toff = [0u32; 256];
    for (t, o) in toff.iter_mut().enumerate().take(kdim) {
        let (c, i, j) = (t / (s.kh * s.kw), t / s.kw % s.kh, t % s.kw);
        *o = ((c * rows + i) * sw * plen + (j % sw) * plen + j / sw) as u32;
    }
    let g = Geom {
        c_in: s.c_in,
        h: s.h,
        w: s.w,
        sh,
        sw,
        ph: s.padding.0,
        pw: s.padding.1,
        ow,
        plen,
        rows,
        kdim,
        toff,
    };
    let (ohw, img_out) = (oh * ow, s.c_out * oh * ow);
    let tasks_per_img = oh.div_ceil(ROWS_PER_TASK);
    // Tasks write disjoint rows of `y`; the raw address crosses threads as an integer.
    let y_addr = y.as_mut_ptr() as usize;
    let task = |t: usize| {
        let (img, oy0) = (t / tasks_per_img, (t % tasks_per_img) * ROWS_PER_TASK);
        let oy1 = (oy0 + ROWS_PER_TASK).min(oh);
        let scale = epi.scale.map_or(std::ptr::null(), |v| v.as_ptr());
        let bias = epi.bias.map_or(std::ptr::null(), |v| v.as_ptr());
        let mut buf = SPLIT.take();
        let len = s.c_in * rows * sw * plen;
        if buf.len() < len {
            buf.resize(len, 0.0);
        }
        let yi = (y_addr as *mut f32).wrapping_add(img * img_out);
        // SAFETY: the ISA was checked by `TABLES.get`; x holds image img's c_in * h * w
        // floats; buf holds `len` floats; `wp` holds ceil(c_out / MR) * kdim * MR packed
        // weights; scale / bias are null or c_out long (checked by the caller); rows
        // oy0 .. oy1 of image img are written by this task only.
        unsafe {
            f(
                &g,
                x[img * s.c_in * hw..].as_ptr(),
                oy0,
                oy1,
                buf.as_mut_ptr(),
                wp.as_ptr(),
                s.c_out,
                scale,
                bias,
                epi.act,
                yi,
                ohw,
            )
        };
        SPLIT.set(buf);
    };
    crate::parallel::for_each_task(s.n * tasks_per_img, task);
    Ok(())
}
