//! conv2d (stride, padding, dilation, groups, bias; depthwise when `groups == c_in`) on
//! `tessera_kernels::conv`, NCHW with PyTorch's weight layout `[c_out, c_in / groups, kh, kw]`.
//!
//! Backward: `dx = conv2d_backward_input(w, dy)`, `dw = conv2d_backward_weight(x, dy)`,
//! `db = Σ_{n,h,w} dy`. Saved: the input only if the weight needs a gradient, the weight only
//! if the input does.

use tessera_kernels::activation::Activation;
use tessera_kernels::conv::{self, Conv2dShape};

use crate::autograd::needs_grad;
use crate::error::{fmt_shape, Result, TensorError};
use crate::profile::{self, f32_bytes, Cost, OpInfo};
use crate::tensor::Tensor;

/// Stride, padding, dilation and groups of a 2-D convolution (PyTorch defaults: 1, 0, 1, 1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Conv2dParams {
    /// Step of the window (rows, columns).
    pub stride: (usize, usize),
    /// Zero padding on each side (rows, columns).
    pub padding: (usize, usize),
    /// Spacing between kernel taps (rows, columns).
    pub dilation: (usize, usize),
    /// Channel groups (`c_in` for depthwise).
    pub groups: usize,
}

impl Default for Conv2dParams {
    fn default() -> Self {
        Conv2dParams {
            stride: (1, 1),
            padding: (0, 0),
            dilation: (1, 1),
            groups: 1,
        }
    }
}

impl Conv2dParams {
    /// Square stride and padding, dilation 1, one group.
    pub fn new(stride: usize, padding: usize) -> Self {
        Conv2dParams {
            stride: (stride, stride),
            padding: (padding, padding),
            ..Default::default()
        }
    }

    /// With `groups` groups.
    pub fn groups(mut self, groups: usize) -> Self {
        self.groups = groups;
        self
    }

    /// With a square dilation.
    pub fn dilation(mut self, d: usize) -> Self {
        self.dilation = (d, d);
        self
    }
}

impl Tensor {
    /// 2-D convolution of `[n, c_in, h, w]` with `weight` `[c_out, c_in / groups, kh, kw]` and
    /// optional `bias` `[c_out]`.
    pub fn conv2d(
        &self,
        weight: &Tensor,
        bias: Option<&Tensor>,
        p: Conv2dParams,
    ) -> Result<Tensor> {
        self.conv2d_with(weight, bias, p, Activation::Identity)
    }

    /// `act(conv2d(x, weight, bias))`. At inference (no input requires grad, or under
    /// `no_grad`) the bias and activation run in the convolution kernel's epilogue; when a graph
    /// is recorded it is `conv2d` followed by the activation op, so the backward is exact.
    pub fn conv2d_act(
        &self,
        weight: &Tensor,
        bias: Option<&Tensor>,
        p: Conv2dParams,
        act: Activation,
    ) -> Result<Tensor> {
        let mut inputs = vec![self, weight];
        inputs.extend(bias);
        if act == Activation::Identity || needs_grad(&inputs) {
            return Ok(self.conv2d(weight, bias, p)?.activate(act));
        }
        self.conv2d_with(weight, bias, p, act)
    }

    /// The convolution with `act` fused; records a node only for `Activation::Identity` (the
    /// callers route every graph-recording case through that).
    fn conv2d_with(
        &self,
        weight: &Tensor,
        bias: Option<&Tensor>,
        p: Conv2dParams,
        act: Activation,
    ) -> Result<Tensor> {
        const OP: &str = "conv2d";
        let s = conv_shape(OP, self.shape(), weight.shape(), bias, p)?;
        let kerr = TensorError::Kernel;
        let frame = profile::begin();
        let (x, w) = (self.contiguous().detach(), weight.contiguous().detach());
        let bd = bias.map(|b| b.data());
        let mut y = crate::pool::for_overwrite(s.output_len());
        let macs = s.output_len() * (s.c_in / s.groups) * s.kh * s.kw;
        crate::profile::add_macs(macs);
        conv::conv2d_forward(&s, &x.data(), &w.data(), bd.as_deref(), act, &mut y).map_err(kerr)?;
        let y = Tensor::from_contig(y, &[s.n, s.c_out, s.out_h(), s.out_w()]);
        let mut inputs = vec![self, weight];
        inputs.extend(bias);
        if let Some(fr) = frame {
            // Depthwise (one input channel per group, as MobileNet's) gets its own kind.
            let kind = if s.groups > 1 && s.groups == s.c_in && s.c_in / s.groups == 1 {
                "conv2d_dw"
            } else {
                "conv2d"
            };
            let per = u64::from(bias.is_some()) + profile::activation_flops(act);
            fr.end_op(&y, || OpInfo {
                op: profile::with_act(kind, act),
                inputs: inputs.iter().map(|t| t.shape().to_vec()).collect(),
                output: y.shape().to_vec(),
                cost: Cost {
                    flops: 2 * macs as u64 + per * y.numel() as u64,
                    macs: macs as u64,
                    bytes_read: inputs.iter().map(|t| f32_bytes(t.numel())).sum(),
                    bytes_written: f32_bytes(y.numel()),
                },
            });
        }
        if !needs_grad(&inputs) {
            return Ok(y);
        }
        let (nx, nw) = (self.requires_grad(), weight.requires_grad());
        let has_b = bias.is_some();
        let saved_x = nw.then_some(x);
        let saved_w = nx.then_some(w);
        Ok(y.record(OP, &inputs, move |g| {
            let gd = g.contiguous();
            let dy = gd.data();
            let dx = match &saved_w {
                Some(w) => {
                    let mut dx = crate::pool::for_overwrite(s.input_len());
                    conv::conv2d_backward_input(&s, &w.data(), &dy, &mut dx).map_err(kerr)?;
                    profile::add_cost(|| Cost {
                        flops: 2 * macs as u64,
                        macs: macs as u64,
                        bytes_read: f32_bytes(s.weight_len() + dy.len()),
                        bytes_written: f32_bytes(s.input_len()),
                    });
                    Some(Tensor::from_contig(dx, &[s.n, s.c_in, s.h, s.w]))
                }
                None => None,
            };
            let dw = match &saved_x {
                Some(x) => {
                    let mut dw = crate::pool::for_overwrite(s.weight_len());
                    conv::conv2d_backward_weight(&s, &x.data(), &dy, &mut dw).map_err(kerr)?;
                    profile::add_cost(|| Cost {
                        flops: 2 * macs as u64,
                        macs: macs as u64,
                        bytes_read: f32_bytes(s.input_len() + dy.len()),
                        bytes_written: f32_bytes(s.weight_len()),
                    });
                    Some(Tensor::from_contig(
                        dw,
                        &[s.c_out, s.c_in / s.groups, s.kh, s.kw],
                    ))
                }
                None => None,
            };
            let mut out = vec![dx, dw];
            if has_b {
                let mut db = crate::pool::for_overwrite(s.c_out);
                conv::conv2d_backward_bias(&s, &dy, &mut db).map_err(kerr)?;
                profile::add_cost(|| Cost {
                    flops: dy.len() as u64,
                    macs: 0,
                    bytes_read: f32_bytes(dy.len()),
                    bytes_written: f32_bytes(s.c_out),
                });
                out.push(Some(Tensor::from_contig(db, &[s.c_out])));
            }
            Ok(out)
        }))
    }
}

/// The checked geometry of `op` on input shape `xs`, weight shape `ws`, optional bias: both
/// 4-D, channels matching the groups, bias `[c_out]`, then the kernel's own validation.
pub(crate) fn conv_shape(
    op: &'static str,
    xs: &[usize],
    ws: &[usize],
    bias: Option<&Tensor>,
    p: Conv2dParams,
) -> Result<Conv2dShape> {
    if xs.len() != 4 || ws.len() != 4 {
        return Err(TensorError::shape(
            op,
            format!(
                "input {} and weight {} must both be 4-D",
                fmt_shape(xs),
                fmt_shape(ws)
            ),
        ));
    }
    let g = p.groups.max(1);
    if p.groups == 0 || xs[1] != ws[1] * g {
        return Err(TensorError::shape(
            op,
            format!(
                "input {} has {} channels but weight {} with {} groups expects {}",
                fmt_shape(xs),
                xs[1],
                fmt_shape(ws),
                p.groups,
                ws[1] * g
            ),
        ));
    }
    if let Some(b) = bias {
        if b.shape() != [ws[0]] {
            return Err(TensorError::shape(
                op,
                format!("bias {} for weight {}", fmt_shape(b.shape()), fmt_shape(ws)),
            ));
        }
    }
    let s = Conv2dShape {
        n: xs[0],
        c_in: xs[1],
        h: xs[2],
        w: xs[3],
        c_out: ws[0],
        kh: ws[2],
        kw: ws[3],
        stride: p.stride,
        padding: p.padding,
        dilation: p.dilation,
        groups: p.groups,
    };
    s.validate()?;
    Ok(s)
}
