//! Synchronised batch norm: training-mode batch statistics over the global batch instead of
//! each process's part (PyTorch's `SyncBatchNorm`; Peng et al., "MegDet", 2018, section 4).
//!
//! The batch norm op of one process ([`Tensor::batch_norm_act_reduced`]) with its per-channel
//! f64 sums all-reduced: in the forward, `sum x` together with the count (then `mean = sum / M`,
//! `M` the global number of values per channel) and `sum (x - mean)^2` (two passes, no
//! `E[x^2] - E[x]^2` cancellation; biased variance for normalisation, `M / (M - 1)` for the
//! running variance); in the backward, `sum g` and `sum (x - mean) g`, from which every process
//! computes its part's input gradient through the global statistics. The kernels and the
//! order of every addition are those of one process's batch norm on the whole batch, so with
//! parts that are consecutive images of the global batch (what
//! [`shard_range`](super::shard_range) gives) the statistics, outputs and input gradients are
//! bit for bit those of one process whenever the f64 additions of the parts' sums are exact
//! (they are unless a channel's per-image sums span ~29 binary orders of magnitude); with one
//! process they are bit for bit those of the plain op. The gradients of `gamma` and `beta` are
//! each process's contribution, summed with the other parameters' gradients. Backward must be
//! seeded with this process's share of the global loss (what
//! [`DataParallel`](super::DataParallel) does), not with 1.
//!
//! Bit-level agreement matters here more than for other ops: a channel whose variance is far
//! below `eps` is multiplied by up to `1 / sqrt(eps)` (316), and an activation's kink (ReLU6 at
//! 0) decides whether an element's gradient passes at all; a pre-activation one rounding away
//! from 0 that lands on the other side in another computation changes that channel's gradient
//! by a whole element's share, amplified by the same factor, and every gradient upstream with
//! it (a difference of 1e-2 relative from one such element in `mobilenetv2_digits`).
//!
//! [`BatchNorm2d`](crate::layers::BatchNorm2d) calls [`forward`] in training mode while a
//! `DataParallel` with `sync_batch_norm` lives on the thread (installed per thread: the
//! communicator is not shared between threads). Evaluation keeps using the running statistics.

use super::comm::Comm;
use std::cell::RefCell;
use std::rc::Rc;
use std::sync::Arc;
use tessera_core::autograd::needs_grad;
use tessera_core::kernels::Activation;
use tessera_core::ops::norm::{BatchReduce, RunningStats};
use tessera_core::{Result, Tensor, TensorError};

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

/// Training-mode batch norm (+ activation) of `x` (`[n, c, *]`) over the global batch, updating the
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
    current()?;
    let reduce: BatchReduce = Arc::new(|values: &mut [f64]| {
        let comm = current().ok_or_else(|| {
            TensorError::autograd(
                "sync_batch_norm",
                "no data-parallel communicator on this thread (backward must run on the thread of the forward)",
            )
        })?;
        comm.all_reduce_sum_f64(values, "a synchronised batch norm's per-channel sums");
        Ok(())
    });
    Some(x.batch_norm_act_reduced(running, weight, bias, eps, act, &reduce))
}
