//! Pooling on `tessera_kernels::pool` (NCHW, PyTorch semantics) and dropout.
//!
//! max_pool2d saves the argmax of every window (u32 plane offsets) and routes the gradient
//! there; avg_pool2d and adaptive_avg_pool2d save nothing but the geometry. dropout (Srivastava
//! et al., 2014) keeps each element with probability `1 - p` and scales it by `1 / (1 - p)` in
//! training, from a seeded generator; it saves the scaled mask. In eval it is the identity.

use tessera_kernels::pool::{self, Pool2dShape};

use crate::autograd::needs_grad;
use crate::error::{fmt_shape, Result, TensorError};
use crate::ops::elementwise_info;
use crate::profile::{self, f32_bytes, Cost};
use crate::rng::Rng;
use crate::tensor::Tensor;

/// Window, stride, padding and rounding of a 2-D pooling.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pool2dParams {
    /// Window size (rows, columns).
    pub kernel: (usize, usize),
    /// Step of the window (rows, columns).
    pub stride: (usize, usize),
    /// Padding on each side (rows, columns).
    pub padding: (usize, usize),
    /// Round the output size up (PyTorch's `ceil_mode`).
    pub ceil_mode: bool,
}

impl Pool2dParams {
    /// A square `k x k` window with stride `k`, no padding, floor mode (PyTorch defaults).
    pub fn new(k: usize) -> Self {
        Pool2dParams {
            kernel: (k, k),
            stride: (k, k),
            padding: (0, 0),
            ceil_mode: false,
        }
    }

    /// With a square stride and padding.
    pub fn stride_padding(mut self, stride: usize, padding: usize) -> Self {
        self.stride = (stride, stride);
        self.padding = (padding, padding);
        self
    }
}

fn nchw(op: &'static str, x: &Tensor) -> Result<[usize; 4]> {
    match *x.shape() {
        [n, c, h, w] => Ok([n, c, h, w]),
        _ => Err(TensorError::shape(
            op,
            format!("input must be [n, c, h, w], got {}", fmt_shape(x.shape())),
        )),
    }
}

fn pool_shape(op: &'static str, x: &Tensor, p: &Pool2dParams) -> Result<Pool2dShape> {
    let [n, c, h, w] = nchw(op, x)?;
    let s = Pool2dShape {
        n,
        c,
        h,
        w,
        kh: p.kernel.0,
        kw: p.kernel.1,
        stride: p.stride,
        padding: p.padding,
        ceil_mode: p.ceil_mode,
    };
    s.validate()?;
    Ok(s)
}

/// A pooling backward: `flops`, `read` 4-byte values (dy, and the argmax of max pooling),
/// `written` values of dx.
fn pool_backward_cost(flops: usize, read: usize, written: usize) -> Cost {
    Cost {
        flops: flops as u64,
        macs: 0,
        bytes_read: f32_bytes(read),
        bytes_written: f32_bytes(written),
    }
}

impl Tensor {
    /// 2-D max pooling; the gradient goes to the (first) maximum of each window.
    pub fn max_pool2d(&self, p: Pool2dParams) -> Result<Tensor> {
        const OP: &str = "max_pool2d";
        let s = pool_shape(OP, self, &p)?;
        let frame = profile::begin();
        let x = self.contiguous();
        let mut y = crate::pool::for_overwrite(s.output_len());
        // The argmax is kept only for a backward; inference takes the separable value-only path.
        let keep_arg = needs_grad(&[self]);
        let mut arg = if keep_arg {
            vec![0u32; s.output_len()]
        } else {
            Vec::new()
        };
        if keep_arg {
            pool::max_pool2d_forward(&s, &x.data(), &mut y, &mut arg)?;
        } else {
            pool::max_pool2d_forward_values(&s, &x.data(), &mut y)?;
        }
        let y = Tensor::from_contig(y, &[s.n, s.c, s.out_h(), s.out_w()]);
        if let Some(fr) = frame {
            // One comparison per window element.
            let per = (s.kh * s.kw) as u64;
            fr.end_op(&y, || elementwise_info(OP, &[self], &y, per));
        }
        if !needs_grad(&[self]) {
            return Ok(y);
        }
        Ok(y.record(OP, &[self], move |g| {
            let mut dx = crate::pool::for_overwrite(s.input_len());
            pool::max_pool2d_backward(&s, &g.data(), &arg, &mut dx)?;
            // One add per output; reads dy and the argmax (u32), writes dx.
            profile::add_cost(|| pool_backward_cost(s.output_len(), 2 * s.output_len(), dx.len()));
            Ok(vec![Some(Tensor::from_contig(dx, &[s.n, s.c, s.h, s.w]))])
        }))
    }

    /// 2-D average pooling (`count_include_pad` as PyTorch's flag).
    pub fn avg_pool2d(&self, p: Pool2dParams, count_include_pad: bool) -> Result<Tensor> {
        const OP: &str = "avg_pool2d";
        let s = pool_shape(OP, self, &p)?;
        let frame = profile::begin();
        let x = self.contiguous();
        let mut y = crate::pool::for_overwrite(s.output_len());
        pool::avg_pool2d_forward(&s, count_include_pad, &x.data(), &mut y)?;
        let y = Tensor::from_contig(y, &[s.n, s.c, s.out_h(), s.out_w()]);
        if let Some(fr) = frame {
            // One add per window element and one scale per output.
            let per = (s.kh * s.kw + 1) as u64;
            fr.end_op(&y, || elementwise_info(OP, &[self], &y, per));
        }
        if !needs_grad(&[self]) {
            return Ok(y);
        }
        Ok(y.record(OP, &[self], move |g| {
            let mut dx = crate::pool::for_overwrite(s.input_len());
            pool::avg_pool2d_backward(&s, count_include_pad, &g.data(), &mut dx)?;
            profile::add_cost(|| {
                pool_backward_cost(s.output_len() * s.kh * s.kw, s.output_len(), dx.len())
            });
            Ok(vec![Some(Tensor::from_contig(dx, &[s.n, s.c, s.h, s.w]))])
        }))
    }

    /// Adaptive average pooling to an `oh x ow` output (PyTorch's window boundaries).
    pub fn adaptive_avg_pool2d(&self, oh: usize, ow: usize) -> Result<Tensor> {
        const OP: &str = "adaptive_avg_pool2d";
        let [n, c, h, w] = nchw(OP, self)?;
        let frame = profile::begin();
        let x = self.contiguous();
        let mut y = crate::pool::for_overwrite(n * c * oh * ow);
        pool::adaptive_avg_pool2d_forward(n, c, h, w, oh, ow, &x.data(), &mut y)?;
        let y = Tensor::from_contig(y, &[n, c, oh, ow]);
        if let Some(fr) = frame {
            // One add per input element (windows tile the input) and one scale per output.
            fr.end_op(&y, || {
                let mut info = elementwise_info(OP, &[self], &y, 1);
                info.cost.flops += self.numel() as u64;
                info
            });
        }
        if !needs_grad(&[self]) {
            return Ok(y);
        }
        Ok(y.record(OP, &[self], move |g| {
            // The kernel writes every element of dx.
            let mut dx = crate::pool::for_overwrite(n * c * h * w);
            pool::adaptive_avg_pool2d_backward(n, c, h, w, oh, ow, &g.data(), &mut dx)?;
            profile::add_cost(|| pool_backward_cost(dx.len(), g.numel(), dx.len()));
            Ok(vec![Some(Tensor::from_contig(dx, &[n, c, h, w]))])
        }))
    }

    /// Global average pooling `[n, c, h, w] -> [n, c, 1, 1]`.
    pub fn global_avg_pool2d(&self) -> Result<Tensor> {
        self.adaptive_avg_pool2d(1, 1)
    }

    /// Dropout with drop probability `p` in `[0, 1)`: in training, zeroes elements with
    /// probability `p` (mask drawn from `seed`) and scales the rest by `1 / (1 - p)`; in eval,
    /// the identity.
    pub fn dropout(&self, p: f32, training: bool, seed: u64) -> Result<Tensor> {
        if !(0.0..1.0).contains(&p) {
            return Err(TensorError::arg(
                "dropout",
                format!("probability {p} is outside [0, 1)"),
            ));
        }
        if !training || p == 0.0 {
            return Ok(self.clone());
        }
        let mut rng = Rng::new(seed);
        let scale = 1.0 / (1.0 - p);
        let mask: Vec<f32> = (0..self.numel())
            .map(|_| if rng.uniform() < p { 0.0 } else { scale })
            .collect();
        let mask = Tensor::from_contig(mask, self.shape());
        let _g = crate::autograd::no_grad();
        let y = self.detach().mul(&mask)?;
        drop(_g);
        if !needs_grad(&[self]) {
            return Ok(y);
        }
        Ok(y.record("dropout", &[self], move |g| Ok(vec![Some(g.mul(&mask)?)])))
    }
}
