//! The batched paths of the dense convolution: several images side by side in one GEMM.
//!
//! ```text
//! cols[kdim, imgs*ohw] = [im2col(X_0) | im2col(X_1) | ...]      image j in columns j*ohw..
//! forward:          [Y_0 | Y_1 | ...] = W_g * cols (+ bias, act)
//! input gradient:   dcols = W_g^T * [dY_0 | dY_1 | ...];  col2im per column block
//! weight gradient:  dW_g = [dY_0 | dY_1 | ...] * cols^T      (k = imgs * ohw: one GEMM)
//! pointwise:        cols = [X_0 | X_1 | ...], and dX is written like Y
//! ```
//! `[Y_0 | Y_1 | ...]` is not a copy: the images' planes of an NCHW tensor are a matrix whose
//! columns come in segments, one per image (`gemm::Segments`), which the GEMM packs and stores
//! in place (for planes of 128 pixels and more; smaller ones are stored into scratch and
//! copied, see `IN_PLACE_MIN_PIXELS`).
//! At 14x14 a per-image product has 196 columns; side by side the batch gives the GEMM enough
//! columns to run near its peak (the im2col formulation of Chellapilla et al., 2006, with
//! images batched along N as Caffe's and oneDNN's GEMM convolutions do). Every element of the
//! result is the same dot product, in the same order, as in the per-image path; the copies and
//! the GEMM split only independent outputs, so results are bit-identical for any thread count.

use super::dense::{col2im, im2col, is_pointwise, with_cols, ChannelEpilogue, Weights, PAR_MIN};
use super::Conv2dShape;
use crate::error::KernelError;
use crate::gemm::{gemm, gemm_ex, Epilogue, GemmConfig, MatMut, MatRef, Operand, Segments};
use rayon::prelude::*;

/// Elements of im2col scratch the batched paths may use: 16 MiB.
pub(super) const BATCH_SCRATCH: usize = 1 << 22;

/// Output pixels per image below which a k x k forward and input gradient put several images
/// into one GEMM: at 14x14 a per-image product has only 196 columns, too few to keep the
/// GEMM's column blocking busy, while one over the batch has 1568 at batch 8. Pointwise
/// convolutions need no scratch and always take the whole batch.
const BATCH_MAX_PIXELS: usize = 1024;

/// Output pixels per image from which the batched paths store the GEMM's result straight
/// into the NCHW planes. A microkernel tile that straddles two images goes through the
/// driver's temporary tile, once per depth block; with smaller planes that is more than one
/// tile in eight, and one GEMM into scratch plus a copy is faster (7x7 planes: ~6% on
/// SE-ResNet's 512x49x4608 product, one Zen 3 core).
const IN_PLACE_MIN_PIXELS: usize = 128;

/// How many images the forward / input gradient put into one GEMM, if more than one: the
/// whole batch for a pointwise convolution, otherwise as many as the im2col scratch bound
/// allows, for planes of at most [`BATCH_MAX_PIXELS`] output pixels.
pub(super) fn batch_images(s: &Conv2dShape) -> Option<usize> {
    let ohw = s.out_h() * s.out_w();
    if s.n < 2 || ohw == 0 {
        return None;
    }
    if is_pointwise(s) {
        return Some(s.n);
    }
    if ohw > BATCH_MAX_PIXELS {
        return None;
    }
    let per_image = s.c_in_per_group() * s.kh * s.kw * ohw;
    let imgs = (BATCH_SCRATCH / per_image.max(1)).min(s.n);
    (imgs > 1).then_some(imgs)
}

/// How many images the weight gradient puts into one GEMM (k = images * oh * ow), if more
/// than one: the whole batch for a pointwise convolution, otherwise as many as the im2col
/// scratch bound allows (any plane size).
pub(super) fn weight_batch_images(s: &Conv2dShape) -> Option<usize> {
    let ohw = s.out_h() * s.out_w();
    if s.n < 2 || ohw == 0 {
        return None;
    }
    let imgs = if is_pointwise(s) {
        s.n
    } else {
        (BATCH_SCRATCH / (s.c_in_per_group() * s.kh * s.kw * ohw).max(1)).min(s.n)
    };
    (imgs > 1).then_some(imgs)
}

/// Channels `c0..c0 + rows` of images `img0..img0 + imgs` of an NCHW tensor (`channels`
/// channels of `plane` pixels each) as one `[rows, imgs * plane]` matrix: image `j` in columns
/// `j * plane..`, a segment of the view (no copy).
fn images<'a>(
    data: &'a [f32],
    (img0, imgs): (usize, usize),
    (c0, rows): (usize, usize),
    channels: usize,
    plane: usize,
) -> MatRef<'a> {
    let at = (img0 * channels + c0) * plane;
    let end = ((img0 + imgs - 1) * channels + c0 + rows) * plane;
    MatRef::new(&data[at..end], rows, imgs * plane, plane, 1)
        .with_segments(Segments::cols(plane, channels * plane))
}

/// The mutable counterpart of [`images`].
fn images_mut<'a>(
    data: &'a mut [f32],
    (img0, imgs): (usize, usize),
    (c0, rows): (usize, usize),
    channels: usize,
    plane: usize,
) -> MatMut<'a> {
    let at = (img0 * channels + c0) * plane;
    let end = ((img0 + imgs - 1) * channels + c0 + rows) * plane;
    MatMut::new(&mut data[at..end], rows, imgs * plane, plane, 1)
        .with_segments(Segments::cols(plane, channels * plane))
}

/// The forward over groups of `group_imgs` images: per group of images and conv group, one
/// GEMM (bias and activation in its epilogue) from the images' columns (the input itself for a
/// pointwise convolution, im2col side by side otherwise) straight into the images' output
/// planes. Each output element is the same dot product, in the same order, as in the
/// per-image GEMM, so the bits do not change.
#[allow(clippy::too_many_arguments)]
pub(super) fn forward_batched(
    s: &Conv2dShape,
    x: &[f32],
    w: Weights<'_>,
    epi: ChannelEpilogue<'_>,
    y: &mut [f32],
    group_imgs: usize,
    cfg: &GemmConfig,
) -> Result<(), KernelError> {
    let (cig, cog) = (s.c_in_per_group(), s.c_out_per_group());
    let (hw, ohw, kdim) = (s.h * s.w, s.out_h() * s.out_w(), cig * s.kh * s.kw);
    let pointwise = is_pointwise(s);
    let in_place = ohw >= IN_PLACE_MIN_PIXELS;
    let ld_max = group_imgs * ohw;
    let cols_len = if pointwise { 0 } else { kdim * ld_max };
    let out_len = if in_place { 0 } else { cog * ld_max };
    with_cols(cols_len + out_len, |buf| {
        let (cols, out) = buf.split_at_mut(cols_len);
        for img0 in (0..s.n).step_by(group_imgs) {
            let span = (img0, group_imgs.min(s.n - img0));
            let ld = span.1 * ohw;
            for g in 0..s.groups {
                let rhs = if pointwise {
                    images(x, span, (g * cig, cig), s.c_in, hw)
                } else {
                    im2col_images(s, x, &mut cols[..kdim * ld], span, g);
                    MatRef::row_major(&cols[..kdim * ld], kdim, ld)
                };
                let (wg, epi) = (w.group(g, cog, kdim), epi.group(g, cog));
                if in_place {
                    let c = images_mut(y, span, (g * cog, cog), s.c_out, ohw);
                    gemm_ex(1.0, wg, Operand::View(rhs), 0.0, c, epi, cfg)?;
                } else {
                    let c = MatMut::row_major(&mut out[..cog * ld], cog, ld);
                    gemm_ex(1.0, wg, Operand::View(rhs), 0.0, c, epi, cfg)?;
                    scatter_images(&out[..cog * ld], span, (g * cog, cog), s.c_out, ohw, y);
                }
            }
        }
        Ok(())
    })
}

/// Copies column block `j` of `src` (`rows x imgs * plane`) to channels `c0..c0 + rows` of
/// image `img0 + j` of `dst` (`[n, channels, plane]`), for the `imgs` images; in parallel.
fn scatter_images(
    src: &[f32],
    (img0, imgs): (usize, usize),
    (c0, rows): (usize, usize),
    channels: usize,
    plane: usize,
    dst: &mut [f32],
) {
    let ld = imgs * plane;
    let span = &mut dst[img0 * channels * plane..(img0 + imgs) * channels * plane];
    let copy = |(j, image): (usize, &mut [f32])| {
        let part = &mut image[c0 * plane..(c0 + rows) * plane];
        for (r, row) in part.chunks_mut(plane).enumerate() {
            row.copy_from_slice(&src[r * ld + j * plane..r * ld + (j + 1) * plane]);
        }
    };
    if src.len() >= PAR_MIN {
        span.par_chunks_mut(channels * plane)
            .enumerate()
            .for_each(copy);
    } else {
        span.chunks_mut(channels * plane).enumerate().for_each(copy);
    }
}

/// im2col of images `img0..img0 + imgs`, conv group `g`, side by side in `cols`
/// (`[kdim, imgs * ohw]`, image `j` in columns `j * ohw..`).
fn im2col_images(
    s: &Conv2dShape,
    x: &[f32],
    cols: &mut [f32],
    (img0, imgs): (usize, usize),
    g: usize,
) {
    let (cig, hw, ohw) = (s.c_in_per_group(), s.h * s.w, s.out_h() * s.out_w());
    for j in 0..imgs {
        let x0 = ((img0 + j) * s.c_in + g * cig) * hw;
        im2col(s, &x[x0..x0 + cig * hw], cols, imgs * ohw, j * ohw);
    }
}

/// The input gradient over groups of `group_imgs` images: one GEMM `W_g^T dY` per group of
/// images and conv group, reading the images' output gradients in place, writing straight
/// into `dx` (pointwise) or into columns `[kdim, imgs * ohw]` that col2im adds back per image.
pub(super) fn backward_input_batched<'a>(
    s: &Conv2dShape,
    wt: impl Fn(usize) -> Operand<'a>,
    dy: &[f32],
    dx: &mut [f32],
    group_imgs: usize,
    cfg: &GemmConfig,
) -> Result<(), KernelError> {
    let (cig, cog) = (s.c_in_per_group(), s.c_out_per_group());
    let (hw, ohw, kdim) = (s.h * s.w, s.out_h() * s.out_w(), cig * s.kh * s.kw);
    let pointwise = is_pointwise(s);
    let in_place = pointwise && hw >= IN_PLACE_MIN_PIXELS;
    let scratch = if in_place { 0 } else { kdim * group_imgs * ohw };
    with_cols(scratch, |cols| {
        for img0 in (0..s.n).step_by(group_imgs) {
            let span = (img0, group_imgs.min(s.n - img0));
            let ld = span.1 * ohw;
            for g in 0..s.groups {
                let rhs = Operand::View(images(dy, span, (g * cog, cog), s.c_out, ohw));
                if in_place {
                    let out = images_mut(dx, span, (g * cig, cig), s.c_in, hw);
                    gemm_ex(1.0, wt(g), rhs, 0.0, out, Epilogue::NONE, cfg)?;
                    continue;
                }
                let cols = &mut cols[..kdim * ld];
                let out = MatMut::row_major(cols, kdim, ld);
                gemm_ex(1.0, wt(g), rhs, 0.0, out, Epilogue::NONE, cfg)?;
                if pointwise {
                    scatter_images(cols, span, (g * cig, cig), s.c_in, hw, dx);
                    continue;
                }
                for j in 0..span.1 {
                    let at = ((img0 + j) * s.c_in + g * cig) * hw;
                    col2im(s, cols, ld, j * ohw, &mut dx[at..at + cig * hw]);
                }
            }
        }
        Ok(())
    })
}

/// The weight gradient over groups of `group_imgs` images: per group of images and conv group,
/// `dW_g (+)= dY_b * cols^T` is one GEMM with k = imgs * oh * ow (the first group with
/// `beta = 0`), `dY_b` read in place from the images' output gradients and `cols` the input
/// itself (pointwise) or im2col side by side. The GEMM splits only independent outputs and
/// the groups are summed in order, so the result is bit-identical for any thread count.
pub(super) fn backward_weight_batched(
    s: &Conv2dShape,
    x: &[f32],
    dy: &[f32],
    dw: &mut [f32],
    group_imgs: usize,
    cfg: &GemmConfig,
) -> Result<(), KernelError> {
    let (cig, cog) = (s.c_in_per_group(), s.c_out_per_group());
    let (hw, ohw, kdim) = (s.h * s.w, s.out_h() * s.out_w(), cig * s.kh * s.kw);
    let pointwise = is_pointwise(s);
    let scratch = if pointwise {
        0
    } else {
        kdim * group_imgs * ohw
    };
    with_cols(scratch, |cols| {
        for img0 in (0..s.n).step_by(group_imgs) {
            let span = (img0, group_imgs.min(s.n - img0));
            let beta = if img0 == 0 { 0.0 } else { 1.0 };
            for g in 0..s.groups {
                let rhs = if pointwise {
                    images(x, span, (g * cig, cig), s.c_in, hw).t()
                } else {
                    let ld = span.1 * ohw;
                    im2col_images(s, x, &mut cols[..kdim * ld], span, g);
                    MatRef::row_major(&cols[..kdim * ld], kdim, ld).t()
                };
                gemm(
                    1.0,
                    images(dy, span, (g * cog, cog), s.c_out, ohw),
                    rhs,
                    beta,
                    MatMut::row_major(&mut dw[g * cog * kdim..(g + 1) * cog * kdim], cog, kdim),
                    Epilogue::NONE,
                    cfg,
                )?;
            }
        }
        Ok(())
    })
}
