//! layer_norm and batch_norm, fused, on `tessera_kernels::norm`, with the kernels' backward.
//!
//! layer_norm (Ba et al., 2016) normalises the trailing `normalized_shape` dims; it saves the
//! input, the per-row mean and `rstd`, and the weight. batch_norm (Ioffe & Szegedy, 2015) over
//! `[n, c, *]`: in training it normalises with the batch statistics (biased variance), updates
//! the running statistics in place of the caller's tensors
//! (`r = (1 - momentum) r + momentum * stat`, unbiased variance for `running_var`, as PyTorch)
//! and backpropagates through the statistics; in eval it uses the running statistics as
//! constants. It saves the input, the statistics it used and the weight.

use tessera_kernels::activation::Activation;
use tessera_kernels::norm;

use crate::autograd::needs_grad;
use crate::error::{fmt_shape, Result, TensorError};
use crate::ops::elementwise_info;
use crate::profile::{self, f32_bytes, Cost, OpInfo};
use crate::tensor::Tensor;
use std::sync::Arc;

fn check_param(op: &'static str, name: &str, t: Option<&Tensor>, want: &[usize]) -> Result<()> {
    match t {
        Some(t) if t.shape() != want => Err(TensorError::shape(
            op,
            format!(
                "{name} has shape {}, expected {}",
                fmt_shape(t.shape()),
                fmt_shape(want)
            ),
        )),
        _ => Ok(()),
    }
}

/// A norm's forward cost: `per` FLOPs per element, the input and the parameters read once.
fn norm_info(op: &'static str, inputs: &[&Tensor], y: &Tensor, per: u64) -> OpInfo {
    elementwise_info(op, inputs, y, per)
}

/// A norm's backward cost over `n` elements: the two parameter-gradient sums (2), the
/// normalised input rebuilt (2), the input gradient (6); reads x and dy, writes dx and the
/// `params` parameter gradients.
fn norm_backward_cost(n: usize, params: usize) -> Cost {
    Cost {
        flops: 10 * n as u64,
        macs: 0,
        bytes_read: f32_bytes(2 * n),
        bytes_written: f32_bytes(n + params),
    }
}

/// Sums per-channel statistics over the parts of a batch split across processes (synchronised
/// batch norm, [`Tensor::batch_norm_act_reduced`]): replaces every value with its sum over all
/// parts. Every part calls it in the same order with the same lengths; an error ends the op.
pub type BatchReduce = Arc<dyn Fn(&mut [f64]) -> Result<()> + Send + Sync>;

/// Calls `reduce` through the kernels' infallible hook, keeping its first error (later calls
/// are skipped: the op fails anyway).
fn reduce_hook<'a>(
    reduce: &'a BatchReduce,
    err: &'a mut Option<TensorError>,
) -> impl FnMut(&mut [f64]) + 'a {
    move |v: &mut [f64]| {
        if err.is_none() {
            if let Err(e) = reduce(v) {
                *err = Some(e);
            }
        }
    }
}

/// The running statistics batch_norm reads (eval) or updates (training).
pub struct RunningStats<'a> {
    /// Per-channel mean, `[c]`.
    pub mean: &'a mut Tensor,
    /// Per-channel (unbiased) variance, `[c]`.
    pub var: &'a mut Tensor,
    /// Weight of the new batch statistic in the update (PyTorch default 0.1).
    pub momentum: f32,
}

impl Tensor {
    /// Layer normalisation over the trailing dims `normalized_shape`, with optional affine
    /// `weight` and `bias` of that shape.
    pub fn layer_norm(
        &self,
        normalized_shape: &[usize],
        weight: Option<&Tensor>,
        bias: Option<&Tensor>,
        eps: f32,
    ) -> Result<Tensor> {
        const OP: &str = "layer_norm";
        let r = self.rank();
        let k = normalized_shape.len();
        if k == 0 || k > r || self.shape()[r - k..] != *normalized_shape {
            return Err(TensorError::shape(
                OP,
                format!(
                    "normalized_shape {} does not end input {}",
                    fmt_shape(normalized_shape),
                    fmt_shape(self.shape())
                ),
            ));
        }
        check_param(OP, "weight", weight, normalized_shape)?;
        check_param(OP, "bias", bias, normalized_shape)?;
        let d: usize = normalized_shape.iter().product();
        let rows = self.numel().checked_div(d).unwrap_or(0);
        let frame = profile::begin();
        let x = self.contiguous().detach();
        let (wd, bd) = (weight.map(|t| t.data()), bias.map(|t| t.data()));
        let mut y = crate::pool::for_overwrite(self.numel());
        let (mut mean, mut rstd) = (
            crate::pool::for_overwrite(rows),
            crate::pool::for_overwrite(rows),
        );
        norm::layer_norm_forward(
            &x.data(),
            rows,
            d,
            wd.as_deref(),
            bd.as_deref(),
            eps,
            &mut y,
            &mut mean,
            &mut rstd,
        )?;
        let y = Tensor::from_contig(y, self.shape());
        let mut inputs = vec![self];
        inputs.extend(weight);
        inputs.extend(bias);
        if let Some(fr) = frame {
            // Per element: mean (1), variance (3), normalise (2), affine (2).
            fr.end_op(&y, || norm_info(OP, &inputs, &y, 8));
        }
        if !needs_grad(&inputs) {
            return Ok(y);
        }
        let gamma = weight.map(|w| w.contiguous().detach());
        let (has_w, has_b) = (weight.is_some(), bias.is_some());
        let pshape = normalized_shape.to_vec();
        Ok(y.record(OP, &inputs, move |g| {
            let gd = g.contiguous();
            let gm = gamma.as_ref().map(|t| t.data());
            let mut dx = crate::pool::for_overwrite(x.numel());
            let mut dgamma = crate::pool::for_overwrite(d);
            let mut dbeta = crate::pool::for_overwrite(d);
            norm::layer_norm_backward(
                &x.data(),
                &gd.data(),
                rows,
                d,
                gm.as_deref(),
                &mean,
                &rstd,
                &mut dx,
                has_w.then_some(&mut dgamma[..]),
                has_b.then_some(&mut dbeta[..]),
            )?;
            profile::add_cost(|| norm_backward_cost(dx.len(), 2 * d));
            let mut out = vec![Some(Tensor::from_contig(dx, x.shape()))];
            if has_w {
                out.push(Some(Tensor::from_contig(dgamma, &pshape)));
            }
            if has_b {
                out.push(Some(Tensor::from_contig(dbeta, &pshape)));
            }
            Ok(out)
        }))
    }

    /// Batch normalisation of `[n, c, *]` over all dims but `c`. `training` uses batch
    /// statistics (and updates `running` when given); eval needs `running` and uses it.
    pub fn batch_norm(
        &self,
        running: Option<RunningStats<'_>>,
        weight: Option<&Tensor>,
        bias: Option<&Tensor>,
        training: bool,
        eps: f32,
    ) -> Result<Tensor> {
        self.batch_norm_impl(
            running,
            weight,
            bias,
            training,
            eps,
            Activation::Identity,
            None,
        )
    }

    /// `act(batch_norm(...))` as one op (the `bn -> act` pairs of ResNet and MobileNet blocks
    /// in training): the activation is applied as each output plane is written, and the
    /// backward recomputes the pre-activation from the saved input and masks the incoming
    /// gradient while batch norm's backward reads it, so neither the pre-activation nor its
    /// gradient is ever a tensor. Values and gradients are bit for bit those of
    /// `batch_norm` followed by the activation op; `Activation::Identity` is `batch_norm`.
    pub fn batch_norm_act(
        &self,
        running: Option<RunningStats<'_>>,
        weight: Option<&Tensor>,
        bias: Option<&Tensor>,
        training: bool,
        eps: f32,
        act: Activation,
    ) -> Result<Tensor> {
        self.batch_norm_impl(running, weight, bias, training, eps, act, None)
    }

    /// Training-mode [`batch_norm_act`](Self::batch_norm_act) of one part of a batch split
    /// across processes (synchronised batch norm): `reduce` sums the per-channel sums over the
    /// parts (twice in the forward: the sums with the part's count, then the squared
    /// deviations; once in the backward), so the normalisation, the running-statistics update
    /// (global count in the unbiased variance) and the input gradient are those of the whole
    /// batch, computed by the same kernels as on one process. The gradients of `weight` and
    /// `bias` are this part's contributions (their sum over the parts is the whole batch's).
    /// With one part (`reduce` the identity) the results are bit for bit those of
    /// `batch_norm_act`; with consecutive parts of a batch, bit for bit those of the whole
    /// batch whenever the f64 sums of per-image plane sums are exact (see
    /// `tessera_kernels::norm::batch_norm_stats_reduced`), apart from `weight` and `bias`'s
    /// gradients, which are summed in another order.
    pub fn batch_norm_act_reduced(
        &self,
        running: Option<RunningStats<'_>>,
        weight: Option<&Tensor>,
        bias: Option<&Tensor>,
        eps: f32,
        act: Activation,
        reduce: &BatchReduce,
    ) -> Result<Tensor> {
        self.batch_norm_impl(running, weight, bias, true, eps, act, Some(reduce.clone()))
    }

    #[allow(clippy::too_many_arguments)]
    fn batch_norm_impl(
        &self,
        running: Option<RunningStats<'_>>,
        weight: Option<&Tensor>,
        bias: Option<&Tensor>,
        training: bool,
        eps: f32,
        act: Activation,
        reduce: Option<BatchReduce>,
    ) -> Result<Tensor> {
        let fused = act != Activation::Identity;
        let op: &'static str = if fused {
            "batch_norm_act"
        } else {
            "batch_norm"
        };
        const OP: &str = "batch_norm";
        if self.rank() < 2 {
            return Err(TensorError::shape(
                OP,
                format!("input must be [n, c, ...], got {}", fmt_shape(self.shape())),
            ));
        }
        let (n, c) = (self.shape()[0], self.shape()[1]);
        let hw: usize = self.shape()[2..].iter().product();
        check_param(OP, "weight", weight, &[c])?;
        check_param(OP, "bias", bias, &[c])?;
        if let Some(r) = &running {
            check_param(OP, "running_mean", Some(r.mean), &[c])?;
            check_param(OP, "running_var", Some(r.var), &[c])?;
        }
        let frame = profile::begin();
        let x = self.contiguous().detach();
        let (mut mean, mut var) = (crate::pool::for_overwrite(c), crate::pool::for_overwrite(c));
        // Values per channel over the whole batch (all parts with `reduce`).
        let mut count = n * hw;
        if training {
            match &reduce {
                None if count <= 1 => {
                    return Err(TensorError::shape(
                        OP,
                        format!(
                            "input {}: training needs more than 1 value per channel",
                            fmt_shape(self.shape())
                        ),
                    ))
                }
                None => norm::batch_norm_stats(&x.data(), n, c, hw, &mut mean, &mut var)?,
                Some(r) => {
                    let mut err = None;
                    let total = norm::batch_norm_stats_reduced(
                        &x.data(),
                        n,
                        c,
                        hw,
                        &mut mean,
                        &mut var,
                        &mut reduce_hook(r, &mut err),
                    );
                    if let Some(e) = err {
                        return Err(e);
                    }
                    count = total?;
                    if count <= 1 {
                        return Err(TensorError::shape(
                            OP,
                            format!(
                                "input {}: training needs more than 1 value per channel over all parts of the batch, got {count}",
                                fmt_shape(self.shape())
                            ),
                        ));
                    }
                }
            }
            if let Some(r) = running {
                let m = r.momentum;
                let unbias = count as f32 / (count - 1) as f32;
                let rm: Vec<f32> = r
                    .mean
                    .data()
                    .iter()
                    .zip(&mean)
                    .map(|(&a, &b)| (1.0 - m) * a + m * b)
                    .collect();
                let rv: Vec<f32> = r
                    .var
                    .data()
                    .iter()
                    .zip(&var)
                    .map(|(&a, &b)| (1.0 - m) * a + m * b * unbias)
                    .collect();
                *r.mean = Tensor::from_contig(rm, &[c]);
                *r.var = Tensor::from_contig(rv, &[c]);
            }
        } else {
            let r = running
                .ok_or_else(|| TensorError::arg(OP, "eval mode needs running statistics"))?;
            mean.copy_from_slice(&r.mean.data());
            var.copy_from_slice(&r.var.data());
        }
        let (wd, bd) = (weight.map(|t| t.data()), bias.map(|t| t.data()));
        let mut y = crate::pool::for_overwrite(self.numel());
        if fused {
            norm::batch_norm_act_forward(
                &x.data(),
                n,
                c,
                hw,
                &mean,
                &var,
                wd.as_deref(),
                bd.as_deref(),
                eps,
                act,
                &mut y,
            )
        } else {
            norm::batch_norm_forward(
                &x.data(),
                n,
                c,
                hw,
                &mean,
                &var,
                wd.as_deref(),
                bd.as_deref(),
                eps,
                &mut y,
            )
        }?;
        let y = Tensor::from_contig(y, self.shape());
        let mut inputs = vec![self];
        inputs.extend(weight);
        inputs.extend(bias);
        if let Some(fr) = frame {
            // Per element: normalise and affine (4), plus the statistics in training (3), plus
            // the activation.
            let per = if training { 7 } else { 4 } + profile::activation_flops(act);
            fr.end_op(&y, || norm_info(op, &inputs, &y, per));
        }
        if !needs_grad(&inputs) {
            return Ok(y);
        }
        let gamma = weight.map(|w| w.contiguous().detach());
        // The fused backward recomputes the pre-activation, which needs the shift.
        let beta = bias.filter(|_| fused).map(|b| b.contiguous().detach());
        let (has_w, has_b) = (weight.is_some(), bias.is_some());
        Ok(y.record(op, &inputs, move |g| {
            let gd = g.contiguous();
            let gm = gamma.as_ref().map(|t| t.data());
            let bt = beta.as_ref().map(|t| t.data());
            // The kernels overwrite dx, dgamma and dbeta.
            let mut dx = crate::pool::for_overwrite(x.numel());
            let (mut dgamma, mut dbeta) = (vec![0.0; c], vec![0.0; c]);
            let (dg, db) = (
                has_w.then_some(&mut dgamma[..]),
                has_b.then_some(&mut dbeta[..]),
            );
            let (xd, gdd) = (x.data(), gd.data());
            if let Some(r) = &reduce {
                let mut err = None;
                let done = if fused {
                    norm::batch_norm_act_backward_reduced(
                        &xd,
                        &gdd,
                        n,
                        c,
                        hw,
                        count,
                        &mean,
                        &var,
                        gm.as_deref(),
                        bt.as_deref(),
                        eps,
                        act,
                        &mut dx,
                        dg,
                        db,
                        &mut reduce_hook(r, &mut err),
                    )
                } else {
                    norm::batch_norm_backward_reduced(
                        &xd,
                        &gdd,
                        n,
                        c,
                        hw,
                        count,
                        &mean,
                        &var,
                        gm.as_deref(),
                        eps,
                        &mut dx,
                        dg,
                        db,
                        &mut reduce_hook(r, &mut err),
                    )
                };
                if let Some(e) = err {
                    return Err(e);
                }
                done
            } else if fused {
                norm::batch_norm_act_backward(
                    &xd,
                    &gdd,
                    n,
                    c,
                    hw,
                    &mean,
                    &var,
                    gm.as_deref(),
                    bt.as_deref(),
                    eps,
                    training,
                    act,
                    &mut dx,
                    dg,
                    db,
                )
            } else {
                norm::batch_norm_backward(
                    &xd,
                    &gdd,
                    n,
                    c,
                    hw,
                    &mean,
                    &var,
                    gm.as_deref(),
                    eps,
                    training,
                    &mut dx,
                    dg,
                    db,
                )
            }?;
            // The fused backward also evaluates the activation's derivative per element.
            profile::add_cost(|| {
                let mut cost = norm_backward_cost(dx.len(), 2 * c);
                if fused {
                    cost.flops += (profile::activation_flops(act) + 1) * dx.len() as u64;
                }
                cost
            });
            let mut out = vec![Some(Tensor::from_contig(dx, x.shape()))];
            if has_w {
                out.push(Some(Tensor::from_contig(dgamma, &[c])));
            }
            if has_b {
                out.push(Some(Tensor::from_contig(dbeta, &[c])));
            }
            Ok(out)
        }))
    }
}
