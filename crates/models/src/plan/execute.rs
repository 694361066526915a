//! Running a plan's steps on the arena: each step's outputs carved out of the one arena
//! slice as `&mut` and its inputs as `&` around them (no `unsafe`: the planner never places a
//! step's output over a buffer it reads), then the kernel calls. A step that accumulates
//! (`accumulate: true`) adds its result to what its output buffer already holds: the residual
//! join fused into the producer's GEMM as `beta = 1` (`C = A B + 1 * C`, then bias and
//! activation in the epilogue).

use super::arena::Buf;
use super::steps::{pointwise_dims, Step};
use crate::error::{ModelError, Result};
use tessera_core::kernels::attention::attention_forward;
use tessera_core::kernels::conv::depthwise::nhwc::forward as depthwise_nhwc;
use tessera_core::kernels::conv::{conv2d_forward, conv2d_forward_packed};
use tessera_core::kernels::gemm::{
    gemm_ex, Bias, Epilogue, GemmConfig, MatMut, MatRef, Operand, Scale, Segments,
};
use tessera_core::kernels::norm::layer_norm_forward;
use tessera_core::kernels::parallel::for_each_chunk_mut;
use tessera_core::kernels::pool::{
    adaptive_avg_pool2d_forward, global_avg_pool_nhwc, max_pool2d_forward_values,
    scale_channels_nhwc, Pool2dShape,
};
use tessera_core::kernels::squeeze_excite::{
    excite_gate, excite_gate_nhwc, scale_join, ExciteWeights,
};
use tessera_core::kernels::KernelError;

/// Floats per task of the squeeze-and-excitation scale pass (whole planes, at least one).
const SE_TASK_FLOATS: usize = 1 << 15;

/// The arena around the outputs of one step: the parts between them (read-only, where the
/// step's inputs lie: the planner never places a step's output over a buffer it reads) and the
/// outputs themselves (writable). Fixed-size, so running a step allocates nothing.
struct Io<'a> {
    /// (first element, elements) of up to four read-only parts.
    gaps: [(usize, &'a [f32]); 4],
}

/// Splits `arena` around the `W <= 3` disjoint output buffers `ys`.
fn carve<'a, const W: usize>(
    arena: &'a mut [f32],
    offs: &[usize],
    ys: [Buf; W],
) -> Result<(Io<'a>, [&'a mut [f32]; W])> {
    debug_assert!(W <= 3);
    let mut order: [usize; W] = std::array::from_fn(|i| i);
    order.sort_unstable_by_key(|&i| offs[ys[i].id]);
    let mut outs: [Option<&'a mut [f32]>; W] = std::array::from_fn(|_| None);
    let mut gaps: [(usize, &'a [f32]); 4] = [(0, &[]); 4];
    let (mut rest, mut base) = (arena, 0usize);
    for (g, &i) in order.iter().enumerate() {
        let (off, len) = (offs[ys[i].id], ys[i].len);
        if off < base || off + len > base + rest.len() {
            return Err(ModelError::config(
                "plan: overlapping or out-of-arena outputs (arena planning error)",
            ));
        }
        let (gap, tail) = std::mem::take(&mut rest).split_at_mut(off - base);
        let (out, tail) = tail.split_at_mut(len);
        gaps[g] = (base, gap);
        outs[i] = Some(out);
        rest = tail;
        base = off + len;
    }
    gaps[W] = (base, rest);
    let outs = outs.map(|o| o.unwrap_or_default());
    Ok((Io { gaps }, outs))
}

impl<'a> Io<'a> {
    /// The input buffer `b`, which must lie inside one read-only part.
    fn get(&self, offs: &[usize], b: Buf) -> Result<&'a [f32]> {
        let off = offs[b.id];
        for &(base, part) in &self.gaps {
            if off >= base && off + b.len <= base + part.len() {
                return Ok(&part[off - base..off - base + b.len]);
            }
        }
        Err(ModelError::config(
            "plan: a step's input overlaps its output (arena planning error)",
        ))
    }
}

fn kerr(e: KernelError) -> ModelError {
    ModelError::config(format!("plan: {e}"))
}

fn cfg(threads: usize) -> GemmConfig {
    GemmConfig::with_threads(threads)
}

impl Step {
    /// Runs the step on `arena` (buffer `b` at `offs[b.id]`).
    pub fn run(&self, arena: &mut [f32], offs: &[usize]) -> Result<()> {
        match self {
            Step::Conv {
                s,
                w,
                bias,
                act,
                x,
                y,
            } => {
                let (io, [out]) = carve(arena, offs, [*y])?;
                conv2d_forward_packed(s, io.get(offs, *x)?, w, Some(bias), *act, out).map_err(kerr)
            }
            Step::Depthwise {
                s,
                w,
                bias,
                act,
                nhwc,
                x,
                y,
            } => {
                let (io, [out]) = carve(arena, offs, [*y])?;
                let xs = io.get(offs, *x)?;
                if *nhwc {
                    depthwise_nhwc(s, xs, w, Some(bias), *act, out).map_err(kerr)
                } else {
                    conv2d_forward(s, xs, w, Some(bias), *act, out).map_err(kerr)
                }
            }
            Step::ExpandDepthwise { f, x, y } => {
                let (io, [out]) = carve(arena, offs, [*y])?;
                f.run(io.get(offs, *x)?, out)
            }
            Step::Pointwise {
                w,
                transposed,
                x_nhwc,
                y_nhwc,
                scale,
                bias,
                act,
                n,
                hw,
                x,
                y,
                accumulate,
                threads,
            } => {
                let (io, [out]) = carve(arena, offs, [*y])?;
                let xs = io.get(offs, *x)?;
                let (ci, co) = pointwise_dims(w, *transposed);
                let (n, hw) = (*n, *hw);
                let beta = if *accumulate { 1.0 } else { 0.0 };
                let cfg = cfg(*threads);
                if !*transposed {
                    let mut b = MatRef::new(xs, ci, n * hw, hw, 1);
                    let mut c = MatMut::new(out, co, n * hw, hw, 1);
                    if n > 1 {
                        b = b.with_segments(Segments::cols(hw, ci * hw));
                        c = c.with_segments(Segments::cols(hw, co * hw));
                    }
                    let mut e = Epilogue::new(Bias::PerRow(bias), *act);
                    if let Some(s) = scale {
                        e = e.with_scale(Scale::PerRow(s));
                    }
                    let (a, b) = (Operand::Packed(w), Operand::View(b));
                    return gemm_ex(1.0, a, b, beta, c, e, &cfg).map_err(kerr);
                }
                // Y^T [hw, co] = X^T [hw, ci] W^T: the output channels are C's columns.
                let epilogue = || {
                    let e = Epilogue::new(Bias::PerCol(bias), *act);
                    match scale {
                        Some(s) => e.with_scale(Scale::PerCol(s)),
                        None => e,
                    }
                };
                match (*x_nhwc, *y_nhwc) {
                    (true, true) => {
                        // Channels-last both ways: one GEMM over the pixels of every image.
                        let a = Operand::View(MatRef::row_major(xs, n * hw, ci));
                        let c = MatMut::row_major(out, n * hw, co);
                        gemm_ex(1.0, a, Operand::Packed(w), beta, c, epilogue(), &cfg).map_err(kerr)
                    }
                    (false, y_nhwc) => {
                        // NCHW planes as X^T's columns, image by image.
                        for b in 0..n {
                            let xb = &xs[b * ci * hw..(b + 1) * ci * hw];
                            let ob = &mut out[b * co * hw..(b + 1) * co * hw];
                            let a = Operand::View(MatRef::new(xb, hw, ci, 1, hw));
                            let c = if y_nhwc {
                                MatMut::row_major(ob, hw, co)
                            } else {
                                MatMut::new(ob, hw, co, 1, hw)
                            };
                            gemm_ex(1.0, a, Operand::Packed(w), beta, c, epilogue(), &cfg)
                                .map_err(kerr)?;
                        }
                        Ok(())
                    }
                    (true, false) => Err(ModelError::config(
                        "plan: a channels-last 1x1 convolution into an NCHW map (planning error)",
                    )),
                }
            }
            Step::Linear {
                w,
                bias,
                act,
                rows,
                x,
                y,
                y_layout,
                accumulate,
                threads,
            } => {
                let (io, [out]) = carve(arena, offs, [*y])?;
                let xs = io.get(offs, *x)?;
                let (inf, outf) = (w.rows(), w.cols());
                let a = MatRef::row_major(xs, *rows, inf);
                let out = &mut out[y_layout.off..];
                let mut c = MatMut::row_major(out, *rows, outf);
                if y_layout.seg < *rows {
                    c = c.with_segments(Segments::rows(y_layout.seg, y_layout.seg_stride));
                }
                let beta = if *accumulate { 1.0 } else { 0.0 };
                let bias = bias.as_deref().map_or(Bias::None, Bias::PerCol);
                let e = Epilogue::new(bias, *act);
                gemm_ex(
                    1.0,
                    Operand::View(a),
                    Operand::Packed(w),
                    beta,
                    c,
                    e,
                    &cfg(*threads),
                )
                .map_err(kerr)
            }
            Step::SqueezeExcite {
                x,
                n,
                c,
                hw,
                fc1,
                b1,
                act,
                fc2,
                b2,
                gate,
                scale,
                residual,
                nhwc,
            } => {
                let w = ExciteWeights {
                    w1: fc1,
                    b1,
                    act: *act,
                    w2: fc2,
                    b2,
                    gate: *gate,
                };
                {
                    let (io, [s]) = carve(arena, offs, [*scale])?;
                    let xs = io.get(offs, *x)?;
                    if *nhwc {
                        excite_gate_nhwc(*n, *hw, xs, &w, s).map_err(kerr)?;
                    } else {
                        excite_gate(*n, *hw, xs, &w, s).map_err(kerr)?;
                    }
                }
                let planes = *n * *c;
                match residual {
                    None if *nhwc => {
                        // `x[b, p, :] *= s[b, :]`, over the squeeze's pixel blocks.
                        let (io, [xs]) = carve(arena, offs, [*x])?;
                        let s = io.get(offs, *scale)?;
                        scale_channels_nhwc(*n, *hw, *c, xs, s).map_err(kerr)
                    }
                    None => {
                        // `x *= s`: one rounding per element already. In parallel over runs
                        // of whole planes (element-wise: the same bits for any thread count).
                        let (io, [xs]) = carve(arena, offs, [*x])?;
                        let s = io.get(offs, *scale)?;
                        let per = (SE_TASK_FLOATS / *hw).max(1);
                        for_each_chunk_mut(xs, per * hw, |i, xc| {
                            for (plane, g) in xc.chunks_exact_mut(*hw).zip(&s[i * per..]) {
                                plane.iter_mut().for_each(|v| *v *= g);
                            }
                        });
                        Ok(())
                    }
                    Some((r, ract)) => {
                        let (io, [rs]) = carve(arena, offs, [*r])?;
                        let (s, xs) = (io.get(offs, *scale)?, io.get(offs, *x)?);
                        scale_join(*ract, planes, *hw, xs, s, rs).map_err(kerr)
                    }
                }
            }
            Step::GlobalPool {
                x,
                y,
                n,
                c,
                h,
                w,
                nhwc,
            } => {
                let (io, [out]) = carve(arena, offs, [*y])?;
                let xs = io.get(offs, *x)?;
                if *nhwc {
                    global_avg_pool_nhwc(*n, h * w, *c, xs, out).map_err(kerr)
                } else {
                    adaptive_avg_pool2d_forward(*n, *c, *h, *w, 1, 1, xs, out).map_err(kerr)
                }
            }
            Step::MaxPool {
                x,
                y,
                planes,
                h,
                w,
                k,
                stride,
                pad,
                oh,
                ow,
            } => {
                let (io, [out]) = carve(arena, offs, [*y])?;
                let xs = io.get(offs, *x)?;
                let shape = Pool2dShape {
                    n: 1,
                    c: *planes,
                    h: *h,
                    w: *w,
                    kh: *k,
                    kw: *k,
                    stride: (*stride, *stride),
                    padding: (*pad, *pad),
                    ceil_mode: false,
                };
                debug_assert_eq!((shape.out_h(), shape.out_w()), (*oh, *ow));
                max_pool2d_forward_values(&shape, xs, out).map_err(kerr)
            }
            Step::LayerNorm {
                x,
                y,
                rows,
                d,
                gamma,
                beta,
                eps,
                mean,
                rstd,
            } => {
                let (io, [out, m, r]) = carve(arena, offs, [*y, *mean, *rstd])?;
                let (g, b) = (Some(&gamma[..]), Some(&beta[..]));
                layer_norm_forward(io.get(offs, *x)?, *rows, *d, g, b, *eps, out, m, r)
                    .map_err(kerr)
            }
            Step::Attention {
                shape,
                scale,
                qkv,
                out,
                probs,
            } => {
                let (io, [o, p]) = carve(arena, offs, [*out, *probs])?;
                attention_forward(*shape, *scale, io.get(offs, *qkv)?, o, p).map_err(kerr)
            }
            Step::Patchify { x, y, n, c, g, p } => {
                let (io, [out]) = carve(arena, offs, [*y])?;
                let xs = io.get(offs, *x)?;
                let (g, p, c) = (*g, *p, *c);
                let img = g * p;
                let row = c * p * p;
                for b in 0..*n {
                    for gy in 0..g {
                        for gx in 0..g {
                            let o = &mut out[((b * g + gy) * g + gx) * row..][..row];
                            for ch in 0..c {
                                for py in 0..p {
                                    let src = ((b * c + ch) * img + gy * p + py) * img + gx * p;
                                    o[(ch * p + py) * p..][..p].copy_from_slice(&xs[src..src + p]);
                                }
                            }
                        }
                    }
                }
                Ok(())
            }
            Step::ClassAndPosition {
                t,
                n,
                tokens,
                cls,
                pos,
            } => {
                let ts = &mut arena[offs[t.id]..offs[t.id] + t.len];
                let d = cls.len();
                for img in ts.chunks_exact_mut(tokens * d).take(*n) {
                    for ((o, c), p) in img[..d].iter_mut().zip(cls).zip(&pos[..d]) {
                        *o = c + p;
                    }
                    for (o, p) in img[d..].iter_mut().zip(&pos[d..]) {
                        *o += p;
                    }
                }
                Ok(())
            }
            Step::ClassRows { x, y, n, tokens, d } => {
                let (io, [out]) = carve(arena, offs, [*y])?;
                let xs = io.get(offs, *x)?;
                for b in 0..*n {
                    out[b * d..(b + 1) * d].copy_from_slice(&xs[b * tokens * d..][..*d]);
                }
                Ok(())
            }
        }
    }
}
