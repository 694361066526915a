//! [`DataParallel`]: synchronous data-parallel training over MPI, after PyTorch's
//! DistributedDataParallel (Li et al., VLDB 2020) and Horovod (Sergeev & Del Balso, 2018).
//!
//! Every process holds a full replica of the model and computes its part of each global batch
//! ([`shard_range`]). During backward, a bucket's all-reduce starts as soon as the last of its
//! gradients is complete ([`Tensor::backward_hooked`]), so communication overlaps the rest of
//! backward; buckets start in a fixed order that is the same on every process. Each process
//! scales its gradients by `local / global` images before the sum, so the result is the
//! gradient of the mean loss over the global batch even when the parts differ by an image.
//! Every process then holds the same summed values and applies the same update.

use super::buckets::BucketLayout;
use super::comm::Comm;
use super::shard::{shard_batch, shard_range};
use super::state;
use super::sync_bn;
use crate::data::{Augment, Dataset};
use crate::error::{ModelError, Result};
use crate::module::{Module, TensorKind};
use crate::train::{BatchParallel, Trainer};
use crate::zoo::Model;
use mpi::topology::Communicator;
use std::collections::{HashMap, VecDeque};
use std::rc::Rc;
use std::time::{Duration, Instant};
use tessera_core::Tensor;

/// How [`DataParallel`] synchronises.
#[derive(Debug, Clone, PartialEq)]
pub struct DataParallelOptions {
    /// Bytes of gradient per all-reduce bucket (DDP's default: 25 MiB).
    pub bucket_bytes: usize,
    /// Start each bucket's all-reduce during backward, as soon as its gradients are complete
    /// (`false`: all buckets after backward).
    pub overlap: bool,
    /// Batch norm over the global batch (statistics all-reduced in every training-mode
    /// forward, and their gradients in backward) instead of each process's part.
    pub sync_batch_norm: bool,
    /// Deadline of every collective; past it the job ends with a message.
    pub timeout: Duration,
}

impl Default for DataParallelOptions {
    fn default() -> Self {
        DataParallelOptions {
            bucket_bytes: 25 << 20,
            overlap: true,
            sync_batch_norm: false,
            timeout: Duration::from_secs(300),
        }
    }
}

/// Time spent communicating gradients, accumulated over steps.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct CommStats {
    /// Optimizer steps measured.
    pub steps: usize,
    /// All-reduces started.
    pub all_reduces: usize,
    /// Values summed per step (the gradient size).
    pub values_per_step: usize,
    /// Time from the end of backward until every bucket had arrived (the communication that
    /// did not overlap computation).
    pub exposed: Duration,
    /// Time packing gradients into buckets and unpacking the sums.
    pub copy: Duration,
}

/// Data-parallel training over an MPI communicator: gradient averaging, sharded batches,
/// identical replicas (see the module documentation).
pub struct DataParallel {
    comm: Rc<Comm>,
    opts: DataParallelOptions,
    layout: Option<BucketLayout>,
    /// Send and receive buffer of each bucket.
    buffers: Vec<(Vec<f32>, Vec<f32>)>,
    stats: CommStats,
    sync_bn_installed: bool,
}

impl DataParallel {
    /// Data parallelism over the processes of `comm` (duplicated: the host program's own
    /// messages on `comm` never mix with these). Collective over `comm`. With
    /// `sync_batch_norm`, training-mode batch norm on this thread uses global statistics
    /// while the `DataParallel` lives.
    pub fn new(comm: &impl Communicator, opts: DataParallelOptions) -> Result<DataParallel> {
        if opts.bucket_bytes == 0 || opts.timeout.is_zero() {
            return Err(ModelError::config(
                "distributed: the bucket size and the timeout must be positive",
            ));
        }
        let comm = Rc::new(Comm::new(comm, opts.timeout));
        let sync_bn_installed = opts.sync_batch_norm;
        if sync_bn_installed {
            sync_bn::install(comm.clone());
        }
        Ok(DataParallel {
            comm,
            opts,
            layout: None,
            buffers: Vec::new(),
            stats: CommStats::default(),
            sync_bn_installed,
        })
    }

    /// This process's rank.
    pub fn rank(&self) -> usize {
        self.comm.rank()
    }

    /// Number of processes.
    pub fn size(&self) -> usize {
        self.comm.size()
    }

    /// The communicator (its collectives have the configured deadline).
    pub fn comm(&self) -> &Comm {
        &self.comm
    }

    /// The options in force.
    pub fn options(&self) -> &DataParallelOptions {
        &self.opts
    }

    /// Communication time so far.
    pub fn stats(&self) -> CommStats {
        self.stats
    }

    /// The current bucket layout (after the first step).
    pub fn layout(&self) -> Option<&BucketLayout> {
        self.layout.as_ref()
    }

    /// Checks that every global batch of an epoch over `train_len` images in batches of
    /// `batch` gives each process at least one image (a process with none would have no
    /// loss to differentiate).
    pub fn check_batch(&self, train_len: usize, batch: usize) -> Result<()> {
        let n = self.size();
        let last = match train_len % batch.max(1) {
            0 => batch,
            r => r,
        };
        if batch < n || last < n {
            return Err(ModelError::config(format!(
                "distributed: {n} processes need at least {n} images in every batch, but batch {batch} over {train_len} images leaves {} in the last one; choose another --batch",
                last.min(batch)
            )));
        }
        Ok(())
    }

    /// Copies rank 0's parameters and buffers into every process's `model` (after seeding
    /// or loading on rank 0). Errors, on every rank, if the models' tensors differ in names or
    /// shapes.
    pub fn broadcast_model(&self, model: &mut dyn Module) -> Result<()> {
        state::broadcast_model(&self.comm, model)
    }

    /// Copies rank 0's model, optimizer state, epoch and step into every process (a fresh or
    /// resumed run: only rank 0 needs to have read the checkpoint).
    pub fn broadcast_trainer(&self, trainer: &mut Trainer, model: &mut dyn Module) -> Result<()> {
        state::broadcast_trainer(&self.comm, trainer, model)
    }

    /// Errors on every process unless all replicas hold bit-identical parameters and, with
    /// synchronised batch norm, buffers.
    pub fn check_replicas(&self, model: &dyn Module) -> Result<()> {
        state::check_replicas(&self.comm, model, self.opts.sync_batch_norm)
    }

    /// Averages the gradients a plain `backward` left in `model` over the processes, bucket
    /// by bucket (`local` of `global` images were computed here: each gradient is scaled by
    /// `local / global` before the sum). Not for synchronised batch norm, whose backward must
    /// be seeded with that share instead ([`backward`](Self::backward) does).
    pub fn average_gradients(
        &mut self,
        model: &mut dyn Module,
        local: usize,
        global: usize,
    ) -> Result<()> {
        let params = trainable(model);
        self.ensure_layout(&params);
        let factor = scale(local, global)?;
        let layout = self.layout.as_ref().expect("layout");
        let comm = &*self.comm;
        let t_pack = Instant::now();
        let mut had = vec![false; params.len()];
        for (b, (send, _)) in layout.buckets.iter().zip(self.buffers.iter_mut()) {
            pack(b, &params, send, factor, &mut had);
        }
        let mut copy = t_pack.elapsed();
        let t_wait = Instant::now();
        let buffers = &mut self.buffers;
        mpi::request::scope(|sc| {
            let mut pending = VecDeque::new();
            for (bi, (send, recv)) in buffers.iter_mut().enumerate() {
                pending.push_back((
                    comm.start_all_reduce_sum(sc, send, recv),
                    Instant::now(),
                    bi,
                ));
            }
            for (req, t, bi) in pending {
                comm.wait_from(req, &format!("the all-reduce of gradient bucket {bi}"), t);
            }
        });
        let exposed = t_wait.elapsed();
        let t_unpack = Instant::now();
        unpack(layout, &params, &self.buffers, &had)?;
        copy += t_unpack.elapsed();
        self.account(exposed, copy);
        Ok(())
    }

    /// Runs backward of `loss` (the mean over `local` of `global` images) and averages the
    /// gradients over the processes, each bucket's all-reduce started as soon as its
    /// gradients are complete (with `overlap`; otherwise after backward).
    pub fn backward(
        &mut self,
        model: &mut dyn Module,
        loss: &Tensor,
        local: usize,
        global: usize,
    ) -> Result<()> {
        // Backward is seeded with this process's share of the global mean loss (needed by
        // synchronised batch norm, whose backward mixes the processes' gradients).
        let factor = scale(local, global)?;
        let seed = Tensor::full(loss.shape(), factor);
        if !self.opts.overlap {
            loss.backward_with(&seed)?;
            return self.average_gradients(model, global, global);
        }
        let params = trainable(model);
        self.ensure_layout(&params);
        let key_to_param: HashMap<usize, usize> = params
            .iter()
            .enumerate()
            .filter_map(|(i, t)| t.grad_key().map(|k| (k, i)))
            .collect();
        let layout = self.layout.as_ref().expect("layout");
        let nb = layout.buckets.len();
        let mut missing: Vec<usize> = layout.buckets.iter().map(|b| b.params.len()).collect();
        let mut had = vec![false; params.len()];
        let mut ready = Vec::with_capacity(params.len());
        let comm = &*self.comm;
        let buffers = &mut self.buffers;
        let mut copy = Duration::ZERO;
        let mut exposed = Duration::ZERO;
        let result = mpi::request::scope(|sc| {
            let mut slots = buffers.iter_mut();
            let mut pending = VecDeque::new();
            let mut launched = 0usize;
            let mut launch = |bi: usize, pending: &mut VecDeque<_>, had: &mut Vec<bool>| {
                let t = Instant::now();
                let (send, recv) = slots.next().expect("one buffer per bucket");
                pack(&layout.buckets[bi], &params, send, 1.0, had);
                copy += t.elapsed();
                pending.push_back((
                    comm.start_all_reduce_sum(sc, send, recv),
                    Instant::now(),
                    bi,
                ));
            };
            let r = loss.backward_hooked(&seed, &mut |key| {
                let Some(&p) = key_to_param.get(&key) else {
                    return Ok(());
                };
                ready.push(p);
                missing[layout.slot[p].0] -= 1;
                while launched < nb && missing[launched] == 0 {
                    launch(launched, &mut pending, &mut had);
                    launched += 1;
                }
                // Lets MPI progress the oldest bucket while backward goes on.
                if let Some((req, t, bi)) = pending.pop_front() {
                    if let Some(req) = comm.test(req) {
                        pending.push_front((req, t, bi));
                    }
                }
                Ok(())
            });
            // Every process starts every bucket, also after an error here, so no other
            // process waits for one that never comes.
            let t_wait = Instant::now();
            while launched < nb {
                launch(launched, &mut pending, &mut had);
                launched += 1;
            }
            for (req, t, bi) in pending {
                comm.wait_from(req, &format!("the all-reduce of gradient bucket {bi}"), t);
            }
            exposed = t_wait.elapsed();
            r
        });
        result?;
        let t_unpack = Instant::now();
        unpack(layout, &params, &self.buffers, &had)?;
        copy += t_unpack.elapsed();
        if !layout.observed {
            // Rebuilt once from the order backward completed the gradients (the same on every
            // process: it depends only on the graph).
            let rebuilt = BucketLayout::from_ready_order(
                layout.params.clone(),
                &ready,
                self.opts.bucket_bytes,
            );
            self.set_layout(rebuilt);
        }
        self.account(exposed, copy);
        Ok(())
    }

    fn account(&mut self, exposed: Duration, copy: Duration) {
        let layout = self.layout.as_ref().expect("layout");
        self.stats.steps += 1;
        self.stats.all_reduces += layout.buckets.len();
        self.stats.values_per_step = layout.total();
        self.stats.exposed += exposed;
        self.stats.copy += copy;
    }

    fn ensure_layout(&mut self, params: &[Tensor]) {
        let _ = params;
        let names = param_names_sizes(params);
        let fits = self.layout.as_ref().is_some_and(|l| {
            l.params.len() == names.len() && l.params.iter().zip(&names).all(|(a, b)| a.1 == b.1)
        });
        if !fits {
            let layout = BucketLayout::reversed(names, self.opts.bucket_bytes);
            self.set_layout(layout);
        }
    }

    fn set_layout(&mut self, layout: BucketLayout) {
        self.buffers = layout
            .buckets
            .iter()
            .map(|b| (vec![0.0; b.len], vec![0.0; b.len]))
            .collect();
        self.layout = Some(layout);
    }
}

impl Drop for DataParallel {
    fn drop(&mut self) {
        if self.sync_bn_installed {
            sync_bn::uninstall();
        }
    }
}

/// The parameters that require grad, in visiting order.
fn trainable(model: &dyn Module) -> Vec<Tensor> {
    let mut out = Vec::new();
    model.visit("", &mut |_, t, kind| {
        if kind == TensorKind::Parameter && t.requires_grad() {
            out.push(t.clone());
        }
    });
    out
}

fn param_names_sizes(params: &[Tensor]) -> Vec<(String, usize)> {
    params
        .iter()
        .enumerate()
        .map(|(i, t)| (i.to_string(), t.numel()))
        .collect()
}

fn scale(local: usize, global: usize) -> Result<f32> {
    if global == 0 || local > global {
        return Err(ModelError::config(format!(
            "distributed: {local} of {global} images in this process's part of the batch"
        )));
    }
    Ok(local as f32 / global as f32)
}

/// Copies `factor * gradient` of the bucket's parameters into `send` (zeros for a parameter
/// without a gradient), noting which had one.
fn pack(
    bucket: &super::buckets::Bucket,
    params: &[Tensor],
    send: &mut [f32],
    factor: f32,
    had: &mut [bool],
) {
    for (&p, &off) in bucket.params.iter().zip(&bucket.offsets) {
        let n = params[p].numel();
        let dst = &mut send[off..off + n];
        match params[p].grad() {
            Some(g) if g.numel() == n => {
                had[p] = true;
                let g = g.data();
                if factor == 1.0 {
                    dst.copy_from_slice(&g);
                } else {
                    for (d, v) in dst.iter_mut().zip(g.iter()) {
                        *d = v * factor;
                    }
                }
            }
            _ => dst.fill(0.0),
        }
    }
}

/// Replaces the gradient of every parameter that had one with its slice of the sums.
fn unpack(
    layout: &BucketLayout,
    params: &[Tensor],
    buffers: &[(Vec<f32>, Vec<f32>)],
    had: &[bool],
) -> Result<()> {
    for (b, (_, recv)) in layout.buckets.iter().zip(buffers) {
        for (&p, &off) in b.params.iter().zip(&b.offsets) {
            if !had[p] {
                continue;
            }
            let t = &params[p];
            let g = Tensor::from_vec(recv[off..off + t.numel()].to_vec(), t.shape())?;
            t.zero_grad();
            // On a leaf, backward stores the given gradient in its slot.
            t.backward_with(&g)?;
        }
    }
    Ok(())
}

/// The training loop's hook ([`Trainer::run_epoch_parallel`]).
impl BatchParallel for DataParallel {
    fn batch(
        &self,
        data: &Dataset,
        idx: &[usize],
        augment: Option<&Augment>,
        seed: u64,
    ) -> (Tensor, Vec<usize>) {
        let part = shard_range(idx.len(), self.rank(), self.size());
        shard_batch(data, idx, part, augment, seed)
    }

    fn backward(
        &mut self,
        model: &mut dyn Model,
        loss: &Tensor,
        local: usize,
        global: usize,
        epoch: usize,
        step: usize,
    ) -> Result<()> {
        self.comm
            .set_context(format!("epoch {} step {}", epoch + 1, step + 1));
        DataParallel::backward(self, model, loss, local, global)
    }

    fn sum(&mut self, values: &mut [f64]) -> Result<()> {
        self.comm
            .all_reduce_sum_f64(values, "the all-reduce of the epoch's loss and accuracy");
        Ok(())
    }

    fn is_root(&self) -> bool {
        self.rank() == 0
    }
}
