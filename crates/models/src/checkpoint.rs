//! Training checkpoints: one safetensors file holding the model's tensors under their
//! state_dict names, the optimizer state under `__optim__.<key>` (F32, one dimension), and in
//! the metadata the architecture, optimizer kind, seed, completed epochs and steps, and the
//! optimizer's scalars (`__optim__.adamw.step`).
//!
//! A checkpoint is validated **as a whole** before any of it is used ([`Checkpoint::validate`]):
//! every model tensor's name, dtype and shape (as [`crate::weights`] checks them), every
//! optimizer tensor's dtype, rank, key and length against the model's parameters, no unknown
//! optimizer keys or scalars, the step counts finite non-negative integers that agree with each
//! other. All problems are reported together; [`Checkpoint::apply`] changes the model and the
//! optimizer only after every check passed, so a checkpoint loads completely or not at all.

use crate::error::{ModelError, Result};
use crate::io::safetensors::{self, Dtype, SafeTensors};
use crate::optim::{param_sizes, Optimizer, OptimizerState};
use crate::weights;
use crate::zoo::Model;
use std::collections::BTreeMap;
use std::path::Path;

/// Prefix of optimizer entries (tensors and metadata scalars) in a checkpoint.
pub const OPTIM_PREFIX: &str = weights::OPTIMIZER_PREFIX;

/// The metadata keys of a checkpoint's training position.
const ARCH: &str = "tessera.arch";
const EPOCH: &str = "tessera.epoch";
const STEP: &str = "tessera.step";
const SEED: &str = "tessera.seed";
const OPT: &str = "tessera.opt";

/// A checkpoint as read from a file, split into its parts; not yet checked against a model.
#[derive(Debug, Clone, PartialEq)]
pub struct Checkpoint {
    /// Where it came from (names it in errors).
    pub source: String,
    /// The architecture it was trained as (`tessera.arch`).
    pub arch: String,
    /// The optimizer kind (`sgd`, `adamw`).
    pub opt: String,
    /// The run's seed (`tessera.seed`).
    pub seed: u64,
    /// Completed epochs.
    pub epoch: usize,
    /// Completed optimizer steps.
    pub step: usize,
    /// The model's tensors.
    pub weights: SafeTensors,
    /// The optimizer state.
    pub optimizer: OptimizerState,
    /// Problems found while splitting the file (bad dtypes, ranks, scalars), reported by
    /// [`Checkpoint::validate`] together with the others.
    problems: Vec<String>,
}

impl Checkpoint {
    /// Reads `path`. Errors only when the file is not a readable safetensors file or lacks the
    /// checkpoint metadata; every other problem is collected for [`Checkpoint::validate`].
    pub fn read(path: impl AsRef<Path>) -> Result<Checkpoint> {
        let path = path.as_ref();
        let file = safetensors::read(path)?;
        Checkpoint::from_safetensors(file, &path.display().to_string())
    }

    /// Splits already-read safetensors; `source` names them in errors.
    pub fn from_safetensors(file: SafeTensors, source: &str) -> Result<Checkpoint> {
        let bad = |m: String| ModelError::Weights {
            source: source.to_string(),
            problems: vec![m],
        };
        let meta = |k: &str| {
            file.metadata.get(k).cloned().ok_or_else(|| {
                bad(format!(
                    "not a tessera checkpoint: no {k:?} in the metadata"
                ))
            })
        };
        let int = |k: &str| -> Result<u64> {
            let v = meta(k)?;
            v.parse().map_err(|_| {
                bad(format!(
                    "metadata {k:?} is {v:?}, not a non-negative integer"
                ))
            })
        };
        let arch = meta(ARCH)?;
        let opt = meta(OPT)?;
        let seed = int(SEED)?;
        let epoch = usize::try_from(int(EPOCH)?).map_err(|_| bad("epoch too large".into()))?;
        let step = usize::try_from(int(STEP)?).map_err(|_| bad("step too large".into()))?;
        let mut problems = Vec::new();
        let mut weights = SafeTensors::default();
        let mut optimizer = OptimizerState::default();
        for (k, t) in file.tensors {
            let Some(name) = k.strip_prefix(OPTIM_PREFIX) else {
                weights.tensors.insert(k, t);
                continue;
            };
            if t.dtype != Dtype::F32 {
                problems.push(format!(
                    "optimizer tensor {k:?} has dtype {}, expected F32",
                    t.dtype.name()
                ));
                continue;
            }
            if t.shape.len() != 1 {
                problems.push(format!(
                    "optimizer tensor {k:?} has shape {:?}, expected one dimension",
                    t.shape
                ));
                continue;
            }
            match t.values {
                crate::io::Values::F32(v) => {
                    optimizer.tensors.insert(name.to_string(), v);
                }
                crate::io::Values::I64(_) => {
                    problems.push(format!("optimizer tensor {k:?} is not floating-point"))
                }
            }
        }
        for (k, v) in &file.metadata {
            let Some(name) = k.strip_prefix(OPTIM_PREFIX) else {
                continue;
            };
            match v.trim().parse::<f64>() {
                Ok(x) => {
                    optimizer.scalars.insert(name.to_string(), x);
                }
                Err(_) => problems.push(format!("optimizer scalar {k:?} is {v:?}, not a number")),
            }
        }
        Ok(Checkpoint {
            source: source.to_string(),
            arch,
            opt,
            seed,
            epoch,
            step,
            weights,
            optimizer,
            problems,
        })
    }

    /// Every problem of this checkpoint for `model` trained by `opt` (its kind named
    /// `opt_name`, with `seed`), as one [`ModelError::Weights`]; `Ok` when it can be applied.
    pub fn validate(
        &self,
        model: &dyn Model,
        opt: &dyn Optimizer,
        opt_name: &str,
        seed: u64,
    ) -> Result<()> {
        if self.arch != model.arch() {
            return Err(self.error(vec![format!(
                "checkpoint is for {}, not {}",
                self.arch,
                model.arch()
            )]));
        }
        if self.opt != opt_name || self.seed != seed {
            return Err(self.error(vec![format!(
                "checkpoint was trained with --opt {} --seed {}; resume with the same values",
                self.opt, self.seed
            )]));
        }
        let mut problems = self.problems.clone();
        if let Err(ModelError::Weights { problems: p, .. }) =
            weights::check_against(model, &self.weights, &self.source)
        {
            problems.extend(p);
        }
        problems.extend(opt.check_state(&self.optimizer, Some(&param_sizes(model))));
        // AdamW counts its own steps: it must agree with the trainer's.
        if let Some(&s) = self.optimizer.scalars.get("adamw.step") {
            if s.is_finite() && s as u64 as f64 == s && s as u64 != self.step as u64 {
                problems.push(format!(
                    "optimizer scalar \"adamw.step\" is {s} but the checkpoint completed {} steps",
                    self.step
                ));
            }
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(self.error(problems))
        }
    }

    /// Validates, then loads the weights into `model` and the state into `opt`; on error
    /// neither is changed.
    pub fn apply(
        &self,
        model: &mut dyn Model,
        opt: &mut dyn Optimizer,
        opt_name: &str,
        seed: u64,
    ) -> Result<()> {
        self.validate(model, opt, opt_name, seed)?;
        // Both checked above: neither load can fail on the checkpoint's content now. The
        // optimizer goes first (it has no partial state to undo).
        opt.load_state(&self.optimizer)?;
        weights::load_from(model, &self.weights, &self.source)
    }

    fn error(&self, problems: Vec<String>) -> ModelError {
        ModelError::Weights {
            source: self.source.clone(),
            problems,
        }
    }
}

/// Writes `model`'s tensors, `opt`'s state and the training position to `path` atomically
/// (see [`crate::io::atomic`]).
pub fn save(
    path: impl AsRef<Path>,
    model: &dyn Model,
    opt: &dyn Optimizer,
    opt_name: &str,
    seed: u64,
    epoch: usize,
    step: usize,
) -> Result<()> {
    let state = opt.state();
    let mut owned: Vec<(String, Vec<usize>, Vec<f32>)> = crate::module::named_tensors(model)
        .into_iter()
        .map(|(n, t, _)| (n, t.shape().to_vec(), t.to_vec()))
        .collect();
    for (k, v) in state.tensors {
        owned.push((format!("{OPTIM_PREFIX}{k}"), vec![v.len()], v));
    }
    let refs: Vec<safetensors::TensorRef<'_>> = owned
        .iter()
        .map(|(n, s, d)| safetensors::TensorRef {
            name: n,
            shape: s,
            data: d,
        })
        .collect();
    let mut meta = BTreeMap::new();
    meta.insert(ARCH.into(), model.arch().to_string());
    meta.insert(EPOCH.into(), epoch.to_string());
    meta.insert(STEP.into(), step.to_string());
    meta.insert(SEED.into(), seed.to_string());
    meta.insert(OPT.into(), opt_name.into());
    for (k, v) in state.scalars {
        meta.insert(format!("{OPTIM_PREFIX}{k}"), format!("{v:e}"));
    }
    safetensors::write(path, &refs, &meta)?;
    Ok(())
}
