//! Channel-blocked depthwise gradients for small planes (output width <= `blocked::SMALL_OW`),
//! the backward counterparts of `blocked.rs`: vectorised across `L` consecutive channels, with
//! the layout change confined to per-block scratch copies (`[positions][L]`), as oneDNN's
//! `nChw8c` / `nChw16c` depthwise kernels and XNNPACK's channels-last ones do.
//!
//! **Weight gradient** (per block of `L` output channels, images in order):
//!
//! ```text
//! pack x (zero-padded, [hp][wp][L]) and dy ([oh*ow][L]) with in-register transposes
//! for each group of up to 12 taps:                 acc[t] in registers, one chain per tap
//!   for each output position p:  d = dy[p];  acc[t] += x[base(p) + off(t)] * d   (full lanes)
//! dw[c][t] = acc[t][c]                             no horizontal sums
//! ```
//!
//! **Input gradient** (multiplier 1; per block of `L` channels): the transposed convolution as a
//! gather (no scatter, no atomics), split into the `sh x sw` stride phases as in `plane.rs`:
//! padded dx position `(R, C) = (q sh + a, t sw + b)` sums `w[i, j] * dy[q - i dh / sh, t - j dw / sw]`
//! over the taps with `i dh % sh == a`, `j dw % sw == b`. The `dy` block is packed zero-padded
//! (`pt` rows above, `pl` columns left, zeros below and right) so every tap reads inside it; the
//! positions of one phase share their taps, so a tile of `L` of them runs `L` independent FMA
//! chains per tap. Results go to a `[h*w][L]` scratch, transposed back into the `L` planes.

#![allow(clippy::needless_range_loop)]

use super::blocked::{interleave, pack_input, BlkGeom};
use super::Conv2dShape;
use crate::simd::Simd;

/// `dst[c][p] = src[p * L + c]` for `p < len`, `c < L` (`len >= L`; the last chunk overlaps).
///
/// # Safety
/// `src` holds `len * L` floats, each `dst[c]` is writable for `len`; the CPU supports `S`.
#[inline(always)]
unsafe fn deinterleave<S: Simd>(src: *const f32, len: usize, dst: &[*mut f32; 16]) {
    let l = S::L;
    let mut p = 0;
    // SAFETY: p0 + L <= len for every access.
    unsafe {
        let mut v = [S::splat(0.0); 16];
        loop {
            let p0 = p.min(len - l);
            for (i, vi) in v.iter_mut().enumerate().take(l) {
                *vi = S::load(src.add((p0 + i) * l));
            }
            S::transpose(&mut v[..l]);
            for (c, vc) in v.iter().enumerate().take(l) {
                S::store(dst[c].add(p0), *vc);
            }
            if p0 == len - l {
                break;
            }
            p += l;
        }
    }
}

/// Scratch floats of the blocked weight gradient.
pub(crate) fn wgrad_scratch_len(g: &BlkGeom, lanes: usize) -> usize {
    (g.hp * g.wp + g.oh * g.ow + g.taps) * lanes
}

/// Accumulates taps `k0..k0 + G` over every output position of one packed image.
///
/// # Safety
/// `xs`, `dys` packed as in [`backward_weight_block`]; `acc` holds `taps * L` floats.
#[inline(always)]
unsafe fn wgrad_group<S: Simd, const G: usize>(
    g: &BlkGeom,
    xs: *const f32,
    dys: *const f32,
    acc: *mut f32,
    k0: usize,
) {
    let l = S::L;
    // SAFETY: every x read is an input position of the padded block (BlkGeom), every dy
    // read an output position, acc holds the group's taps.
    unsafe {
        let mut a = [S::splat(0.0); G];
        let mut offs = [0usize; G];
        for i in 0..G {
            a[i] = S::load(acc.add((k0 + i) * l));
            offs[i] = g.off[k0 + i] * l;
        }
        let mut dp = dys;
        for oy in 0..g.oh {
            let mut b = xs.add(oy * g.sh * g.wp * l);
            for _ in 0..g.ow {
                let d = S::load(dp);
                for i in 0..G {
                    a[i] = S::fma(S::load(b.add(offs[i])), d, a[i]);
                }
                dp = dp.add(l);
                b = b.add(g.sw * l);
            }
        }
        for i in 0..G {
            S::store(acc.add((k0 + i) * l), a[i]);
        }
    }
}

/// The weight gradient of `L` consecutive output channels over `n` images: `x[c]` is the
/// first image's input plane of channel `c` of the block (images `x_img` floats apart), `dy`
/// the first image's first `dy` plane of the block (planes `oh * ow` apart, images `dy_img`
/// apart), `dw` the block's `L * taps` filters (overwritten).
///
/// # Safety
/// `BlkGeom::applies` held for this shape and `S::L`; the planes exist for every image;
/// `scratch` holds [`wgrad_scratch_len`] floats; the CPU supports `S`.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
pub(crate) unsafe fn backward_weight_block<S: Simd>(
    g: &BlkGeom,
    n: usize,
    x: &[*const f32; 16],
    x_img: usize,
    dy: *const f32,
    dy_img: usize,
    dw: &mut [f32],
    scratch: &mut [f32],
) {
    let l = S::L;
    let oplane = g.oh * g.ow;
    let taps = g.taps;
    let xs = scratch.as_mut_ptr();
    // SAFETY: the scratch regions are disjoint and sized by wgrad_scratch_len; plane reads as
    // the contract states.
    unsafe {
        let dys = xs.add(g.hp * g.wp * l);
        let acc = dys.add(oplane * l);
        for t in 0..taps * l {
            *acc.add(t) = 0.0;
        }
        // Groups of at most 12 taps of equal size (9 -> 9, 25 -> 9 + 8 + 8).
        let ng = taps.div_ceil(12);
        let gs = taps.div_ceil(ng);
        for img in 0..n {
            let mut xp = *x;
            let mut dp = [dy; 16];
            for c in 0..l {
                xp[c] = x[c].wrapping_add(img * x_img);
                dp[c] = dy.wrapping_add(img * dy_img + c * oplane);
            }
            pack_input::<S>(g, &xp, xs);
            interleave::<S>(&dp, oplane, g.ow, g.ow, 0, dys);
            let mut k0 = 0;
            while k0 < taps {
                let k = gs.min(taps - k0);
                match k {
                    1 => wgrad_group::<S, 1>(g, xs, dys, acc, k0),
                    2 => wgrad_group::<S, 2>(g, xs, dys, acc, k0),
                    3 => wgrad_group::<S, 3>(g, xs, dys, acc, k0),
                    4 => wgrad_group::<S, 4>(g, xs, dys, acc, k0),
                    5 => wgrad_group::<S, 5>(g, xs, dys, acc, k0),
                    6 => wgrad_group::<S, 6>(g, xs, dys, acc, k0),
                    7 => wgrad_group::<S, 7>(g, xs, dys, acc, k0),
                    8 => wgrad_group::<S, 8>(g, xs, dys, acc, k0),
                    9 => wgrad_group::<S, 9>(g, xs, dys, acc, k0),
                    10 => wgrad_group::<S, 10>(g, xs, dys, acc, k0),
                    11 => wgrad_group::<S, 11>(g, xs, dys, acc, k0),
                    _ => wgrad_group::<S, 12>(g, xs, dys, acc, k0),
                }
                k0 += k;
            }
        }
        for c in 0..l {
            for t in 0..taps {
                dw[c * taps + t] = *acc.add(t * l + c);
            }
        }
    }
}

/// One stride phase of the blocked input gradient: the dx positions `(y0 + yy sh, x0 + xx sw)`,
/// `yy < ny`, `xx < nx`, whose gathers start at padded `dy` position `(q0 + yy) dyw + t0 + xx`
/// and use the taps `taps` at position offsets `off`.
pub(crate) struct BlkPhase {
    pub y0: usize,
    pub ny: usize,
    pub x0: usize,
    pub nx: usize,
    pub src0: usize,
    pub taps: Vec<usize>,
    pub off: Vec<usize>,
}

/// Geometry of the blocked input gradient (multiplier 1): the `dy` block padded to
/// `dyh x dyw` positions, `dy` at rows `pt..pt + oh`, columns `pl..pl + ow`.
pub(crate) struct BlkBwdGeom {
    pub h: usize,
    pub w: usize,
    pub oh: usize,
    pub ow: usize,
    pub pt: usize,
    pub pl: usize,
    pub dyh: usize,
    pub dyw: usize,
    pub taps: usize,
    pub phases: Vec<BlkPhase>,
}

impl BlkBwdGeom {
    pub(crate) fn new(s: &Conv2dShape) -> Self {
        let (oh, ow) = (s.out_h(), s.out_w());
        let (sh, sw) = s.stride;
        let (dh, dw) = s.dilation;
        let (ph, pw) = s.padding;
        let pt = (s.kh - 1) * dh / sh;
        let pl = (s.kw - 1) * dw / sw;
        // Largest gather start: the last dx row / column; taps only subtract from it.
        let dyh = (pt + oh).max((ph + s.h - 1) / sh + pt + 1);
        let dyw = (pl + ow).max((pw + s.w - 1) / sw + pl + 1);
        let mut phases = Vec::new();
        for a in 0..sh {
            for b in 0..sw {
                // dx rows y with (y + ph) % sh == a, columns x with (x + pw) % sw == b.
                let y0 = (a + sh - ph % sh) % sh;
                let x0 = (b + sw - pw % sw) % sw;
                if y0 >= s.h || x0 >= s.w {
                    continue;
                }
                let ny = (s.h - y0).div_ceil(sh);
                let nx = (s.w - x0).div_ceil(sw);
                let (mut taps, mut off) = (Vec::new(), Vec::new());
                for i in (0..s.kh).filter(|i| i * dh % sh == a) {
                    for j in (0..s.kw).filter(|j| j * dw % sw == b) {
                        taps.push(i * s.kw + j);
                        off.push((pt - i * dh / sh) * dyw + pl - j * dw / sw);
                    }
                }
                phases.push(BlkPhase {
                    y0,
                    ny,
                    x0,
                    nx,
                    src0: ((y0 + ph) / sh) * dyw + (x0 + pw) / sw,
                    taps,
                    off,
                });
            }
        }
        BlkBwdGeom {
            h: s.h,
            w: s.w,
            oh,
            ow,
            pt,
            pl,
            dyh,
            dyw,
            taps: s.kh * s.kw,
            phases,
        }
    }

    /// Scratch floats for `lanes`-wide vectors: padded dy, dx, interleaved weights.
    pub(crate) fn scratch_len(&self, lanes: usize) -> usize {
        (self.dyh * self.dyw + self.h * self.w + self.taps) * lanes
    }
}

/// The positions of one phase in tiles of `L` (indices clamped to the last position, so a
/// short tail recomputes it: identical values); `T` fixes the tap count (0: runtime).
///
/// # Safety
/// As [`backward_input_block`], with the scratch packed.
#[inline(always)]
unsafe fn phase_tiles<S: Simd, const T: usize>(
    g: &BlkBwdGeom,
    ph: &BlkPhase,
    sh: usize,
    sw: usize,
    dys: *const f32,
    wb: *const f32,
    dxs: *mut f32,
) {
    let l = S::L;
    let total = ph.ny * ph.nx;
    let nt = if T == 0 { ph.off.len() } else { T };
    // SAFETY: gathers read padded dy positions (BlkBwdGeom), stores write dx positions.
    unsafe {
        let mut src = [0usize; 16];
        let mut dst = [0usize; 16];
        let (mut yy, mut xx) = (0usize, 0usize);
        let mut p = 0;
        while p < total {
            for i in 0..l {
                if p + i < total {
                    src[i] = (ph.src0 + yy * g.dyw + xx) * l;
                    dst[i] = ((ph.y0 + yy * sh) * g.w + ph.x0 + xx * sw) * l;
                    xx += 1;
                    if xx == ph.nx {
                        xx = 0;
                        yy += 1;
                    }
                } else {
                    src[i] = src[i - 1];
                    dst[i] = dst[i - 1];
                }
            }
            let mut acc = [S::splat(0.0); 16];
            for k in 0..nt {
                let wv = S::load(wb.add(*ph.taps.get_unchecked(k) * l));
                let o = *ph.off.get_unchecked(k) * l;
                for i in 0..l {
                    acc[i] = S::fma(wv, S::load(dys.add(src[i] + o)), acc[i]);
                }
            }
            for i in 0..l {
                S::store(dxs.add(dst[i]), acc[i]);
            }
            p += l;
        }
    }
}

/// The input gradient of `L` consecutive channels (multiplier 1): `dy[c]` the output-gradient
/// plane of channel `c` of the block, `w` the block's `L * taps` filters, `dx[c]` its input
/// gradient plane (overwritten).
///
/// # Safety
/// `BlkGeom::applies` held for this shape and `S::L` and the multiplier is 1; each `dy[c]`
/// holds `oh * ow` floats, each `dx[c]` `h * w`; `scratch` holds `g.scratch_len(S::L)`
/// floats; the CPU supports `S`.
#[inline(always)]
pub(crate) unsafe fn backward_input_block<S: Simd>(
    g: &BlkBwdGeom,
    stride: (usize, usize),
    dy: &[*const f32; 16],
    w: &[f32],
    dx: &[*mut f32; 16],
    scratch: &mut [f32],
) {
    let l = S::L;
    let taps = g.taps;
    let dys = scratch.as_mut_ptr();
    // SAFETY: the scratch regions are disjoint and sized by scratch_len; every index below is
    // inside its region (BlkBwdGeom covers every gather).
    unsafe {
        let dxs = dys.add(g.dyh * g.dyw * l);
        let wb = dxs.add(g.h * g.w * l);
        let z = S::splat(0.0);
        let row = g.dyw * l;
        for r in (0..g.pt).chain(g.pt + g.oh..g.dyh) {
            for c in 0..g.dyw {
                S::store(dys.add(r * row + c * l), z);
            }
        }
        for r in g.pt..g.pt + g.oh {
            for c in (0..g.pl).chain(g.pl + g.ow..g.dyw) {
                S::store(dys.add(r * row + c * l), z);
            }
        }
        interleave::<S>(dy, g.oh * g.ow, g.ow, g.dyw, g.pt * g.dyw + g.pl, dys);
        for t in 0..taps {
            for c in 0..l {
                *wb.add(t * l + c) = w[c * taps + t];
            }
        }
        let (sh, sw) = stride;
        for ph in &g.phases {
            match ph.off.len() {
                9 => phase_tiles::<S, 9>(g, ph, sh, sw, dys, wb, dxs),
                25 => phase_tiles::<S, 25>(g, ph, sh, sw, dys, wb, dxs),
                _ => phase_tiles::<S, 0>(g, ph, sh, sw, dys, wb, dxs),
            }
        }
        deinterleave::<S>(dxs, g.h * g.w, dx);
    }
}
