//! Squeeze-and-excitation ops (Hu et al., "Squeeze-and-Excitation Networks", CVPR 2018) on
//! the kernels of `tessera_kernels::squeeze_excite`:
//!
//! - [`Tensor::excite_gate`]: the gate `gate(W2 act(W1 mean_hw(x) + b1) + b2)` of timm's
//!   `SEModule` / EfficientNet `SqueezeExcite`, in f64 from the f32 input and weights and
//!   rounded once: for inference (it records no graph, and refuses inputs that want one).
//! - [`Tensor::scale_join`]: SE-ResNet's residual join `act(x * s + r)` with one rounding
//!   (a fused multiply-add), `s` one value per plane, with its backward: for ReLU the
//!   gradient is masked by the saved output (`y > 0` exactly where `x s + r > 0`), then
//!   `dr = g`, `dx = g s` and `ds = sum_plane g x`, the same values as the backward of
//!   `x.mul(s)?.add_relu(r)`.

use tessera_kernels::activation::Activation;
use tessera_kernels::squeeze_excite::{self as se, ExciteWeights};

use crate::autograd::needs_grad;
use crate::error::{Result, TensorError};
use crate::ops::elementwise::gate_backward;
use crate::ops::{elementwise_info, zip};
use crate::profile::{self, f32_bytes, Cost, OpInfo};
use crate::tensor::Tensor;

/// `[n, c, h, w]` of a 4-D tensor, else an error naming `op`.
fn nchw(op: &'static str, x: &Tensor) -> Result<[usize; 4]> {
    match *x.shape() {
        [n, c, h, w] => Ok([n, c, h, w]),
        ref s => Err(TensorError::shape(
            op,
            format!("expects [n, c, h, w], got {s:?}"),
        )),
    }
}

impl Tensor {
    /// The squeeze-and-excitation gate of `self` (`[n, c, h, w]`), `[n, c, 1, 1]`:
    /// `gate(W2 act(W1 mean_hw(self) + b1) + b2)` with `w1` `[rd, c, 1, 1]` (or `[rd, c]`),
    /// `b1` `[rd]`, `w2` `[c, rd, 1, 1]`, `b2` `[c]` (zero when `None`), every sum and both
    /// activations in f64, the gate rounded to f32 once. Records no graph: an error if grad
    /// mode is on and an input requires grad (compose the differentiable ops for training).
    #[allow(clippy::too_many_arguments)]
    pub fn excite_gate(
        &self,
        w1: &Tensor,
        b1: Option<&Tensor>,
        act: Activation,
        w2: &Tensor,
        b2: Option<&Tensor>,
        gate: Activation,
    ) -> Result<Tensor> {
        const OP: &str = "excite_gate";
        let mut inputs = vec![self, w1, w2];
        inputs.extend(b1);
        inputs.extend(b2);
        if needs_grad(&inputs) {
            return Err(TensorError::autograd(
                OP,
                "records no graph, but an input requires grad (inference only)",
            ));
        }
        let [n, c, h, w] = nchw(OP, self)?;
        let rd = w1.numel() / c.max(1);
        let zeros = |len: usize| Tensor::from_contig(vec![0.0; len], &[len]);
        let (b1, b2) = (
            b1.cloned().unwrap_or_else(|| zeros(rd)),
            b2.cloned().unwrap_or_else(|| zeros(c)),
        );
        let frame = profile::begin();
        let (xd, w1d, w2d, b1d, b2d) = (self.data(), w1.data(), w2.data(), b1.data(), b2.data());
        let weights = ExciteWeights {
            w1: &w1d,
            b1: &b1d,
            act,
            w2: &w2d,
            b2: &b2d,
            gate,
        };
        let mut s = vec![0.0f32; n * c];
        se::excite_gate(n, h * w, &xd, &weights, &mut s)?;
        // The multiply-adds of the two 1x1 layers, as the convolutions count theirs.
        profile::add_macs(2 * n * rd * c);
        let y = Tensor::from_contig(s, &[n, c, 1, 1]);
        if let Some(fr) = frame {
            fr.end_op(&y, || OpInfo {
                op: OP.into(),
                inputs: inputs.iter().map(|t| t.shape().to_vec()).collect(),
                output: y.shape().to_vec(),
                // The two layers are contractions (`2 n rd c` multiply-adds, as the 1x1
                // convolutions they replace); the squeeze adds every element once.
                cost: Cost {
                    flops: (self.numel() + 4 * n * rd * c) as u64,
                    macs: (2 * n * rd * c) as u64,
                    bytes_read: f32_bytes(self.numel() + 2 * rd * c + rd + c),
                    bytes_written: f32_bytes(n * c),
                },
            });
        }
        Ok(y)
    }

    /// `act(self * s + r)` rounded once (`self`, `r`: `[n, c, h, w]`; `s`: one value per plane,
    /// `[n, c, 1, 1]` or `[n, c]`; `act` identity or ReLU), with its backward.
    pub fn scale_join(&self, s: &Tensor, r: &Tensor, act: Activation) -> Result<Tensor> {
        const OP: &str = "scale_join";
        let [n, c, h, w] = nchw(OP, self)?;
        if r.shape() != self.shape() || s.numel() != n * c || s.shape()[..2] != [n, c] {
            return Err(TensorError::shape(
                OP,
                format!(
                    "x {:?}, s {:?}, r {:?}: want r like x and s [n, c, 1, 1]",
                    self.shape(),
                    s.shape(),
                    r.shape()
                ),
            ));
        }
        if !matches!(act, Activation::Identity | Activation::Relu) {
            return Err(TensorError::arg(
                OP,
                format!("activation {} (identity or relu)", act.name()),
            ));
        }
        let (planes, hw) = (n * c, h * w);
        let frame = profile::begin();
        let mut y = r.data().into_owned();
        se::scale_join(act, planes, hw, &self.data(), &s.data(), &mut y)?;
        let y = Tensor::from_contig(y, self.shape());
        if let Some(fr) = frame {
            fr.end_op(&y, || elementwise_info(OP, &[self, s, r], &y, 2));
        }
        if !needs_grad(&[self, s, r]) {
            return Ok(y);
        }
        let (sx, ss) = (self.shape().to_vec(), s.shape().to_vec());
        let xs = s.requires_grad().then(|| self.detach());
        let sv = self.requires_grad().then(|| s.detach());
        let out = (act == Activation::Relu).then(|| y.detach());
        Ok(y.record(OP, &[self, s, r], move |g| {
            let gm = match &out {
                Some(out) => zip(OP, g, out, |g, y| if y > 0.0 { g } else { 0.0 })?,
                None => g.contiguous(),
            };
            let (gx, gs) = gate_backward(&gm, xs.as_ref(), sv.as_ref(), hw);
            Ok(vec![
                gx.map(|v| Tensor::from_contig(v, &sx)),
                gs.map(|v| Tensor::from_contig(v, &ss)),
                Some(gm),
            ])
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gradcheck::{gradcheck, GradcheckOptions};

    fn t(shape: &[usize], seed: u64, scale: f32) -> Tensor {
        let mut rng = crate::Rng::new(seed);
        let n: usize = shape.iter().product();
        let v: Vec<f32> = (0..n)
            .map(|_| scale * (rng.uniform() * 2.0 - 1.0))
            .collect();
        Tensor::from_vec(v, shape).unwrap()
    }

    #[test]
    fn scale_join_forward_and_gradients_match_mul_then_add_relu() {
        let (x, s, r) = (
            t(&[2, 3, 4, 5], 1, 2.0),
            t(&[2, 3, 1, 1], 2, 1.0),
            t(&[2, 3, 4, 5], 3, 2.0),
        );
        let (x, s, r) = (
            x.requires_grad_(true),
            s.requires_grad_(true),
            r.requires_grad_(true),
        );
        let y = x.scale_join(&s, &r, Activation::Relu).unwrap();
        let want = x.mul(&s).unwrap().add_relu(&r).unwrap();
        for (a, b) in y.to_vec().iter().zip(want.to_vec()) {
            assert!((a - b).abs() <= 1e-6 * (1.0 + b.abs()), "{a} vs {b}");
        }
        let dy = t(&[2, 3, 4, 5], 4, 1.0);
        let grads = |y: &Tensor| {
            y.mul(&dy).unwrap().sum_all().backward().unwrap();
            let g = [x.grad(), s.grad(), r.grad()].map(|g| g.unwrap().to_vec());
            for v in [&x, &s, &r] {
                v.zero_grad();
            }
            g
        };
        let (ours, theirs) = (grads(&y), grads(&want));
        for (a, b) in ours.iter().zip(&theirs) {
            assert_eq!(a, b, "the masks agree, so the gradients are the same bits");
        }
    }

    #[test]
    fn scale_join_passes_gradcheck() {
        for act in [Activation::Identity, Activation::Relu] {
            let inputs = [
                t(&[1, 2, 3, 3], 5, 2.0).requires_grad_(true),
                t(&[1, 2, 1, 1], 6, 1.0).requires_grad_(true),
                t(&[1, 2, 3, 3], 7, 2.0).requires_grad_(true),
            ];
            let report = gradcheck(
                |v| v[0].scale_join(&v[1], &v[2], act),
                &inputs,
                &GradcheckOptions::default(),
            )
            .unwrap_or_else(|e| panic!("{act:?}: {e}"));
            assert_eq!(report.checked, 18 + 2 + 18);
        }
    }

    #[test]
    fn excite_gate_is_the_f64_formula_and_refuses_a_graph() {
        let (x, w1, b1, w2, b2) = (
            t(&[2, 16, 3, 3], 8, 3.0),
            t(&[8, 16, 1, 1], 9, 1.0),
            t(&[8], 10, 0.1),
            t(&[16, 8, 1, 1], 11, 1.0),
            t(&[16], 12, 0.1),
        );
        let (relu, sig) = (Activation::Relu, Activation::Sigmoid);
        let s = x
            .excite_gate(&w1, Some(&b1), relu, &w2, Some(&b2), sig)
            .unwrap();
        assert_eq!(s.shape(), &[2, 16, 1, 1]);
        let want = x
            .global_avg_pool2d()
            .unwrap()
            .conv2d(&w1, Some(&b1), crate::Conv2dParams::new(1, 0))
            .unwrap()
            .relu()
            .conv2d(&w2, Some(&b2), crate::Conv2dParams::new(1, 0))
            .unwrap()
            .sigmoid_exact();
        for (a, b) in s.to_vec().iter().zip(want.to_vec()) {
            assert!((a - b).abs() <= 1e-6, "{a} vs {b}");
        }
        let wg = w1.clone().requires_grad_(true);
        let e = x.excite_gate(&wg, Some(&b1), relu, &w2, Some(&b2), sig);
        assert!(e.is_err());
        let _g = crate::no_grad();
        assert!(x
            .excite_gate(&wg, Some(&b1), relu, &w2, Some(&b2), sig)
            .is_ok());
    }

    #[test]
    fn scale_join_rejects_bad_shapes_and_activations() {
        let (x, s) = (t(&[1, 2, 2, 2], 1, 1.0), t(&[1, 2, 1, 1], 2, 1.0));
        assert!(x
            .scale_join(&s, &t(&[1, 2, 2, 1], 3, 1.0), Activation::Relu)
            .is_err());
        assert!(x
            .scale_join(&t(&[1, 3, 1, 1], 4, 1.0), &x, Activation::Relu)
            .is_err());
        assert!(x.scale_join(&s, &x, Activation::Sigmoid).is_err());
    }
}
