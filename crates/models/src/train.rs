//! The training loop: seeded shuffling and augmentation, mean cross-entropy with label
//! smoothing, SGD or AdamW with a cosine schedule and linear warm-up, optional gradient clipping,
//! top-1 / top-5 evaluation, and checkpoints that resume exactly. A trailing batch of a single
//! image is skipped ([`batches_per_epoch`]).
//!
//! Every random choice is a function of the configured seed, the epoch and the batch index, so
//! a run resumed from a checkpoint (model, optimizer state, epoch and step) continues to the
//! bit-identical weights an uninterrupted run reaches (same seed, same thread count; results of
//! the kernels are bit-identical across thread counts anyway). Dropout layers keep their own
//! seeded counters, which a checkpoint does not record: with dropout > 0 a resumed run draws
//! different masks (the presets use no dropout).

use crate::checkpoint::{self, Checkpoint};
use crate::data::{Augment, Dataset};
use crate::error::{ModelError, Result};
use crate::module::{set_requires_grad, Mode};
use crate::optim::{clip_grad_norm, AdamW, LrSchedule, Optimizer, OptimizerState, Sgd};
use crate::zoo::Model;
use std::path::Path;
use std::time::Instant;
use tessera_core::{no_grad, Tensor};

/// Which optimizer to train with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OptKind {
    /// SGD with momentum (Nesterov when the momentum is positive).
    Sgd,
    /// AdamW (Loshchilov & Hutter, 2019).
    AdamW,
}

impl OptKind {
    /// `sgd` or `adamw`.
    pub fn name(self) -> &'static str {
        match self {
            OptKind::Sgd => "sgd",
            OptKind::AdamW => "adamw",
        }
    }

    /// Parses `sgd` / `adamw`.
    pub fn parse(s: &str) -> Result<OptKind> {
        match s {
            "sgd" => Ok(OptKind::Sgd),
            "adamw" => Ok(OptKind::AdamW),
            other => Err(ModelError::config(format!(
                "unknown optimizer {other:?}; expected sgd or adamw"
            ))),
        }
    }
}

/// Hyper-parameters of a run.
#[derive(Debug, Clone, PartialEq)]
pub struct TrainConfig {
    /// Passes over the training set.
    pub epochs: usize,
    /// Images per optimizer step.
    pub batch: usize,
    /// Peak learning rate (after warm-up).
    pub lr: f32,
    /// The optimizer.
    pub opt: OptKind,
    /// Weight decay (L2 for SGD, decoupled for AdamW).
    pub weight_decay: f32,
    /// SGD momentum (Nesterov when > 0).
    pub momentum: f32,
    /// Epochs of linear warm-up.
    pub warmup_epochs: usize,
    /// Learning rate at the end of the cosine decay.
    pub min_lr: f32,
    /// Label smoothing of the cross-entropy, in [0, 1).
    pub label_smoothing: f32,
    /// Clip the global gradient norm to this value.
    pub clip_grad: Option<f32>,
    /// Augmentation of the training images, or none.
    pub augment: Option<Augment>,
    /// Seed of the data order and the augmentation.
    pub seed: u64,
    /// Names that get no weight decay besides rank <= 1 tensors (ViT's `pos_embed`...).
    pub no_decay: Vec<String>,
}

impl Default for TrainConfig {
    fn default() -> Self {
        TrainConfig {
            epochs: 10,
            batch: 64,
            lr: 1e-3,
            opt: OptKind::AdamW,
            weight_decay: 0.05,
            momentum: 0.9,
            warmup_epochs: 1,
            min_lr: 1e-5,
            label_smoothing: 0.0,
            clip_grad: None,
            augment: None,
            seed: 0,
            no_decay: vec!["pos_embed".into(), "cls_token".into()],
        }
    }
}

/// Progress of one training step.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StepInfo {
    /// 1-based epoch.
    pub epoch: usize,
    /// 1-based step within the epoch.
    pub step_in_epoch: usize,
    /// Steps per epoch.
    pub steps_per_epoch: usize,
    /// Mean cross-entropy of this batch.
    pub loss: f32,
    /// Top-1 accuracy on this batch.
    pub acc: f32,
    /// Learning rate of this step.
    pub lr: f32,
    /// Training throughput of this step.
    pub images_per_s: f32,
}

/// What one epoch achieved.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct EpochStats {
    /// 1-based epoch number.
    pub epoch: usize,
    /// Mean cross-entropy over the epoch's batches.
    pub train_loss: f32,
    /// Top-1 accuracy over the epoch's batches.
    pub train_acc: f32,
    /// Mean cross-entropy (no label smoothing) on the evaluation set.
    pub test_loss: f32,
    /// Top-1 accuracy on the evaluation set.
    pub test_acc: f32,
    /// Top-5 accuracy on the evaluation set.
    pub test_top5: f32,
    /// Training throughput (evaluation excluded).
    pub images_per_s: f32,
}

/// Loss and accuracies of a model on a data set.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Metrics {
    /// Mean cross-entropy.
    pub loss: f32,
    /// Top-1 accuracy.
    pub top1: f32,
    /// Top-5 accuracy.
    pub top5: f32,
}

/// Counts of correct top-1 and top-k predictions in `[n, c]` logits.
pub fn correct_topk(logits: &[f32], classes: usize, labels: &[usize], k: usize) -> (usize, usize) {
    let (mut top1, mut topk) = (0, 0);
    for (row, &label) in logits.chunks_exact(classes.max(1)).zip(labels) {
        let target = row.get(label).copied().unwrap_or(f32::NEG_INFINITY);
        // Rank of the label: how many classes score strictly higher (ties favour the label).
        let higher = row.iter().filter(|&&v| v > target).count();
        top1 += (higher == 0) as usize;
        topk += (higher < k) as usize;
    }
    (top1, topk)
}

/// Evaluates `model` (in eval mode, no graph) on `data` in batches.
pub fn evaluate(model: &mut dyn Model, data: &Dataset, batch: usize) -> Result<Metrics> {
    model.set_mode(Mode::Eval);
    let _g = no_grad();
    let (mut loss, mut top1, mut top5) = (0.0f64, 0usize, 0usize);
    for idx in data.epoch_batches(batch, None) {
        let (x, y) = data.batch(&idx, None, 0);
        let logits = model.forward(&x)?;
        loss += logits.cross_entropy(&y, 0.0)?.item()? as f64 * idx.len() as f64;
        let (a, b) = correct_topk(&logits.to_vec(), model.num_classes(), &y, 5);
        top1 += a;
        top5 += b;
    }
    let n = data.len().max(1) as f64;
    Ok(Metrics {
        loss: (loss / n) as f32,
        top1: (top1 as f64 / n) as f32,
        top5: (top5 as f64 / n) as f32,
    })
}

/// Mixes seeds into one (SplitMix64 finaliser), so each epoch and batch gets its own stream.
fn mix(a: u64, b: u64) -> u64 {
    let mut z = a ^ b.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Data parallelism across processes (`distributed::DataParallel` with the `distributed`
/// feature): each process computes a part of every global batch, and the parts' gradients are
/// combined into the global batch's before the optimizer step, so every process applies the
/// same update.
pub trait BatchParallel {
    /// This process's part of the global batch `idx` (augmented exactly as the whole batch
    /// would be: the same images get the same crops and flips for any number of processes).
    fn batch(
        &self,
        data: &Dataset,
        idx: &[usize],
        augment: Option<&Augment>,
        seed: u64,
    ) -> (Tensor, Vec<usize>);

    /// Backward of `loss`, the mean over this process's `local` of the `global` images,
    /// leaving in every parameter the gradient of the global batch's mean loss, identical on
    /// every process. `epoch` and `step` (0-based) name the step in messages.
    fn backward(
        &mut self,
        model: &mut dyn Model,
        loss: &Tensor,
        local: usize,
        global: usize,
        epoch: usize,
        step: usize,
    ) -> Result<()>;

    /// Sums `values` over the processes, in place.
    fn sum(&mut self, values: &mut [f64]) -> Result<()>;

    /// Whether this process is the one that evaluates (the others report no test accuracy).
    fn is_root(&self) -> bool;
}

/// Optimizer steps per epoch over `n` images in batches of `batch`: the last, smaller batch
/// is kept unless it holds a single image (and is not the only batch). A one-image batch
/// cannot be batch-normalised where a network's feature maps reach 1x1 (one value per
/// channel: PyTorch refuses it too), and it would be the noisiest step of the epoch; the image
/// is seen in other epochs, in another position of the shuffled order.
pub fn batches_per_epoch(n: usize, batch: usize) -> usize {
    let batch = batch.max(1);
    let (full, rem) = (n / batch, n % batch);
    full + usize::from(rem > 1 || (rem == 1 && full == 0))
}

/// A training run's optimizer, schedule and position.
pub struct Trainer {
    /// The run's hyper-parameters.
    pub cfg: TrainConfig,
    opt: Box<dyn Optimizer>,
    schedule: LrSchedule,
    steps_per_epoch: usize,
    /// Completed epochs.
    pub epoch: usize,
    /// Completed optimizer steps.
    pub step: usize,
}

impl Trainer {
    /// A fresh run over a training set of `train_len` images; marks the parameters as requiring
    /// grad.
    pub fn new(cfg: TrainConfig, model: &mut dyn Model, train_len: usize) -> Result<Trainer> {
        if cfg.batch == 0
            || cfg.epochs == 0
            || !cfg.lr.is_finite()
            || cfg.lr <= 0.0
            || !(0.0..1.0).contains(&cfg.label_smoothing)
        {
            return Err(ModelError::config(format!(
                "train: batch {} and epochs {} must be positive, lr {} > 0, label smoothing {} in [0, 1)",
                cfg.batch, cfg.epochs, cfg.lr, cfg.label_smoothing
            )));
        }
        if train_len == 0 {
            return Err(ModelError::config("train: the training set is empty"));
        }
        let mut opt: Box<dyn Optimizer> = match cfg.opt {
            OptKind::Sgd => Box::new(Sgd::new(
                cfg.momentum,
                cfg.momentum > 0.0,
                cfg.weight_decay,
            )?),
            OptKind::AdamW => Box::new(AdamW::new(0.9, 0.999, 1e-8, cfg.weight_decay)?),
        };
        opt.no_decay().clone_from(&cfg.no_decay);
        let steps_per_epoch = batches_per_epoch(train_len, cfg.batch);
        let schedule = LrSchedule::Cosine {
            warmup: cfg.warmup_epochs.saturating_mul(steps_per_epoch),
            total: cfg.epochs.saturating_mul(steps_per_epoch),
            min_lr: cfg.min_lr,
        };
        set_requires_grad(model, true);
        Ok(Trainer {
            cfg,
            opt,
            schedule,
            steps_per_epoch,
            epoch: 0,
            step: 0,
        })
    }

    /// Whether every configured epoch has run.
    pub fn finished(&self) -> bool {
        self.epoch >= self.cfg.epochs
    }

    /// Runs the next epoch, calling `on_step` after every optimizer step, then evaluates on
    /// `test`.
    pub fn run_epoch(
        &mut self,
        model: &mut dyn Model,
        train: &Dataset,
        test: &Dataset,
        on_step: &mut dyn FnMut(&StepInfo),
    ) -> Result<EpochStats> {
        self.run_epoch_parallel(model, train, test, None, on_step)
    }

    /// [`run_epoch`](Self::run_epoch) as one of several data-parallel processes (`None`: the
    /// only one). Only the root process evaluates; the others report a NaN test accuracy.
    /// Loss and accuracy in [`StepInfo`] are this process's part of the batch; those of
    /// [`EpochStats`] cover the whole epoch on every process.
    pub fn run_epoch_parallel(
        &mut self,
        model: &mut dyn Model,
        train: &Dataset,
        test: &Dataset,
        mut parallel: Option<&mut dyn BatchParallel>,
        on_step: &mut dyn FnMut(&StepInfo),
    ) -> Result<EpochStats> {
        let epoch = self.epoch;
        let mut batches =
            train.epoch_batches(self.cfg.batch, Some(mix(self.cfg.seed, epoch as u64 + 1)));
        if batches.len() > 1 && batches.last().is_some_and(|b| b.len() == 1) {
            // See `batches_per_epoch`.
            batches.pop();
        }
        model.set_mode(Mode::Train);
        let t0 = Instant::now();
        let (mut loss_sum, mut correct, mut seen) = (0.0f64, 0usize, 0usize);
        for (b, idx) in batches.iter().enumerate() {
            let tb = Instant::now();
            let seed = mix(mix(self.cfg.seed, epoch as u64 + 1), b as u64 + 1);
            let (x, y) = match parallel.as_deref() {
                Some(p) => p.batch(train, idx, self.cfg.augment.as_ref(), seed),
                None => train.batch(idx, self.cfg.augment.as_ref(), seed),
            };
            // Anomaly detection checks every op of the forward, the loss and the backward.
            let watch = crate::anomaly::enabled().then(crate::anomaly::Watch::start);
            let logits = match &watch {
                Some(w) => w.forward(&*model, &x),
                None => model.forward(&x),
            };
            let at_step = |e| match e {
                ModelError::Anomaly(m) => {
                    ModelError::Anomaly(format!("epoch {} step {}: {m}", epoch + 1, b + 1))
                }
                e => e,
            };
            let logits = logits.map_err(at_step)?;
            let loss = logits.cross_entropy(&y, self.cfg.label_smoothing)?;
            match parallel.as_deref_mut() {
                Some(p) => p.backward(model, &loss, y.len(), idx.len(), epoch, b)?,
                None => loss.backward()?,
            }
            if let Some(w) = watch {
                w.finish(model.arch()).map_err(at_step)?;
                crate::anomaly::check_gradients(&*model).map_err(at_step)?;
            }
            let scale = match self.cfg.clip_grad {
                Some(max) => clip_grad_norm(&*model, max).1,
                None => 1.0,
            };
            let lr = self.schedule.lr(self.cfg.lr, self.step);
            self.opt.step(model, lr, scale)?;
            self.step += 1;
            let l = loss.item()?;
            if !l.is_finite() {
                return Err(ModelError::config(format!(
                    "train: the loss became {l} at epoch {} step {b}; lower the learning rate",
                    epoch + 1
                )));
            }
            let (c, _) = correct_topk(&logits.detach().to_vec(), model.num_classes(), &y, 1);
            loss_sum += l as f64 * y.len() as f64;
            correct += c;
            seen += y.len();
            on_step(&StepInfo {
                epoch: epoch + 1,
                step_in_epoch: b + 1,
                steps_per_epoch: self.steps_per_epoch,
                loss: l,
                acc: c as f32 / y.len().max(1) as f32,
                lr,
                images_per_s: idx.len() as f32 / tb.elapsed().as_secs_f32().max(1e-9),
            });
        }
        if let Some(p) = parallel.as_deref_mut() {
            let mut sums = [loss_sum, correct as f64, seen as f64];
            p.sum(&mut sums)?;
            (loss_sum, correct, seen) = (sums[0], sums[1] as usize, sums[2] as usize);
        }
        let images_per_s = seen as f32 / t0.elapsed().as_secs_f32().max(1e-9);
        let m = match parallel.as_deref() {
            Some(p) if !p.is_root() => Metrics {
                loss: f32::NAN,
                top1: f32::NAN,
                top5: f32::NAN,
            },
            _ => evaluate(model, test, self.cfg.batch.max(64))?,
        };
        self.epoch += 1;
        Ok(EpochStats {
            epoch: self.epoch,
            train_loss: (loss_sum / seen.max(1) as f64) as f32,
            train_acc: correct as f32 / seen.max(1) as f32,
            test_loss: m.loss,
            test_acc: m.top1,
            test_top5: m.top5,
            images_per_s,
        })
    }

    /// The optimizer's state (to hand to other processes; checkpoints include it).
    pub fn optimizer_state(&self) -> OptimizerState {
        self.opt.state()
    }

    /// Replaces the optimizer's state (from [`optimizer_state`](Self::optimizer_state)).
    pub fn load_optimizer_state(&mut self, state: &OptimizerState) -> Result<()> {
        self.opt.load_state(state)
    }

    /// Writes model, optimizer state, epoch and step to `path` atomically (see
    /// [`crate::checkpoint`]: an interrupted save leaves the previous checkpoint intact).
    pub fn save_checkpoint(&self, model: &dyn Model, path: impl AsRef<Path>) -> Result<()> {
        checkpoint::save(
            path,
            model,
            self.opt.as_ref(),
            self.cfg.opt.name(),
            self.cfg.seed,
            self.epoch,
            self.step,
        )
    }

    /// Restores a run from a checkpoint written by [`Trainer::save_checkpoint`] into `model`;
    /// `cfg` must use the same optimizer and seed. The checkpoint is validated as a whole
    /// first ([`Checkpoint::validate`]): on error `model` keeps its weights.
    pub fn resume(
        cfg: TrainConfig,
        model: &mut dyn Model,
        train_len: usize,
        path: impl AsRef<Path>,
    ) -> Result<Trainer> {
        let ckpt = Checkpoint::read(path)?;
        Trainer::resume_from(cfg, model, train_len, &ckpt)
    }

    /// [`Trainer::resume`] from an already-read checkpoint.
    pub fn resume_from(
        cfg: TrainConfig,
        model: &mut dyn Model,
        train_len: usize,
        ckpt: &Checkpoint,
    ) -> Result<Trainer> {
        let mut t = Trainer::new(cfg, model, train_len)?;
        let (name, seed) = (t.cfg.opt.name(), t.cfg.seed);
        ckpt.apply(model, t.opt.as_mut(), name, seed)?;
        t.epoch = ckpt.epoch;
        t.step = ckpt.step;
        Ok(t)
    }
}
