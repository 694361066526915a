//! 2-D convolution over NCHW f32 tensors: forward (with fused bias + activation), input
//! gradient, weight gradient and bias gradient, with PyTorch's semantics (`torch.nn.Conv2d`:
//! zero padding, dilation, groups; weight `[c_out, c_in / groups, kh, kw]`).
//!
//! Every entry point checks the shape and the slice lengths and returns a [`KernelError`] naming
//! the op and the shape, then dispatches on the problem:
//!
//! - **depthwise** (`groups == c_in`, `c_out = c_in * multiplier`): one small filter per plane,
//!   a direct SIMD kernel along the width ([`depthwise`], see `docs/kernels/depthwise.md`);
//! - **dense 1x1, stride 1, no padding**: a GEMM straight on NCHW per image and group,
//!   `Y[c_out, hw] = W[c_out, c_in] * X[c_in, hw]`, bias and activation in the GEMM epilogue;
//! - **dense, at most 4 input channels** (the stems): a direct kernel on phase-split input rows
//!   (`stem.rs`), no im2col;
//! - **dense k x k**: im2col into a thread-local buffer, then the same GEMM (Chellapilla et al.,
//!   "High Performance Convolutional Neural Networks for Document Processing", 2006);
//!   gradients through GEMM with `W^T * dY` + col2im and `dY * cols^T`.
//!
//! [`mod@reference`] is the naive f64-accumulating oracle every path is tested against.
//! Results are bit-identical for any thread count: work is split along output planes / output
//! channels only, never along a reduction.

mod dense;
mod dense_batched;
pub mod depthwise;
mod implicit;
mod packed;
pub mod reference;
mod stem;
mod winograd;

use crate::activation::Activation;
use crate::error::KernelError;
use crate::isa::Isa;
use dense::ChannelEpilogue;
pub use packed::{conv2d_forward_packed, PackedConvWeight};

/// The geometry of a 2-D convolution (NCHW input, PyTorch conventions).
///
/// Input `[n, c_in, h, w]`, weight `[c_out, c_in / groups, kh, kw]`, output
/// `[n, c_out, out_h, out_w]` with `out = (in + 2 * pad - dilation * (k - 1) - 1) / stride + 1`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Conv2dShape {
    /// Batch size.
    pub n: usize,
    /// Input channels.
    pub c_in: usize,
    /// Input height.
    pub h: usize,
    /// Input width.
    pub w: usize,
    /// Output channels.
    pub c_out: usize,
    /// Kernel height.
    pub kh: usize,
    /// Kernel width.
    pub kw: usize,
    /// (vertical, horizontal) step between output positions, >= 1.
    pub stride: (usize, usize),
    /// (vertical, horizontal) zeros added on each side of the input.
    pub padding: (usize, usize),
    /// (vertical, horizontal) spacing between kernel taps, >= 1.
    pub dilation: (usize, usize),
    /// Channel groups: `c_in` and `c_out` must both be multiples of it.
    pub groups: usize,
}

impl std::fmt::Display for Conv2dShape {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "x [{}, {}, {}, {}], weight [{}, {}, {}, {}], stride {:?}, padding {:?}, dilation {:?}, groups {}",
            self.n,
            self.c_in,
            self.h,
            self.w,
            self.c_out,
            self.c_in.checked_div(self.groups).unwrap_or(0),
            self.kh,
            self.kw,
            self.stride,
            self.padding,
            self.dilation,
            self.groups
        )
    }
}

/// Output size along one axis, or `None` if the dilated kernel does not fit the padded input
/// (or the arithmetic overflows or the stride is zero).
fn conv_out(input: usize, k: usize, stride: usize, pad: usize, dil: usize) -> Option<usize> {
    let padded = input.checked_add(pad.checked_mul(2)?)?;
    let span = dil.checked_mul(k.checked_sub(1)?)?.checked_add(1)?;
    if stride == 0 || span > padded {
        return None;
    }
    Some((padded - span) / stride + 1)
}

impl Conv2dShape {
    /// A shape with stride 1, no padding, dilation 1 and one group.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        n: usize,
        c_in: usize,
        h: usize,
        w: usize,
        c_out: usize,
        kh: usize,
        kw: usize,
    ) -> Self {
        Conv2dShape {
            n,
            c_in,
            h,
            w,
            c_out,
            kh,
            kw,
            stride: (1, 1),
            padding: (0, 0),
            dilation: (1, 1),
            groups: 1,
        }
    }

    /// Output height (0 if the shape is invalid; see [`Conv2dShape::validate`]).
    pub fn out_h(&self) -> usize {
        conv_out(
            self.h,
            self.kh,
            self.stride.0,
            self.padding.0,
            self.dilation.0,
        )
        .unwrap_or(0)
    }

    /// Output width (0 if the shape is invalid; see [`Conv2dShape::validate`]).
    pub fn out_w(&self) -> usize {
        conv_out(
            self.w,
            self.kw,
            self.stride.1,
            self.padding.1,
            self.dilation.1,
        )
        .unwrap_or(0)
    }

    /// Input channels per group.
    pub fn c_in_per_group(&self) -> usize {
        self.c_in / self.groups.max(1)
    }

    /// Output channels per group.
    pub fn c_out_per_group(&self) -> usize {
        self.c_out / self.groups.max(1)
    }

    /// Whether this is a depthwise convolution (one group per input channel, any channel
    /// multiplier), which runs on the specialised [`depthwise`] kernel.
    pub fn is_depthwise(&self) -> bool {
        self.groups == self.c_in && self.groups > 0 && self.c_out.is_multiple_of(self.groups)
    }

    /// Checks that the shape describes a valid convolution: every extent but `n` non-zero,
    /// strides and dilations >= 1, channels divisible by the groups, the dilated kernel fitting
    /// the padded input, and every tensor length representable.
    pub fn validate(&self) -> Result<(), KernelError> {
        const OP: &str = "conv2d";
        let bad = |why: &str| Err(KernelError::invalid(OP, format!("{self}: {why}")));
        if self.c_in == 0 || self.c_out == 0 || self.h == 0 || self.w == 0 {
            return bad("channels and spatial extents must be non-zero");
        }
        if self.kh == 0 || self.kw == 0 {
            return bad("kernel extents must be non-zero");
        }
        if self.stride.0 == 0 || self.stride.1 == 0 {
            return bad("stride must be >= 1");
        }
        if self.dilation.0 == 0 || self.dilation.1 == 0 {
            return bad("dilation must be >= 1");
        }
        if self.groups == 0
            || !self.c_in.is_multiple_of(self.groups)
            || !self.c_out.is_multiple_of(self.groups)
        {
            return bad("groups must be >= 1 and divide both c_in and c_out");
        }
        let oh = conv_out(
            self.h,
            self.kh,
            self.stride.0,
            self.padding.0,
            self.dilation.0,
        );
        let ow = conv_out(
            self.w,
            self.kw,
            self.stride.1,
            self.padding.1,
            self.dilation.1,
        );
        let (Some(oh), Some(ow)) = (oh, ow) else {
            return bad("the dilated kernel is larger than the padded input");
        };
        let lens = [
            checked_prod(&[self.n, self.c_in, self.h, self.w]),
            checked_prod(&[self.c_out, self.c_in / self.groups, self.kh, self.kw]),
            checked_prod(&[self.n, self.c_out, oh, ow]),
            // im2col buffer of one group of one image.
            checked_prod(&[self.c_in / self.groups, self.kh, self.kw, oh, ow]),
        ];
        // Elements must also be addressable as isize by pointer arithmetic.
        if lens
            .iter()
            .any(|l| !matches!(l, Some(l) if *l <= isize::MAX as usize / 4))
        {
            return bad("tensor sizes overflow");
        }
        Ok(())
    }

    /// `n * c_in * h * w`.
    pub fn input_len(&self) -> usize {
        self.n * self.c_in * self.h * self.w
    }

    /// `c_out * (c_in / groups) * kh * kw` (PyTorch's weight layout).
    pub fn weight_len(&self) -> usize {
        self.c_out * self.c_in_per_group() * self.kh * self.kw
    }

    /// `n * c_out * out_h * out_w`.
    pub fn output_len(&self) -> usize {
        self.n * self.c_out * self.out_h() * self.out_w()
    }

    /// Multiply-adds of the forward pass times two.
    pub fn flops(&self) -> f64 {
        2.0 * self.output_len() as f64 * (self.c_in_per_group() * self.kh * self.kw) as f64
    }
}

fn checked_prod(v: &[usize]) -> Option<usize> {
    v.iter().try_fold(1usize, |a, &b| a.checked_mul(b))
}

fn check_len(
    op: &'static str,
    s: &Conv2dShape,
    name: &str,
    len: usize,
    want: usize,
) -> Result<(), KernelError> {
    if len == want {
        Ok(())
    } else {
        Err(KernelError::invalid(
            op,
            format!("{s}: {name} has {len} elements, expected {want}"),
        ))
    }
}

fn check_bias(op: &'static str, s: &Conv2dShape, bias: Option<&[f32]>) -> Result<(), KernelError> {
    match bias {
        Some(b) => check_len(op, s, "bias", b.len(), s.c_out),
        None => Ok(()),
    }
}

/// Which kernel family runs a shape.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Path {
    Depthwise,
    Pointwise,
    Im2col,
}

fn path(s: &Conv2dShape) -> Path {
    if s.is_depthwise() {
        Path::Depthwise
    } else if s.kh == 1 && s.kw == 1 && s.stride == (1, 1) && s.padding == (0, 0) {
        Path::Pointwise
    } else {
        Path::Im2col
    }
}

/// `y = act(conv(x, w) + bias)`: the forward pass on the current ISA ([`Isa::current`]).
///
/// `x` is `[n, c_in, h, w]`, `w` `[c_out, c_in / groups, kh, kw]`, `bias` `[c_out]`, `y`
/// `[n, c_out, out_h, out_w]` (overwritten). Errors: an invalid shape, a slice of the wrong
/// length, an unsupported `TESSERA_ISA`.
pub fn conv2d_forward(
    s: &Conv2dShape,
    x: &[f32],
    w: &[f32],
    bias: Option<&[f32]>,
    act: Activation,
    y: &mut [f32],
) -> Result<(), KernelError> {
    conv2d_forward_with(Isa::current()?, s, x, w, bias, act, y)
}

/// [`conv2d_forward`] on an explicit instruction set (an error if the CPU lacks it).
pub fn conv2d_forward_with(
    isa: Isa,
    s: &Conv2dShape,
    x: &[f32],
    w: &[f32],
    bias: Option<&[f32]>,
    act: Activation,
    y: &mut [f32],
) -> Result<(), KernelError> {
    const OP: &str = "conv2d_forward";
    s.validate().map_err(|e| rename(e, OP))?;
    check_len(OP, s, "x", x.len(), s.input_len())?;
    check_len(OP, s, "weight", w.len(), s.weight_len())?;
    check_len(OP, s, "y", y.len(), s.output_len())?;
    check_bias(OP, s, bias)?;
    let isa = isa.check()?;
    match path(s) {
        Path::Depthwise => depthwise::forward(isa, s, x, w, bias, act, y),
        Path::Pointwise | Path::Im2col => dense::forward(
            isa,
            s,
            x,
            dense::Weights::Raw(w),
            ChannelEpilogue::new(bias, act),
            y,
        ),
    }
}

/// `dx = conv^T(w, dy)`: the gradient of the forward pass with respect to `x` (overwrites
/// `dx`, `[n, c_in, h, w]`), on the current ISA.
pub fn conv2d_backward_input(
    s: &Conv2dShape,
    w: &[f32],
    dy: &[f32],
    dx: &mut [f32],
) -> Result<(), KernelError> {
    conv2d_backward_input_with(Isa::current()?, s, w, dy, dx)
}

/// [`conv2d_backward_input`] on an explicit instruction set.
pub fn conv2d_backward_input_with(
    isa: Isa,
    s: &Conv2dShape,
    w: &[f32],
    dy: &[f32],
    dx: &mut [f32],
) -> Result<(), KernelError> {
    const OP: &str = "conv2d_backward_input";
    s.validate().map_err(|e| rename(e, OP))?;
    check_len(OP, s, "weight", w.len(), s.weight_len())?;
    check_len(OP, s, "dy", dy.len(), s.output_len())?;
    check_len(OP, s, "dx", dx.len(), s.input_len())?;
    let isa = isa.check()?;
    match path(s) {
        Path::Depthwise => depthwise::backward_input(isa, s, w, dy, dx),
        Path::Pointwise | Path::Im2col => dense::backward_input(isa, s, w, dy, dx),
    }
}

/// `dw = sum over the batch of dy (x) x`: the gradient with respect to the weight (overwrites
/// `dw`, `[c_out, c_in / groups, kh, kw]`), on the current ISA.
pub fn conv2d_backward_weight(
    s: &Conv2dShape,
    x: &[f32],
    dy: &[f32],
    dw: &mut [f32],
) -> Result<(), KernelError> {
    conv2d_backward_weight_with(Isa::current()?, s, x, dy, dw)
}

/// [`conv2d_backward_weight`] on an explicit instruction set.
pub fn conv2d_backward_weight_with(
    isa: Isa,
    s: &Conv2dShape,
    x: &[f32],
    dy: &[f32],
    dw: &mut [f32],
) -> Result<(), KernelError> {
    const OP: &str = "conv2d_backward_weight";
    s.validate().map_err(|e| rename(e, OP))?;
    check_len(OP, s, "x", x.len(), s.input_len())?;
    check_len(OP, s, "dy", dy.len(), s.output_len())?;
    check_len(OP, s, "dw", dw.len(), s.weight_len())?;
    let isa = isa.check()?;
    match path(s) {
        Path::Depthwise => depthwise::backward_weight(isa, s, x, dy, dw),
        Path::Pointwise | Path::Im2col => dense::backward_weight(isa, s, x, dy, dw),
    }
}

/// `db[c] = sum over n, oh, ow of dy[n, c, oh, ow]` (overwrites `db`, `[c_out]`).
///
/// Each channel is summed in a fixed order (image by image, row-major within the plane), so the
/// result does not depend on the thread count.
pub fn conv2d_backward_bias(
    s: &Conv2dShape,
    dy: &[f32],
    db: &mut [f32],
) -> Result<(), KernelError> {
    const OP: &str = "conv2d_backward_bias";
    s.validate().map_err(|e| rename(e, OP))?;
    check_len(OP, s, "dy", dy.len(), s.output_len())?;
    check_len(OP, s, "db", db.len(), s.c_out)?;
    let plane = s.out_h() * s.out_w();
    let c_out = s.c_out;
    let sum_channel = |c: usize, out: &mut f32| {
        let mut acc = 0.0f32;
        for img in 0..s.n {
            let start = (img * c_out + c) * plane;
            acc += sum_f32(&dy[start..start + plane]);
        }
        *out = acc;
    };
    use rayon::prelude::*;
    if s.output_len() >= 1 << 16 {
        db.par_iter_mut()
            .enumerate()
            .for_each(|(c, o)| sum_channel(c, o));
    } else {
        db.iter_mut()
            .enumerate()
            .for_each(|(c, o)| sum_channel(c, o));
    }
    Ok(())
}

/// Sum of a slice with 8 independent partial sums (auto-vectorised; fixed order).
pub(crate) fn sum_f32(v: &[f32]) -> f32 {
    let mut acc = [0.0f32; 8];
    let chunks = v.chunks_exact(8);
    let rem = chunks.remainder();
    for c in chunks {
        for i in 0..8 {
            acc[i] += c[i];
        }
    }
    let mut s = ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7]));
    for &r in rem {
        s += r;
    }
    s
}

/// Re-labels a shape error with the entry point that found it.
fn rename(e: KernelError, op: &'static str) -> KernelError {
    match e {
        KernelError::InvalidArgument { msg, .. } => KernelError::InvalidArgument { op, msg },
        other => other,
    }
}
