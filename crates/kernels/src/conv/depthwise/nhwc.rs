//! Depthwise convolution on channels-last (NHWC) feature maps, for the inference plan's small
//! planes: vectorised **across channels**, every FMA on full lanes, no layout change and no
//! padded copy (the layout XNNPACK's `f32-dwconv` and oneDNN's `nhwc` / `nChw16c` depthwise
//! kernels run on).
//!
//! Input `[n, h, w, c]`, output `[n, oh, ow, c]`, weights packed once as `[kh * kw][c]`
//! ([`pack_weights`]) so a tap's `L` channels are one vector load. Per task (one output row of
//! one image, a range of channel blocks):
//!
//! ```text
//! for each block of L channels c0..c0+L (the last one overlapping the previous if c % L != 0)
//!   for each tile of N output pixels of the row (N = 7 on the MobileNet planes 7, 14, 28, 56)
//!     acc[0..N] = bias[c0..]
//!     for each tap (i, j) in row-major order whose input row lies inside the image
//!       wv = w[i * kw + j][c0..]                               one load
//!       acc[p] += wv * x[iy][ox0 + p) * sw + j * dw - pw][c0..]   N FMAs (memory operands)
//!     y[oy][ox0 + p][c0..] = act(acc[p])
//! ```
//! A tile whose taps all fall inside the row runs without checks; a border tile skips the
//! (pixel, tap column) pairs that fall in the padding (the zero padding adds nothing). With
//! `N = 7` a tap costs 8 loads for 7 FMAs, inside the one-load-per-FMA budget of a core
//! whose L1 serves one 64-byte load and whose FMA units retire one 16-lane FMA per cycle
//! (Zen 4).
//!
//! Results do not depend on the thread count or the task split: each output is summed by
//! one task, bias first, then the taps in row-major order.

// Loops over const-sized arrays index several arrays at once and must unroll.
#![allow(clippy::needless_range_loop)]

use super::super::Conv2dShape;
use crate::activation::vector::{kind, VecAct};
use crate::activation::Activation;
use crate::error::KernelError;
use crate::isa::{Isa, Tables};
use crate::parallel::{for_each_task, SharedMut};
use crate::simd::{tables, Simd};

/// Lane-FMAs below which a call stays on the calling thread.
const SERIAL_WORK: usize = 1 << 15;

/// Geometry of one call.
struct Geom {
    n: usize,
    h: usize,
    w: usize,
    c: usize,
    oh: usize,
    ow: usize,
    kh: usize,
    kw: usize,
    sh: usize,
    sw: usize,
    ph: usize,
    pw: usize,
    dh: usize,
    dw: usize,
    /// Output columns whose taps all fall inside the row: `ox_lo..ox_hi`.
    ox_lo: usize,
    ox_hi: usize,
}

impl Geom {
    fn new(s: &Conv2dShape) -> Self {
        let (oh, ow) = (s.out_h(), s.out_w());
        let (sw, pw, dw) = (s.stride.1, s.padding.1, s.dilation.1);
        let span = (s.kw - 1) * dw;
        // First column with ox * sw >= pw; last with ox * sw - pw + span < w.
        let ox_lo = pw.div_ceil(sw).min(ow);
        let ox_hi = if s.w + pw > span {
            ((s.w + pw - span - 1) / sw + 1).min(ow)
        } else {
            0
        };
        Geom {
            n: s.n,
            h: s.h,
            w: s.w,
            c: s.c_in,
            oh,
            ow,
            kh: s.kh,
            kw: s.kw,
            sh: s.stride.0,
            sw,
            ph: s.padding.0,
            pw,
            dh: s.dilation.0,
            dw,
            ox_lo,
            ox_hi: ox_hi.max(ox_lo),
        }
    }
}

/// A read-only pointer that tasks may share.
#[derive(Clone, Copy)]
struct SharedConst(*const f32);

impl SharedConst {
    /// The pointer (a method, so closures capture the `Sync` wrapper, not the field).
    fn get(self) -> *const f32 {
        self.0
    }
}
// SAFETY: tasks only read through it, from a slice borrowed for the whole call.
unsafe impl Send for SharedConst {}
unsafe impl Sync for SharedConst {}

/// Bit `q` set for the input columns `ix0 + q` (`q < 64`) that lie inside the row.
#[inline(always)]
fn col_mask(w: usize, ix0: isize) -> u64 {
    let lo = (-ix0).clamp(0, 64) as u32;
    let hi = (w as isize - ix0).clamp(0, 64) as u32;
    let bits = |n: u32| if n >= 64 { u64::MAX } else { (1u64 << n) - 1 };
    bits(hi) & !bits(lo)
}

/// One tile: `N` output pixels from column `ox0` of output row `oy`, channels `c0..c0 + L`,
/// for a `K x K` filter at column stride `SW` (dilation 1). Per filter row the `K` weights
/// sit in registers and the tile's `(N - 1) SW + K` input columns are loaded once each, every
/// one feeding the up to `K` accumulators it touches (all indices compile-time: no checks
/// but the row's, and with `CHECK` one per input column for the horizontal padding).
///
/// # Safety
/// `x` is one image (`h * w * c` floats), `y` its output (`oy * ow * c`), `w` the packed
/// weights; `c0 + L <= c`, `ox0 + N <= ow`, `oy < oh`; without `CHECK` every input column of
/// the tile lies inside the row; the CPU supports `S`.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
unsafe fn tile<
    S: Simd,
    A: VecAct,
    const N: usize,
    const K: usize,
    const SW: usize,
    const CHECK: bool,
>(
    g: &Geom,
    x: *const f32,
    w: *const f32,
    bv: S::V,
    act: A,
    y: *mut f32,
    oy: usize,
    ox0: usize,
    c0: usize,
) {
    let c = g.c;
    let ix0 = (ox0 * SW) as isize - g.pw as isize;
    let valid = if CHECK { col_mask(g.w, ix0) } else { u64::MAX };
    // SAFETY: rows outside the image are skipped, and so are columns outside the row (by
    // `valid`, or by the contract without CHECK); every access is L floats at c0 <= c - L.
    unsafe {
        let mut acc = [bv; N];
        for i in 0..K {
            let iy = (oy * g.sh + i) as isize - g.ph as isize;
            if iy < 0 || iy >= g.h as isize {
                continue;
            }
            let wr: [S::V; K] = std::array::from_fn(|j| S::load(w.add((i * K + j) * c + c0)));
            let p0 = x.wrapping_offset((iy * g.w as isize + ix0) * c as isize + c0 as isize);
            if SW > 1 {
                // Strided: tap column j of pixel px reads column px * SW + j, loaded per use.
                for j in 0..K {
                    for px in 0..N {
                        let q = px * SW + j;
                        if !CHECK || valid & (1 << q) != 0 {
                            let v = S::load(p0.wrapping_add(q * c));
                            acc[px] = S::fma(wr[j], v, acc[px]);
                        }
                    }
                }
                continue;
            }
            let mut p = p0;
            for q in 0..(N - 1) * SW + K {
                if !CHECK || valid & (1 << q) != 0 {
                    let v = S::load(p);
                    // Input column q feeds pixel px through tap column j = q - px * SW.
                    for j in 0..K {
                        if q >= j && (q - j) % SW == 0 && (q - j) / SW < N {
                            let px = (q - j) / SW;
                            acc[px] = S::fma(wr[j], v, acc[px]);
                        }
                    }
                }
                p = p.wrapping_add(c);
            }
        }
        let out = y.add((oy * g.ow + ox0) * c + c0);
        for px in 0..N {
            S::store(out.add(px * c), act.apply::<S>(acc[px]));
        }
    }
}

/// One output pixel, any filter, stride and dilation, taps checked one by one.
///
/// # Safety
/// As [`tile`] with `N = 1`.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
unsafe fn pixel<S: Simd, A: VecAct>(
    g: &Geom,
    x: *const f32,
    w: *const f32,
    bv: S::V,
    act: A,
    y: *mut f32,
    oy: usize,
    ox: usize,
    c0: usize,
) {
    let c = g.c;
    // SAFETY: only taps inside the image are read; L floats at c0 <= c - L.
    unsafe {
        let mut acc = bv;
        for i in 0..g.kh {
            let iy = (oy * g.sh + i * g.dh) as isize - g.ph as isize;
            if iy < 0 || iy >= g.h as isize {
                continue;
            }
            for j in 0..g.kw {
                let ix = (ox * g.sw + j * g.dw) as isize - g.pw as isize;
                if ix < 0 || ix >= g.w as isize {
                    continue;
                }
                let v = S::load(x.add((iy as usize * g.w + ix as usize) * c + c0));
                acc = S::fma(S::load(w.add((i * g.kw + j) * c + c0)), v, acc);
            }
        }
        S::store(y.add((oy * g.ow + ox) * c + c0), act.apply::<S>(acc));
    }
}

/// Output row `oy` of one image, channel blocks `b0..b1` (block `b` starts at channel
/// `min(b * L, c - L)`), in tiles of `N` pixels (the last one overlapping the previous when
/// `N` does not divide the row); `N = 0`: pixel by pixel ([`pixel`]).
///
/// # Safety
/// As [`tile`], with `g.ow >= N`, `g.c >= L`, `b1 <= ceil(c / L)`, and for `N > 0` a
/// `K x K` filter at column stride `SW`, dilation 1.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
unsafe fn row<S: Simd, A: VecAct, const N: usize, const K: usize, const SW: usize>(
    g: &Geom,
    x: *const f32,
    w: *const f32,
    bias: Option<*const f32>,
    act: A,
    y: *mut f32,
    oy: usize,
    (b0, b1): (usize, usize),
) {
    let l = S::L;
    // SAFETY: c0 + L <= c and ox0 + N <= ow by construction; unchecked tiles lie inside
    // ox_lo..ox_hi (see `tile`).
    unsafe {
        for b in b0..b1 {
            let c0 = (b * l).min(g.c - l);
            let bv = match bias {
                Some(p) => S::load(p.add(c0)),
                None => S::zero(),
            };
            if N == 0 {
                for ox in 0..g.ow {
                    pixel::<S, A>(g, x, w, bv, act, y, oy, ox, c0);
                }
                continue;
            }
            for t in 0..g.ow.div_ceil(N) {
                let ox0 = (t * N).min(g.ow - N);
                if ox0 >= g.ox_lo && ox0 + N <= g.ox_hi {
                    tile::<S, A, N, K, SW, false>(g, x, w, bv, act, y, oy, ox0, c0);
                } else {
                    tile::<S, A, N, K, SW, true>(g, x, w, bv, act, y, oy, ox0, c0);
                }
            }
        }
    }
}

/// Output row `oy` of one image over channel blocks `blocks`, choosing the tile width and the
/// compile-time filter size and stride.
///
/// # Safety
/// As [`row`] (`g.c >= L`).
#[inline(always)]
#[allow(clippy::too_many_arguments)]
unsafe fn row_any<S: Simd, A: VecAct>(
    g: &Geom,
    x: *const f32,
    w: *const f32,
    bias: Option<*const f32>,
    act: A,
    y: *mut f32,
    oy: usize,
    b: (usize, usize),
) {
    let k = if g.kh == g.kw && g.dh == 1 && g.dw == 1 {
        g.kh
    } else {
        0
    };
    // Seven-pixel tiles on the MobileNet planes (7, 14, 28, 56, 112 wide), else eight.
    let n = if g.ow.is_multiple_of(7) {
        7
    } else if g.ow >= 8 {
        8
    } else {
        0
    };
    // SAFETY: forwarded; N <= ow and the filter matches in every arm.
    unsafe {
        match (n, k, g.sw) {
            (7, 3, 1) => row::<S, A, 7, 3, 1>(g, x, w, bias, act, y, oy, b),
            (7, 3, 2) => row::<S, A, 7, 3, 2>(g, x, w, bias, act, y, oy, b),
            (7, 5, 1) => row::<S, A, 7, 5, 1>(g, x, w, bias, act, y, oy, b),
            (7, 5, 2) => row::<S, A, 7, 5, 2>(g, x, w, bias, act, y, oy, b),
            (8, 3, 1) => row::<S, A, 8, 3, 1>(g, x, w, bias, act, y, oy, b),
            (8, 3, 2) => row::<S, A, 8, 3, 2>(g, x, w, bias, act, y, oy, b),
            (8, 5, 1) => row::<S, A, 8, 5, 1>(g, x, w, bias, act, y, oy, b),
            (8, 5, 2) => row::<S, A, 8, 5, 2>(g, x, w, bias, act, y, oy, b),
            _ => row::<S, A, 0, 0, 1>(g, x, w, bias, act, y, oy, b),
        }
    }
}

/// A kernel entry: rows `oy` of image `img` over channel blocks `(b0, b1)`.
type RowFn = unsafe fn(
    &Geom,
    *const f32,
    *const f32,
    Option<*const f32>,
    Activation,
    *mut f32,
    usize,
    (usize, usize),
);

/// One ISA's entries, one per fused activation slot ([`super::slot`]).
struct Fns {
    lanes: usize,
    rows: [RowFn; 5],
}

macro_rules! nhwc_kernels {
    ($S:ty $(, $feat:literal)?) => {{
        #[allow(clippy::too_many_arguments)]
        $(#[target_feature(enable = $feat)])?
        unsafe fn rows<A: VecAct>(
            g: &Geom,
            x: *const f32,
            w: *const f32,
            bias: Option<*const f32>,
            act: Activation,
            y: *mut f32,
            oy: usize,
            blocks: (usize, usize),
        ) {
            // SAFETY: forwarded contract; the table runs this only on a CPU with the ISA.
            unsafe { row_any::<$S, A>(g, x, w, bias, A::of(act), y, oy, blocks) }
        }
        Fns {
            lanes: <$S as Simd>::L,
            rows: [
                rows::<kind::Identity>,
                rows::<kind::Relu>,
                rows::<kind::Relu6>,
                rows::<kind::HardSwish>,
                rows::<Activation>,
            ],
        }
    }};
}

static TABLES: Tables<Fns> = tables!(Fns, nhwc_kernels);

/// Packs PyTorch's depthwise weight `[c, 1, kh, kw]` as `[kh * kw][c]`, the layout
/// [`forward`] reads (one vector load per tap and block of channels).
pub fn pack_weights(s: &Conv2dShape, w: &[f32]) -> Result<Vec<f32>, KernelError> {
    check_shape("depthwise_nhwc_pack", s)?;
    let taps = s.kh * s.kw;
    if w.len() != s.c_in * taps {
        return Err(KernelError::invalid(
            "depthwise_nhwc_pack",
            format!(
                "{s}: weight has {} elements, expected {}",
                w.len(),
                s.c_in * taps
            ),
        ));
    }
    let mut out = vec![0.0; w.len()];
    for (ch, f) in w.chunks_exact(taps).enumerate() {
        for (t, &v) in f.iter().enumerate() {
            out[t * s.c_in + ch] = v;
        }
    }
    Ok(out)
}

fn check_shape(op: &'static str, s: &Conv2dShape) -> Result<(), KernelError> {
    s.validate()?;
    if !(s.groups == s.c_in && s.c_out == s.c_in) {
        return Err(KernelError::invalid(
            op,
            format!("{s}: the channels-last kernel takes depthwise convolutions with multiplier 1"),
        ));
    }
    Ok(())
}

/// `y = act(depthwise(x, w) + bias)` on channels-last maps, on the current ISA: `x` is
/// `[n, h, w, c]`, `w` the packed `[kh * kw][c]` ([`pack_weights`]), `bias` `[c]`, `y`
/// `[n, oh, ow, c]` (overwritten). `s` describes the convolution as for NCHW
/// ([`Conv2dShape`], `groups == c_in == c_out`).
pub fn forward(
    s: &Conv2dShape,
    x: &[f32],
    w: &[f32],
    bias: Option<&[f32]>,
    act: Activation,
    y: &mut [f32],
) -> Result<(), KernelError> {
    forward_with(Isa::current()?, s, x, w, bias, act, y)
}

/// [`forward`] on an explicit instruction set (an error if the CPU lacks it).
pub fn forward_with(
    isa: Isa,
    s: &Conv2dShape,
    x: &[f32],
    w: &[f32],
    bias: Option<&[f32]>,
    act: Activation,
    y: &mut [f32],
) -> Result<(), KernelError> {
    const OP: &str = "depthwise_nhwc_forward";
    check_shape(OP, s)?;
    let lens = [
        ("x", x.len(), s.input_len()),
        ("weight", w.len(), s.weight_len()),
        ("y", y.len(), s.output_len()),
        ("bias", bias.map_or(s.c_out, <[f32]>::len), s.c_out),
    ];
    for (name, len, want) in lens {
        if len != want {
            return Err(KernelError::invalid(
                OP,
                format!("{s}: {name} has {len} elements, expected {want}"),
            ));
        }
    }
    let mut fns = TABLES.get(isa.check()?)?;
    if s.c_in < fns.lanes {
        // Fewer channels than lanes: the one-lane path (every ISA has it).
        fns = TABLES.get(Isa::Scalar)?;
    }
    let g = Geom::new(s);
    let f = fns.rows[super::slot(act)];
    let blocks = g.c.div_ceil(fns.lanes);
    let rows = g.n * g.oh;
    let work = s.output_len() * s.kh * s.kw;
    // Tasks: whole rows while there are enough of them, else rows split by channel blocks.
    // A row is never split when the last block overlaps its neighbour (`c % L != 0`): the
    // overlapped channels are written twice (with the same values) and must be written by one
    // task.
    let threads = rayon::current_num_threads();
    let parts = if work < SERIAL_WORK || threads == 1 || !g.c.is_multiple_of(fns.lanes) {
        1
    } else {
        (4 * threads).div_ceil(rows).clamp(1, blocks)
    };
    let per = blocks.div_ceil(parts);
    let parts = blocks.div_ceil(per);
    let (img_in, img_out) = (g.h * g.w * g.c, g.oh * g.ow * g.c);
    let yp = SharedMut(y.as_mut_ptr());
    let (xp, wp, bp) = (
        SharedConst(x.as_ptr()),
        SharedConst(w.as_ptr()),
        bias.map(|b| SharedConst(b.as_ptr())),
    );
    let run = |task: usize| {
        let (r, part) = (task / parts, task % parts);
        let (img, oy) = (r / g.oh, r % g.oh);
        let b0 = part * per;
        let b1 = (b0 + per).min(blocks);
        // SAFETY: the lengths were checked above; task (row, part) alone writes output row
        // `oy` of image `img` at the channels of blocks b0..b1 (disjoint between tasks: see
        // `parts`); the table's ISA is supported (`isa.check`).
        unsafe {
            f(
                &g,
                xp.get().add(img * img_in),
                wp.get(),
                bp.map(SharedConst::get),
                act,
                yp.get().add(img * img_out),
                oy,
                (b0, b1),
            )
        }
    };
    if work < SERIAL_WORK {
        (0..rows * parts).for_each(run);
    } else {
        for_each_task(rows * parts, run);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conv::reference;

    /// `[n, c, h, w]` -> `[n, h, w, c]`.
    fn to_nhwc(x: &[f32], n: usize, c: usize, hw: usize) -> Vec<f32> {
        let mut out = vec![0.0; x.len()];
        for b in 0..n {
            for ch in 0..c {
                for p in 0..hw {
                    out[(b * hw + p) * c + ch] = x[(b * c + ch) * hw + p];
                }
            }
        }
        out
    }

    fn values(len: usize, seed: u32) -> Vec<f32> {
        (0..len)
            .map(|i| {
                let v = (i as u32).wrapping_mul(2_654_435_761).wrapping_add(seed) >> 8;
                (v % 2001) as f32 / 1000.0 - 1.0
            })
            .collect()
    }

    fn check(s: Conv2dShape, act: Activation) {
        let x = values(s.input_len(), 1);
        let w = values(s.weight_len(), 2);
        let b = values(s.c_out, 3);
        let mut want = vec![0.0; s.output_len()];
        reference::conv2d_forward(&s, &x, &w, Some(&b), act, &mut want);
        let want = to_nhwc(&want, s.n, s.c_out, s.out_h() * s.out_w());
        let xn = to_nhwc(&x, s.n, s.c_in, s.h * s.w);
        let wp = pack_weights(&s, &w).unwrap();
        for isa in Isa::available() {
            let mut y = vec![f32::NAN; s.output_len()];
            forward_with(isa, &s, &xn, &wp, Some(&b), act, &mut y).unwrap();
            for (i, (a, e)) in y.iter().zip(&want).enumerate() {
                assert!(
                    (a - e).abs() <= 1e-5 * (1.0 + e.abs()),
                    "{isa:?} {s} at {i}: {a} vs {e}"
                );
            }
        }
    }

    fn shape(n: usize, c: usize, h: usize, k: usize, stride: usize) -> Conv2dShape {
        Conv2dShape {
            stride: (stride, stride),
            padding: (k / 2, k / 2),
            groups: c,
            ..Conv2dShape::new(n, c, h, h, c, k, k)
        }
    }

    #[test]
    fn matches_the_reference_on_mobilenet_shapes() {
        for (n, c, h, k, st) in [
            (1, 960, 7, 3, 1),
            (1, 384, 14, 3, 1),
            (2, 72, 14, 5, 1),
            (1, 40, 28, 5, 2),
            (1, 200, 14, 3, 1),
            (1, 24, 9, 3, 2),
            (1, 8, 6, 3, 1),
            (3, 17, 5, 3, 1),
            (1, 32, 12, 5, 1),
        ] {
            for act in [
                Activation::Relu6,
                Activation::HardSwish,
                Activation::Identity,
            ] {
                check(shape(n, c, h, k, st), act);
            }
            check(shape(n, c, h, k, st), Activation::Swish);
        }
    }

    #[test]
    fn odd_filters_padding_and_dilation() {
        let mut s = shape(1, 33, 11, 3, 1);
        (s.kh, s.kw, s.padding, s.dilation) = (2, 4, (0, 2), (2, 1));
        check(s, Activation::Relu);
        let mut s = shape(2, 16, 3, 1, 1);
        s.w = 20;
        check(s, Activation::Identity);
    }

    #[test]
    fn same_bits_for_any_thread_count() {
        let s = shape(2, 200, 14, 5, 1);
        let x = values(s.input_len(), 4);
        let w = pack_weights(&s, &values(s.weight_len(), 5)).unwrap();
        let run = |t: usize| {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(t)
                .build()
                .unwrap();
            let mut y = vec![0.0; s.output_len()];
            pool.install(|| forward(&s, &x, &w, None, Activation::Relu6, &mut y).unwrap());
            y
        };
        let one = run(1);
        for t in [2, 3] {
            assert!(run(t)
                .iter()
                .zip(&one)
                .all(|(a, b)| a.to_bits() == b.to_bits()));
        }
    }

    #[test]
    fn bad_input_is_an_error() {
        let s = shape(1, 16, 7, 3, 1);
        let (x, w) = (vec![0.0; s.input_len()], vec![0.0; s.weight_len()]);
        let mut y = vec![0.0; s.output_len()];
        assert!(forward(&s, &x[1..], &w, None, Activation::Relu, &mut y).is_err());
        assert!(forward(&s, &x, &w, Some(&[0.0; 3]), Activation::Relu, &mut y).is_err());
        let dense = Conv2dShape { groups: 1, ..s };
        assert!(forward(&dense, &x, &w, None, Activation::Relu, &mut y).is_err());
        assert!(pack_weights(&s, &w[1..]).is_err());
    }
}
