//! Dense (and grouped) convolution through the GEMM of [`crate::gemm`], per image and group
//! (Chellapilla, Puri & Simard, "High Performance Convolutional Neural Networks for Document
//! Processing", 2006; the layout of Caffe's and PyTorch's CPU `Conv2d`):
//!
//! ```text
//! 1x1, stride 1, no padding (pointwise):   Y_g[co, hw]  = W_g[co, ci] * X_g[ci, hw]        (NCHW as is)
//! k x k:   cols[ci*kh*kw, oh*ow] = im2col(X_g);   Y_g = W_g[co, ci*kh*kw] * cols
//! bias + activation: the GEMM epilogue (`Bias::PerRow`), in registers, before the store
//! input gradient:   dcols = W_g^T * dY_g;  dX_g = col2im(dcols)   (pointwise: dX_g = W_g^T dY_g)
//! weight gradient:  dW_g = sum_images dY_g * cols^T                (pointwise: dY_g * X_g^T)
//! ```
//! Small planes put several images into one GEMM (`dense_batched.rs`). Transposes are strided
//! views, never copies. The im2col buffer is per thread and reused, so
//! a warm convolution allocates nothing. The GEMM splits only output dimensions across threads
//! and images are summed in order, so results are bit-identical for any thread count.

use super::dense_batched::{
    backward_input_batched, backward_weight_batched, batch_images, forward_batched,
    weight_batch_images,
};
use super::{stem, Conv2dShape};
use crate::activation::Activation;
use crate::error::KernelError;
use crate::gemm::{
    gemm, gemm_ex, Bias, Epilogue, GemmConfig, MatMut, MatRef, Operand, PackedMatrix, Scale,
};
use crate::isa::Isa;
use rayon::prelude::*;
use std::cell::Cell;

thread_local! {
    /// Per-thread im2col / gradient-column buffer, kept between calls. Taken out while in use,
    /// so a nested call on the same thread (rayon work stealing) gets its own.
    static COLS: Cell<Vec<f32>> = const { Cell::new(Vec::new()) };
}

thread_local! {
    /// Per-thread packed weights (one per group) of the current call, reused between calls.
    static PACKS: Cell<Vec<PackedMatrix>> = const { Cell::new(Vec::new()) };
}

/// Runs `f` with the left operand of every group, `a(g)`, packed once for this call: the
/// images of a batch share it instead of each GEMM repacking the same filters. The storage is
/// per thread and reused, so a warm call allocates nothing.
fn with_packed_groups<'a, R>(
    isa: Isa,
    groups: usize,
    a: impl Fn(usize) -> MatRef<'a>,
    f: impl FnOnce(&[PackedMatrix]) -> Result<R, KernelError>,
) -> Result<R, KernelError> {
    let mut packs = PACKS.take();
    let result = (|| {
        for g in 0..groups {
            if g < packs.len() {
                packs[g].repack_a(a(g), Some(isa))?;
            } else {
                packs.push(PackedMatrix::pack_a(a(g), Some(isa))?);
            }
        }
        f(&packs[..groups])
    })();
    PACKS.set(packs);
    result
}

pub(super) fn with_cols<R>(len: usize, f: impl FnOnce(&mut [f32]) -> R) -> R {
    crate::memory::lend_scratch(&COLS, len, f)
}

/// Elements below which im2col / col2im stay on the calling thread.
pub(super) const PAR_MIN: usize = 1 << 16;

pub(super) fn is_pointwise(s: &Conv2dShape) -> bool {
    s.kh == 1 && s.kw == 1 && s.stride == (1, 1) && s.padding == (0, 0)
}

/// The valid output columns `[lo, hi)` of kernel column `j`: those whose input column
/// `ox * sw - pw + j * dw` lies in `[0, w)`.
pub(super) fn valid_range(
    out: usize,
    input: usize,
    stride: usize,
    pad: usize,
    tap: usize,
) -> (usize, usize) {
    // ox * stride + tap >= pad  and  ox * stride + tap < input + pad
    let lo = pad.saturating_sub(tap).div_ceil(stride);
    let hi = if input + pad > tap {
        (input + pad - tap).div_ceil(stride)
    } else {
        0
    };
    (lo.min(out), hi.min(out).max(lo.min(out)))
}

/// Fills `cols` (`[cig * kh * kw, oh * ow]`) from one group of one image (`x`,
/// `[cig, h, w]`): row `(c, i, j)`, column `(oy, ox)` holds
/// `x[c, oy*sh - ph + i*dh, ox*sw - pw + j*dw]`, zero outside the image.
///
/// Row `r` is written at `cols[r * ld + col0..][..oh * ow]` (`ld = oh * ow`, `col0 = 0` for one
/// image; the batched weight gradient places image `j` of a group at `col0 = j * oh * ow`).
pub(super) fn im2col(s: &Conv2dShape, x: &[f32], cols: &mut [f32], ld: usize, col0: usize) {
    let (oh, ow) = (s.out_h(), s.out_w());
    let (kk, hw, ohw) = (s.kh * s.kw, s.h * s.w, oh * ow);
    let row = |r: usize, out: &mut [f32]| {
        let (c, i, j) = (r / kk, (r % kk) / s.kw, r % s.kw);
        let plane = &x[c * hw..(c + 1) * hw];
        let (x0, x1) = valid_range(ow, s.w, s.stride.1, s.padding.1, j * s.dilation.1);
        for (oy, o) in out.chunks_exact_mut(ow).enumerate() {
            let ih = (oy * s.stride.0 + i * s.dilation.0) as isize - s.padding.0 as isize;
            if ih < 0 || ih >= s.h as isize || x0 >= x1 {
                o.fill(0.0);
                continue;
            }
            let src = &plane[ih as usize * s.w..(ih as usize + 1) * s.w];
            o[..x0].fill(0.0);
            o[x1..].fill(0.0);
            // Input column of output x0; then every stride-th column.
            let c0 = x0 * s.stride.1 + j * s.dilation.1 - s.padding.1;
            let n = x1 - x0;
            match s.stride.1 {
                1 => o[x0..x1].copy_from_slice(&src[c0..c0 + n]),
                // The stems' stride 2: whole pairs, so that the compiler vectorises the
                // deinterleave (the last value may have no partner inside the row).
                2 => {
                    let (pairs, last) = (&src[c0..c0 + 2 * (n - 1)], src[c0 + 2 * (n - 1)]);
                    for (v, p) in o[x0..x1 - 1].iter_mut().zip(pairs.chunks_exact(2)) {
                        *v = p[0];
                    }
                    o[x1 - 1] = last;
                }
                st => {
                    for (v, x) in o[x0..x1].iter_mut().zip(src[c0..].iter().step_by(st)) {
                        *v = *x;
                    }
                }
            }
        }
    };
    let rows = kk * (x.len() / hw.max(1));
    let cols = &mut cols[..rows * ld];
    if rows * ohw >= PAR_MIN {
        crate::parallel::for_each_chunk_mut(cols, ld, |r, o| row(r, &mut o[col0..col0 + ohw]));
    } else {
        cols.chunks_mut(ld)
            .enumerate()
            .for_each(|(r, o)| row(r, &mut o[col0..col0 + ohw]));
    }
}

/// The adjoint of [`im2col`]: `dx` (`[cig, h, w]`, overwritten) accumulates every column
/// element back into the input position it was copied from. Channels run in parallel; each
/// channel's taps are added in a fixed order. Row `r` of the columns is read at
/// `cols[r * ld + col0..][..oh * ow]`, as [`im2col`] writes it.
pub(super) fn col2im(s: &Conv2dShape, cols: &[f32], ld: usize, col0: usize, dx: &mut [f32]) {
    let (oh, ow) = (s.out_h(), s.out_w());
    let (kk, hw, ohw) = (s.kh * s.kw, s.h * s.w, oh * ow);
    let channel = |c: usize, plane: &mut [f32]| {
        plane.fill(0.0);
        for t in 0..kk {
            let (i, j) = (t / s.kw, t % s.kw);
            let row = (c * kk + t) * ld + col0;
            let src = &cols[row..row + ohw];
            let (x0, x1) = valid_range(ow, s.w, s.stride.1, s.padding.1, j * s.dilation.1);
            if x0 >= x1 {
                continue;
            }
            let c0 = x0 * s.stride.1 + j * s.dilation.1 - s.padding.1;
            for oy in 0..oh {
                let ih = (oy * s.stride.0 + i * s.dilation.0) as isize - s.padding.0 as isize;
                if ih < 0 || ih >= s.h as isize {
                    continue;
                }
                let dst = &mut plane[ih as usize * s.w..(ih as usize + 1) * s.w];
                let g = &src[oy * ow + x0..oy * ow + x1];
                if s.stride.1 == 1 {
                    for (d, v) in dst[c0..c0 + g.len()].iter_mut().zip(g) {
                        *d += v;
                    }
                } else {
                    for (k, v) in g.iter().enumerate() {
                        dst[c0 + k * s.stride.1] += v;
                    }
                }
            }
        }
    };
    if dx.len() * kk >= PAR_MIN {
        dx.par_chunks_mut(hw)
            .enumerate()
            .for_each(|(c, p)| channel(c, p));
    } else {
        dx.chunks_mut(hw)
            .enumerate()
            .for_each(|(c, p)| channel(c, p));
    }
}

fn config(isa: Isa) -> GemmConfig {
    GemmConfig {
        isa: Some(isa),
        threads: 0,
        tuning: None,
    }
}

/// The weights of a dense forward: `[c_out, c_in / groups * kh * kw]` as stored, or packed
/// once per group as the GEMM's left operand.
#[derive(Clone, Copy)]
pub(crate) enum Weights<'a> {
    Raw(&'a [f32]),
    Packed(&'a [PackedMatrix]),
}

impl<'a> Weights<'a> {
    /// The left GEMM operand of group `g`: its `[cog, kdim]` filters.
    pub(super) fn group(self, g: usize, cog: usize, kdim: usize) -> Operand<'a> {
        match self {
            Weights::Raw(w) => Operand::View(MatRef::row_major(
                &w[g * cog * kdim..(g + 1) * cog * kdim],
                cog,
                kdim,
            )),
            Weights::Packed(p) => Operand::Packed(&p[g]),
        }
    }
}

/// What follows a dense convolution's sum per output channel: `act(scale * sum + bias)`, the
/// scale an eval-mode batch norm's `gamma / sqrt(var + eps)` when it is not folded into the
/// weights (see [`super::PackedConvWeight::with_channel_scale`]).
#[derive(Debug, Clone, Copy)]
pub(crate) struct ChannelEpilogue<'a> {
    /// `[c_out]` multipliers, or none.
    pub scale: Option<&'a [f32]>,
    /// `[c_out]` biases, or none.
    pub bias: Option<&'a [f32]>,
    /// The activation.
    pub act: Activation,
}

impl<'a> ChannelEpilogue<'a> {
    /// A bias (or none) and an activation, no scale.
    pub(crate) fn new(bias: Option<&'a [f32]>, act: Activation) -> Self {
        ChannelEpilogue {
            scale: None,
            bias,
            act,
        }
    }

    /// The GEMM epilogue of group `g` (its `cog` output channels, the rows of C).
    pub(super) fn group(&self, g: usize, cog: usize) -> Epilogue<'a> {
        let rows = g * cog..(g + 1) * cog;
        let bias = match self.bias {
            Some(b) => Bias::PerRow(&b[rows.clone()]),
            None => Bias::None,
        };
        let scale = match self.scale {
            Some(s) => Scale::PerRow(&s[rows]),
            None => Scale::None,
        };
        Epilogue::new(bias, self.act).with_scale(scale)
    }

    /// The GEMM epilogue of the transposed form, whose output channels are the columns of C
    /// (one group).
    pub(super) fn columns(&self) -> Epilogue<'a> {
        let bias = self.bias.map_or(Bias::None, Bias::PerCol);
        let scale = self.scale.map_or(Scale::None, Scale::PerCol);
        Epilogue::new(bias, self.act).with_scale(scale)
    }
}

/// Dense / grouped forward pass (shape and lengths already checked).
pub(crate) fn forward(
    isa: Isa,
    s: &Conv2dShape,
    x: &[f32],
    w: Weights<'_>,
    epi: ChannelEpilogue<'_>,
    y: &mut [f32],
) -> Result<(), KernelError> {
    let (cig, cog) = (s.c_in_per_group(), s.c_out_per_group());
    let (hw, ohw, kdim) = (s.h * s.w, s.out_h() * s.out_w(), cig * s.kh * s.kw);
    let cfg = config(isa);
    let pointwise = is_pointwise(s);
    if let Weights::Raw(raw) = w {
        if stem::applies(s) {
            return stem::with_packed(s, raw, |wp| stem::forward(isa, s, x, wp, epi, y));
        }
        if s.n > 1 {
            // Pack the filters once for all images (then this function again, packed).
            return with_packed_groups(
                isa,
                s.groups,
                |g| MatRef::row_major(&raw[g * cog * kdim..(g + 1) * cog * kdim], cog, kdim),
                |packs| forward(isa, s, x, Weights::Packed(packs), epi, y),
            );
        }
    }
    if pointwise && hw == 1 && s.n > 0 {
        return forward_single_pixel(s, x, w, epi, y, &cfg);
    }
    if let Some(imgs) = batch_images(s) {
        return forward_batched(s, x, w, epi, y, imgs, &cfg);
    }
    let cols_len = if pointwise { 0 } else { kdim * ohw };
    with_cols(cols_len, |cols| {
        for img in 0..s.n {
            for g in 0..s.groups {
                let xg = &x[(img * s.c_in + g * cig) * hw..(img * s.c_in + (g + 1) * cig) * hw];
                let wg = w.group(g, cog, kdim);
                let yg =
                    &mut y[(img * s.c_out + g * cog) * ohw..(img * s.c_out + (g + 1) * cog) * ohw];
                let rhs = if pointwise {
                    MatRef::row_major(xg, cig, hw)
                } else {
                    im2col(s, xg, cols, ohw, 0);
                    MatRef::row_major(cols, kdim, ohw)
                };
                gemm_ex(
                    1.0,
                    wg,
                    Operand::View(rhs),
                    0.0,
                    MatMut::row_major(yg, cog, ohw),
                    epi.group(g, cog),
                    &cfg,
                )?;
            }
        }
        Ok(())
    })
}

/// The dense forward in the transposed form (one group, see
/// [`super::PackedConvWeight::pack_transposed`]): per image, `Y^T = cols^T W^T`, `cols^T`
/// a transposed view of the im2col buffer (or of the input, for a 1x1 stride-1 convolution)
/// and `Y^T` a column-major view of the image's `[c_out, oh*ow]` output.
pub(crate) fn forward_transposed(
    s: &Conv2dShape,
    x: &[f32],
    wt: &PackedMatrix,
    epi: ChannelEpilogue<'_>,
    y: &mut [f32],
) -> Result<(), KernelError> {
    let (hw, ohw, kdim) = (s.h * s.w, s.out_h() * s.out_w(), s.c_in * s.kh * s.kw);
    let cfg = config(wt.isa());
    let pointwise = is_pointwise(s);
    let cols_len = if pointwise { 0 } else { kdim * ohw };
    with_cols(cols_len, |cols| {
        for img in 0..s.n {
            let xi = &x[img * s.c_in * hw..(img + 1) * s.c_in * hw];
            let yi = &mut y[img * s.c_out * ohw..(img + 1) * s.c_out * ohw];
            let a = if pointwise {
                MatRef::new(xi, hw, s.c_in, 1, hw)
            } else {
                im2col(s, xi, cols, ohw, 0);
                MatRef::new(cols, ohw, kdim, 1, ohw)
            };
            gemm_ex(
                1.0,
                Operand::View(a),
                Operand::Packed(wt),
                0.0,
                MatMut::new(yi, ohw, s.c_out, 1, ohw),
                epi.columns(),
                &cfg,
            )?;
        }
        Ok(())
    })
}

/// The forward of a pointwise convolution on 1x1 planes (the squeeze-excitation layers): one
/// GEMM per group for the whole batch, `Y_g[co, img] = W_g X_g[ci, img]`, on strided views of
/// the NCHW tensors.
fn forward_single_pixel(
    s: &Conv2dShape,
    x: &[f32],
    w: Weights<'_>,
    epi: ChannelEpilogue<'_>,
    y: &mut [f32],
    cfg: &GemmConfig,
) -> Result<(), KernelError> {
    let (cig, cog) = (s.c_in_per_group(), s.c_out_per_group());
    for g in 0..s.groups {
        let wg = w.group(g, cog, cig);
        gemm_ex(
            1.0,
            wg,
            Operand::View(MatRef::new(&x[g * cig..], cig, s.n, 1, s.c_in)),
            0.0,
            MatMut::new(&mut y[g * cog..], cog, s.n, 1, s.c_out),
            epi.group(g, cog),
            cfg,
        )?;
    }
    Ok(())
}

/// Dense / grouped input gradient (overwrites `dx`).
pub(crate) fn backward_input(
    isa: Isa,
    s: &Conv2dShape,
    w: &[f32],
    dy: &[f32],
    dx: &mut [f32],
) -> Result<(), KernelError> {
    let (cig, cog) = (s.c_in_per_group(), s.c_out_per_group());
    let kdim = cig * s.kh * s.kw;
    // W_g^T is the [kdim, cog] view of the row-major [cog, kdim] filters.
    let wt = |g: usize| MatRef::row_major(&w[g * cog * kdim..(g + 1) * cog * kdim], cog, kdim).t();
    if s.n > 1 {
        // Pack the transposed filters once for all images.
        with_packed_groups(isa, s.groups, wt, |packs| {
            backward_input_with(isa, s, |g| Operand::Packed(&packs[g]), dy, dx)
        })
    } else {
        backward_input_with(isa, s, |g| Operand::View(wt(g)), dy, dx)
    }
}

/// [`backward_input`] with the left operand of group `g` (`W_g^T`) given by `wt`.
fn backward_input_with<'a>(
    isa: Isa,
    s: &Conv2dShape,
    wt: impl Fn(usize) -> Operand<'a>,
    dy: &[f32],
    dx: &mut [f32],
) -> Result<(), KernelError> {
    let (cig, cog) = (s.c_in_per_group(), s.c_out_per_group());
    let (hw, ohw, kdim) = (s.h * s.w, s.out_h() * s.out_w(), cig * s.kh * s.kw);
    let cfg = config(isa);
    let pointwise = is_pointwise(s);
    if pointwise && hw == 1 && s.n > 0 {
        // One pixel per image: dX_g[ci, img] = W_g^T dY_g[co, img] is one GEMM for the batch.
        for g in 0..s.groups {
            gemm_ex(
                1.0,
                wt(g),
                Operand::View(MatRef::new(&dy[g * cog..], cog, s.n, 1, s.c_out)),
                0.0,
                MatMut::new(&mut dx[g * cig..], cig, s.n, 1, s.c_in),
                Epilogue::NONE,
                &cfg,
            )?;
        }
        return Ok(());
    }
    if let Some(imgs) = batch_images(s) {
        return backward_input_batched(s, wt, dy, dx, imgs, &cfg);
    }
    let cols_len = if pointwise { 0 } else { kdim * ohw };
    with_cols(cols_len, |cols| {
        for img in 0..s.n {
            for g in 0..s.groups {
                let dyg =
                    &dy[(img * s.c_out + g * cog) * ohw..(img * s.c_out + (g + 1) * cog) * ohw];
                let dxg =
                    &mut dx[(img * s.c_in + g * cig) * hw..(img * s.c_in + (g + 1) * cig) * hw];
                let rhs = Operand::View(MatRef::row_major(dyg, cog, ohw));
                if pointwise {
                    gemm_ex(
                        1.0,
                        wt(g),
                        rhs,
                        0.0,
                        MatMut::row_major(dxg, cig, hw),
                        Epilogue::NONE,
                        &cfg,
                    )?;
                } else {
                    gemm_ex(
                        1.0,
                        wt(g),
                        rhs,
                        0.0,
                        MatMut::row_major(cols, kdim, ohw),
                        Epilogue::NONE,
                        &cfg,
                    )?;
                    col2im(s, cols, ohw, 0, dxg);
                }
            }
        }
        Ok(())
    })
}

/// Dense / grouped weight gradient (overwrites `dw`): images accumulate in order
/// (`beta = 1` after the first).
pub(crate) fn backward_weight(
    isa: Isa,
    s: &Conv2dShape,
    x: &[f32],
    dy: &[f32],
    dw: &mut [f32],
) -> Result<(), KernelError> {
    let (cig, cog) = (s.c_in_per_group(), s.c_out_per_group());
    let (hw, ohw, kdim) = (s.h * s.w, s.out_h() * s.out_w(), cig * s.kh * s.kw);
    let cfg = config(isa);
    let pointwise = is_pointwise(s);
    if s.n == 0 {
        dw.fill(0.0);
        return Ok(());
    }
    if pointwise && hw == 1 && s.n > 0 {
        // One pixel per image: dW_g = dY_g[co, img] X_g[ci, img]^T, the batch as the depth.
        for g in 0..s.groups {
            gemm(
                1.0,
                MatRef::new(&dy[g * cog..], cog, s.n, 1, s.c_out),
                MatRef::new(&x[g * cig..], s.n, cig, s.c_in, 1),
                0.0,
                MatMut::row_major(&mut dw[g * cog * cig..(g + 1) * cog * cig], cog, cig),
                Epilogue::NONE,
                &cfg,
            )?;
        }
        return Ok(());
    }
    // Several images per GEMM: one product with k = images * oh * ow instead of one per image
    // accumulating into dW (a short k and a read and write of all of dW per image, the cost at
    // 14x14 and 7x7).
    if let Some(group_imgs) = weight_batch_images(s) {
        return backward_weight_batched(s, x, dy, dw, group_imgs, &cfg);
    }
    let cols_len = if pointwise { 0 } else { kdim * ohw };
    with_cols(cols_len, |cols| {
        for img in 0..s.n {
            for g in 0..s.groups {
                let xg = &x[(img * s.c_in + g * cig) * hw..(img * s.c_in + (g + 1) * cig) * hw];
                let dyg =
                    &dy[(img * s.c_out + g * cog) * ohw..(img * s.c_out + (g + 1) * cog) * ohw];
                let dwg = &mut dw[g * cog * kdim..(g + 1) * cog * kdim];
                // cols^T is the [ohw, kdim] view of the row-major [kdim, ohw] columns.
                let rhs = if pointwise {
                    MatRef::row_major(xg, cig, hw).t()
                } else {
                    im2col(s, xg, cols, ohw, 0);
                    MatRef::row_major(cols, kdim, ohw).t()
                };
                let beta = if img == 0 { 0.0 } else { 1.0 };
                gemm(
                    1.0,
                    MatRef::row_major(dyg, cog, ohw),
                    rhs,
                    beta,
                    MatMut::row_major(dwg, cog, kdim),
                    Epilogue::NONE,
                    &cfg,
                )?;
            }
        }
        Ok(())
    })
}
