//! The batched paths of the dense convolution: several images side by side in one GEMM.
//!
//! ```text
//! cols[kdim, imgs*ohw] = [im2col(X_0) | im2col(X_1) | ...]      image j in columns j*ohw..
//! forward:          Yb[co, imgs*ohw] = W_g * cols (+ bias, act);  Yb's column blocks -> Y_j
//! input gradient:   dYb = [dY_0 | dY_1 | ...];  dcols = W_g^T * dYb;  col2im per column block
//! weight gradient:  dW_g = dYb * cols^T                      (k = imgs * ohw: one GEMM)
//! ```
//! At 14x14 a per-image product has 196 columns; side by side the batch gives the GEMM enough
//! columns to run near its peak (the im2col formulation of Chellapilla et al., 2006, with
//! images batched along N as Caffe's and oneDNN's GEMM convolutions do). Every element of the
//! result is the same dot product, in the same order, as in the per-image path; the copies and
//! the GEMM split only independent outputs, so results are bit-identical for any thread count.

use super::dense::{col2im, group_bias, im2col, is_pointwise, with_cols, Weights, PAR_MIN};
use super::Conv2dShape;
use crate::activation::Activation;
use crate::error::KernelError;
use crate::gemm::{gemm, gemm_ex, Epilogue, GemmConfig, MatMut, MatRef, Operand};
use rayon::prelude::*;

/// Elements of scratch (columns plus gathered output gradients) the batched weight gradient may
/// use: 16 MiB.
pub(super) const BATCH_SCRATCH: usize = 1 << 22;

/// Output pixels per image below which the forward and the input gradient put several images
/// into one GEMM: at 14x14 a per-image product has only 196 columns, and one over the batch
/// (1568 at batch 8) runs ~25% faster (SE-ResNet-101's 256x196x2304 im2col product: ~135
/// against ~175 GFLOP/s on two Zen 3 cores).
const BATCH_MAX_PIXELS: usize = 1024;

/// How many images the forward / input gradient put into one GEMM, if more than one: as many
/// as the scratch bound allows, for planes of at most [`BATCH_MAX_PIXELS`] output pixels.
pub(super) fn batch_images(s: &Conv2dShape) -> Option<usize> {
    let ohw = s.out_h() * s.out_w();
    if s.n < 2 || ohw == 0 || ohw > BATCH_MAX_PIXELS {
        return None;
    }
    let kdim = s.c_in_per_group() * s.kh * s.kw;
    let per_image = (kdim + s.c_out_per_group()) * ohw;
    let imgs = (BATCH_SCRATCH / per_image.max(1)).min(s.n);
    (imgs > 1).then_some(imgs)
}

/// Copies image `j`'s rows (`rows` rows of `len` floats, `src_ld` apart in `src`) into column
/// block `j` of the batched matrix `dst` (`rows x ld`), for every image of the group at once;
/// rows in parallel.
fn gather_images(
    dst: &mut [f32],
    ld: usize,
    len: usize,
    src: impl Fn(usize, usize) -> usize + Sync,
    data: &[f32],
) {
    let fill = |(r, row): (usize, &mut [f32])| {
        for (j, block) in row.chunks_mut(len).enumerate() {
            let at = src(j, r);
            block.copy_from_slice(&data[at..at + len]);
        }
    };
    if dst.len() >= PAR_MIN {
        dst.par_chunks_mut(ld).enumerate().for_each(fill);
    } else {
        dst.chunks_mut(ld).enumerate().for_each(fill);
    }
}

/// The forward over groups of `group_imgs` images: per group of images and conv group, the
/// columns of all images side by side (`[kdim, imgs * ohw]`, image `j` in columns
/// `j * ohw..`), one GEMM (bias and activation in its epilogue) into `[cog, imgs * ohw]`, then
/// each image's rows copied to its place in `y`. Each output element is the same dot product,
/// in the same order, as in the per-image GEMM, so the bits do not change.
#[allow(clippy::too_many_arguments)]
pub(super) fn forward_batched(
    s: &Conv2dShape,
    x: &[f32],
    w: Weights<'_>,
    bias: Option<&[f32]>,
    act: Activation,
    y: &mut [f32],
    group_imgs: usize,
    cfg: &GemmConfig,
) -> Result<(), KernelError> {
    let (cig, cog) = (s.c_in_per_group(), s.c_out_per_group());
    let (ohw, kdim) = (s.out_h() * s.out_w(), cig * s.kh * s.kw);
    let ld_max = group_imgs * ohw;
    with_cols((kdim + cog) * ld_max, |buf| {
        let (cols, out) = buf.split_at_mut(kdim * ld_max);
        for img0 in (0..s.n).step_by(group_imgs) {
            let imgs = group_imgs.min(s.n - img0);
            let ld = imgs * ohw;
            let (cols, out) = (&mut cols[..kdim * ld], &mut out[..cog * ld]);
            for g in 0..s.groups {
                fill_columns(s, x, cols, (img0, imgs), g);
                let wg = w.group(g, cog, kdim);
                let b = group_bias(bias, g, cog);
                gemm_ex(
                    1.0,
                    wg,
                    Operand::View(MatRef::row_major(cols, kdim, ld)),
                    0.0,
                    MatMut::row_major(out, cog, ld),
                    Epilogue::new(b, act),
                    cfg,
                )?;
                scatter_images(out, ld, (img0, imgs), g * cog, cog, s.c_out, ohw, y);
            }
        }
        Ok(())
    })
}

/// The columns of images `img0..img0 + imgs`, conv group `g`, side by side in `cols`
/// (`[kdim, imgs * ohw]`): the input rows themselves for a pointwise convolution, im2col
/// otherwise.
fn fill_columns(
    s: &Conv2dShape,
    x: &[f32],
    cols: &mut [f32],
    (img0, imgs): (usize, usize),
    g: usize,
) {
    let (cig, hw, ohw) = (s.c_in_per_group(), s.h * s.w, s.out_h() * s.out_w());
    let ld = imgs * ohw;
    let plane = |j: usize, c: usize| ((img0 + j) * s.c_in + g * cig + c) * hw;
    if is_pointwise(s) {
        gather_images(cols, ld, ohw, plane, x);
    } else {
        for j in 0..imgs {
            let x0 = plane(j, 0);
            im2col(s, &x[x0..x0 + cig * hw], cols, ld, j * ohw);
        }
    }
}

/// Copies column block `j` of `src` (`rows x ld`) to channels `c0..c0 + rows` of image
/// `img0 + j` of `dst` (`[n, channels, plane]`), for the `imgs` images; in parallel.
#[allow(clippy::too_many_arguments)]
fn scatter_images(
    src: &[f32],
    ld: usize,
    (img0, imgs): (usize, usize),
    c0: usize,
    rows: usize,
    channels: usize,
    plane: usize,
    dst: &mut [f32],
) {
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

/// The input gradient over groups of `group_imgs` images: the output gradients of all images
/// side by side (`[cog, imgs * ohw]`), one GEMM `W_g^T dY` into columns `[kdim, imgs * ohw]`,
/// then col2im per image from its column block (pointwise: its rows copied to `dx`).
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
    let ld_max = group_imgs * ohw;
    with_cols((kdim + cog) * ld_max, |buf| {
        let (cols, dyb) = buf.split_at_mut(kdim * ld_max);
        for img0 in (0..s.n).step_by(group_imgs) {
            let imgs = group_imgs.min(s.n - img0);
            let ld = imgs * ohw;
            let (cols, dyb) = (&mut cols[..kdim * ld], &mut dyb[..cog * ld]);
            for g in 0..s.groups {
                let plane = |j: usize, c: usize| ((img0 + j) * s.c_out + g * cog + c) * ohw;
                gather_images(dyb, ld, ohw, plane, dy);
                gemm_ex(
                    1.0,
                    wt(g),
                    Operand::View(MatRef::row_major(dyb, cog, ld)),
                    0.0,
                    MatMut::row_major(cols, kdim, ld),
                    Epilogue::NONE,
                    cfg,
                )?;
                if is_pointwise(s) {
                    scatter_images(cols, ld, (img0, imgs), g * cig, cig, s.c_in, hw, dx);
                } else {
                    for j in 0..imgs {
                        let at = ((img0 + j) * s.c_in + g * cig) * hw;
                        col2im(s, cols, ld, j * ohw, &mut dx[at..at + cig * hw]);
                    }
                }
            }
        }
        Ok(())
    })
}

/// The weight gradient over groups of `group_imgs` images: per group of images and conv group,
/// `cols = [kdim, imgs * ohw]` (image `j` in columns `j * ohw..`) and `dyb = [cog, imgs * ohw]`
/// are filled by copies, then `dW_g (+)= dyb * cols^T` is one GEMM (the first group with
/// `beta = 0`). Copies and GEMM split only independent outputs, and the groups are summed in
/// order, so the result is bit-identical for any thread count.
pub(super) fn backward_weight_batched(
    s: &Conv2dShape,
    x: &[f32],
    dy: &[f32],
    dw: &mut [f32],
    group_imgs: usize,
    cfg: &GemmConfig,
) -> Result<(), KernelError> {
    let (cig, cog) = (s.c_in_per_group(), s.c_out_per_group());
    let (ohw, kdim) = (s.out_h() * s.out_w(), cig * s.kh * s.kw);
    let ld_max = group_imgs * ohw;
    with_cols((kdim + cog) * ld_max, |buf| {
        let mut first = true;
        for img0 in (0..s.n).step_by(group_imgs) {
            let imgs = group_imgs.min(s.n - img0);
            let ld = imgs * ohw;
            let (cols, dyb) = buf.split_at_mut(kdim * ld_max);
            let (cols, dyb) = (&mut cols[..kdim * ld], &mut dyb[..cog * ld]);
            for g in 0..s.groups {
                fill_columns(s, x, cols, (img0, imgs), g);
                let plane = |j: usize, c: usize| ((img0 + j) * s.c_out + g * cog + c) * ohw;
                gather_images(dyb, ld, ohw, plane, dy);
                gemm(
                    1.0,
                    MatRef::row_major(dyb, cog, ld),
                    MatRef::row_major(cols, kdim, ld).t(),
                    if first { 0.0 } else { 1.0 },
                    MatMut::row_major(&mut dw[g * cog * kdim..(g + 1) * cog * kdim], cog, kdim),
                    Epilogue::NONE,
                    cfg,
                )?;
            }
            first = false;
        }
        Ok(())
    })
}
