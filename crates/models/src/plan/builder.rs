//! Emitting a plan's steps: one method per fused layer, each declaring the buffers it reads and
//! writes so the arena planner knows their lifetimes.

use super::accuracy::Reference;
use super::arena::{Buf, Planner};
use super::reference::{f64s, RefOp, RefStep};
use super::steps::{RowLayout, Step};
use super::Plan;
use crate::error::{ModelError, Result};
use crate::layers::{Conv2d, ConvBnAct, Linear};
use tessera_core::kernels::conv::{Conv2dShape, PackedConvWeight};
use tessera_core::kernels::gemm::{MatRef, PackedMatrix};
use tessera_core::kernels::{Activation, KernelError};

/// The fewest input and output channels a 3x3 convolution needs to run as Winograd
/// F(2x2, 3x3) in a plan: below it the 16 GEMMs are too shallow to pay for the transforms
/// (measured from 64 channels up).
const WINOGRAD_MIN_CHANNELS: usize = 64;

/// The fewest 2x2 output tiles (over the batch) a 3x3 convolution needs to run as Winograd
/// F(2x2, 3x3) in a plan. The tiles are the rows of its 16 GEMMs: a 7 x 7 plane at batch 1
/// has 16 (covering 8 x 8, 23% of the products wasted), one full row panel and a short one,
/// and there the implicit kernel was faster on Sapphire Rapids (512 -> 512 channels, 2.20
/// against 2.84-3.04 ms at one thread, 1.11-1.17 against 1.38 at two) and even on Zen 4
/// (1023 against 1046 us at two threads, 6% slower at one). From 49 tiles (14 x 14) up
/// Winograd won on both hosts, 7 x 7 at batch 8 included (128 tiles).
const WINOGRAD_MIN_TILES: usize = 32;

/// A feature map living in a plan buffer: NCHW, or channels-last (`[n, h, w, c]`) where the
/// builder's channels-last rule put it ([`PlanBuilder::channels_last_up_to`]).
#[derive(Debug, Clone, Copy)]
pub struct Feat {
    /// The arena buffer holding it.
    pub buf: Buf,
    /// Images.
    pub n: usize,
    /// Channels.
    pub c: usize,
    /// Height.
    pub h: usize,
    /// Width.
    pub w: usize,
    /// Channels-last: element `(b, ch, y, x)` at `((b * h + y) * w + x) * c + ch`.
    pub nhwc: bool,
}

/// Collects the steps and buffers of a plan.
pub struct PlanBuilder {
    planner: Planner,
    steps: Vec<Step>,
    input: Buf,
    input_shape: [usize; 4],
    /// The float64 reference of every step, in reference mode only.
    reference: Option<Vec<RefStep>>,
    /// Feature maps of at most this many pixels produced by 1x1 convolutions are stored
    /// channels-last, and so is everything computed from them (0: all NCHW); see
    /// [`PlanBuilder::channels_last_at`].
    channels_last_hw: usize,
    /// Columns of the GEMM kernel in force (its NR).
    gemm_nr: usize,
}

/// A dense 1x1 convolution with stride 1 and no padding: a GEMM over the pixels.
pub(super) fn is_pointwise(s: &Conv2dShape) -> bool {
    s.kh == 1 && s.kw == 1 && s.stride == (1, 1) && s.padding == (0, 0) && s.groups == 1
}

/// A dense 1x1 convolution with a square stride above 1, no padding and no dilation: a pointwise
/// GEMM over every `stride`-th pixel.
fn is_strided_pointwise(s: &Conv2dShape) -> bool {
    s.kh == 1
        && s.kw == 1
        && s.stride.0 == s.stride.1
        && s.stride.0 > 1
        && s.padding == (0, 0)
        && s.dilation == (1, 1)
        && s.groups == 1
}

fn kerr(e: KernelError) -> ModelError {
    ModelError::config(format!("plan: {e}"))
}

fn checked_len(dims: &[usize]) -> Result<usize> {
    dims.iter()
        .try_fold(1usize, |a, &d| a.checked_mul(d))
        .filter(|&n| n <= isize::MAX as usize / 4)
        .ok_or_else(|| ModelError::config(format!("plan: a buffer of shape {dims:?} is too large")))
}

/// NR of the GEMM kernel in force.
fn gemm_nr() -> Result<usize> {
    use tessera_core::kernels::gemm::table::selected;
    let isa = tessera_core::kernels::Isa::current().map_err(kerr)?;
    Ok(selected(isa).tuning.kernel.nr)
}

/// `W^T` of a `[out, in]` row-major weight, packed as the GEMM's B operand.
pub(super) fn pack_transposed(w: &[f32], out: usize, inf: usize) -> Result<PackedMatrix> {
    PackedMatrix::pack_b(MatRef::new(w, inf, out, 1, inf), None).map_err(kerr)
}

impl PlanBuilder {
    /// A builder for input `[n, c, h, w]`, and the input feature map.
    pub fn new(shape: [usize; 4]) -> Result<(PlanBuilder, Feat)> {
        let mut planner = Planner::default();
        let input = planner.buffer(checked_len(&shape)?);
        let [n, c, h, w] = shape;
        let b = PlanBuilder {
            planner,
            steps: Vec::new(),
            input,
            input_shape: shape,
            reference: None,
            channels_last_hw: 0,
            gemm_nr: gemm_nr()?,
        };
        Ok((
            b,
            Feat {
                buf: input,
                n,
                c,
                h,
                w,
                nhwc: false,
            },
        ))
    }

    /// Whether a 1x1 convolution writing `c` channels of `hw` pixels writes them
    /// channels-last: maps of up to a quarter of the limit always (14 x 14 and below for the
    /// MobileNets), larger ones up to the limit when `c` is a multiple of the GEMM kernel's
    /// column tile, so that the channels-last GEMMs (channels along the tile's columns) waste
    /// no columns. Measured on the Zen 4 host (one thread, `tessera profile --plan`):
    /// MobileNetV3-Large's 28 x 28 maps of 40 and 120 channels ran their 1x1 convolutions
    /// 10-20% slower channels-last (120 x 784 x 40: 86 against 75 us) and the network 2% slower,
    /// while MobileNetV2's of 32 and 192 channels gain.
    pub(super) fn channels_last_at(&self, hw: usize, c: usize) -> bool {
        self.in_channels_last_range(hw)
            && (4 * hw <= self.channels_last_hw || c.is_multiple_of(self.gemm_nr))
    }

    /// Whether maps of `hw` pixels are within the channels-last limit at all.
    pub(super) fn in_channels_last_range(&self, hw: usize) -> bool {
        self.channels_last_hw > 0 && hw <= self.channels_last_hw
    }

    /// From here on, 1x1 convolutions whose output has at most `max_hw` pixels write it
    /// channels-last, and the depthwise convolutions, squeeze-excitations, residual joins and
    /// global pooling that follow run on that layout (`depthwise::nhwc`; the GEMMs then
    /// compute `Y^T = X^T W^T`, pixels along the tile's rows). Ignored in a reference build,
    /// whose float64 reference follows NCHW buffers.
    pub fn channels_last_up_to(&mut self, max_hw: usize) {
        if self.reference.is_none() {
            self.channels_last_hw = max_hw;
        }
    }

    /// [`PlanBuilder::new`] in reference mode: every step also records its float64 reference
    /// on the unfolded parameters ([`super::reference`]), for [`Plan::accuracy`].
    pub fn new_reference(shape: [usize; 4]) -> Result<(PlanBuilder, Feat)> {
        let (mut b, x) = Self::new(shape)?;
        b.reference = Some(Vec::new());
        Ok((b, x))
    }

    /// A new buffer of the given dimensions.
    pub fn buffer(&mut self, dims: &[usize]) -> Result<Buf> {
        Ok(self.planner.buffer(checked_len(dims)?))
    }

    /// Adds `step`; in reference mode also its reference, built by `reference` (not called
    /// otherwise, so a normal plan pays nothing).
    fn push(&mut self, step: Step, reference: impl FnOnce() -> RefStep) {
        if let Some(r) = &mut self.reference {
            r.push(reference());
        }
        let i = self.steps.len();
        for b in step.buffers() {
            self.planner.touch(b, i);
        }
        self.steps.push(step);
    }

    pub(super) fn conv_shape(x: &Feat, conv: &Conv2d) -> Result<Conv2dShape> {
        let ws = conv.weight.shape();
        let p = conv.params;
        let s = Conv2dShape {
            n: x.n,
            c_in: x.c,
            h: x.h,
            w: x.w,
            c_out: ws[0],
            kh: ws[2],
            kw: ws[3],
            stride: p.stride,
            padding: p.padding,
            dilation: p.dilation,
            groups: p.groups,
        };
        s.validate().map_err(kerr)?;
        Ok(s)
    }

    /// Whether this builder records a float64 reference (then nothing is fused that the
    /// reference could not follow step by step).
    pub(super) fn has_reference(&self) -> bool {
        self.reference.is_some()
    }

    /// Adds a fused step, which has no float64 reference of its own (a reference build emits
    /// its parts unfused instead, see [`PlanBuilder::has_reference`]).
    pub(super) fn push_fused(&mut self, step: Step) -> Result<()> {
        if self.reference.is_some() {
            return Err(ModelError::config(
                "plan: a fused step in a reference plan (internal error)".to_string(),
            ));
        }
        self.push(step, || unreachable!("no reference is recorded"));
        Ok(())
    }

    /// `act(scale * conv(x) + bias)` (no scale: the batch norm folded into `w` or absent),
    /// choosing the kernel path; with `into`, the result is added to `into`'s values (the
    /// residual join) before the bias and activation, and `into`'s buffer becomes the output.
    /// A scale needs a dense convolution and no `into`. `l` is the unfolded layer (for the
    /// reference).
    #[allow(clippy::too_many_arguments)]
    fn conv_folded(
        &mut self,
        x: &Feat,
        s: Conv2dShape,
        w: Vec<f32>,
        scale: Option<Vec<f32>>,
        bias: Vec<f32>,
        act: Activation,
        into: Option<Feat>,
        l: &ConvBnAct,
        channels_last: bool,
    ) -> Result<Feat> {
        let (oh, ow) = (s.out_h(), s.out_w());
        if is_strided_pointwise(&s) && !x.nhwc && into.is_none() {
            // A strided 1x1 convolution (ResNet's downsample) reads one pixel in `stride^2`:
            // in place, the GEMM's B rows are gathered with gaps and the implicit kernel runs
            // at 104-157 GFLOP/s on SE-ResNet-101's three (Sapphire Rapids, 2 threads) against
            // ~260 for a pointwise GEMM of the same size. Subsampling first (a 1x1 max pool:
            // a copy of a quarter of the input) and running the pointwise GEMM on the compact
            // map gives the same products in the same order.
            let xs = self.subsample(x, s.stride.0)?;
            let s1 = Conv2dShape {
                h: oh,
                w: ow,
                stride: (1, 1),
                ..s
            };
            return self.conv_folded(&xs, s1, w, scale, bias, act, into, l, channels_last);
        }
        // The folded f32 weights the step runs, for the reference's fold columns (none when
        // the batch norm is a scale in the epilogue: nothing is folded).
        let folded =
            (self.reference.is_some() && scale.is_none()).then(|| (w.clone(), bias.clone()));
        let pointwise = is_pointwise(&s);
        if let Some(r) = &into {
            if !pointwise || (r.n, r.c, r.h, r.w) != (x.n, s.c_out, oh, ow) {
                return Err(ModelError::config(format!(
                    "plan: a residual join needs a 1x1 stride-1 convolution to [{}, {}, {oh}, {ow}], got {s}",
                    x.n, s.c_out
                )));
            }
        }
        if into.is_some() && scale.is_some() {
            return Err(ModelError::config(
                "plan: a residual join takes no channel scale".to_string(),
            ));
        }
        // Layout of the output: a 1x1 convolution's by the channels-last rule (or its
        // residual's); a depthwise one keeps its input's; others need NCHW.
        let nhwc = match &into {
            Some(r) => r.nhwc,
            None if pointwise => {
                x.nhwc
                    || self.channels_last_at(oh * ow, s.c_out)
                    || (channels_last && self.channels_last_hw > 0)
            }
            None => x.nhwc,
        };
        if x.nhwc && !nhwc {
            return Err(ModelError::config(format!(
                "plan: {s} from a channels-last map into an NCHW one (unsupported)"
            )));
        }
        if x.nhwc && !pointwise && !s.is_depthwise() {
            return Err(ModelError::config(format!(
                "plan: {s} on a channels-last map (only 1x1 and depthwise convolutions run there)"
            )));
        }
        let y = match into {
            Some(r) => r.buf,
            None => self.buffer(&[x.n, s.c_out, oh, ow])?,
        };
        let step = if pointwise {
            let wv = MatRef::row_major(&w, s.c_out, s.c_in);
            let transposed = nhwc || (x.n == 1 && as_transpose(s.c_out, s.c_in, x.h * x.w)?);
            let wm = if transposed {
                PackedMatrix::pack_b(wv.t(), None)
            } else {
                PackedMatrix::pack_a(wv, None)
            }
            .map_err(kerr)?;
            Step::Pointwise {
                w: wm,
                transposed,
                x_nhwc: x.nhwc,
                y_nhwc: nhwc,
                scale,
                bias,
                act,
                n: x.n,
                hw: x.h * x.w,
                x: x.buf,
                y,
                accumulate: into.is_some(),
                threads: 0,
            }
        } else if s.is_depthwise() {
            if scale.is_some() {
                return Err(ModelError::config(format!(
                    "plan: a depthwise convolution takes no channel scale ({s})"
                )));
            }
            let w = if nhwc {
                tessera_core::kernels::conv::depthwise::nhwc::pack_weights(&s, &w).map_err(kerr)?
            } else {
                w
            };
            Step::Depthwise {
                s,
                w,
                bias,
                act,
                nhwc,
                x: x.buf,
                y,
            }
        } else {
            let dims = [s.c_out, s.c_in / s.groups, s.kh, s.kw];
            let direct = PackedConvWeight::runs_direct(dims, s.groups);
            // The implicit-GEMM kernel where it takes the shape (no im2col matrix, padding taps
            // skipped: 20-45% faster than the GEMM forms on every SE-ResNet-101 shape, see
            // `implicit_applies`); else single-image convolutions whose plane wastes the tile
            // run as Y^T = cols^T W^T (see `as_transpose`); the direct kernel of few input
            // channels runs the stems. Before all of them, 3x3 stride-1 "same" convolutions of
            // at least 64 channels each way run as Winograd F(2x2, 3x3) (2.25x fewer
            // multiplications: on Zen 4 1.06-1.5x faster than the implicit kernel at one thread
            // on the SE-ResNet-101 shapes, 1.1-1.5x at two threads except 512 channels at 7x7
            // (even) and 64 at 56x56, batch 8 (2% slower); see `docs/kernels/conv.md`), when
            // the output has at least `WINOGRAD_MIN_TILES` tiles.
            let winograd = !direct
                && PackedConvWeight::winograd_applies(&s)
                && s.c_in >= WINOGRAD_MIN_CHANNELS
                && s.c_out >= WINOGRAD_MIN_CHANNELS
                && s.n * oh.div_ceil(2) * ow.div_ceil(2) >= WINOGRAD_MIN_TILES;
            let implicit = !winograd && !direct && PackedConvWeight::implicit_applies(&s, None);
            let transposed = !winograd
                && !implicit
                && x.n == 1
                && s.groups == 1
                && !direct
                && as_transpose(s.c_out, s.c_in * s.kh * s.kw, oh * ow)?;
            let mut pw = if winograd {
                PackedConvWeight::pack_winograd_for(&w, dims, &s, None)
            } else if implicit {
                PackedConvWeight::pack_implicit(&w, dims, 1, None)
            } else if transposed {
                PackedConvWeight::pack_transposed(&w, dims, 1, None)
            } else {
                PackedConvWeight::pack(&w, dims, s.groups, None)
            }
            .map_err(kerr)?;
            if let Some(sc) = scale {
                pw = pw.with_channel_scale(sc).map_err(kerr)?;
            }
            Step::Conv {
                s,
                w: Box::new(pw),
                bias,
                act,
                x: x.buf,
                y,
            }
        };
        let acc = into.is_some();
        self.push(step, || RefOp::conv_bn(l, s, act, (x.buf, y), acc, folded));
        Ok(Feat {
            buf: y,
            n: x.n,
            c: s.c_out,
            h: oh,
            w: ow,
            nhwc,
        })
    }

    /// A [`ConvBnAct`] with the activation in the epilogue. A dense convolution keeps its
    /// weights and applies the batch norm as a per-channel scale and shift in the GEMM
    /// epilogue ([`ConvBnAct::scale_shift`]); a depthwise one has it folded into its weights.
    pub fn conv_bn_act(&mut self, x: &Feat, l: &ConvBnAct) -> Result<Feat> {
        self.conv_bn_act_as(x, l, false)
    }

    /// [`PlanBuilder::conv_bn_act`]; with `channels_last`, a 1x1 convolution writes its output
    /// channels-last whatever its size, when the builder uses channels-last maps at all
    /// ([`PlanBuilder::channels_last_up_to`]): for an expansion whose depthwise convolution
    /// shrinks the map into the channels-last range.
    pub(super) fn conv_bn_act_as(
        &mut self,
        x: &Feat,
        l: &ConvBnAct,
        channels_last: bool,
    ) -> Result<Feat> {
        let s = Self::conv_shape(x, &l.conv)?;
        if s.is_depthwise() {
            let (w, b) = l.folded_weights();
            return self.conv_folded(x, s, w, None, b, l.kernel_act(), None, l, false);
        }
        let (scale, shift) = l.scale_shift()?;
        let w = l.conv.weight.data().to_vec();
        let act = l.kernel_act();
        self.conv_folded(x, s, w, Some(scale), shift, act, None, l, channels_last)
    }

    /// `act(conv_bn(x) + into)`: the residual join fused into the (1x1) convolution's GEMM;
    /// `into`'s buffer is overwritten with the result (its value must not be needed after).
    pub fn conv_bn_residual(
        &mut self,
        x: &Feat,
        l: &ConvBnAct,
        into: Feat,
        act: Activation,
    ) -> Result<Feat> {
        let s = Self::conv_shape(x, &l.conv)?;
        let (w, b) = l.folded_weights();
        self.conv_folded(x, s, w, None, b, act, Some(into), l, false)
    }

    /// Squeeze-and-excitation on `x` in place (`fc1`, `fc2`: 1x1 convolutions with bias);
    /// with `residual`, `r = ract(x * s + r)` instead, returning `r`.
    #[allow(clippy::too_many_arguments)]
    pub fn squeeze_excite(
        &mut self,
        x: &Feat,
        fc1: &Conv2d,
        act: Activation,
        fc2: &Conv2d,
        gate: Activation,
        residual: Option<(Feat, Activation)>,
    ) -> Result<Feat> {
        let (c, rd) = (x.c, fc1.out_channels());
        if fc1.in_channels() != c || fc2.out_channels() != c || fc2.in_channels() != rd {
            return Err(ModelError::config(format!(
                "plan: squeeze-excite {c} -> {rd} -> {c} does not match its weights"
            )));
        }
        let bias = |l: &Conv2d, n: usize| {
            l.bias
                .as_ref()
                .map_or_else(|| vec![0.0; n], |b| b.data().into_owned())
        };
        if x.nhwc && residual.is_some() {
            return Err(ModelError::config(
                "plan: squeeze-excite with a residual join on a channels-last map (unsupported)",
            ));
        }
        let scale = self.buffer(&[x.n, c])?;
        let out = residual.as_ref().map_or(*x, |r| r.0);
        let reference = || RefStep {
            shape: vec![x.n, c, x.h, x.w],
            op: RefOp::SqueezeExcite {
                x: x.buf,
                n: x.n,
                c,
                hw: x.h * x.w,
                rd,
                w1: f64s(&fc1.weight.data()),
                b1: f64s(&bias(fc1, rd)),
                act,
                w2: f64s(&fc2.weight.data()),
                b2: f64s(&bias(fc2, c)),
                gate,
                residual: residual.map(|(r, a)| (r.buf, a)),
            },
        };
        let step = Step::SqueezeExcite {
            x: x.buf,
            n: x.n,
            c,
            hw: x.h * x.w,
            fc1: fc1.weight.data().into_owned(),
            b1: bias(fc1, rd),
            act,
            fc2: fc2.weight.data().into_owned(),
            b2: bias(fc2, c),
            gate,
            scale,
            residual: residual.map(|(r, a)| (r.buf, a)),
            nhwc: x.nhwc,
        };
        self.push(step, reference);
        Ok(out)
    }

    /// Global average pooling to `[n, c]` (as a feature map `[n, c, 1, 1]`).
    pub fn global_pool(&mut self, x: &Feat) -> Result<Feat> {
        let y = self.buffer(&[x.n, x.c])?;
        let reference = || RefStep {
            shape: vec![x.n, x.c],
            op: RefOp::GlobalPool {
                x: x.buf,
                y,
                planes: x.n * x.c,
                hw: x.h * x.w,
            },
        };
        let step = Step::GlobalPool {
            x: x.buf,
            y,
            n: x.n,
            c: x.c,
            h: x.h,
            w: x.w,
            nhwc: x.nhwc,
        };
        self.push(step, reference);
        // `[n, c, 1, 1]`: the same bytes in either layout.
        Ok(Feat {
            buf: y,
            n: x.n,
            c: x.c,
            h: 1,
            w: 1,
            nhwc: false,
        })
    }

    /// Every `stride`-th pixel of `x` (a 1x1 max pool; the steps name it `subsample`).
    fn subsample(&mut self, x: &Feat, stride: usize) -> Result<Feat> {
        self.max_pool(x, 1, stride, 0)
    }

    /// Max pooling with a square window.
    pub fn max_pool(&mut self, x: &Feat, k: usize, stride: usize, pad: usize) -> Result<Feat> {
        if x.nhwc {
            return Err(ModelError::config(
                "plan: max pooling on a channels-last map (unsupported)",
            ));
        }
        let out = |i: usize| (i + 2 * pad).checked_sub(k).map(|v| v / stride + 1);
        let (oh, ow) = match (out(x.h), out(x.w)) {
            (Some(a), Some(b)) if stride > 0 && 2 * pad <= k => (a, b),
            _ => {
                return Err(ModelError::config(format!(
                    "plan: max pool {k}x{k} stride {stride} padding {pad} on {}x{}",
                    x.h, x.w
                )))
            }
        };
        let y = self.buffer(&[x.n, x.c, oh, ow])?;
        let reference = || RefStep {
            shape: vec![x.n, x.c, oh, ow],
            op: RefOp::MaxPool {
                x: x.buf,
                y,
                planes: x.n * x.c,
                h: x.h,
                w: x.w,
                k,
                stride,
                pad,
                oh,
                ow,
            },
        };
        let step = Step::MaxPool {
            x: x.buf,
            y,
            planes: x.n * x.c,
            h: x.h,
            w: x.w,
            k,
            stride,
            pad,
            oh,
            ow,
        };
        self.push(step, reference);
        Ok(Feat {
            buf: y,
            n: x.n,
            c: x.c,
            h: oh,
            w: ow,
            nhwc: false,
        })
    }

    /// `y[rows, out] = act(x[rows, in] W^T + b)` for a `[out, in]` weight; with `into`, the
    /// result is added to `into` (the residual join) and written there.
    #[allow(clippy::too_many_arguments)]
    pub fn linear_raw(
        &mut self,
        x: Buf,
        rows: usize,
        w: &[f32],
        out: usize,
        bias: Option<Vec<f32>>,
        act: Activation,
        into: Option<Buf>,
    ) -> Result<Buf> {
        let inf = w.len() / out.max(1);
        if x.len != rows * inf {
            return Err(ModelError::config(format!(
                "plan: linear {inf} -> {out} on {rows} rows of {} values",
                x.len / rows.max(1)
            )));
        }
        let y = match into {
            Some(b) if b.len == rows * out => b,
            Some(_) => return Err(ModelError::config("plan: residual of the wrong size")),
            None => self.buffer(&[rows, out])?,
        };
        let layout = RowLayout {
            off: 0,
            seg: rows,
            seg_stride: rows * out,
        };
        let accumulate = into.is_some();
        let reference = || {
            RefStep::linear(
                w,
                inf,
                out,
                bias.as_deref(),
                act,
                rows,
                x,
                y,
                layout,
                accumulate,
            )
        };
        let step = Step::Linear {
            w: pack_transposed(w, out, inf)?,
            bias: bias.clone(),
            act,
            rows,
            x,
            y,
            y_layout: layout,
            accumulate,
            threads: 0,
        };
        self.push(step, reference);
        Ok(y)
    }

    /// A [`Linear`] layer on `rows` rows.
    pub fn linear(
        &mut self,
        x: Buf,
        rows: usize,
        l: &Linear,
        act: Activation,
        into: Option<Buf>,
    ) -> Result<Buf> {
        let bias = l.bias.as_ref().map(|b| b.data().into_owned());
        self.linear_raw(x, rows, &l.weight.data(), l.out_features(), bias, act, into)
    }

    /// Adds a step as is (the ViT steps), with its reference.
    pub(super) fn step(&mut self, s: Step, reference: impl FnOnce() -> RefStep) {
        self.push(s, reference);
    }

    /// Finishes the plan with `out` (of shape `out_shape`) as its result: places the buffers
    /// and allocates the arena.
    pub fn finish(mut self, out: Buf, out_shape: Vec<usize>) -> Result<Plan> {
        // The input is live from the start, the output to the end.
        let last = self.steps.len();
        self.planner.touch(self.input, 0);
        self.planner.touch(out, last);
        let (offs, total) = self.planner.place();
        if self.planner.has_conflict(&offs) {
            return Err(ModelError::config(
                "plan: arena planning produced an overlap",
            ));
        }
        let buffers = offs.len();
        Ok(Plan {
            reference: self.reference.map(|steps| Reference { steps, buffers }),
            steps: self.steps,
            offs,
            arena: tessera_core::kernels::memory::AlignedBuf::zeroed(total),
            input: self.input,
            output: out,
            input_shape: self.input_shape,
            output_shape: out_shape,
        })
    }
}

/// Whether a single-image convolution (`c_out` x `c_in` weights, where `c_in` is the GEMM's
/// depth, `c_in * kh * kw` for a k x k one; `hw` output pixels) runs as `Y^T = X^T W^T` (see
/// `Step::Pointwise` and `PackedConvWeight::pack_transposed`): when the kernel in force stores
/// C transposed and the work that way, padded rows x padded columns x (depth + the transposed
/// store's cost per tile in k steps), is at least 10% less than as `Y = W X`. A 7 x 7 plane
/// (49 pixels) computes 64 columns of a 32-wide tile one way and 52 rows the other (the model:
/// 15-19% less); on the Zen 4 host SE-ResNet-101's 3x3 convolutions with 7 x 7 outputs ran
/// 11% faster transposed, its strided 1x1 to 7 x 7 16% (one thread). A 14 x 14 plane
/// (196 = 6 x 32 + 4 columns, the last panel through a 16-wide narrow twin) gains 5% in the
/// model and measured 2% slower (3x3, 2304 deep) and 12% slower (1x1, on Sapphire Rapids), so
/// it stays direct: the model does not count the transposing packer of the im2col operand.
fn as_transpose(c_out: usize, c_in: usize, hw: usize) -> Result<bool> {
    use tessera_core::kernels::gemm::table::selected;
    let isa = tessera_core::kernels::Isa::current().map_err(kerr)?;
    let k = selected(isa).tuning.kernel;
    let Some(extra) = k.transposed_store_cost() else {
        return Ok(false);
    };
    let direct = k.padded_rows(c_out) * k.padded_cols(hw) * c_in;
    let transposed = k.padded_rows(hw) * k.padded_cols(c_out) * (c_in + extra);
    Ok(10 * transposed <= 9 * direct)
}
