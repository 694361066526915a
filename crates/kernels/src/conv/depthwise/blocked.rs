//! Channel-blocked depthwise forward pass for small planes (output width <= [`SMALL_OW`]):
//! vectorised **across channels** instead of along the output width, the `nChw8c` /
//! `nChw16c` blocking of oneDNN and the channels-last inner loop of XNNPACK, but with the
//! layout change confined to a per-block scratch copy so the API stays NCHW.
//!
//! Per block of `L` consecutive output channels of one image:
//!
//! ```text
//! L input planes (h x w each)      8x8 (16x16) in-register transposes     scratch [hp][wp][L]
//! ch0: x x x x x x x x ...   --->  position p: [ch0 ch1 ... ch(L-1)]  --->  zero-padded, in L1
//! for each tile of L output positions (row-major, the last tile overlapping):
//!   acc[i] = bias[oc0..oc0+L]
//!   for each tap t: acc[i] += w[t][oc0..oc0+L] * scratch[base(i) + off(t)]   (full lanes)
//!   act(acc); transpose back; L stores, one per output plane
//! ```
//!
//! On a 7 x 7 plane the width-vectorised path fills 7 of 8 lanes and pays a per-plane packing
//! and loop set-up cost; here every FMA uses all lanes for any plane size.

// Loops over const-sized arrays index several arrays at once and must unroll.
#![allow(clippy::needless_range_loop)]

use super::Conv2dShape;
use crate::activation::vector::VecAct;
use crate::simd::Simd;

/// Widest output row that takes the channel-blocked path (measured: see
/// `docs/kernels/depthwise.md`).
pub(crate) const SMALL_OW: usize = 14;

/// Widest output row of a strided forward pass that takes the channel-blocked path: there the
/// width-vectorised path pays the stride's even/odd split while this one only changes offsets
/// (measured: 144 x 56^2, 3x3, stride 2 ran 1.3x faster here).
pub(crate) const SMALL_OW_STRIDED: usize = 28;

/// Geometry of the channel-blocked forward pass: the scratch is `hp x wp` positions of `L`
/// floats (all padded input positions any tap reads, and every input position), followed by
/// the `taps x L` interleaved weights.
pub(crate) struct BlkGeom {
    pub h: usize,
    pub w: usize,
    pub oh: usize,
    pub ow: usize,
    pub sh: usize,
    pub sw: usize,
    pub ph: usize,
    pub pw: usize,
    pub hp: usize,
    pub wp: usize,
    pub taps: usize,
    /// Offset (in positions) of tap `i * kw + j` from an output's origin: `i*dh*wp + j*dw`.
    pub off: super::Offsets,
    /// `k` for a square `k x k` filter without dilation, else 0.
    pub square_undilated: usize,
}

impl BlkGeom {
    pub(crate) fn new(s: &Conv2dShape) -> Self {
        let (oh, ow) = (s.out_h(), s.out_w());
        let (sh, sw) = s.stride;
        let (dh, dw) = s.dilation;
        let (ph, pw) = s.padding;
        let hp = ((oh - 1) * sh + (s.kh - 1) * dh + 1).max(ph + s.h);
        let wp = ((ow - 1) * sw + (s.kw - 1) * dw + 1).max(pw + s.w);
        let off = super::Offsets::from_fn(s.kh * s.kw, |t| (t / s.kw) * dh * wp + (t % s.kw) * dw);
        BlkGeom {
            h: s.h,
            w: s.w,
            oh,
            ow,
            sh,
            sw,
            ph,
            pw,
            hp,
            wp,
            taps: s.kh * s.kw,
            off,
            square_undilated: if s.kh == s.kw && s.dilation == (1, 1) {
                s.kh
            } else {
                0
            },
        }
    }

    /// Whether `s` takes this path with `lanes`-wide vectors: a small output row, and input
    /// plane, output plane and filter at least `lanes` long (whole-vector transposes).
    pub(crate) fn applies(s: &Conv2dShape, lanes: usize) -> bool {
        Self::applies_up_to(s, lanes, SMALL_OW)
    }

    /// Whether the forward pass of `s` takes this path: as [`BlkGeom::applies`], with output
    /// rows up to [`SMALL_OW_STRIDED`] wide when strided.
    pub(crate) fn applies_forward(s: &Conv2dShape, lanes: usize) -> bool {
        let max = if s.stride == (1, 1) {
            SMALL_OW
        } else {
            SMALL_OW_STRIDED
        };
        Self::applies_up_to(s, lanes, max)
    }

    fn applies_up_to(s: &Conv2dShape, lanes: usize, max_ow: usize) -> bool {
        let (oh, ow) = (s.out_h(), s.out_w());
        ow <= max_ow && s.c_out >= lanes && oh * ow >= lanes && s.h * s.w >= lanes
    }

    /// Floats of scratch for `lanes`-wide vectors.
    pub(crate) fn scratch_len(&self, lanes: usize) -> usize {
        (self.hp * self.wp + self.taps) * lanes
    }
}

/// `dst[f(p) * L + c] = src[c][p]` for `p < len`, `c < L`, where position `p` of a source
/// row of `row` floats maps to `f(p) = dst0 + (p / row) * dst_row + p % row`; with
/// whole-vector transposes (`len >= L`; the last chunk overlaps the previous one and rewrites
/// identical values). Row and column are stepped, not divided, per position.
///
/// # Safety
/// Each `src[c]` is readable for `len` floats, `dst` writable at every `f(p) * L + L`; the
/// CPU supports `S`.
#[inline(always)]
pub(crate) unsafe fn interleave<S: Simd>(
    src: &[*const f32; 16],
    len: usize,
    row: usize,
    dst_row: usize,
    dst0: usize,
    dst: *mut f32,
) {
    let l = S::L;
    let mut p = 0;
    // SAFETY: p0 + L <= len for every load; the stores as the contract states.
    unsafe {
        let mut v = [S::splat(0.0); 16];
        // (r, col) of position p, stepped; divided only for the clamped last chunk.
        let (mut r, mut col) = (0, 0);
        loop {
            let p0 = p.min(len - l);
            if p0 != p {
                (r, col) = (p0 / row, p0 % row);
            }
            for (c, vc) in v.iter_mut().enumerate().take(l) {
                *vc = S::load(src[c].add(p0));
            }
            S::transpose(&mut v[..l]);
            for vi in v.iter().take(l) {
                S::store(dst.add((dst0 + r * dst_row + col) * l), *vi);
                col += 1;
                if col == row {
                    col = 0;
                    r += 1;
                }
            }
            if p0 == len - l {
                break;
            }
            p += l;
        }
    }
}

/// One block of `L` output channels: `x[c]` is the input plane of output channel `oc0 + c`,
/// `w` the `L` filters (`L * taps` floats), `bias` their `L` biases, `y` the `L` output planes.
///
/// # Safety
/// `BlkGeom::applies` held for this shape and `S::L`; each `x[c]` holds `h * w` floats;
/// `scratch` holds `g.scratch_len(S::L)` floats; `y` holds `L * oh * ow`; the CPU supports `S`.
#[inline(always)]
pub(crate) unsafe fn forward_block<S: Simd, A: VecAct>(
    g: &BlkGeom,
    x: &[*const f32; 16],
    w: &[f32],
    bias: Option<&[f32]>,
    act: A,
    y: &mut [f32],
    scratch: &mut [f32],
) {
    let l = S::L;
    let (wp, taps) = (g.wp, g.taps);
    let xs = scratch.as_mut_ptr();
    // SAFETY (whole body): every scratch index is below (hp * wp + taps) * L (BlkGeom sizes
    // hp, wp to cover every input position and every tap of every output); loads from `x`
    // and stores to `y` stay in their planes (interleave's and the tile loop's clamps).
    unsafe {
        let wb = xs.add(g.hp * wp * l);
        let z = S::splat(0.0);
        pack_input::<S>(g, x, xs);
        // Weights: [taps][L].
        if taps >= l {
            let mut wr = [w.as_ptr(); 16];
            for (c, r) in wr.iter_mut().enumerate().take(l) {
                *r = w.as_ptr().add(c * taps);
            }
            interleave::<S>(&wr, taps, taps, taps, 0, wb);
        } else {
            for t in 0..taps {
                for c in 0..l {
                    *wb.add(t * l + c) = w[c * taps + t];
                }
            }
        }
        let bv = match bias {
            Some(b) => S::load(b.as_ptr()),
            None => z,
        };
        // Row tiles for the 3x3 / 5x5 filters at strides 1 and 2 on rows of 7 or more (the
        // MobileNet cases), position-major tiles otherwise.
        let row = l >= 8 && g.ow >= 7;
        match (taps, g.sw, g.ow >= 8) {
            (9, 1, true) if row => row_tiles::<S, A, 9, 1, 8>(g, xs, wb, bv, act, y),
            (9, 1, false) if row => row_tiles::<S, A, 9, 1, 7>(g, xs, wb, bv, act, y),
            (9, 2, true) if row => row_tiles::<S, A, 9, 2, 8>(g, xs, wb, bv, act, y),
            (9, 2, false) if row => row_tiles::<S, A, 9, 2, 7>(g, xs, wb, bv, act, y),
            (25, 1, true) if row => row_tiles::<S, A, 25, 1, 8>(g, xs, wb, bv, act, y),
            (25, 1, false) if row => row_tiles::<S, A, 25, 1, 7>(g, xs, wb, bv, act, y),
            (25, 2, true) if row => row_tiles::<S, A, 25, 2, 8>(g, xs, wb, bv, act, y),
            (25, 2, false) if row => row_tiles::<S, A, 25, 2, 7>(g, xs, wb, bv, act, y),
            (9, _, _) => tiles::<S, A, 9>(g, xs, wb, bv, act, y),
            (25, _, _) => tiles::<S, A, 25>(g, xs, wb, bv, act, y),
            _ => tiles::<S, A, 0>(g, xs, wb, bv, act, y),
        }
    }
}

/// Packs the `L` input planes `x[c]` into the zero-padded `[hp][wp][L]` scratch `xs`.
///
/// # Safety
/// Each `x[c]` holds `h * w >= L` floats, `xs` holds `hp * wp * L`; the CPU supports `S`.
#[inline(always)]
pub(crate) unsafe fn pack_input<S: Simd>(g: &BlkGeom, x: &[*const f32; 16], xs: *mut f32) {
    let (l, wp) = (S::L, g.wp);
    // SAFETY: every index is below hp * wp * L (BlkGeom covers every input position).
    unsafe {
        // Zero borders: whole padding rows in one sweep, then the side columns.
        let z = S::splat(0.0);
        let row = wp * l;
        for r in (0..g.ph).chain(g.ph + g.h..g.hp) {
            for c in 0..wp {
                S::store(xs.add(r * row + c * l), z);
            }
        }
        for r in g.ph..g.ph + g.h {
            for c in (0..g.pw).chain(g.pw + g.w..wp) {
                S::store(xs.add(r * row + c * l), z);
            }
        }
        interleave::<S>(x, g.h * g.w, g.w, wp, g.ph * wp + g.pw, xs);
    }
}

/// The output tiles of one block as runs of `N` (7 or 8, at most `L`) consecutive positions
/// of one output row (`ceil(ow / N)` per row, the last one overlapping), `T` taps at column
/// stride `SW`: every input of a tile is one pointer plus a compile-time displacement
/// (`i * SW * L`), where the position-major [`tiles`] keeps `L` position offsets that do not
/// fit in the general-purpose registers.
///
/// The `N < L` accumulators past the tile are transposed too and their lanes stored past the
/// tile: into later positions of the same plane, which are rewritten afterwards (rows go in
/// increasing order), except on the last row, where only `N` lanes are stored.
///
/// # Safety
/// As [`forward_block`], with the scratch packed; `g.ow >= N`, `g.sw == SW`, `T == g.taps`,
/// `N <= L`.
#[inline(always)]
unsafe fn row_tiles<S: Simd, A: VecAct, const T: usize, const SW: usize, const N: usize>(
    g: &BlkGeom,
    xs: *const f32,
    wb: *const f32,
    bv: S::V,
    act: A,
    y: &mut [f32],
) {
    let l = S::L;
    let total = g.oh * g.ow;
    let ntile = g.ow.div_ceil(N);
    // The filter side when the column sweep applies (T = K^2, stride 1, no dilation).
    let ks = if T == 9 { 3 } else { 5 };
    let sweep = SW == 1 && T == ks * ks && g.square_undilated == ks;
    let mut offs = [0usize; T];
    for (o, &t) in offs.iter_mut().zip(g.off.iter()) {
        *o = t * l;
    }
    // SAFETY: as in `forward_block`: every read is a padded input position of the block;
    // every store lies in plane c (o + L <= total, or N lanes).
    unsafe {
        let yp = y.as_mut_ptr();
        for oy in 0..g.oh {
            for k in 0..ntile {
                let ox0 = (k * N).min(g.ow - N);
                let src = xs.add((oy * g.sh * g.wp + ox0 * SW) * l);
                let mut acc = [bv; 16];
                if sweep {
                    // Square K x K filter, stride 1, no dilation: per filter row the K weights
                    // in registers and each of the N + K - 1 input positions loaded once for
                    // every accumulator it feeds (channels-last's column sweep, `nhwc.rs`).
                    // Per output, the taps in the same (row-major) order as below.
                    for fi in 0..ks {
                        let mut wr = [bv; 5];
                        for (j, w) in wr.iter_mut().enumerate().take(ks) {
                            *w = S::load(wb.add((fi * ks + j) * l));
                        }
                        let row = src.add(fi * g.wp * l);
                        for q in 0..N + ks - 1 {
                            let v = S::load(row.add(q * l));
                            for j in 0..ks {
                                if q >= j && q - j < N {
                                    acc[q - j] = S::fma(wr[j], v, acc[q - j]);
                                }
                            }
                        }
                    }
                } else {
                    for t in 0..T {
                        let wv = S::load(wb.add(t * l));
                        let s = src.add(offs[t]);
                        for i in 0..N {
                            acc[i] = S::fma(wv, S::load(s.add(i * SW * l)), acc[i]);
                        }
                    }
                }
                for a in acc.iter_mut().take(N) {
                    *a = act.apply::<S>(*a);
                }
                S::transpose(&mut acc[..l]);
                let o = oy * g.ow + ox0;
                for (c, a) in acc.iter().enumerate().take(l) {
                    if o + l <= total {
                        S::store(yp.add(c * total + o), *a);
                    } else {
                        S::store_first(yp.add(c * total + o), *a, N);
                    }
                }
            }
        }
    }
}

/// The output tiles of one block; `T` is the tap count when fixed at compile time (9 or 25,
/// so the tap loop unrolls), 0 for a runtime count.
///
/// # Safety
/// As [`forward_block`], with the scratch packed.
#[inline(always)]
unsafe fn tiles<S: Simd, A: VecAct, const T: usize>(
    g: &BlkGeom,
    xs: *const f32,
    wb: *const f32,
    bv: S::V,
    act: A,
    y: &mut [f32],
) {
    let l = S::L;
    let wp = g.wp;
    let taps = if T == 0 { g.taps } else { T };
    let total = g.oh * g.ow;
    // SAFETY: as in `forward_block`.
    unsafe {
        let yp = y.as_mut_ptr();
        let mut p = 0;
        let mut base = [0usize; 16];
        // (oy, ox) of position p, stepped; divided only for the clamped last tile.
        let (mut oy, mut ox) = (0, 0);
        loop {
            let p0 = p.min(total - l);
            if p0 != p {
                (oy, ox) = (p0 / g.ow, p0 % g.ow);
            }
            for b in base.iter_mut().take(l) {
                *b = (oy * g.sh * wp + ox * g.sw) * l;
                ox += 1;
                if ox == g.ow {
                    ox = 0;
                    oy += 1;
                }
            }
            let mut acc = [bv; 16];
            for t in 0..taps {
                let wv = S::load(wb.add(t * l));
                let o = *g.off.get_unchecked(t) * l;
                for i in 0..l {
                    acc[i] = S::fma(wv, S::load(xs.add(base[i] + o)), acc[i]);
                }
            }
            for a in acc.iter_mut().take(l) {
                *a = act.apply::<S>(*a);
            }
            S::transpose(&mut acc[..l]);
            for (c, a) in acc.iter().enumerate().take(l) {
                S::store(yp.add(c * total + p0), *a);
            }
            if p0 == total - l {
                break;
            }
            p += l;
        }
    }
}
