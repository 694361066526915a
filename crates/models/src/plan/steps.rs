//! The operations of a plan and how each runs on the arena.
//!
//! Every step reads its inputs from and writes its output to arena buffers ([`Buf`]); the
//! weights are owned by the step, folded and packed once when the plan is built. A step that
//! accumulates (`accumulate: true`) adds its result to what its output buffer already holds:
//! the residual join fused into the producer's GEMM as `beta = 1`
//! (`C = A B + 1 * C`, then bias and activation in the epilogue).

use super::arena::Buf;
use crate::error::{ModelError, Result};
use tessera_core::kernels::attention::{attention_forward, AttentionShape};
use tessera_core::kernels::conv::depthwise::nhwc::forward as depthwise_nhwc;
use tessera_core::kernels::conv::PackedConvWeight;
use tessera_core::kernels::conv::{conv2d_forward, conv2d_forward_packed, Conv2dShape};
use tessera_core::kernels::gemm::{
    gemm_ex, Bias, Epilogue, GemmConfig, MatMut, MatRef, Operand, PackedMatrix, Scale, Segments,
};
use tessera_core::kernels::norm::layer_norm_forward;
use tessera_core::kernels::parallel::for_each_chunk_mut;
use tessera_core::kernels::pool::{
    adaptive_avg_pool2d_forward, global_avg_pool_nhwc, max_pool2d_forward_values, Pool2dShape,
};
use tessera_core::kernels::squeeze_excite::{
    excite_gate, excite_gate_nhwc, scale_join, ExciteWeights,
};
use tessera_core::kernels::{Activation, KernelError};

/// Floats per task of the squeeze-and-excitation scale pass (whole planes, at least one).
const SE_TASK_FLOATS: usize = 1 << 15;

/// One operation of a plan. (Built once and kept in a `Vec`: the variants' sizes do not matter.)
#[allow(clippy::large_enum_variant)]
pub enum Step {
    /// A dense convolution on weights packed once (k x k, strided or padded 1x1).
    Conv {
        s: Conv2dShape,
        w: Box<PackedConvWeight>,
        bias: Vec<f32>,
        act: Activation,
        x: Buf,
        y: Buf,
    },
    /// A depthwise convolution with its bias and activation fused; with `nhwc`, on
    /// channels-last maps with `w` packed `[kh * kw][c]` (`depthwise::nhwc`).
    Depthwise {
        s: Conv2dShape,
        w: Vec<f32>,
        bias: Vec<f32>,
        act: Activation,
        nhwc: bool,
        x: Buf,
        y: Buf,
    },
    /// A 1x1 stride-1 convolution as one GEMM over the `n` images:
    /// `Y[c_out, hw] (+)= W[c_out, c_in] X[c_in, hw]`, then scale (per output channel, an
    /// unfolded batch norm; never with `accumulate`), bias and activation.
    Pointwise {
        /// `W` packed as the left operand, or with `transposed`, `W^T` packed as the right.
        w: PackedMatrix,
        /// Computed as `Y^T[hw, c_out] = X^T[hw, c_in] W^T` (single image only), storing `Y`
        /// through the kernel's transposed store: for small planes, whose pixels then run
        /// along the kernel's rows (49 of a 7 x 7 plane: 52 computed rows instead of 64
        /// computed columns). The same operations per element, so the same bits. Always
        /// with a channels-last input or output.
        transposed: bool,
        /// `X` is channels-last (`X^T [n hw, c_in]` row-major; needs `transposed`).
        x_nhwc: bool,
        /// `Y` is channels-last (`Y^T [n hw, c_out]` row-major; needs `transposed`).
        y_nhwc: bool,
        scale: Option<Vec<f32>>,
        bias: Vec<f32>,
        act: Activation,
        n: usize,
        hw: usize,
        x: Buf,
        y: Buf,
        accumulate: bool,
        threads: usize,
    },
    /// An inverted residual block's expansion and depthwise convolution, fused over groups
    /// of channels (`fused.rs`): `y = dw(pw(x))`.
    ExpandDepthwise {
        f: Box<super::fused::ExpandDepthwise>,
        x: Buf,
        y: Buf,
    },
    /// `Y[rows, out] (+)= X[rows, in] W^T`, then bias and activation (W^T packed as B).
    Linear {
        w: PackedMatrix,
        bias: Option<Vec<f32>>,
        act: Activation,
        rows: usize,
        x: Buf,
        y: Buf,
        /// Where row `r` of Y starts: `(r / seg) * seg_stride + (r % seg) * out + y_off`,
        /// `seg = rows` for a dense Y (ViT's patch embedding writes after the class token).
        y_layout: RowLayout,
        accumulate: bool,
        threads: usize,
    },
    /// Squeeze-and-excitation on `x` (`[n, c, hw]`): `s = gate(W2 act(W1 mean(x) + b1) + b2)`
    /// computed in f64 and rounded once into `scale`, then either `x *= s` in place, or (with
    /// `residual`) `r = ract(fma(x, s, r))`, rounded once
    /// (`tessera_kernels::squeeze_excite`).
    SqueezeExcite {
        x: Buf,
        n: usize,
        c: usize,
        hw: usize,
        /// `fc1` weight, `[rd, c]` (PyTorch's layout).
        fc1: Vec<f32>,
        b1: Vec<f32>,
        act: Activation,
        /// `fc2` weight, `[c, rd]`.
        fc2: Vec<f32>,
        b2: Vec<f32>,
        gate: Activation,
        scale: Buf,
        residual: Option<(Buf, Activation)>,
        /// `x` is channels-last (`[n, hw, c]`; no residual then).
        nhwc: bool,
    },
    /// Global average pooling `[n, c, h, w] -> [n, c]` (from `[n, h, w, c]` with `nhwc`).
    GlobalPool {
        x: Buf,
        y: Buf,
        n: usize,
        c: usize,
        h: usize,
        w: usize,
        nhwc: bool,
    },
    /// Max pooling (ResNet's stem: 3x3, stride 2, padding 1).
    MaxPool {
        x: Buf,
        y: Buf,
        planes: usize,
        h: usize,
        w: usize,
        k: usize,
        stride: usize,
        pad: usize,
        oh: usize,
        ow: usize,
    },
    /// Layer norm of `rows` rows of width `d`.
    LayerNorm {
        x: Buf,
        y: Buf,
        rows: usize,
        d: usize,
        gamma: Vec<f32>,
        beta: Vec<f32>,
        eps: f32,
        mean: Buf,
        rstd: Buf,
    },
    /// The fused attention core: `qkv [n, L, 3D] -> out [n, L, D]` (probs: scratch).
    Attention {
        shape: AttentionShape,
        scale: f32,
        qkv: Buf,
        out: Buf,
        probs: Buf,
    },
    /// ViT patches: `[n, c, g p, g p] -> [n, g g, c p p]` (patch-major rows, `(c, py, px)`).
    Patchify {
        x: Buf,
        y: Buf,
        n: usize,
        c: usize,
        g: usize,
        p: usize,
    },
    /// ViT tokens in place: row 0 of each image = `cls + pos[0]`, row `i` += `pos[i]`.
    ClassAndPosition {
        t: Buf,
        n: usize,
        tokens: usize,
        cls: Vec<f32>,
        pos: Vec<f32>,
    },
    /// Row 0 of each image of `x` (`[n, tokens, d]`) into `y` (`[n, d]`).
    ClassRows {
        x: Buf,
        y: Buf,
        n: usize,
        tokens: usize,
        d: usize,
    },
}

/// Where the rows of a GEMM's output lie.
#[derive(Debug, Clone, Copy)]
pub struct RowLayout {
    /// Offset of row 0 inside the buffer.
    pub off: usize,
    /// Rows per segment (`rows` when dense).
    pub seg: usize,
    /// Elements from one segment to the next.
    pub seg_stride: usize,
}

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
    /// Every buffer the step reads or writes.
    pub fn buffers(&self) -> Vec<Buf> {
        match self {
            Step::Conv { x, y, .. }
            | Step::Depthwise { x, y, .. }
            | Step::ExpandDepthwise { x, y, .. }
            | Step::Pointwise { x, y, .. }
            | Step::Linear { x, y, .. }
            | Step::GlobalPool { x, y, .. }
            | Step::MaxPool { x, y, .. }
            | Step::Patchify { x, y, .. }
            | Step::ClassRows { x, y, .. } => vec![*x, *y],
            Step::SqueezeExcite {
                x, scale, residual, ..
            } => {
                let mut v = vec![*x, *scale];
                v.extend(residual.map(|r| r.0));
                v
            }
            Step::LayerNorm {
                x, y, mean, rstd, ..
            } => vec![*x, *y, *mean, *rstd],
            Step::Attention {
                qkv, out, probs, ..
            } => vec![*qkv, *out, *probs],
            Step::ClassAndPosition { t, .. } => vec![*t],
        }
    }

    /// A short name for profiles and errors.
    pub fn kind(&self) -> &'static str {
        match self {
            Step::Conv { .. } => "conv",
            Step::Depthwise { .. } => "depthwise",
            Step::ExpandDepthwise { .. } => "expand_depthwise",
            Step::Pointwise { .. } => "pointwise",
            Step::Linear { .. } => "linear",
            Step::SqueezeExcite { .. } => "squeeze_excite",
            Step::GlobalPool { .. } => "global_pool",
            Step::MaxPool { .. } => "max_pool",
            Step::LayerNorm { .. } => "layer_norm",
            Step::Attention { .. } => "attention",
            Step::Patchify { .. } => "patchify",
            Step::ClassAndPosition { .. } => "class_and_position",
            Step::ClassRows { .. } => "class_rows",
        }
    }

    /// The step's shape in one line, for per-step profiles: the GEMM as `m x n x k`, a
    /// convolution as `c_in -> c_out, k x k / stride @ h x w`, with the fused activation.
    pub fn describe(&self) -> String {
        let conv = |s: &Conv2dShape| {
            format!(
                "{}->{} {}x{}/{} @{}x{}",
                s.c_in, s.c_out, s.kh, s.kw, s.stride.0, s.h, s.w
            )
        };
        match self {
            Step::Conv { s, act, w, .. } => format!(
                "{} {}{}",
                conv(s),
                act.name(),
                if w.is_transposed() {
                    " (as C^T)"
                } else if w.is_implicit() {
                    " (implicit)"
                } else if w.is_winograd() {
                    " (winograd)"
                } else {
                    ""
                }
            ),
            Step::Depthwise { s, act, nhwc, .. } => format!(
                "{} {}{}",
                conv(s),
                act.name(),
                if *nhwc { " (nhwc)" } else { "" }
            ),
            Step::ExpandDepthwise { f, .. } => format!(
                "{}->{} 1x1 {} + {}x{}/{} {} @{}x{}",
                f.c_in(),
                f.c_exp(),
                f.expand_act.name(),
                f.dw.kh,
                f.dw.kw,
                f.dw.stride.0,
                f.dw_act.name(),
                f.dw.h,
                f.dw.w
            ),
            Step::Pointwise {
                w,
                transposed,
                x_nhwc,
                y_nhwc,
                act,
                n,
                hw,
                accumulate,
                ..
            } => {
                let (ci, co) = pointwise_dims(w, *transposed);
                let layout = match (x_nhwc, y_nhwc) {
                    (true, true) => " (nhwc)",
                    (false, true) => " (nchw -> nhwc)",
                    _ if *transposed => " (as C^T)",
                    _ => "",
                };
                format!(
                    "gemm {}x{}x{} {}{}{}",
                    co,
                    n * hw,
                    ci,
                    act.name(),
                    if *accumulate { " +=" } else { "" },
                    layout
                )
            }
            Step::Linear {
                w,
                act,
                rows,
                accumulate,
                ..
            } => format!(
                "gemm {}x{}x{} {}{}",
                rows,
                w.cols(),
                w.rows(),
                act.name(),
                if *accumulate { " +=" } else { "" }
            ),
            Step::SqueezeExcite { n, c, hw, b1, .. } => {
                format!("{n}x{c}x{hw} -> {} -> {c}", b1.len())
            }
            Step::GlobalPool { n, c, h, w, .. } => format!("{n}x{c}x{h}x{w}"),
            Step::MaxPool {
                planes,
                h,
                w,
                k,
                stride,
                ..
            } => format!("{planes}x{h}x{w} {k}x{k}/{stride}"),
            Step::LayerNorm { rows, d, .. } => format!("{rows}x{d}"),
            Step::Attention { shape, .. } => format!(
                "n {} L {} heads {} d {}",
                shape.batch, shape.tokens, shape.heads, shape.head_dim
            ),
            Step::Patchify { n, c, g, p, .. } => format!("{n}x{c} {g}x{g} patches of {p}"),
            Step::ClassAndPosition { n, tokens, .. } => format!("{n}x{tokens}"),
            Step::ClassRows { n, tokens, d, .. } => format!("{n}x{tokens}x{d}"),
        }
    }

    /// The GEMM task count of a GEMM step (0 = the whole pool), `None` for other steps.
    pub fn threads(&self) -> Option<usize> {
        match self {
            Step::Pointwise { threads, .. } | Step::Linear { threads, .. } => Some(*threads),
            _ => None,
        }
    }

    /// Sets the GEMM task count of a GEMM step (others ignore it).
    pub fn set_threads(&mut self, t: usize) {
        if let Step::Pointwise { threads, .. } | Step::Linear { threads, .. } = self {
            *threads = t;
        }
    }

    /// Whether [`Step::set_threads`] applies.
    pub fn has_thread_choice(&self) -> bool {
        matches!(self, Step::Pointwise { .. } | Step::Linear { .. })
    }

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
                        // `x[b, p, :] *= s[b, :]`, in runs of whole pixels.
                        let (io, [xs]) = carve(arena, offs, [*x])?;
                        let s = io.get(offs, *scale)?;
                        let c = *c;
                        let per = (SE_TASK_FLOATS / c).max(1);
                        let img = *hw;
                        for_each_chunk_mut(xs, per * c, |i, xc| {
                            for (k, px) in xc.chunks_exact_mut(c).enumerate() {
                                let b = (i * per + k) / img;
                                let g = &s[b * c..(b + 1) * c];
                                px.iter_mut().zip(g).for_each(|(v, g)| *v *= g);
                            }
                        });
                        Ok(())
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

/// `(c_in, c_out)` of a pointwise step's packed weight (`W` as A, or `W^T` as B).
pub(crate) fn pointwise_dims(w: &PackedMatrix, transposed: bool) -> (usize, usize) {
    if transposed {
        (w.rows(), w.cols())
    } else {
        (w.cols(), w.rows())
    }
}
