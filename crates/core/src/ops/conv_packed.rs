//! Inference convolution on weights packed once ([`PackedConvWeight`]): the dense conv2d of
//! [`super::conv`] without packing its weights on every call, for layers whose weights do not
//! change between calls (a model in eval mode; the models crate packs its batch-norm-folded
//! convolutions this way). No graph is recorded, so it refuses inputs that would need one.

use tessera_kernels::activation::Activation;
use tessera_kernels::conv::{self, PackedConvWeight};

use crate::autograd::needs_grad;
use crate::error::{Result, TensorError};
use crate::ops::conv::{conv_shape, Conv2dParams};
use crate::profile::{self, f32_bytes, Cost, OpInfo};
use crate::tensor::Tensor;

impl Tensor {
    /// `act(conv2d(x, w) + bias)` with `w` packed by [`PackedConvWeight::pack`]; `p.groups` must
    /// be the group count it was packed for. Inference only: an error if `self` or `bias` needs
    /// a gradient (use [`Tensor::conv2d_act`] to train). Equal, bit for bit, to `conv2d_act` on
    /// the unpacked weights.
    pub fn conv2d_packed(
        &self,
        w: &PackedConvWeight,
        bias: Option<&Tensor>,
        p: Conv2dParams,
        act: Activation,
    ) -> Result<Tensor> {
        const OP: &str = "conv2d_packed";
        let mut inputs = vec![self];
        inputs.extend(bias);
        if needs_grad(&inputs) {
            return Err(TensorError::shape(
                OP,
                "records no graph: its input or bias requires a gradient (use conv2d_act)"
                    .to_string(),
            ));
        }
        let (xs, ws) = (self.shape(), w.shape());
        let s = conv_shape(OP, xs, &ws, bias, p)?;
        let kerr = TensorError::Kernel;
        let frame = profile::begin();
        let x = self.contiguous();
        let bd = bias.map(|b| b.data());
        // The GEMM (beta = 0, depth >= 1) writes every output element before any is read.
        let mut y = crate::pool::for_overwrite(s.output_len());
        let macs = s.output_len() * (s.c_in / s.groups) * s.kh * s.kw;
        profile::add_macs(macs);
        conv::conv2d_forward_packed(&s, &x.data(), w, bd.as_deref(), act, &mut y).map_err(kerr)?;
        let y = Tensor::from_contig(y, &[s.n, s.c_out, s.out_h(), s.out_w()]);
        if let Some(fr) = frame {
            let per = u64::from(bias.is_some()) + profile::activation_flops(act);
            let weight_len = ws.iter().product::<usize>();
            let bias_len = bias.map_or(0, |b| b.numel());
            fr.end_op(&y, || OpInfo {
                op: profile::with_act("conv2d", act),
                inputs: [xs.to_vec(), ws.to_vec()]
                    .into_iter()
                    .chain(bias.map(|b| b.shape().to_vec()))
                    .collect(),
                output: y.shape().to_vec(),
                cost: Cost {
                    flops: 2 * macs as u64 + per * y.numel() as u64,
                    macs: macs as u64,
                    bytes_read: f32_bytes(s.input_len() + weight_len + bias_len),
                    bytes_written: f32_bytes(y.numel()),
                },
            });
        }
        Ok(y)
    }
}
