//! The input and output transforms of the F(2x2, 3x3) Winograd convolution (Lavin and Gray,
//! "Fast Algorithms for Convolutional Neural Networks", CVPR 2016), written once over
//! [`Simd`] and vectorised across the tiles of a tile row.
//!
//! Input: every 4x4 patch `d` of the zero-padded plane (stride 2) becomes `V = B^T d B` with
//!
//! ```text
//! B^T = | 1  0 -1  0 |        A^T = | 1  1  1  0 |
//!       | 0  1  1  0 |              | 0  1 -1 -1 |
//!       | 0 -1  1  0 |
//!       | 0  1  0 -1 |
//! ```
//!
//! Along a row, tile `t` reads padded columns `2t .. 2t + 3`: the even (`E[t] = P[2t]`) and
//! odd (`O[t] = P[2t + 1]`) columns of the padded row `P`, so `d B` is four vector
//! differences of `E`, `O` and their one-tile shifts (`E[t + 1]`, `O[t + 1]`); `B^T (d B)` then
//! combines four such rows. Output: `Y = A^T M A` for the 4x4 product `M` of a tile, the 2x2
//! result interleaved back into two output rows, then `act(scale * y + bias)`.
//!
//! Only additions and subtractions per call: each rounds once, on differences of neighbouring
//! inputs and on re-associated sums of products that a direct convolution never forms (the
//! error the tests bound and `docs/accuracy.md` measures); the weight transform, the only one
//! with a factor (1/2), runs in f64 at packing time and rounds once.

use super::WinoGeom;
use crate::activation::vector::VecAct;
use crate::simd::Simd;

/// Floats of per-task scratch for the input transform: the row transforms of four padded
/// rows (a ring: consecutive tile rows share two).
pub(super) fn input_scratch_len(g: &WinoGeom) -> usize {
    16 * g.tw_pad
}

/// `L` floats of the padded row `P` from column `q` (`P[i] = x[i - 1]` for `1 <= i <= w`,
/// zero elsewhere): an unmasked load where the run lies inside the row, else a masked one.
///
/// # Safety
/// The CPU supports `S`; `row` points at a row of `w` readable floats.
#[inline(always)]
unsafe fn padded<S: Simd>(row: *const f32, w: usize, q: usize) -> S::V {
    let l = S::L;
    // SAFETY: the unmasked load reads x[q - 1 .. q - 1 + L], inside the row; the masked
    // one reads only the lanes j with 0 <= q - 1 + j < w (its pointer may lie before the
    // row, but no other lane is accessed).
    unsafe {
        if q >= 1 && q - 1 + l <= w {
            S::load(row.add(q - 1))
        } else {
            let (lo, hi) = (1usize.saturating_sub(q), (w + 1).saturating_sub(q).min(l));
            if lo >= hi {
                S::zero()
            } else {
                S::load_masked(row.wrapping_add(q).wrapping_sub(1), S::lane_range(lo, hi))
            }
        }
    }
}

/// The row transform `d B` of padded row `pr` (input row `pr - 1`, zeros outside the plane)
/// into `rt[k * twp + t]`, `k < 4`: with the even columns `E[t] = P[2t]` and the odd ones
/// `O[t] = P[2t + 1]`, `(E[t] - E[t+1], O[t] + E[t+1], E[t+1] - O[t], O[t] - O[t+1])`. Both
/// `(E[t], O[t])` and the shifted `(E[t+1], O[t+1])` come from deinterleaving loads of the
/// row itself (columns `2t` and `2t + 2` on), not from a stored copy read back one float
/// later: such a load straddles the vector store before it and cannot be forwarded from it,
/// which stalled the transform on every row (half of its time on 14 x 14 planes).
///
/// # Safety
/// The CPU supports `S`; `x` holds `h * w` floats; `rt` holds `4 * tw_pad`.
#[inline(always)]
unsafe fn row_transform<S: Simd>(g: &WinoGeom, x: &[f32], pr: usize, rt: &mut [f32]) {
    let (l, twp) = (S::L, g.tw_pad);
    let r = pr.wrapping_sub(1);
    if r >= g.h {
        rt.fill(0.0);
        return;
    }
    let row = x[r * g.w..(r + 1) * g.w].as_ptr();
    // SAFETY: `padded` reads inside the row; rt stores stay below 4 * twp.
    unsafe {
        let out = rt.as_mut_ptr();
        for t0 in (0..twp).step_by(l) {
            let q = 2 * t0;
            let (e0, o0) = S::deinterleave(padded::<S>(row, g.w, q), padded::<S>(row, g.w, q + l));
            let (e1, o1) = S::deinterleave(
                padded::<S>(row, g.w, q + 2),
                padded::<S>(row, g.w, q + 2 + l),
            );
            S::store(out.add(t0), S::sub(e0, e1));
            S::store(out.add(twp + t0), S::add(o0, e1));
            S::store(out.add(2 * twp + t0), S::sub(e1, o0));
            S::store(out.add(3 * twp + t0), S::sub(o0, o1));
        }
    }
}

/// Writes `V` for tile rows `r0..r1` of one input plane `x` (`h x w`): `v[xi * t + b]` is
/// element `xi` (row-major in the 4x4 tile) of tile `b` of the block (`t` tiles, row-major
/// over the block's tile rows; tile row `r0` starts at tile `b_off`).
///
/// # Safety
/// The CPU supports `S`; `x` holds `h * w` floats; `v` holds `16 * t` floats with
/// `b_off + (r1 - r0) * tw <= t`; `scratch` holds [`input_scratch_len`] floats.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
pub(super) unsafe fn input<S: Simd>(
    g: &WinoGeom,
    x: &[f32],
    r0: usize,
    r1: usize,
    t: usize,
    b_off: usize,
    v: &mut [f32],
    scratch: &mut [f32],
) {
    let l = S::L;
    let (tw, twp) = (g.tw, g.tw_pad);
    let rt = scratch;
    let vp = v.as_mut_ptr();
    // Padded row pr lives in ring slot pr % 4; tile row ty reads rows 2ty .. 2ty + 3.
    let slot = |pr: usize| (pr % 4) * 4 * twp;
    for ty in r0..r1 {
        let first = if ty == r0 { 2 * ty } else { 2 * ty + 2 };
        for pr in first..2 * ty + 4 {
            let s0 = slot(pr);
            // SAFETY: forwarded contract; the slot holds 4 * twp floats.
            unsafe { row_transform::<S>(g, x, pr, &mut rt[s0..s0 + 4 * twp]) };
        }
        // B^T (d B): tile element (i', k) from the four rows' k-th arrays.
        let b0 = b_off + (ty - r0) * tw;
        let rows = [
            slot(2 * ty),
            slot(2 * ty + 1),
            slot(2 * ty + 2),
            slot(2 * ty + 3),
        ];
        for k in 0..4 {
            for t0 in (0..tw).step_by(l) {
                let n = l.min(tw - t0);
                // SAFETY: rt holds 16 * twp floats and t0 + L <= twp; v holds 16 * t floats
                // and b0 + t0 + n <= t (tails stored partially).
                unsafe {
                    let row = |i: usize| S::load(rt.as_ptr().add(rows[i] + k * twp + t0));
                    let (d0, d1, d2, d3) = (row(0), row(1), row(2), row(3));
                    let outs = [
                        S::sub(d0, d2),
                        S::add(d1, d2),
                        S::sub(d2, d1),
                        S::sub(d1, d3),
                    ];
                    for (ip, val) in outs.into_iter().enumerate() {
                        let p = vp.add((4 * ip + k) * t + b0 + t0);
                        if n == l {
                            S::store(p, val);
                        } else {
                            S::store_first(p, val, n);
                        }
                    }
                }
            }
        }
    }
}

/// Turns the products `M` of tile rows `r0..r1` for one output channel into its output rows
/// `2 r0 .. min(2 r1, h)`: `y = act(scale * (A^T M A) + bias)`. `m` points at the channel's
/// product for tile row `r0`; element `xi` of its tile `b` is at `m + xi * xs + b`.
///
/// # Safety
/// The CPU supports `S`; `m + xi * xs + b` is readable for every `xi < 16` and
/// `b < t + L` (`t` tiles in the block; the buffer is padded); `y` is the channel's output
/// plane (`h x w` floats), writable at rows `2 r0 .. min(2 r1, h)`.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
pub(super) unsafe fn output<S: Simd, A: VecAct>(
    g: &WinoGeom,
    m: *const f32,
    xs: usize,
    r0: usize,
    r1: usize,
    scale: Option<f32>,
    bias: f32,
    act: A,
    y: *mut f32,
) {
    let l = S::L;
    let tw = g.tw;
    // SAFETY: the caller's contract covers every load and store below.
    unsafe {
        let (sv, bv) = (S::splat(scale.unwrap_or(1.0)), S::splat(bias));
        let epi = |v: S::V| {
            let v = if scale.is_some() { S::mul(v, sv) } else { v };
            act.apply::<S>(S::add(v, bv))
        };
        for ty in r0..r1 {
            let b0 = (ty - r0) * tw;
            for t0 in (0..tw).step_by(l) {
                let ld = |xi: usize| S::load(m.add(xi * xs + b0 + t0));
                // M A: per tile row i, columns (m0 + m1 + m2, m1 - m2 - m3).
                let mut q = [[S::zero(); 2]; 4];
                for (i, qi) in q.iter_mut().enumerate() {
                    let (a, b, c, d) = (ld(4 * i), ld(4 * i + 1), ld(4 * i + 2), ld(4 * i + 3));
                    qi[0] = S::add(S::add(a, b), c);
                    qi[1] = S::sub(S::sub(b, c), d);
                }
                let rows = [
                    [
                        S::add(S::add(q[0][0], q[1][0]), q[2][0]),
                        S::add(S::add(q[0][1], q[1][1]), q[2][1]),
                    ],
                    [
                        S::sub(S::sub(q[1][0], q[2][0]), q[3][0]),
                        S::sub(S::sub(q[1][1], q[2][1]), q[3][1]),
                    ],
                ];
                let (x0, cols) = (2 * t0, (2 * l).min(g.w - 2 * t0));
                for (dy, [c0, c1]) in rows.into_iter().enumerate() {
                    let oy = 2 * ty + dy;
                    if oy >= g.h {
                        break;
                    }
                    let (lo, hi) = S::interleave(epi(c0), epi(c1));
                    let p = y.add(oy * g.w + x0);
                    if cols >= 2 * l {
                        S::store(p, lo);
                        S::store(p.add(l), hi);
                    } else if cols > l {
                        S::store(p, lo);
                        S::store_first(p.add(l), hi, cols - l);
                    } else if cols == l {
                        S::store(p, lo);
                    } else {
                        S::store_first(p, lo, cols);
                    }
                }
            }
        }
    }
}
