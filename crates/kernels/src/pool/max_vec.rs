//! The vector body of max pooling, values alone or with the argmax, written once over
//! [`Simd`] and instantiated per ISA (the pattern of `simd/`). Semantics are those of the
//! window-by-window reference in `max.rs` (PyTorch's `aten/src/ATen/native/cpu/
//! MaxPoolKernel.cpp`): taps in row-major window order, `take v where v > best or v is NaN`,
//! padding never wins. The result equals the reference bit for bit: values, signed zeros, NaN
//! payloads and indices.
//!
//! Per plane, each input row is split once into the `sw` phases of its padded row
//! (`phase[q][k] = padded[k * sw + q]`, where `padded[t] = row[t - pw]` and everything outside
//! the row is `-inf`) and kept in a ring of `kh` slots, so a row shared by overlapping windows
//! (stride < kernel) is split once. Stride 2 splits with [`Simd::deinterleave`], two vectors
//! in, an even and an odd vector out. Then an output row is computed `L` columns at a time:
//! tap `(r, j)` of outputs `ox0 .. ox0 + L` is `phase[j % sw][ox0 + j / sw ..]` of row `r`,
//! one unit-stride load. A `3 x 3` stride-2 window over a 112-wide row is 9 loads and 9
//! compare-selects per 16 outputs on AVX-512, against 9 scalar compares per output.
//!
//! ```text
//!   padded row (pw = 1):  -inf  x0  x1  x2  x3  x4  x5 ...
//!   phase 0 (even t):     -inf  x1  x3  x5 ...     tap j = 0: phase 0 at ox
//!   phase 1 (odd t):       x0   x2  x4  x6 ...     tap j = 1: phase 1 at ox
//!                                                  tap j = 2: phase 0 at ox + 1
//! ```

use super::Pool2dShape;
use crate::simd::Simd;

/// The geometry of one plane, and the length of one phase of a split row.
#[derive(Clone, Copy, Debug)]
pub(super) struct Geom {
    h: usize,
    w: usize,
    ow: usize,
    oh: usize,
    kh: usize,
    kw: usize,
    sh: usize,
    sw: usize,
    ph: usize,
    pw: usize,
    /// Floats per phase: every stored column `(pw + w - 1) / sw` and every vector read
    /// `ox0 + (kw - 1) / sw + L - 1` (with `ox0 < ow`, `L <= 16`) is below it.
    plen: usize,
}

/// The widest vector of any ISA.
pub(super) const MAX_L: usize = 16;

impl Geom {
    pub(super) fn new(s: &Pool2dShape) -> Self {
        let (sw, pw, ow) = (s.stride.1, s.padding.1, s.out_w());
        let plen = ((pw + s.w - 1) / sw + 1).max(ow + (s.kw - 1) / sw + MAX_L);
        Geom {
            h: s.h,
            w: s.w,
            ow,
            oh: s.out_h(),
            kh: s.kh,
            kw: s.kw,
            sh: s.stride.0,
            sw,
            ph: s.padding.0,
            pw,
            plen,
        }
    }

    /// Floats of the ring of split rows.
    pub(super) fn ring_len(&self) -> usize {
        self.kh * self.sw * self.plen
    }

    /// Entries of the column tables `offs` and `first` (see [`plane`]).
    pub(super) fn cols(&self) -> usize {
        self.ow + MAX_L
    }

    /// `offs[ox] = ox * sw` (the column of output `ox`'s window in padded coordinates) and
    /// `first[ox]` = the first input column inside that window (the reference's starting
    /// index), zero past `ow`.
    pub(super) fn column_tables(&self) -> (Vec<u32>, Vec<u32>) {
        let offs = (0..self.cols()).map(|ox| (ox * self.sw) as u32).collect();
        let first = (0..self.cols())
            .map(|ox| (ox * self.sw).saturating_sub(self.pw) as u32)
            .collect();
        (offs, first)
    }
}

/// Splits row `row` (`w` floats) into the `sw` phases of the row padded by `pw` on the left,
/// at `dst` (`sw * plen` floats): `dst[q * plen + k] = row[k * sw + q - pw]`. Only the slots of
/// input columns are written; the caller fills the others (padding) beforehand. Shared with
/// the direct convolution of the stems (`conv/stem.rs`).
///
/// # Safety
/// The CPU supports `S`; `row` readable for `w` floats, `dst` writable for `sw * plen`, with
/// `(pw + w - 1) / sw < plen`.
#[inline(always)]
pub(crate) unsafe fn split_row<S: Simd>(
    row: *const f32,
    w: usize,
    sw: usize,
    pw: usize,
    plen: usize,
    dst: *mut f32,
) {
    let l = S::L;
    let mut c = 0;
    // SAFETY: reads below `w` (the masked loads read only their lanes below `w`); every write
    // lands at phase `t % sw`, slot `t / sw` for an input column `c < w` (`t = c + pw`), below
    // `plen` by its definition (the masked stores write only such slots).
    unsafe {
        if sw == 1 {
            while c + l <= w {
                S::store(dst.add(pw + c), S::load(row.add(c)));
                c += l;
            }
            if c < w {
                S::store_first(dst.add(pw + c), S::load_first(row.add(c), w - c), w - c);
                c = w;
            }
        } else if sw == 2 {
            // Columns 2i + 2m (m < L) have t = 2i + 2m + pw: phase pw % 2, slot i + m + pw / 2;
            // columns 2i + 2m + 1 the other phase, slot i + m + (pw + 1) / 2.
            let even = dst.add((pw % 2) * plen + pw / 2);
            let odd = dst.add(((pw + 1) % 2) * plen + pw.div_ceil(2));
            while c + 2 * l <= w {
                let (e, o) = S::deinterleave(S::load(row.add(c)), S::load(row.add(c + l)));
                S::store(even.add(c / 2), e);
                S::store(odd.add(c / 2), o);
                c += 2 * l;
            }
            // The last n < 2L columns through masked loads and stores: the scalar loop below
            // divides by `sw` twice per column, and on a 112-wide row (96 columns in whole
            // vector pairs, 16 left) it took most of the split's time.
            let n = w - c;
            if n > 0 {
                let (lo, hi) = if n > l {
                    (S::load(row.add(c)), S::load_first(row.add(c + l), n - l))
                } else if n == l {
                    (S::load(row.add(c)), S::zero())
                } else {
                    (S::load_first(row.add(c), n), S::zero())
                };
                let (e, o) = S::deinterleave(lo, hi);
                let (ne, no) = (n.div_ceil(2), n / 2);
                if ne == l {
                    S::store(even.add(c / 2), e);
                } else {
                    S::store_first(even.add(c / 2), e, ne);
                }
                if no > 0 {
                    S::store_first(odd.add(c / 2), o, no);
                }
                c = w;
            }
        }
        while c < w {
            let t = c + pw;
            *dst.add((t % sw) * plen + t / sw) = *row.add(c);
            c += 1;
        }
    }
}

/// The reference's update of one tap across the lanes: `v` where `v > best` or `v` is NaN,
/// else `best`. `S::max(v, best)` is `v > best ? v : best` (`best` when either is NaN); the NaN
/// case of `v` is patched with its bits: `0x7f800000 - |v|` is negative exactly when `|v|` is
/// above the infinity pattern, that is when `v` is NaN.
#[inline(always)]
unsafe fn take<S: Simd>(v: S::V, best: S::V, inf: S::V) -> S::V {
    // SAFETY: lane arithmetic.
    unsafe { S::select_sign(S::isub(inf, S::abs(v)), v, S::max(v, best)) }
}

/// One plane: `y[oy * ow + ox]` = the maximum of output `(oy, ox)`'s window and, if `ARG`,
/// `arg[..]` = its flat index in the `h * w` plane, both as the reference computes them.
/// `KW`, `SW`: the window width and horizontal stride when fixed at compile time (the ResNet
/// stem's 3 and 2), or 0 for the runtime values.
///
/// # Safety
/// The CPU supports `S`; `KW`, `SW` are 0 or `g.kw`, `g.sw`; `x` readable for `h * w` floats;
/// `y` writable for `oh * ow`; `ring` writable for [`Geom::ring_len`] floats; if `ARG`, `arg`
/// writable for `oh * ow` and `offs`, `first` readable for [`Geom::cols`] entries, as
/// [`Geom::column_tables`] builds them (unused otherwise).
#[inline(always)]
pub(super) unsafe fn plane<S: Simd, const ARG: bool, const KW: usize, const SW: usize>(
    g: &Geom,
    x: *const f32,
    y: *mut f32,
    arg: *mut u32,
    ring: *mut f32,
    offs: *const u32,
    first: *const u32,
) {
    let (l, w, ow, plen) = (S::L, g.w, g.ow, g.plen);
    let slot = g.sw * plen;
    // SAFETY: the ring holds kh slots of `slot` floats; rows are below h; the column loads
    // read `offs` / `first` below ox0 + L <= cols and the phases below
    // (ox0 + L - 1) + (kw - 1) / sw < plen; the stores write the ow outputs of row oy.
    unsafe {
        for i in 0..g.ring_len() {
            *ring.add(i) = f32::NEG_INFINITY;
        }
        let inf = S::splat(f32::INFINITY);
        let bits = |u: u32| S::splat(f32::from_bits(u));
        // Rows [0, next) have been split; the last kh of them are in the ring (row r in slot
        // r % kh). Windows move down, so each oy needs at most the rows past `next`.
        let mut next = 0;
        for oy in 0..g.oh {
            let y0 = (oy * g.sh) as isize - g.ph as isize;
            let r0 = y0.max(0) as usize;
            let r1 = ((y0 + g.kh as isize).min(g.h as isize)).max(0) as usize;
            for r in next.max(r0)..r1 {
                split_row::<S>(
                    x.add(r * w),
                    w,
                    g.sw,
                    g.pw,
                    plen,
                    ring.add((r % g.kh) * slot),
                );
            }
            next = next.max(r1);
            let (yrow, arow) = (y.add(oy * ow), arg.wrapping_add(oy * ow));
            // The ring slot of row r0 (one division per output row; the rows of the window
            // then step through the slots).
            let s0 = r0 % g.kh;
            let mut ox0 = 0;
            while ox0 < ow {
                let mut best = S::splat(f32::NEG_INFINITY);
                let mut idx = if ARG {
                    S::iadd(S::load(first.add(ox0).cast()), bits((r0 * w) as u32))
                } else {
                    best
                };
                let cols = if ARG {
                    S::load(offs.add(ox0).cast())
                } else {
                    best
                };
                let mut sl = s0;
                for r in r0..r1 {
                    let src = ring.add(sl * slot + ox0);
                    sl = if sl + 1 == g.kh { 0 } else { sl + 1 };
                    // Tap j reads phase j % sw at j / sw: constants when the window is fixed at
                    // compile time (KW, SW > 0), else stepped (no division in the loop).
                    let (kw, sw) = if KW > 0 { (KW, SW) } else { (g.kw, g.sw) };
                    let (mut q, mut k) = (0, 0);
                    for j in 0..kw {
                        let at_j = if KW > 0 {
                            (j % SW) * plen + j / SW
                        } else {
                            q * plen + k
                        };
                        q += 1;
                        if q == sw {
                            q = 0;
                            k += 1;
                        }
                        let v = S::load(src.add(at_j));
                        if ARG {
                            // Index of tap j of output ox: r * w + ox * sw + j - pw (wrapping
                            // for padding taps, which are -inf and never taken).
                            let at =
                                S::iadd(cols, bits(((r * w + j) as u32).wrapping_sub(g.pw as u32)));
                            let nan = S::isub(inf, S::abs(v));
                            let gt = S::gt(v, best);
                            best = S::select_sign(nan, v, S::select(gt, v, best));
                            idx = S::select_sign(nan, at, S::select(gt, at, idx));
                        } else {
                            best = take::<S>(v, best, inf);
                        }
                    }
                }
                let n = ow - ox0;
                if n >= l {
                    S::store(yrow.add(ox0), best);
                    if ARG {
                        S::store(arow.add(ox0).cast(), idx);
                    }
                } else {
                    S::store_first(yrow.add(ox0), best, n);
                    if ARG {
                        S::store_first(arow.add(ox0).cast(), idx, n);
                    }
                }
                ox0 += l;
            }
        }
    }
}
