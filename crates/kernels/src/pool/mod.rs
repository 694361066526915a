//! 2-D pooling over NCHW f32 tensors, forward and backward, with PyTorch's semantics:
//! `torch.nn.MaxPool2d` (padding counts as -inf, `ceil_mode`, argmax as the flat index into the
//! input's `h * w` plane, NaN propagates), `torch.nn.AvgPool2d` (`ceil_mode`,
//! `count_include_pad`) and `torch.nn.AdaptiveAvgPool2d` (bins `[floor(o*in/out),
//! ceil((o+1)*in/out))`). The output-size rule is PyTorch's `pooling_output_shape`
//! (`aten/src/ATen/native/Pool.h`), the window rules those of `aten/src/ATen/native/cpu/
//! MaxPoolKernel.cpp` and `AvgPoolKernel.cpp`.
//!
//! Planes (`n * c`) are independent and run in parallel; each output is computed by one thread
//! and each input gradient plane is owned by one thread, so results do not depend on the
//! thread count.

mod avg;
mod channel_sum;
mod max;
mod max_vec;

pub use channel_sum::scale_channels_nhwc;

pub(crate) use max_vec::split_row;

pub use avg::{
    adaptive_avg_pool2d_backward, adaptive_avg_pool2d_forward, avg_pool2d_backward,
    avg_pool2d_forward, global_avg_pool_nhwc,
};
/// The f64 plane sum of the global average pool, shared with the squeeze-and-excitation gate.
pub(crate) use avg::{channel_means_nhwc, lane_sum, lane_sums};
pub use max::{
    max_pool2d_backward, max_pool2d_forward, max_pool2d_forward_scalar, max_pool2d_forward_values,
    max_pool2d_forward_values_with, max_pool2d_forward_with,
};

use crate::error::KernelError;

/// The geometry of a 2-D pooling window sliding over `[n, c, h, w]` (no dilation).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pool2dShape {
    /// Batch size.
    pub n: usize,
    /// Channels.
    pub c: usize,
    /// Input height.
    pub h: usize,
    /// Input width.
    pub w: usize,
    /// Window height.
    pub kh: usize,
    /// Window width.
    pub kw: usize,
    /// (vertical, horizontal) step, >= 1.
    pub stride: (usize, usize),
    /// (vertical, horizontal) implicit padding on each side, at most half the window.
    pub padding: (usize, usize),
    /// Round the output size up instead of down (the last window must still start inside the
    /// input or its left padding).
    pub ceil_mode: bool,
}

impl std::fmt::Display for Pool2dShape {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "x [{}, {}, {}, {}], kernel ({}, {}), stride {:?}, padding {:?}, ceil_mode {}",
            self.n,
            self.c,
            self.h,
            self.w,
            self.kh,
            self.kw,
            self.stride,
            self.padding,
            self.ceil_mode
        )
    }
}

/// PyTorch's `pooling_output_shape` (dilation 1), or `None` when it is not positive.
fn pool_out(input: usize, k: usize, stride: usize, pad: usize, ceil: bool) -> Option<usize> {
    if stride == 0 || k == 0 {
        return None;
    }
    let (i, k, s, p) = (input as i128, k as i128, stride as i128, pad as i128);
    let num = i + 2 * p - (k - 1) - 1 + if ceil { s - 1 } else { 0 };
    let mut out = num.div_euclid(s) + 1;
    if ceil && (out - 1) * s >= i + p {
        out -= 1;
    }
    if out >= 1 {
        usize::try_from(out).ok()
    } else {
        None
    }
}

impl Pool2dShape {
    /// A square `k x k` window with stride `k`, no padding, floor mode.
    pub fn new(n: usize, c: usize, h: usize, w: usize, k: usize) -> Self {
        Pool2dShape {
            n,
            c,
            h,
            w,
            kh: k,
            kw: k,
            stride: (k, k),
            padding: (0, 0),
            ceil_mode: false,
        }
    }

    /// Output height (0 if the shape is invalid).
    pub fn out_h(&self) -> usize {
        pool_out(
            self.h,
            self.kh,
            self.stride.0,
            self.padding.0,
            self.ceil_mode,
        )
        .unwrap_or(0)
    }

    /// Output width (0 if the shape is invalid).
    pub fn out_w(&self) -> usize {
        pool_out(
            self.w,
            self.kw,
            self.stride.1,
            self.padding.1,
            self.ceil_mode,
        )
        .unwrap_or(0)
    }

    /// `n * c * h * w`.
    pub fn input_len(&self) -> usize {
        self.n * self.c * self.h * self.w
    }

    /// `n * c * out_h * out_w`.
    pub fn output_len(&self) -> usize {
        self.n * self.c * self.out_h() * self.out_w()
    }

    /// PyTorch's checks: non-zero window, stride and extents (`n` may be 0), padding at most
    /// half the window, a positive output size, sizes that fit (and planes that `u32` argmax
    /// indices can address).
    pub fn validate(&self) -> Result<(), KernelError> {
        let bad = |why: &str| Err(KernelError::invalid("pool2d", format!("{self}: {why}")));
        if self.c == 0 || self.h == 0 || self.w == 0 {
            return bad("channels and spatial extents must be non-zero");
        }
        if self.kh == 0 || self.kw == 0 || self.stride.0 == 0 || self.stride.1 == 0 {
            return bad("kernel and stride must be >= 1");
        }
        if self.padding.0 > self.kh / 2 || self.padding.1 > self.kw / 2 {
            return bad("padding must be at most half the kernel size");
        }
        let (Some(oh), Some(ow)) = (
            pool_out(
                self.h,
                self.kh,
                self.stride.0,
                self.padding.0,
                self.ceil_mode,
            ),
            pool_out(
                self.w,
                self.kw,
                self.stride.1,
                self.padding.1,
                self.ceil_mode,
            ),
        ) else {
            return bad("the output would be empty (kernel larger than the padded input)");
        };
        let fits = |d: [usize; 4]| {
            d.iter()
                .try_fold(1usize, |a, &b| a.checked_mul(b))
                .is_some_and(|v| v <= isize::MAX as usize / 4)
        };
        if !fits([self.n, self.c, self.h, self.w]) || !fits([self.n, self.c, oh, ow]) {
            return bad("tensor sizes overflow");
        }
        if !matches!(self.h.checked_mul(self.w), Some(p) if p <= u32::MAX as usize) {
            return bad("an input plane has more elements than a u32 argmax can index");
        }
        Ok(())
    }
}

/// Checks `len == want`, naming the op, the tensor and the shape otherwise.
fn check_len(
    op: &'static str,
    shape: &dyn std::fmt::Display,
    name: &str,
    len: usize,
    want: usize,
) -> Result<(), KernelError> {
    if len == want {
        Ok(())
    } else {
        Err(KernelError::invalid(
            op,
            format!("{shape}: {name} has {len} elements, expected {want}"),
        ))
    }
}

/// Re-labels a shape error with the entry point that found it.
fn rename(e: KernelError, op: &'static str) -> KernelError {
    match e {
        KernelError::InvalidArgument { msg, .. } => KernelError::InvalidArgument { op, msg },
        other => other,
    }
}

/// Elements below which a pooling kernel stays on the calling thread.
const PAR_MIN: usize = 1 << 15;

/// Work (elements) per parallel task of [`per_plane`], at least one plane.
const TASK_WORK: usize = 1 << 13;

/// Runs `f(plane, out_plane)` over the `plane`-sized chunks of `out`, in parallel when the
/// total `work` is large, whole planes per task in runs of about [`TASK_WORK`] elements of
/// work (a global pool's planes have one output each: one task per plane would cost more in
/// claiming than the plane's sum).
fn per_plane<T: Send, F>(out: &mut [T], plane: usize, work: usize, f: F)
where
    F: Fn(usize, &mut [T]) + Sync,
{
    if plane == 0 {
        return;
    }
    if work >= PAR_MIN {
        let planes = (out.len() / plane).max(1);
        let per = (TASK_WORK / (work / planes).max(1)).max(1);
        crate::parallel::for_each_chunk_mut(out, per * plane, |t, run| {
            for (j, o) in run.chunks_mut(plane).enumerate() {
                f(t * per + j, o);
            }
        });
    } else {
        out.chunks_mut(plane).enumerate().for_each(|(p, o)| f(p, o));
    }
}
