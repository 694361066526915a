//! Depthwise convolution (`groups == c_in`, `c_out = m * c_in` for a channel multiplier `m`):
//! every output plane is one input plane correlated with one small filter.
//!
//! Layout: the API's NCHW, vectorised **along the output width**, one plane at a time, with
//! no layout conversion of the tensors (see `docs/kernels/depthwise.md` for why this beats a
//! channels-last / channel-blocked layout when the API is NCHW). Per plane:
//!
//! ```text
//! input plane (h x w)          padded, phase-split scratch copy (stride sw = 2 shown)
//! +---------+                  row R = input row R - ph;  each row stored as sw phases:
//! | x x x x |   pack_plane     [ col 0, 2, 4, ... | col 1, 3, 5, ... ]   (padded columns)
//! | x x x x |  ----------->    so output column ox of tap (i, j) reads phase (j*dw) % sw at
//! +---------+                  index ox + (j*dw) / sw: contiguous vectors for any stride.
//!
//! for oy in rows (tiles of R rows)          -- kernel.rs, `sweep`
//!   for ox in 0..ow step L (tiles of V vectors, the last one overlapping)
//!     acc[R][V] = bias
//!     for each tap k = (i, j) (unrolled for 3x3 / 5x5): acc += w[k] * load(row + off[k] + ox)
//!     y[oy][ox..] = act(acc)                 -- activation in registers, one store
//! ```
//! The input gradient runs the same correlation on the padded `dy` planes with the taps of
//! each (row phase, column phase) of the stride (the transposed convolution written as a
//! gather: no scatter, no atomics), into a padded scratch `dx` that is then cropped. The weight
//! gradient dots each tap's shifted input rows with `dy`, images in order.
//!
//! Parallelism: output planes (forward), input planes (input gradient) and output channels
//! (weight gradient, images summed inside) are independent tasks; no reduction is split, so
//! results are bit-identical for any thread count. Scratch is per thread and reused.

mod blocked;
mod blocked_grad;
mod direct;
mod kernel;
pub mod nhwc;
mod plane;

use super::Conv2dShape;
use crate::activation::vector::{kind, VecAct};
use crate::activation::Activation;
use crate::error::KernelError;
use crate::isa::{Isa, Tables};
use crate::simd::{tables, Simd};
use std::cell::Cell;

/// Tap offsets of one filter, held inline up to 7 x 7 taps (every depthwise filter of the
/// model zoo) so that building a geometry on every call allocates nothing; larger filters
/// spill to the heap.
pub(crate) struct Offsets {
    inline: [usize; Offsets::INLINE],
    len: usize,
    heap: Vec<usize>,
}

impl Offsets {
    const INLINE: usize = 49;

    /// The offsets `f(0), f(1), ..., f(len - 1)`.
    pub(crate) fn from_fn(len: usize, f: impl Fn(usize) -> usize) -> Self {
        if len <= Self::INLINE {
            let mut inline = [0; Self::INLINE];
            inline[..len]
                .iter_mut()
                .enumerate()
                .for_each(|(i, o)| *o = f(i));
            Offsets {
                inline,
                len,
                heap: Vec::new(),
            }
        } else {
            Offsets {
                inline: [0; Self::INLINE],
                len,
                heap: (0..len).map(f).collect(),
            }
        }
    }
}

impl std::ops::Deref for Offsets {
    type Target = [usize];
    fn deref(&self) -> &[usize] {
        if self.len <= Self::INLINE {
            &self.inline[..self.len]
        } else {
            &self.heap
        }
    }
}

/// Geometry of the forward pass and the weight gradient: the padded, phase-split copy of an
/// input plane and the tap offsets into it.
///
/// The copy has `hp = (oh - 1) * sh + (kh - 1) * dh + 1` rows of `sw` phases of `wq` floats,
/// `wq = max(ow, L) + (kw - 1) * dw / sw`, so every tap of every output (and of the `L`-lane
/// vectors of planes narrower than `L`) reads inside it.
pub(crate) struct FwdGeom {
    pub h: usize,
    pub w: usize,
    pub oh: usize,
    pub ow: usize,
    pub kh: usize,
    pub kw: usize,
    pub sh: usize,
    pub sw: usize,
    pub ph: usize,
    pub pw: usize,
    pub dilated: bool,
    pub hp: usize,
    pub wq: usize,
    pub rs: usize,
    /// Offset of tap `i * kw + j` from an output's origin: `i*dh*rs + ((j*dw) % sw)*wq + (j*dw)/sw`.
    pub off: Offsets,
    /// The column part of the offsets, `((j*dw) % sw)*wq + (j*dw)/sw`, per kernel column.
    pub col_off: Offsets,
}

impl FwdGeom {
    pub(crate) fn new(s: &Conv2dShape, lanes: usize) -> Self {
        let (oh, ow) = (s.out_h(), s.out_w());
        let (sh, sw) = s.stride;
        let (dh, dw) = s.dilation;
        let hp = (oh - 1) * sh + (s.kh - 1) * dh + 1;
        let wq = ow.max(lanes) + (s.kw - 1) * dw / sw;
        let rs = sw * wq;
        let col_off = Offsets::from_fn(s.kw, |j| ((j * dw) % sw) * wq + (j * dw) / sw);
        let off = Offsets::from_fn(s.kh * s.kw, |t| (t / s.kw) * dh * rs + col_off[t % s.kw]);
        FwdGeom {
            h: s.h,
            w: s.w,
            oh,
            ow,
            kh: s.kh,
            kw: s.kw,
            sh,
            sw,
            ph: s.padding.0,
            pw: s.padding.1,
            dilated: s.dilation != (1, 1),
            hp,
            wq,
            rs,
            off,
            col_off,
        }
    }

    /// Floats of the packed plane.
    pub(crate) fn scratch_len(&self) -> usize {
        self.hp * self.rs
    }
}

/// The taps of one (row phase `a`, column phase `b`) of the input gradient.
pub(crate) struct Phase {
    pub a: usize,
    pub b: usize,
    /// Padded `dx` rows `a, a + sh, ...` below `hr`.
    pub rows: usize,
    /// Columns `b, b + sw, ...` below `pw + w`, counted in the phase.
    pub len: usize,
    /// Index of each tap's weight in the `m * kh * kw` filters of the input channel.
    pub taps: Vec<usize>,
    /// Offset of each tap into the padded `dy` planes.
    pub off: Vec<usize>,
}

/// Geometry of the input gradient. The `m` output-gradient planes of an input channel are
/// copied with `pt = (kh-1)*dh/sh` zero rows above and `pl = (kw-1)*dw/sw` zero columns left
/// (`dyh x dyw` each); padded `dx` row `R = q*sh + a`, column `C = t*sw + b` gathers
/// `w[mm, i, j] * dy[mm, q - i*dh/sh, t - j*dw/sw]` over the taps with `i*dh % sh == a` and
/// `j*dw % sw == b`, into an `hr x (sw * tq)` phase-split scratch that is cropped into `dx`.
pub(crate) struct BwdGeom {
    pub m: usize,
    pub h: usize,
    pub w: usize,
    pub oh: usize,
    pub ow: usize,
    pub sh: usize,
    pub sw: usize,
    pub ph: usize,
    pub pw: usize,
    pub hr: usize,
    pub tq: usize,
    pub rsx: usize,
    pub pt: usize,
    pub pl: usize,
    pub dyh: usize,
    pub dyw: usize,
    pub dy_plane: usize,
    pub phases: Vec<Phase>,
    /// `Some(k)` when the gradient is one stride-1 `k x k` correlation with the flipped
    /// filter (`k` in {3, 5}, stride 1, no dilation, multiplier 1): the stacked fast path.
    pub stacked_k: Option<usize>,
}

impl BwdGeom {
    pub(crate) fn new(s: &Conv2dShape, lanes: usize) -> Self {
        let m = s.c_out / s.c_in;
        let (oh, ow) = (s.out_h(), s.out_w());
        let (sh, sw) = s.stride;
        let (dh, dw) = s.dilation;
        let (ph, pw) = s.padding;
        let hr = ph + s.h;
        // Phase width: the columns of dx, and at least a vector past the left padding, so
        // narrow phases may be stored and read with whole vectors.
        let tq = (pw + s.w).div_ceil(sw).max(lanes + pw);
        let pt = (s.kh - 1) * dh / sh;
        let pl = (s.kw - 1) * dw / sw;
        let dyh = hr.div_ceil(sh) + pt;
        let dyw = tq.max(lanes) + pl;
        let dy_plane = dyh * dyw;
        let mut phases = Vec::new();
        for a in 0..sh.min(hr) {
            for b in 0..sw.min(pw + s.w) {
                let mut taps = Vec::new();
                let mut off = Vec::new();
                for mm in 0..m {
                    for i in (0..s.kh).filter(|i| i * dh % sh == a) {
                        for j in (0..s.kw).filter(|j| j * dw % sw == b) {
                            taps.push((mm * s.kh + i) * s.kw + j);
                            off.push(mm * dy_plane + (pt - i * dh / sh) * dyw + pl - j * dw / sw);
                        }
                    }
                }
                phases.push(Phase {
                    a,
                    b,
                    rows: (hr - a).div_ceil(sh),
                    len: (pw + s.w - b).div_ceil(sw),
                    taps,
                    off,
                });
            }
        }
        BwdGeom {
            m,
            h: s.h,
            w: s.w,
            oh,
            ow,
            sh,
            sw,
            ph,
            pw,
            hr,
            tq,
            rsx: sw * tq,
            pt,
            pl,
            dyh,
            dyw,
            dy_plane,
            phases,
            stacked_k: (s.kh == s.kw
                && matches!(s.kh, 3 | 5)
                && m == 1
                && s.stride == (1, 1)
                && s.dilation == (1, 1))
                .then_some(s.kh),
        }
    }

    /// Floats of scratch: padded dy planes, padded dx plane, gathered weights.
    pub(crate) fn scratch_len(&self, taps: usize) -> usize {
        self.m * self.dy_plane + self.hr * self.rsx + self.m * taps
    }
}

/// Arguments: geometry, input, offset of the plane in the input, filter, bias, activation,
/// output plane, scratch, `pad_ready`.
type FwdFn = unsafe fn(
    &FwdGeom,
    &[f32],
    usize,
    &[f32],
    f32,
    Activation,
    &mut [f32],
    &mut [f32],
    bool,
) -> bool;
type BlkFn = unsafe fn(
    &blocked::BlkGeom,
    &[*const f32; 16],
    &[f32],
    Option<&[f32]>,
    Activation,
    &mut [f32],
    &mut [f32],
);
type BwdInFn = unsafe fn(&BwdGeom, &[f32], &[f32], &mut [f32], &mut [f32]);
type BlkInFn = unsafe fn(
    &blocked_grad::BlkBwdGeom,
    (usize, usize),
    &[*const f32; 16],
    &[f32],
    &[*mut f32; 16],
    &mut [f32],
);
type BlkWFn = unsafe fn(
    &blocked::BlkGeom,
    usize,
    &[*const f32; 16],
    usize,
    *const f32,
    usize,
    &mut [f32],
    &mut [f32],
);
type BwdWFn = unsafe fn(&FwdGeom, usize, &[f32], usize, &[f32], usize, &mut [f32], &mut [f32]);

/// One ISA's entry points and vector width. The forward passes are compiled once per fused
/// activation of the four networks (identity, ReLU, ReLU6, hard-swish: the activation inlined
/// into the tile loop) plus once with the activation read at run time, indexed by [`slot`]:
/// a runtime `match` inside the tile loops spills registers.
struct Fns {
    lanes: usize,
    /// Whether the plane path's forward reads a plane of this geometry in place
    /// ([`direct::DirectPlane::applies`] on this ISA).
    reads_in_place: fn(&FwdGeom) -> bool,
    fwd: [FwdFn; 5],
    blk: [BlkFn; 5],
    bwd_in: BwdInFn,
    bwd_w: BwdWFn,
    blk_in: BlkInFn,
    blk_w: BlkWFn,
}

/// The index of `act`'s forward instantiation in [`Fns`] (and in the stem kernel's table):
/// the activations of the headline networks get their own, every other one runs through the
/// runtime [`Activation`].
pub(super) fn slot(act: Activation) -> usize {
    match act {
        Activation::Identity => 0,
        Activation::Relu => 1,
        Activation::Relu6 => 2,
        Activation::HardSwish => 3,
        _ => 4,
    }
}

/// The `#[target_feature]` entry points of one ISA, instantiating the generic plane and block
/// functions (their contracts, plus: the CPU supports the ISA, which the table guarantees).
macro_rules! dw_kernels {
    ($S:ty $(, $feat:literal)?) => {{
        #[allow(clippy::too_many_arguments)]
        $(#[target_feature(enable = $feat)])?
        unsafe fn fwd<A: VecAct>(
            g: &FwdGeom,
            x: &[f32],
            x0: usize,
            w: &[f32],
            bias: f32,
            act: Activation,
            y: &mut [f32],
            scratch: &mut [f32],
            pad_ready: bool,
        ) -> bool {
            let hw = g.h * g.w;
            // Whether the input holds k / 2 floats on both sides of the plane.
            let around = x0 >= g.kh / 2 && x0 + hw + g.kh / 2 <= x.len();
            // Large 3x3 / 5x5 planes with "same" padding at stride 1 or 2: the tiles read the
            // plane in place (`direct.rs`), in a function of their own (see `direct_fwd`).
            if direct::DirectPlane::<A>::applies::<$S>(g)
                || (around && direct::DirectPlane::<A>::applies_reading_around::<$S>(g))
            {
                let p = direct::DirectPlane {
                    // In bounds: x0 + hw <= x.len() (caller's contract).
                    x: x.as_ptr().wrapping_add(x0),
                    h: g.h,
                    w: g.w,
                    wt: w,
                    y: y.as_mut_ptr(),
                    oh: g.oh,
                    ow: g.ow,
                    bias,
                    act: A::of(act),
                };
                // SAFETY: x holds the h * w plane at x0 (and, where the form reads around
                // it, k / 2 floats on each side: `around`), y the oh * ow plane, w K * K
                // (forwarded contract); the form applies (checked above) at this stride.
                unsafe {
                    match (g.kh, g.sh) {
                        (3, 1) => direct_fwd::<A, 3, 1>(&p),
                        (5, 1) => direct_fwd::<A, 5, 1>(&p),
                        (3, _) => direct_fwd::<A, 3, 2>(&p),
                        _ => direct_fwd::<A, 5, 2>(&p),
                    }
                }
                return pad_ready;
            }
            let x = &x[x0..x0 + hw];
            // SAFETY: forwarded contract.
            unsafe { plane::forward::<$S, A>(g, x, w, bias, A::of(act), y, scratch, pad_ready) }
        }
        /// The in-place tiles of one kernel size and stride, compiled as a function of their
        /// own rather than inlined into `fwd` with every other plane path: there, changes to
        /// unrelated paths moved the register allocation of these tiles (144 x 56^2 3x3 s1,
        /// Zen 5, one thread: 86-91 us in one build, 104-122 in later ones with this code
        /// unchanged).
        $(#[target_feature(enable = $feat)])?
        #[inline(never)]
        unsafe fn direct_fwd<A: VecAct, const K: usize, const SH: usize>(
            p: &direct::DirectPlane<'_, A>,
        ) {
            // SAFETY: forwarded contract.
            unsafe { direct::forward::<$S, A, K, SH>(p) }
        }
        #[allow(clippy::too_many_arguments)]
        $(#[target_feature(enable = $feat)])?
        unsafe fn blk<A: VecAct>(
            g: &blocked::BlkGeom,
            x: &[*const f32; 16],
            w: &[f32],
            bias: Option<&[f32]>,
            act: Activation,
            y: &mut [f32],
            scratch: &mut [f32],
        ) {
            // SAFETY: forwarded contract.
            unsafe { blocked::forward_block::<$S, A>(g, x, w, bias, A::of(act), y, scratch) }
        }
        $(#[target_feature(enable = $feat)])?
        unsafe fn bwd_in(
            g: &BwdGeom,
            w: &[f32],
            dy: &[f32],
            dx: &mut [f32],
            scratch: &mut [f32],
        ) {
            // SAFETY: forwarded contract.
            unsafe { plane::backward_input::<$S>(g, w, dy, dx, scratch) }
        }
        #[allow(clippy::too_many_arguments)]
        $(#[target_feature(enable = $feat)])?
        unsafe fn bwd_w(
            g: &FwdGeom,
            n: usize,
            x: &[f32],
            xs: usize,
            dy: &[f32],
            dys: usize,
            dw: &mut [f32],
            scratch: &mut [f32],
        ) {
            // SAFETY: forwarded contract.
            unsafe { plane::backward_weight::<$S>(g, n, x, xs, dy, dys, dw, scratch) }
        }
        $(#[target_feature(enable = $feat)])?
        unsafe fn blk_in(
            g: &blocked_grad::BlkBwdGeom,
            stride: (usize, usize),
            dy: &[*const f32; 16],
            w: &[f32],
            dx: &[*mut f32; 16],
            scratch: &mut [f32],
        ) {
            // SAFETY: forwarded contract.
            unsafe { blocked_grad::backward_input_block::<$S>(g, stride, dy, w, dx, scratch) }
        }
        #[allow(clippy::too_many_arguments)]
        $(#[target_feature(enable = $feat)])?
        unsafe fn blk_w(
            g: &blocked::BlkGeom,
            n: usize,
            x: &[*const f32; 16],
            x_img: usize,
            dy: *const f32,
            dy_img: usize,
            dw: &mut [f32],
            scratch: &mut [f32],
        ) {
            // SAFETY: forwarded contract.
            unsafe {
                blocked_grad::backward_weight_block::<$S>(g, n, x, x_img, dy, dy_img, dw, scratch)
            }
        }
        Fns {
            lanes: <$S as Simd>::L,
            reads_in_place: direct::DirectPlane::<kind::Identity>::applies::<$S>,
            fwd: [
                fwd::<kind::Identity>,
                fwd::<kind::Relu>,
                fwd::<kind::Relu6>,
                fwd::<kind::HardSwish>,
                fwd::<Activation>,
            ],
            blk: [
                blk::<kind::Identity>,
                blk::<kind::Relu>,
                blk::<kind::Relu6>,
                blk::<kind::HardSwish>,
                blk::<Activation>,
            ],
            bwd_in,
            bwd_w,
            blk_in,
            blk_w,
        }
    }};
}

static TABLES: Tables<Fns> = tables!(Fns, dw_kernels);

/// The parameters that fix where [`plane::pack_plane`] puts zero padding: a scratch holding
/// a plane packed with the same key needs only the plane's data rewritten.
#[derive(Clone, Copy, PartialEq, Eq)]
struct PadKey([usize; 7]);

impl FwdGeom {
    fn pad_key(&self) -> PadKey {
        PadKey([self.h, self.w, self.ph, self.pw, self.sw, self.wq, self.hp])
    }
}

thread_local! {
    /// Per-thread scratch, kept between calls so a warm convolution allocates no planes, and
    /// the key of the padded plane it holds, if any. Taken out while in use, so a nested call
    /// on the same thread gets its own.
    static SCRATCH: Cell<(Vec<f32>, Option<PadKey>)> = const { Cell::new((Vec::new(), None)) };
}

fn with_scratch<R>(len: usize, f: impl FnOnce(&mut [f32]) -> R) -> R {
    with_padded_scratch(len, None, |s, _| (f(s), false))
}

/// Lends the per-thread scratch to `f(scratch, holds)`, where `holds` says whether it holds
/// a plane packed under `key` (its zero padding in place); `f` returns its result and
/// whether the scratch holds such a plane when it returns.
fn with_padded_scratch<R>(
    len: usize,
    key: Option<PadKey>,
    f: impl FnOnce(&mut [f32], bool) -> (R, bool),
) -> R {
    let (mut buf, held) = SCRATCH.take();
    let mut holds = key.is_some() && held == key;
    // The channel-blocked scratch (no key) starts on a cache line, so that each of its
    // `L`-float positions is one line on AVX-512 (measured in `docs/kernels/depthwise.md`:
    // small-plane forwards 12-25% faster on Zen 5). The padded planes stay where the
    // allocator puts them: their rows are not multiples of 16 floats in general, and
    // 240 x 28^2 5x5 (rows of 32) measured the same at 0, 4 and 12 floats from a line.
    let (start, grew) = if key.is_none() {
        crate::memory::line_aligned(&mut buf, len)
    } else {
        let grew = buf.len() < len;
        if grew {
            buf.resize(len, 0.0);
        }
        (0, grew)
    };
    if grew {
        holds = false;
    }
    let (r, holds_after) = f(&mut buf[start..start + len], holds);
    SCRATCH.set((buf, if holds_after { key } else { None }));
    r
}

/// Runs `f(index, chunk)` over the `chunk`-sized pieces of `out`, in parallel when the pool
/// has several threads and there is enough work.
fn for_each_chunk<F>(out: &mut [f32], chunk: usize, work: usize, f: F)
where
    F: Fn(usize, &mut [f32]) + Sync,
{
    if chunk == 0 {
        return;
    }
    if work >= 1 << 15 && rayon::current_num_threads() > 1 {
        crate::parallel::for_each_chunk_mut(out, chunk, f);
    } else {
        out.chunks_mut(chunk).enumerate().for_each(|(i, c)| f(i, c));
    }
}

/// Output floats per task: half of the host's L1d (`crate::host`; the other half holds the
/// task's input rows and packed copy), within [2 Ki, 16 Ki] floats. Small planes are grouped
/// up to it so that the per-task cost (closure, scratch hand-over) is amortised; large planes
/// are one task each. The grouping changes no result (planes are computed independently).
fn task_floats() -> usize {
    let l1d = crate::host::Host::get().caches.l1d.size;
    (l1d / 2 / std::mem::size_of::<f32>()).clamp(2048, 16384)
}

/// Planes per task (see [`task_floats`]).
fn batch(plane: usize) -> usize {
    (task_floats() / plane.max(1)).clamp(1, 64)
}

/// The depthwise forward pass (shape and lengths already checked by the caller).
pub(crate) fn forward(
    isa: Isa,
    s: &Conv2dShape,
    x: &[f32],
    w: &[f32],
    bias: Option<&[f32]>,
    act: Activation,
    y: &mut [f32],
) -> Result<(), KernelError> {
    let fns = TABLES.get(isa)?;
    // Strided planes up to `SMALL_OW_STRIDED` wide go channel-blocked, unless the plane path
    // reads them in place (`direct.rs`: AVX-512, output rows of a vector or more), which is
    // faster there (16 x 56^2 stride 2, one thread, Xeon family 6 model 207: 3x3 14.3 -> 12.4
    // us, 5x5 23.2 -> 20.3 us).
    let in_place = || s.stride != (1, 1) && (fns.reads_in_place)(&FwdGeom::new(s, fns.lanes));
    if blocked::BlkGeom::applies_forward(s, fns.lanes) && !in_place() {
        return forward_blocked(fns, s, x, w, bias, act, y);
    }
    forward_planes(fns, s, 0, x, w, bias, act, y);
    Ok(())
}

/// The channel-blocked forward pass for small planes (`blocked.rs`): per image, blocks of
/// `L` consecutive output channels, then the remaining `c_out % L` channels plane by plane.
/// Which channels go which way depends only on the shape, so results do not depend on the
/// thread count.
fn forward_blocked(
    fns: &Fns,
    s: &Conv2dShape,
    x: &[f32],
    w: &[f32],
    bias: Option<&[f32]>,
    act: Activation,
    y: &mut [f32],
) -> Result<(), KernelError> {
    let l = fns.lanes;
    let g = blocked::BlkGeom::new(s);
    let (m, hw, taps) = (s.c_out / s.c_in, s.h * s.w, s.kh * s.kw);
    let oplane = g.oh * g.ow;
    let nb = s.c_out / l;
    let per_task = (task_floats() / (l * oplane)).clamp(1, 64);
    let work = nb * l * oplane * taps;
    for (img, yi) in y.chunks_exact_mut(s.c_out * oplane).enumerate() {
        let (yb, yt) = yi.split_at_mut(nb * l * oplane);
        for_each_chunk(yb, l * oplane * per_task, work, |t, outs| {
            with_scratch(g.scratch_len(l), |scr| {
                for (k, out) in outs.chunks_exact_mut(l * oplane).enumerate() {
                    let oc0 = (t * per_task + k) * l;
                    let mut xp = [x.as_ptr(); 16];
                    for (c, p) in xp.iter_mut().enumerate().take(l) {
                        *p = x[(img * s.c_in + (oc0 + c) / m) * hw..].as_ptr();
                    }
                    let wp = &w[oc0 * taps..(oc0 + l) * taps];
                    let b = bias.map(|b| &b[oc0..oc0 + l]);
                    // SAFETY: `isa` was checked by the caller; `applies` held; each xp[c]
                    // starts an input plane of hw floats; scratch sized by BlkGeom.
                    unsafe { (fns.blk[slot(act)])(&g, &xp, wp, b, act, out, scr) }
                }
            });
        });
        if !yt.is_empty() {
            let xi = &x[img * s.c_in * hw..(img + 1) * s.c_in * hw];
            forward_planes(fns, s, nb * l, xi, w, bias, act, yt);
        }
    }
    Ok(())
}

/// The plane-by-plane forward pass (`plane.rs`, or `direct.rs` for planes read in place) of
/// the output planes in `y`, which start at plane `p0` (image-major, `n * c_out` planes; `x`
/// starts at the image of plane `p0`).
#[allow(clippy::too_many_arguments)]
fn forward_planes(
    fns: &Fns,
    s: &Conv2dShape,
    p0: usize,
    x: &[f32],
    w: &[f32],
    bias: Option<&[f32]>,
    act: Activation,
    y: &mut [f32],
) {
    let g = FwdGeom::new(s, fns.lanes);
    let (m, hw, taps) = (s.c_out / s.c_in, s.h * s.w, s.kh * s.kw);
    let oplane = g.oh * g.ow;
    let work = y.len() * taps;
    let batch = batch(oplane);
    let key = g.pad_key();
    for_each_chunk(y, oplane * batch, work, |t, outs| {
        with_padded_scratch(g.scratch_len(), Some(key), |scr, mut holds| {
            for (k, out) in outs.chunks_exact_mut(oplane).enumerate() {
                let p = p0 + t * batch + k;
                let (img, oc) = (p / s.c_out - p0 / s.c_out, p % s.c_out);
                let ic = oc / m;
                let x0 = (img * s.c_in + ic) * hw;
                let wp = &w[oc * taps..(oc + 1) * taps];
                let b = bias.map_or(0.0, |b| b[oc]);
                // SAFETY: `isa` was checked by the caller; x holds the plane at x0, and the
                // planes and scratch have the lengths the entry point requires (FwdGeom
                // sizes the scratch).
                holds = unsafe { (fns.fwd[slot(act)])(&g, x, x0, wp, b, act, out, scr, holds) };
            }
            ((), holds)
        });
    });
}

/// The depthwise input gradient (overwrites `dx`).
pub(crate) fn backward_input(
    isa: Isa,
    s: &Conv2dShape,
    w: &[f32],
    dy: &[f32],
    dx: &mut [f32],
) -> Result<(), KernelError> {
    let fns = TABLES.get(isa)?;
    if s.c_out == s.c_in && blocked::BlkGeom::applies(s, fns.lanes) {
        backward_input_blocked(fns, s, w, dy, dx);
    } else {
        backward_input_planes(fns, s, 0, w, dy, dx);
    }
    Ok(())
}

/// The channel-blocked input gradient for small planes (`blocked_grad.rs`, multiplier 1):
/// per image, blocks of `L` channels, then the remaining `c_in % L` planes one by one (a
/// split that depends only on the shape).
fn backward_input_blocked(fns: &Fns, s: &Conv2dShape, w: &[f32], dy: &[f32], dx: &mut [f32]) {
    let l = fns.lanes;
    let g = blocked_grad::BlkBwdGeom::new(s);
    let (hw, taps) = (s.h * s.w, s.kh * s.kw);
    let oplane = g.oh * g.ow;
    let nb = s.c_in / l;
    let per_task = (task_floats() / (l * hw)).clamp(1, 64);
    let work = nb * l * oplane * taps;
    for (img, xi) in dx.chunks_exact_mut(s.c_in * hw).enumerate() {
        let (xb, xt) = xi.split_at_mut(nb * l * hw);
        for_each_chunk(xb, l * hw * per_task, work, |t, outs| {
            with_scratch(g.scratch_len(l), |scr| {
                for (k, out) in outs.chunks_exact_mut(l * hw).enumerate() {
                    let c0 = (t * per_task + k) * l;
                    let mut dyp = [dy.as_ptr(); 16];
                    let mut dxp = [out.as_mut_ptr(); 16];
                    for c in 0..l {
                        dyp[c] = dy[(img * s.c_out + c0 + c) * oplane..].as_ptr();
                        dxp[c] = out[c * hw..].as_mut_ptr();
                    }
                    let wp = &w[c0 * taps..(c0 + l) * taps];
                    // SAFETY: `isa` was checked by the caller; `applies` held and the
                    // multiplier is 1; each dyp[c] starts a dy plane of oplane floats, each
                    // dxp[c] a dx plane of hw floats; scratch sized by BlkBwdGeom.
                    unsafe { (fns.blk_in)(&g, s.stride, &dyp, wp, &dxp, scr) }
                }
            });
        });
        if !xt.is_empty() {
            backward_input_planes(fns, s, img * s.c_in + nb * l, w, dy, xt);
        }
    }
}

/// The plane-by-plane input gradient (`plane.rs`) of the input planes in `dx`, which start at
/// plane `p0` (image-major, `n * c_in` planes; `dy` and `w` whole).
fn backward_input_planes(
    fns: &Fns,
    s: &Conv2dShape,
    p0: usize,
    w: &[f32],
    dy: &[f32],
    dx: &mut [f32],
) {
    let g = BwdGeom::new(s, fns.lanes);
    let (m, hw, taps) = (g.m, s.h * s.w, s.kh * s.kw);
    let oplane = g.oh * g.ow;
    let work = dx.len() / hw.max(1) * m * oplane * taps;
    let batch = batch(hw);
    for_each_chunk(dx, hw * batch, work, |t, outs| {
        with_scratch(g.scratch_len(taps), |scr| {
            for (k, out) in outs.chunks_exact_mut(hw).enumerate() {
                let p = p0 + t * batch + k;
                let (img, ic) = (p / s.c_in, p % s.c_in);
                let oc0 = img * s.c_out + ic * m;
                let dyp = &dy[oc0 * oplane..(oc0 + m) * oplane];
                let wp = &w[ic * m * taps..(ic + 1) * m * taps];
                // SAFETY: `isa` was checked; lengths as the entry point requires.
                unsafe { (fns.bwd_in)(&g, wp, dyp, out, scr) }
            }
        });
    });
}

/// The depthwise weight gradient (overwrites `dw`).
pub(crate) fn backward_weight(
    isa: Isa,
    s: &Conv2dShape,
    x: &[f32],
    dy: &[f32],
    dw: &mut [f32],
) -> Result<(), KernelError> {
    let fns = TABLES.get(isa)?;
    if s.n == 0 {
        dw.fill(0.0);
        return Ok(());
    }
    let l = fns.lanes;
    let (m, hw, taps) = (s.c_out / s.c_in, s.h * s.w, s.kh * s.kw);
    let (oh, ow) = (s.out_h(), s.out_w());
    let oplane = oh * ow;
    let work = s.output_len() * taps;
    // Channel-blocked for small planes: blocks of L output channels, then the rest one by one
    // (a split that depends only on the shape).
    let nb = if blocked::BlkGeom::applies(s, l) {
        s.c_out / l
    } else {
        0
    };
    let (dwb, dwt) = dw.split_at_mut(nb * l * taps);
    if nb > 0 {
        let g = blocked::BlkGeom::new(s);
        for_each_chunk(dwb, l * taps, work, |b, out| {
            let oc0 = b * l;
            let mut xp = [x.as_ptr(); 16];
            for (c, p) in xp.iter_mut().enumerate().take(l) {
                *p = x[((oc0 + c) / m) * hw..].as_ptr();
            }
            let dyp = dy[oc0 * oplane..].as_ptr();
            with_scratch(blocked_grad::wgrad_scratch_len(&g, l), |scr| {
                // SAFETY: `isa` was checked; `applies` held; x holds n images of c_in * hw
                // floats and dy n images of c_out * oplane, so every image's planes of this
                // block exist; scratch as required.
                unsafe { (fns.blk_w)(&g, s.n, &xp, s.c_in * hw, dyp, s.c_out * oplane, out, scr) }
            });
        });
    }
    let g = FwdGeom::new(s, l);
    let oc_base = nb * l;
    for_each_chunk(dwt, taps, work, |k, out| {
        let oc = oc_base + k;
        let ic = oc / m;
        let xp = &x[ic * hw..];
        let dyp = &dy[oc * oplane..];
        with_scratch(g.scratch_len() + 2 * taps * l, |scr| {
            // SAFETY: `isa` was checked; x holds n planes c_in * hw apart from ic, dy n
            // planes c_out * oplane apart from oc; scratch as required.
            unsafe { (fns.bwd_w)(&g, s.n, xp, s.c_in * hw, dyp, s.c_out * oplane, out, scr) }
        });
    });
    Ok(())
}
