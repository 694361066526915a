//! Synchronised batch norm: training-mode batch statistics over the global batch instead of
//! each process's part (PyTorch's `SyncBatchNorm`; Peng et al., "MegDet", 2018, section 4).
//!
//! Built from differentiable tensor ops around one collective op, [`all_reduce`], whose
//! backward is again a sum over the processes (the adjoint of a sum that every process
//! receives): per channel, `mean = allreduce(sum x) / M`, `var = allreduce(sum (x - mean)^2) / M`
//! (two passes, no `E[x^2] - E[x]^2` cancellation), `y = act((x - mean) / sqrt(var + eps) *
//! gamma + beta)`, where `M` is the global count of values per channel. Autograd then yields the
//! exact gradient of the global batch's loss, cross-process terms included; backward must
//! therefore be seeded with this process's share of the global loss (what
//! [`DataParallel`](super::DataParallel) does), not with 1.
//!
//! [`BatchNorm2d`](crate::layers::BatchNorm2d) calls [`forward`] in training mode while a
//! `DataParallel` with `sync_batch_norm` lives on the thread (installed per thread: the
//! communicator is not shared between threads). Evaluation keeps using the running statistics.

use super::comm::Comm;
use std::cell::RefCell;
use std::rc::Rc;
use tessera_core::autograd::needs_grad;
use tessera_core::kernels::Activation;
use tessera_core::ops::norm::RunningStats;
use tessera_core::{no_grad, Result, Tensor, TensorError};

thread_local! {
    static SYNC: RefCell<Option<Rc<Comm>>> = const { RefCell::new(None) };
}

pub(crate) fn install(comm: Rc<Comm>) {
    SYNC.with(|s| *s.borrow_mut() = Some(comm));
}

pub(crate) fn uninstall() {
    SYNC.with(|s| *s.borrow_mut() = None);
}

fn current() -> Option<Rc<Comm>> {
    SYNC.with(|s| s.borrow().clone())
}

/// Whether training-mode batch norm on this thread is synchronised.
pub fn active() -> bool {
    current().is_some()
}

fn sum_over(comm: &Comm, values: &[f32], what: &str) -> Vec<f32> {
    let mut out = vec![0.0; values.len()];
    comm.all_reduce_sum(values, &mut out, what);
    out
}

/// The sum of `x` over the processes, every process receiving it; differentiable (the
/// gradient is the sum of the output gradients over the processes).
pub fn all_reduce(x: &Tensor) -> Result<Tensor> {
    let comm = current().ok_or_else(|| {
        TensorError::autograd("all_reduce", "no data-parallel communicator on this thread")
    })?;
    let y = Tensor::from_vec(
        sum_over(&comm, &x.to_vec(), "a synchronised batch norm's statistics"),
        x.shape(),
    )?;
    if !needs_grad(&[x]) {
        return Ok(y);
    }
    Ok(y.record("all_reduce", &[x], |g| {
        let comm = current().ok_or_else(|| {
            TensorError::autograd(
                "all_reduce",
                "backward ran on a thread without the data-parallel communicator",
            )
        })?;
        let summed = sum_over(
            &comm,
            &g.to_vec(),
            "a synchronised batch norm's gradient statistics",
        );
        Ok(vec![Some(Tensor::from_vec(summed, g.shape())?)])
    }))
}

/// Training-mode batch norm (+ activation) of NCHW `x` over the global batch, updating the
/// running statistics with the global mean and unbiased variance; `None` when no
/// synchronisation is installed on this thread.
pub fn forward(
    x: &Tensor,
    running: Option<RunningStats<'_>>,
    weight: Option<&Tensor>,
    bias: Option<&Tensor>,
    eps: f32,
    act: Activation,
) -> Option<Result<Tensor>> {
    let comm = current()?;
    Some(forward_with(&comm, x, running, weight, bias, eps, act))
}

fn forward_with(
    comm: &Comm,
    x: &Tensor,
    running: Option<RunningStats<'_>>,
    weight: Option<&Tensor>,
    bias: Option<&Tensor>,
    eps: f32,
    act: Activation,
) -> Result<Tensor> {
    let &[n, c, h, w] = x.shape() else {
        return Err(TensorError::shape(
            "sync_batch_norm",
            format!("expects an NCHW input, got shape {:?}", x.shape()),
        ));
    };
    let mut count = [(n * h * w) as f64];
    comm.all_reduce_sum_f64(&mut count, "a synchronised batch norm's count");
    let m = count[0];
    if m < 2.0 {
        return Err(TensorError::shape(
            "sync_batch_norm",
            format!("needs more than one value per channel over all processes, got {m}"),
        ));
    }
    let per_channel = [1, c, 1, 1];
    let mean = all_reduce(&x.sum(&[0, 2, 3], false)?)?.mul_scalar((1.0 / m) as f32);
    let d = x.sub(&mean.reshape(&per_channel)?)?;
    let var = all_reduce(&d.mul(&d)?.sum(&[0, 2, 3], false)?)?.mul_scalar((1.0 / m) as f32);
    let invstd = var.add_scalar(eps).rsqrt();
    let mut y = d.mul(&invstd.reshape(&per_channel)?)?;
    if let Some(wt) = weight {
        y = y.mul(&wt.reshape(&per_channel)?)?;
    }
    if let Some(b) = bias {
        y = y.add(&b.reshape(&per_channel)?)?;
    }
    if let Some(r) = running {
        let _g = no_grad();
        let mom = r.momentum;
        let unbias = (m / (m - 1.0)) as f32;
        let blend = |old: &Tensor, new: &[f32], k: f32| -> Result<Tensor> {
            let v: Vec<f32> = old
                .to_vec()
                .iter()
                .zip(new)
                .map(|(o, b)| (1.0 - mom) * o + mom * (b * k))
                .collect();
            Tensor::from_vec(v, old.shape())
        };
        *r.mean = blend(r.mean, &mean.to_vec(), 1.0)?;
        *r.var = blend(r.var, &var.to_vec(), unbias)?;
    }
    Ok(match act {
        Activation::Identity => y,
        a => y.activate(a),
    })
}
