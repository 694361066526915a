//! Implicit-GEMM convolution: the product `Y^T [pixels, c_out] = cols^T W^T` of the transposed
//! form (`dense::forward_transposed`) computed without the im2col matrix. A register tile holds
//! `MR` consecutive output pixels of one row by `NR` output channels; for each tap `(i, j)` and
//! input channel `c` it broadcasts the `MR` input values under those pixels straight from the
//! image and multiplies them by one packed row of `NR` weights. The padding taps, which im2col
//! writes as zeros and the GEMM multiplies, are skipped: whole filter rows that fall outside
//! the image, and the first or last pixel of a tile whose tap column does. This is the loop of
//! oneDNN's `brgconv` (Georganas et al., "Anatomy of High-Performance Deep Learning
//! Convolutions on SIMD Architectures", SC 2018) on an NCHW image, its channels-last output
//! tile stored through the GEMM microkernel's transposed store.
//!
//! ```text
//! weights packed once:  wp[panel q][tap t = (i, j)][c][n < P] = w[P*q + n][c][i][j]
//! tile (MR pixels ox0.. of output row oy, NV vectors of channels):
//!   for each tap (i, j) whose input row iy = oy*sh + i - ph is inside the image:
//!     for c in 0..c_in:                                         (one k step)
//!       b[v]      = wp[p][t][c][v*L ..]                          NV loads
//!       acc[r][v] += x[c][iy][(ox0 + r)*sw + j - pw] * b[v]      MR broadcasts, MR*NV FMAs
//!                    (r = 0 or MR - 1 skipped when that column is padding)
//!   y[channel][oy][ox0 + r] = act(scale * acc + bias)           transposed store, one pass
//! ```
//!
//! The tiles fill the vector registers: on AVX-512 (32 registers, panels of P = 32 channels)
//! 14 pixels x 32 channels (28 accumulators, 2 weight vectors, the broadcast) on planes whose
//! width is a multiple of 14 (14, 28, 56, 112: every stage of a 224-pixel ResNet), and 7
//! pixels x 64 channels on 7-pixel planes. AVX2 has 16 registers: a 14 x 8 tile (14
//! accumulators, the broadcast, the weights as memory operands) leaves the compiler no room,
//! and it moved the accumulators through the stack between taps (measured 5x slower than the
//! GEMM on Zen 4's AVX2 path), so AVX2 keeps the GEMM forms. No k blocking:
//! the accumulators live through the whole reduction (`kh * kw * c_in` steps) and are stored
//! once; a panel's weights (`9 * c_in * 128` bytes, 295 KiB for 256 channels) stay in L2
//! while the tasks of one thread walk its rows, and so does the image. Compared with im2col
//! and the GEMM this saves the column matrix (1.8 MiB for 256 channels at 14 x 14, which does
//! not fit a 1 MiB L2), its packing, and 9% (14 x 14) to 18% (7 x 7) of the FMAs.
//!
//! Each output is one FMA chain over the taps in `(i, j)` order and the input channels in
//! order within a tap, whatever the task split: bit-identical for any thread count. The order
//! differs from the im2col GEMM's (`(c, i, j)`, in KC blocks), so the last bits differ from
//! that path's.

use super::dense::{valid_range, ChannelEpilogue};
use super::Conv2dShape;
use crate::activation::Activation;
use crate::error::KernelError;
use crate::gemm::kernel::TileEpilogue;
use crate::isa::Isa;

/// Most taps a filter may have here (3 x 3).
const MAX_TAPS: usize = 9;

/// Output channels per packed weight panel on `isa` (two AVX-512 vectors), or `None` where
/// the kernel does not run.
pub(crate) fn panel_width(isa: Isa) -> Option<usize> {
    match isa {
        _ if !cfg!(target_arch = "x86_64") => None,
        Isa::Avx512 => Some(32),
        _ => None,
    }
}

/// A register tile: `mr` consecutive output pixels of one row by `channels` output channels
/// (whole panels of the ISA).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Tile {
    pub mr: usize,
    pub channels: usize,
}

/// The tile that runs `s` here on `isa`, or `None` when this kernel does not take the shape:
/// AVX-512 (14 x 32 tiles on rows of a multiple of 14 pixels, 7 x 64 on 7-pixel rows), one
/// group, no dilation, at most 3 x 3 taps, a horizontal stride of 1 or 2, whole tiles of
/// output channels, and padding that reaches at most one pixel into each tile from either
/// side.
pub(crate) fn tile_for(isa: Isa, s: &Conv2dShape) -> Option<Tile> {
    panel_width(isa)?;
    if s.groups != 1
        || s.dilation != (1, 1)
        || s.kh * s.kw > MAX_TAPS
        || !(1..=2).contains(&s.stride.1)
        || s.c_in == 0
        || s.n == 0
    {
        return None;
    }
    let ow = s.out_w();
    let fits = |channels: usize| s.c_out.is_multiple_of(channels);
    let tile = match isa {
        Isa::Avx512 if ow.is_multiple_of(14) && fits(32) => Tile {
            mr: 14,
            channels: 32,
        },
        Isa::Avx512 if ow == 7 && fits(64) => Tile {
            mr: 7,
            channels: 64,
        },
        _ => return None,
    };
    for ox0 in (0..ow).step_by(tile.mr) {
        for j in 0..s.kw {
            let (x0, x1) = valid_range(ow, s.w, s.stride.1, s.padding.1, j);
            let (lo, hi) = (x0.max(ox0), x1.min(ox0 + tile.mr));
            if lo >= hi || lo > ox0 + 1 || hi + 1 < ox0 + tile.mr {
                return None;
            }
        }
    }
    Some(tile)
}

/// Packs `w` (`[c_out, c_in, kh, kw]`) into `[ceil(c_out / P)][kh * kw][c_in][P]`, zero past
/// `c_out`, `P` the panel width of `isa` ([`panel_width`]; `None` where the kernel does not
/// run).
pub(crate) fn pack_weights(
    w: &[f32],
    shape: [usize; 4],
    isa: Isa,
) -> Option<crate::memory::AlignedBuf> {
    let p = panel_width(isa)?;
    let [c_out, c_in, kh, kw] = shape;
    let taps = kh * kw;
    let plen = taps * c_in * p;
    let mut out = crate::memory::AlignedBuf::zeroed(c_out.div_ceil(p) * plen);
    for (co, filt) in w.chunks_exact(c_in * taps).enumerate().take(c_out) {
        let panel = &mut out[(co / p) * plen..][..plen];
        for (k, &v) in filt.iter().enumerate() {
            let (c, t) = (k / taps, k % taps);
            panel[(t * c_in + c) * p + co % p] = v;
        }
    }
    Some(out)
}

/// The geometry a row task sees.
#[derive(Clone, Copy, Debug)]
struct Geom {
    c_in: usize,
    h: usize,
    w: usize,
    sh: usize,
    ph: usize,
    pw: usize,
    kh: usize,
    kw: usize,
    ow: usize,
    /// Floats per packed panel.
    panel_len: usize,
}

/// One tap of a tile: where its pixel 0 reads (relative to the image, channel 0; possibly
/// before the image when `skip_first`), where its weights start in the panel, and whether its
/// first or last pixel falls on padding.
#[derive(Clone, Copy, Default)]
struct Tap {
    a: isize,
    b: usize,
    skip_first: bool,
    skip_last: bool,
}

/// One output row `oy` of one tile's worth of channels (a group of panels), for one image:
/// every tile of the row.
///
/// # Safety
/// The CPU supports the ISA; `x` holds the image's `c_in * h * w` floats; `wp` the group's
/// panels (`panel_len` floats apart); `y` points at the group's first output channel of the
/// image, whose planes of `ohw` floats (one per channel of the tile) are writable at row `oy`;
/// `scale` / `bias` are null or hold one value per channel of the group; the shape was accepted by
/// [`tile_for`] with this tile.
type RowFn = unsafe fn(
    g: &Geom,
    x: *const f32,
    oy: usize,
    wp: *const f32,
    y: *mut f32,
    ohw: usize,
    scale: *const f32,
    bias: *const f32,
    act: Activation,
);

/// The generic body: [`tap`] and [`row`] over any vector ISA `S`, a tile of `MR` pixels by
/// `NV` vectors, weight panels `P` channels wide.
mod body {
    use super::*;
    use crate::gemm::microkernel::finish;
    use crate::simd::Simd;

    /// The k steps of one tap over every input channel: `MR` broadcasts (the first / last
    /// skipped on padding) and `MR * NV` FMAs per channel.
    ///
    /// # Safety
    /// `a + r * SW + c * plane` is readable for every channel `c` and every pixel `r` not
    /// skipped; `b` holds `c_in` rows of `P` floats, and so does `b + q * panel_len` for each
    /// further panel `q < NV * L / P` of the tile; `S`'s ISA is enabled in the caller.
    #[inline(always)]
    #[allow(clippy::too_many_arguments)]
    unsafe fn tap<
        S: Simd,
        const MR: usize,
        const NV: usize,
        const P: usize,
        const SW: usize,
        const F: bool,
        const T: bool,
    >(
        acc: &mut [[S::V; NV]; MR],
        a: *const f32,
        plane: usize,
        b: *const f32,
        panel_len: usize,
        c_in: usize,
    ) {
        let vp = P / S::L;
        let (mut a, mut b) = (a, b);
        // SAFETY: the function's contract; `a` may point before the image when the first
        // pixel is skipped, so it moves by wrapping arithmetic and is read only at valid pixels.
        unsafe {
            for _ in 0..c_in {
                let mut bv = [S::zero(); NV];
                for (v, x) in bv.iter_mut().enumerate() {
                    *x = S::load(b.add((v / vp) * panel_len + (v % vp) * S::L));
                }
                for (r, row) in acc.iter_mut().enumerate() {
                    if (F && r == 0) || (T && r == MR - 1) {
                        continue;
                    }
                    let ar = S::broadcast(a.wrapping_add(r * SW));
                    for v in 0..NV {
                        row[v] = S::fma(ar, bv[v], row[v]);
                    }
                }
                a = a.wrapping_add(plane);
                b = b.add(P);
            }
        }
    }

    /// See [`RowFn`].
    #[inline(always)]
    #[allow(clippy::too_many_arguments)]
    pub(super) unsafe fn row<
        S: Simd,
        const MR: usize,
        const NV: usize,
        const P: usize,
        const SW: usize,
    >(
        g: &Geom,
        x: *const f32,
        oy: usize,
        wp: *const f32,
        y: *mut f32,
        ohw: usize,
        scale: *const f32,
        bias: *const f32,
        act: Activation,
    ) {
        let plane = g.h * g.w;
        let epi = TileEpilogue {
            alpha: 1.0,
            beta: 0.0,
            load_c: false,
            bias_row: std::ptr::null(),
            bias_col: bias,
            scale_row: std::ptr::null(),
            scale_col: scale,
            activation: act,
            prefetch: std::ptr::null(),
            prefetch_rs: 0,
            copy_to: std::ptr::null_mut(),
            prefetch_l2: false,
        };
        // SAFETY: the contract of `RowFn`: `tile_for` guarantees that each tap's invalid
        // pixels are at most the tile's first and last, which `skip_first` / `skip_last`
        // mark; rows outside the image are not taps.
        unsafe {
            for ox0 in (0..g.ow).step_by(MR) {
                let mut taps = [Tap::default(); MAX_TAPS];
                let mut n = 0;
                for i in 0..g.kh {
                    let iy = (oy * g.sh + i) as isize - g.ph as isize;
                    if iy < 0 || iy >= g.h as isize {
                        continue;
                    }
                    for j in 0..g.kw {
                        let col0 = (ox0 * SW + j) as isize - g.pw as isize;
                        taps[n] = Tap {
                            a: iy * g.w as isize + col0,
                            b: (i * g.kw + j) * g.c_in * P,
                            skip_first: col0 < 0,
                            skip_last: col0 + ((MR - 1) * SW) as isize >= g.w as isize,
                        };
                        n += 1;
                    }
                }
                let mut acc = [[S::zero(); NV]; MR];
                for t in &taps[..n] {
                    let (a, b) = (x.wrapping_offset(t.a), wp.add(t.b));
                    let args = (&mut acc, a, plane, b, g.panel_len, g.c_in);
                    match (t.skip_first, t.skip_last) {
                        (false, false) => call::<S, MR, NV, P, SW, false, false>(args),
                        (true, false) => call::<S, MR, NV, P, SW, true, false>(args),
                        (false, true) => call::<S, MR, NV, P, SW, false, true>(args),
                        (true, true) => call::<S, MR, NV, P, SW, true, true>(args),
                    }
                }
                finish::<S, MR, NV, true>(&mut acc, y.add(oy * g.ow + ox0), ohw, &epi);
            }
        }
    }

    type TapArgs<'a, V, const MR: usize, const NV: usize> = (
        &'a mut [[V; NV]; MR],
        *const f32,
        usize,
        *const f32,
        usize,
        usize,
    );

    /// [`tap`] on a tuple of its arguments.
    ///
    /// # Safety
    /// As [`tap`].
    #[inline(always)]
    unsafe fn call<
        S: Simd,
        const MR: usize,
        const NV: usize,
        const P: usize,
        const SW: usize,
        const F: bool,
        const T: bool,
    >(
        t: TapArgs<'_, S::V, MR, NV>,
    ) {
        // SAFETY: forwarded contract.
        unsafe { tap::<S, MR, NV, P, SW, F, T>(t.0, t.1, t.2, t.3, t.4, t.5) }
    }
}

/// Declares the `#[target_feature]` entry points: one [`RowFn`] per (ISA, tile, stride).
macro_rules! rows {
    ($($name:ident: $simd:ty, $mr:literal x $nv:literal, panel $p:literal, stride $sw:literal, $feat:literal;)*) => {$(
        /// # Safety
        /// See [`RowFn`]; the CPU supports the ISA.
        #[cfg(target_arch = "x86_64")]
        #[target_feature(enable = $feat)]
        #[allow(clippy::too_many_arguments)]
        unsafe fn $name(
            g: &Geom,
            x: *const f32,
            oy: usize,
            wp: *const f32,
            y: *mut f32,
            ohw: usize,
            scale: *const f32,
            bias: *const f32,
            act: Activation,
        ) {
            // SAFETY: forwarded contract; the features are enabled on this function.
            unsafe { body::row::<$simd, $mr, $nv, $p, $sw>(g, x, oy, wp, y, ohw, scale, bias, act) }
        }
    )*};
}

rows! {
    avx512_14x32_s1: crate::simd::Avx512, 14 x 2, panel 32, stride 1, "avx512f";
    avx512_14x32_s2: crate::simd::Avx512, 14 x 2, panel 32, stride 2, "avx512f";
    avx512_7x64_s1: crate::simd::Avx512, 7 x 4, panel 32, stride 1, "avx512f";
    avx512_7x64_s2: crate::simd::Avx512, 7 x 4, panel 32, stride 2, "avx512f";
}

/// The row function of `tile` on `isa` at horizontal stride `sw`.
fn row_fn(isa: Isa, tile: Tile, sw: usize) -> Option<RowFn> {
    #[cfg(target_arch = "x86_64")]
    {
        let f: RowFn = match (isa, tile.mr, sw) {
            (Isa::Avx512, 14, 1) => avx512_14x32_s1,
            (Isa::Avx512, 14, 2) => avx512_14x32_s2,
            (Isa::Avx512, 7, 1) => avx512_7x64_s1,
            (Isa::Avx512, 7, 2) => avx512_7x64_s2,
            _ => return None,
        };
        Some(f)
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = (isa, tile, sw);
        None
    }
}

/// `y = act(scale * conv(x, w) + bias)` with `wp` from [`pack_weights`]; the lengths checked
/// by the caller. Errors: a shape [`tile_for`] rejects on `isa`, an ISA this CPU lacks.
pub(crate) fn forward(
    isa: Isa,
    s: &Conv2dShape,
    x: &[f32],
    wp: &[f32],
    epi: ChannelEpilogue<'_>,
    y: &mut [f32],
) -> Result<(), KernelError> {
    const OP: &str = "conv2d implicit";
    isa.check()?;
    let tile = tile_for(isa, s).ok_or_else(|| {
        KernelError::invalid(
            OP,
            format!("{s}: the implicit-GEMM kernel does not run this shape on {isa}"),
        )
    })?;
    let (f, p) = row_fn(isa, tile, s.stride.1)
        .zip(panel_width(isa))
        .ok_or_else(|| KernelError::invalid(OP, format!("{s}: no kernel on {isa}")))?;
    let (oh, ow, hw) = (s.out_h(), s.out_w(), s.h * s.w);
    let panel_len = s.kh * s.kw * s.c_in * p;
    if wp.len() != s.c_out.div_ceil(p) * panel_len {
        return Err(KernelError::invalid(
            OP,
            format!(
                "{s}: {} packed weights, expected {}",
                wp.len(),
                s.c_out.div_ceil(p) * panel_len
            ),
        ));
    }
    let g = Geom {
        c_in: s.c_in,
        h: s.h,
        w: s.w,
        sh: s.stride.0,
        ph: s.padding.0,
        pw: s.padding.1,
        kh: s.kh,
        kw: s.kw,
        ow,
        panel_len,
    };
    let ohw = oh * ow;
    // Tasks are claimed in contiguous runs, so a thread keeps to a range of them, and their
    // order decides what each thread reads. Where the weights are the larger operand they
    // run group by group: a group's panels stay in L2 while the images and rows go by (at
    // batch 8 an image-major order re-read every panel from L3 per image), and each thread
    // reads its own groups' weights and the whole image. Where an image is larger than the
    // weights (`h w > c_out kh kw`: the first stages of a ResNet) they run row by row, every
    // group of a row together, so each thread reads its own rows of the image and all the
    // weights: on Sapphire Rapids at two threads, SE-ResNet-101's 128 -> 128 3x3/2 @56x56
    // took 0.95-0.98 ms that way against 1.37-1.42 group by group (1.6 MiB image, 0.6 MiB
    // weights), while on its deeper layers the row order was up to 1.7x slower.
    let rows_major = s.h * s.w > s.c_out * s.kh * s.kw;
    let groups = s.c_out / tile.channels;
    let per_grp = s.n * oh;
    let y_addr = y.as_mut_ptr() as usize;
    let task = |t: usize| {
        let (grp, img, oy) = if rows_major {
            let (r, grp) = (t / groups, t % groups);
            (grp, r / oh, r % oh)
        } else {
            (t / per_grp, t % per_grp / oh, t % oh)
        };
        let c0 = grp * tile.channels;
        let at = |v: Option<&[f32]>| v.map_or(std::ptr::null(), |v| v[c0..].as_ptr());
        let yi = (y_addr as *mut f32).wrapping_add((img * s.c_out + c0) * ohw);
        // SAFETY: the ISA was checked; the shape was accepted by `tile_for` with this tile;
        // x holds image img's c_in * h * w floats (checked by the caller); the group's panels
        // start at c0 / p * panel_len and its channels / p panels are within `wp` (length checked
        // above); scale and bias are null or c_out long (checked by the caller); row oy of the
        // group's channels of image img is written by this task only.
        unsafe {
            f(
                &g,
                x[img * s.c_in * hw..].as_ptr(),
                oy,
                wp[c0 / p * panel_len..].as_ptr(),
                yi,
                ohw,
                at(epi.scale),
                at(epi.bias),
                epi.act,
            )
        }
    };
    crate::parallel::for_each_task(groups * per_grp, task);
    Ok(())
}
