//! The float64 reference of a plan: every step's operation again, in f64, on the UNFOLDED
//! parameters (the convolution weight, then its batch norm's `gamma`, `beta`, running mean and
//! variance applied after it; biases, squeeze-excite, layer norm, attention, the class token
//! and position embedding), written as plain loops. It answers "what would this step output
//! in exact arithmetic", so `Plan::accuracy` ([`super::accuracy`]) can say where the float32
//! plan loses its bits.
//!
//! It follows the definitions the float32 steps implement ([`super::steps`]) and PyTorch's
//! float64 eval forward of the same timm modules: batch norm as
//! `(x - mean) / sqrt(var + eps) * gamma + beta` (Ioffe & Szegedy, 2015), layer norm with the
//! biased variance (Ba et al., 2016), attention as `softmax(q k^T / sqrt(d)) v` (Vaswani et
//! al., 2017), the activations by their exact formulas in f64
//! (`tessera_kernels::activation::reference::forward`: sigmoid, hard-swish `x relu6(x + 3) / 6`,
//! GELU with an f64 erf, ...). The `eps` constants, stored as f32, are read back as the
//! decimal they were written as (`1e-5`, not `1e-5f32` widened), as PyTorch's f64 modules use
//! them. A reference step exists only in a plan built with [`crate::Model::plan_reference`]:
//! the normal plan carries none of this.

use super::arena::Buf;
use super::ref_ops::{attention, conv, matmul_t, mean};
use super::steps::RowLayout;
use crate::layers::{ConvBnAct, LayerNorm};
use tessera_core::kernels::activation::reference::forward as act64;
use tessera_core::kernels::conv::Conv2dShape;
use tessera_core::kernels::Activation;
use tessera_core::Tensor;

/// A tensor's values widened to f64 (exact).
pub(crate) fn f64s(v: &[f32]) -> Vec<f64> {
    v.iter().map(|&x| f64::from(x)).collect()
}

fn t64(t: &Tensor) -> Vec<f64> {
    f64s(&t.data())
}

/// An `eps` stored as f32, as the decimal constant it was written as (`1e-5`): the shortest
/// decimal that rounds to it, parsed as f64.
pub(crate) fn eps64(e: f32) -> f64 {
    e.to_string().parse().unwrap_or(f64::from(e))
}

/// An eval-mode batch norm in f64.
pub(crate) struct Bn64 {
    pub gamma: Vec<f64>,
    pub beta: Vec<f64>,
    pub mean: Vec<f64>,
    pub var: Vec<f64>,
    pub eps: f64,
}

/// One reference operation (the counterpart of one [`super::steps::Step`], same buffers).
pub(crate) enum RefOp {
    /// `y (+)= ...`: `act(bn(conv(x) + b) [+ y])` (any groups, stride, padding).
    Conv {
        s: Conv2dShape,
        w: Vec<f64>,
        bias: Option<Vec<f64>>,
        bn: Option<Bn64>,
        /// The weight and bias with the batch norm folded, as the f32 plan holds them.
        folded: Option<(Vec<f32>, Vec<f32>)>,
        act: Activation,
        x: Buf,
        y: Buf,
        accumulate: bool,
    },
    /// `y = act(x W^T + b [+ y])`, rows of y placed by `layout`.
    Linear {
        w: Vec<f64>,
        inf: usize,
        out: usize,
        bias: Option<Vec<f64>>,
        act: Activation,
        rows: usize,
        x: Buf,
        y: Buf,
        layout: RowLayout,
        accumulate: bool,
    },
    /// `s = gate(W2 act(W1 mean(x) + b1) + b2)`; `x *= s`, or `r = ract(x * s + r)`.
    SqueezeExcite {
        x: Buf,
        n: usize,
        c: usize,
        hw: usize,
        rd: usize,
        w1: Vec<f64>,
        b1: Vec<f64>,
        act: Activation,
        w2: Vec<f64>,
        b2: Vec<f64>,
        gate: Activation,
        residual: Option<(Buf, Activation)>,
    },
    /// Mean over each of `planes` planes of `hw` values.
    GlobalPool {
        x: Buf,
        y: Buf,
        planes: usize,
        hw: usize,
    },
    /// Max over `k x k` windows (padding never wins).
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
    /// Layer norm of `rows` rows of width `gamma.len()`.
    LayerNorm {
        x: Buf,
        y: Buf,
        gamma: Vec<f64>,
        beta: Vec<f64>,
        eps: f64,
    },
    /// `softmax(q k^T scale) v` per image and head, `qkv` `[n, L, 3, heads, d]`.
    Attention {
        n: usize,
        tokens: usize,
        heads: usize,
        d: usize,
        qkv: Buf,
        out: Buf,
    },
    /// ViT patches, as [`super::steps::Step::Patchify`].
    Patchify {
        x: Buf,
        y: Buf,
        n: usize,
        c: usize,
        g: usize,
        p: usize,
    },
    /// Row 0 of each image = `cls + pos[0]`, row `i` += `pos[i]`.
    ClassAndPosition {
        t: Buf,
        n: usize,
        tokens: usize,
        cls: Vec<f64>,
        pos: Vec<f64>,
    },
    /// Row 0 of each image.
    ClassRows {
        x: Buf,
        y: Buf,
        n: usize,
        tokens: usize,
        d: usize,
    },
}

/// A reference step: its operation and the shape of its output.
pub(crate) struct RefStep {
    pub op: RefOp,
    pub shape: Vec<usize>,
}

impl RefStep {
    /// `y = act(x W^T + b [+ y])` for a row-major `[out, inf]` weight (exact: no folding).
    #[allow(clippy::too_many_arguments)]
    pub fn linear(
        w: &[f32],
        inf: usize,
        out: usize,
        bias: Option<&[f32]>,
        act: Activation,
        rows: usize,
        x: Buf,
        y: Buf,
        layout: RowLayout,
        accumulate: bool,
    ) -> RefStep {
        RefStep {
            shape: vec![rows, out],
            op: RefOp::Linear {
                w: f64s(w),
                inf,
                out,
                bias: bias.map(f64s),
                act,
                rows,
                x,
                y,
                layout,
                accumulate,
            },
        }
    }
}

impl RefOp {
    /// The conv + batch norm of `l`, unfolded, on `x` into `y` (`[n, c_out, oh, ow]`);
    /// `folded`: the f32 weight and bias the plan runs.
    pub fn conv_bn(
        l: &ConvBnAct,
        s: Conv2dShape,
        act: Activation,
        (x, y): (Buf, Buf),
        acc: bool,
        folded: Option<(Vec<f32>, Vec<f32>)>,
    ) -> RefStep {
        let (mean, var) = l.bn.running_stats();
        let bn = Bn64 {
            gamma: t64(&l.bn.weight),
            beta: t64(&l.bn.bias),
            mean: t64(&mean),
            var: t64(&var),
            eps: eps64(l.bn.eps),
        };
        RefStep {
            shape: vec![s.n, s.c_out, s.out_h(), s.out_w()],
            op: RefOp::Conv {
                s,
                w: t64(&l.conv.weight),
                bias: l.conv.bias.as_ref().map(t64),
                bn: Some(bn),
                folded,
                act,
                x,
                y,
                accumulate: acc,
            },
        }
    }

    /// A layer norm of `rows` rows.
    pub fn layer_norm(ln: &LayerNorm, rows: usize, x: Buf, y: Buf) -> RefStep {
        let gamma = t64(&ln.weight);
        RefStep {
            shape: vec![rows, gamma.len()],
            op: RefOp::LayerNorm {
                x,
                y,
                gamma,
                beta: t64(&ln.bias),
                eps: eps64(ln.eps),
            },
        }
    }

    /// The buffers the operation reads (its output too when it accumulates or works in place).
    pub fn inputs(&self) -> Vec<Buf> {
        match self {
            RefOp::Conv {
                x, y, accumulate, ..
            }
            | RefOp::Linear {
                x, y, accumulate, ..
            } => {
                if *accumulate {
                    vec![*x, *y]
                } else {
                    vec![*x]
                }
            }
            RefOp::SqueezeExcite { x, residual, .. } => {
                let mut v = vec![*x];
                v.extend(residual.map(|r| r.0));
                v
            }
            RefOp::GlobalPool { x, .. }
            | RefOp::MaxPool { x, .. }
            | RefOp::LayerNorm { x, .. }
            | RefOp::Patchify { x, .. }
            | RefOp::ClassRows { x, .. } => vec![*x],
            RefOp::Attention { qkv, .. } => vec![*qkv],
            RefOp::ClassAndPosition { t, .. } => vec![*t],
        }
    }

    /// The buffer holding the operation's result.
    pub fn output(&self) -> Buf {
        match self {
            RefOp::Conv { y, .. }
            | RefOp::Linear { y, .. }
            | RefOp::GlobalPool { y, .. }
            | RefOp::MaxPool { y, .. }
            | RefOp::LayerNorm { y, .. }
            | RefOp::Patchify { y, .. }
            | RefOp::ClassRows { y, .. } => *y,
            RefOp::SqueezeExcite { x, residual, .. } => residual.map_or(*x, |r| r.0),
            RefOp::Attention { out, .. } => *out,
            RefOp::ClassAndPosition { t, .. } => *t,
        }
    }

    /// A convolution with a folded batch norm: its output computed in f64 from the f32 folded
    /// weight and bias the plan holds (the error of the fold alone), on the current `bufs`
    /// (before [`RefOp::run`]). `None` for other operations.
    pub fn run_folded(&self, bufs: &[Vec<f64>]) -> Option<Vec<f64>> {
        let RefOp::Conv {
            s,
            folded: Some((w, b)),
            act,
            x,
            y,
            accumulate,
            ..
        } = self
        else {
            return None;
        };
        let mut out = bufs[y.id].clone();
        out.resize(y.len, 0.0);
        let (w, b) = (f64s(w), f64s(b));
        conv(
            s,
            &bufs[x.id],
            &w,
            Some(&b),
            None,
            *act,
            *accumulate,
            &mut out,
        );
        Some(out)
    }

    /// [`RefOp::run`], with a convolution on its folded f32 weight and bias when it has them:
    /// the f64 network whose only error is the batch-norm fold.
    pub fn run_with_fold(&self, bufs: &mut [Vec<f64>]) {
        match self.run_folded(bufs) {
            Some(y) => bufs[self.output().id] = y,
            None => self.run(bufs),
        }
    }

    /// Runs the operation on the f64 buffers `bufs` (by buffer id; the output is allocated
    /// here when it does not exist yet).
    pub fn run(&self, bufs: &mut [Vec<f64>]) {
        let out = self.output();
        let mut y = std::mem::take(&mut bufs[out.id]);
        y.resize(out.len, 0.0);
        // An in-place operation reads its own output buffer: `y` holds it.
        let get = |b: Buf| -> &[f64] { &bufs[b.id] };
        match self {
            RefOp::Conv {
                s,
                w,
                bias,
                bn,
                act,
                x,
                accumulate,
                ..
            } => conv(
                s,
                get(*x),
                w,
                bias.as_deref(),
                bn.as_ref(),
                *act,
                *accumulate,
                &mut y,
            ),
            RefOp::Linear {
                w,
                inf,
                out,
                bias,
                act,
                rows,
                x,
                layout,
                accumulate,
                ..
            } => {
                let dense = matmul_t(get(*x), *rows, *inf, w, *out, bias.as_deref());
                for (r, row) in dense.chunks_exact(*out).enumerate() {
                    let o =
                        (r / layout.seg) * layout.seg_stride + (r % layout.seg) * out + layout.off;
                    for (yv, v) in y[o..o + out].iter_mut().zip(row) {
                        let v = if *accumulate { v + *yv } else { *v };
                        *yv = act64(*act, v);
                    }
                }
            }
            RefOp::SqueezeExcite {
                x,
                n,
                c,
                hw,
                rd,
                w1,
                b1,
                act,
                w2,
                b2,
                gate,
                residual,
            } => {
                let src: &[f64] = if residual.is_some() { get(*x) } else { &y };
                let pooled: Vec<f64> = src.chunks_exact(*hw).map(mean).collect();
                let mut h = matmul_t(&pooled, *n, *c, w1, *rd, Some(b1));
                h.iter_mut().for_each(|v| *v = act64(*act, *v));
                let mut s = matmul_t(&h, *n, *rd, w2, *c, Some(b2));
                s.iter_mut().for_each(|v| *v = act64(*gate, *v));
                match residual {
                    None => {
                        for (plane, g) in y.chunks_exact_mut(*hw).zip(&s) {
                            plane.iter_mut().for_each(|v| *v *= g);
                        }
                    }
                    Some((_, ract)) => {
                        let planes = y.chunks_exact_mut(*hw).zip(get(*x).chunks_exact(*hw));
                        for ((rp, xp), g) in planes.zip(&s) {
                            for (r, xv) in rp.iter_mut().zip(xp) {
                                *r = act64(*ract, xv * g + *r);
                            }
                        }
                    }
                }
            }
            RefOp::GlobalPool { x, planes, hw, .. } => {
                for (o, p) in y.iter_mut().zip(get(*x).chunks_exact(*hw)).take(*planes) {
                    *o = mean(p);
                }
            }
            RefOp::MaxPool {
                x,
                planes,
                h,
                w,
                k,
                stride,
                pad,
                oh,
                ow,
                ..
            } => {
                let xs = get(*x);
                for pl in 0..*planes {
                    let xp = &xs[pl * h * w..][..h * w];
                    for oy in 0..*oh {
                        for ox in 0..*ow {
                            let mut m = f64::NEG_INFINITY;
                            for ky in 0..*k {
                                for kx in 0..*k {
                                    let (iy, ix) = (oy * stride + ky, ox * stride + kx);
                                    if iy >= *pad && ix >= *pad && iy - pad < *h && ix - pad < *w {
                                        m = m.max(xp[(iy - pad) * w + ix - pad]);
                                    }
                                }
                            }
                            y[(pl * oh + oy) * ow + ox] = m;
                        }
                    }
                }
            }
            RefOp::LayerNorm {
                x,
                gamma,
                beta,
                eps,
                ..
            } => {
                let d = gamma.len();
                for (yr, xr) in y.chunks_exact_mut(d).zip(get(*x).chunks_exact(d)) {
                    let m = mean(xr);
                    let var = xr.iter().map(|v| (v - m) * (v - m)).sum::<f64>() / d as f64;
                    let rstd = 1.0 / (var + eps).sqrt();
                    for (((o, v), g), b) in yr.iter_mut().zip(xr).zip(gamma).zip(beta) {
                        *o = (v - m) * rstd * g + b;
                    }
                }
            }
            RefOp::Attention {
                n,
                tokens,
                heads,
                d,
                qkv,
                ..
            } => attention(get(*qkv), *n, *tokens, *heads, *d, &mut y),
            RefOp::Patchify { x, n, c, g, p, .. } => {
                let (xs, (g, p, c)) = (get(*x), (*g, *p, *c));
                let (img, row) = (g * p, c * p * p);
                for b in 0..*n {
                    for gy in 0..g {
                        for gx in 0..g {
                            let o = &mut y[((b * g + gy) * g + gx) * row..][..row];
                            for ch in 0..c {
                                for py in 0..p {
                                    let src = ((b * c + ch) * img + gy * p + py) * img + gx * p;
                                    o[(ch * p + py) * p..][..p].copy_from_slice(&xs[src..src + p]);
                                }
                            }
                        }
                    }
                }
            }
            RefOp::ClassAndPosition {
                n,
                tokens,
                cls,
                pos,
                ..
            } => {
                let d = cls.len();
                for img in y.chunks_exact_mut(tokens * d).take(*n) {
                    for ((o, c), p) in img[..d].iter_mut().zip(cls).zip(&pos[..d]) {
                        *o = c + p;
                    }
                    for (o, p) in img[d..].iter_mut().zip(&pos[d..]) {
                        *o += p;
                    }
                }
            }
            RefOp::ClassRows {
                x, n, tokens, d, ..
            } => {
                let xs = get(*x);
                for b in 0..*n {
                    y[b * d..(b + 1) * d].copy_from_slice(&xs[b * tokens * d..][..*d]);
                }
            }
        }
        bufs[out.id] = y;
    }
}
