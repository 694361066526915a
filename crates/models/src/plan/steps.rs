//! The operations of a plan: what each reads and writes, how it describes itself in a
//! profile, and its thread choice. Running them is `execute.rs`.
//!
//! Every step reads its inputs from and writes its output to arena buffers ([`Buf`]); the
//! weights are owned by the step, folded and packed once when the plan is built.

use super::arena::Buf;
use tessera_core::kernels::attention::AttentionShape;
use tessera_core::kernels::conv::{Conv2dShape, PackedConvWeight};
use tessera_core::kernels::gemm::PackedMatrix;
use tessera_core::kernels::Activation;

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
        /// Computed as `Y^T[hw, c_out] = X^T[hw, c_in] W^T`: with NCHW maps (one image),
        /// storing `Y` through the kernel's transposed store, for small planes whose pixels
        /// then run along the kernel's rows (49 of a 7 x 7 plane: 52 computed rows instead of
        /// 64 computed columns; the same operations per element, so the same bits); always
        /// with a channels-last input or output (an NCHW input image by image).
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
            Step::MaxPool { k: 1, .. } => "subsample",
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
                } else if w.is_winograd_tiles_as_rows() {
                    " (winograd, tiles as rows)"
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
}

/// `(c_in, c_out)` of a pointwise step's packed weight (`W` as A, or `W^T` as B).
pub(crate) fn pointwise_dims(w: &PackedMatrix, transposed: bool) -> (usize, usize) {
    if transposed {
        (w.rows(), w.cols())
    } else {
        (w.cols(), w.rows())
    }
}
