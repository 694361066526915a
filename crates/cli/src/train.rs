//! `tessera train ARCH [overrides] --dataset digits|cifar10 ...`: trains a network from scratch
//! (or resumes a checkpoint) with the models crate's training loop, showing progress, and saves
//! atomic checkpoints.
//!
//! Output: a progress line on a terminal (step, loss, accuracy, images/s, ETA), one plain line
//! per epoch otherwise; with `--json`, one object per epoch (`epoch`, `train_loss`, `train_acc`,
//! `test_acc`, `test_top5`, `images_per_s`) and a final object with `final_test_acc`, `seconds`,
//! `epochs` and the optimizer settings used (`opt`, `lr`, `weight_decay`: the architecture's
//! recipe, `tessera::models::recipes`, unless given on the command line).

use crate::overrides::{build, OverrideArgs};
use clap::Args;
use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::time::Instant;
use tessera::models::data::{cifar10, digits_split, Dataset};
use tessera::models::recipes::{optimizer_defaults, recipe};
use tessera::models::train::{OptKind, StepInfo, TrainConfig, Trainer};

/// Options of `tessera train`.
#[derive(Args)]
pub struct TrainArgs {
    /// Architecture name (see `tessera info --help`; the `*_digits` presets suit 8x8 digits).
    pub arch: String,
    #[command(flatten)]
    pub overrides: OverrideArgs,
    /// `digits` (embedded, offline) or `cifar10` (binary files in --data).
    #[arg(long, default_value = "digits")]
    pub dataset: String,
    /// Directory of the CIFAR-10 binary files (data_batch_1.bin ... test_batch.bin).
    #[arg(long, value_name = "DIR")]
    pub data: Option<PathBuf>,
    /// Epochs (default: the architecture's recipe, `tessera::models::recipes::recipe`: 60 for
    /// ViT and 20 for the MobileNets and ResNets on digits, 50 on cifar10).
    #[arg(long)]
    pub epochs: Option<usize>,
    /// Batch size.
    #[arg(long, default_value_t = 64)]
    pub batch: usize,
    /// Peak learning rate (default: the recipe's, 2e-3 for adamw, 0.02 for the MobileNets with
    /// sgd, 0.05 for others with sgd).
    #[arg(long)]
    pub lr: Option<f32>,
    /// `adamw` or `sgd` (Nesterov momentum 0.9) (default: the recipe's: adamw for ViT and the
    /// ResNets, sgd for the MobileNets).
    #[arg(long)]
    pub opt: Option<String>,
    /// Weight decay (default: 0.05 for adamw, 5e-4 for sgd); norms, biases and ViT's position
    /// embedding and class token get none.
    #[arg(long)]
    pub weight_decay: Option<f32>,
    /// Label smoothing of the cross-entropy.
    #[arg(long, default_value_t = 0.0)]
    pub label_smoothing: f32,
    /// Seed of the initial weights, the data order and the augmentation.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Worker threads (0 = one per core).
    #[arg(long, default_value_t = 0)]
    pub threads: usize,
    /// Write a checkpoint here after every epoch (atomically: temporary file, then rename).
    #[arg(long, value_name = "CKPT")]
    pub save: Option<PathBuf>,
    /// Continue from a checkpoint written by --save (same arch, overrides, --opt and --seed).
    #[arg(long, value_name = "CKPT")]
    pub resume: Option<PathBuf>,
    /// One JSON object per epoch and a final summary object.
    #[arg(long)]
    pub json: bool,
    /// Check every stage output and parameter gradient for NaN / infinity and stop at the
    /// first, naming the stage (and op) or parameter (slower).
    #[arg(long)]
    pub detect_anomaly: bool,
}

fn load_data(args: &TrainArgs) -> Result<(Dataset, Dataset), String> {
    match args.dataset.as_str() {
        "digits" => {
            if args.data.is_some() {
                return Err(
                    "train: --data applies to --dataset cifar10 only (digits are embedded)".into(),
                );
            }
            // Pixels stay in [0, 1] (value / 16), no normalisation: a trained model then takes
            // exactly what `tessera run` is given.
            // No augmentation (the recipe's choice): on 8x8 images even one-pixel shifts cost
            // more accuracy than they regularise (measured: 86% vs 96% test accuracy for
            // vit_digits at 40 epochs).
            digits_split().map_err(|e| e.to_string())
        }
        "cifar10" => {
            let dir = args.data.as_ref().ok_or(
                "train: --dataset cifar10 needs --data DIR with the CIFAR-10 binary files",
            )?;
            let (mut train, mut test) = cifar10(dir).map_err(|e| e.to_string())?;
            // The usual CIFAR-10 channel statistics.
            let (mean, std) = ([0.4914, 0.4822, 0.4465], [0.2470, 0.2435, 0.2616]);
            train.normalize(&mean, &std).map_err(|e| e.to_string())?;
            test.normalize(&mean, &std).map_err(|e| e.to_string())?;
            // The recipe adds random crops (4 pixels of padding) and flips.
            Ok((train, test))
        }
        other => Err(format!(
            "train: unknown dataset {other:?}; expected digits or cifar10"
        )),
    }
}

fn fmt_duration(s: f64) -> String {
    let s = s.max(0.0) as u64;
    format!("{:02}:{:02}", s / 60, s % 60)
}

/// Runs `tessera train`.
pub fn run(args: &TrainArgs) -> Result<(), String> {
    let threads = crate::init_threads(args.threads)?;
    tessera::models::anomaly::set_enabled(args.detect_anomaly);
    // A save that would fail is found now, not after the first epoch.
    if let Some(path) = &args.save {
        tessera::models::io::atomic::check_writable(path)
            .map_err(|e| format!("train: cannot save the checkpoint to --save {e}"))?;
    }
    let (train, test) = load_data(args)?;
    let mut model = build("train", &args.arch, &args.overrides, args.seed)?;
    if model.input_chw() != train.chw || model.num_classes() != train.num_classes {
        return Err(format!(
            "train {}: the model takes {:?} images and predicts {} classes, but {} has {:?} images and {} classes; \
             use a *_digits preset or --in-chans {} --img-size {} --num-classes {}",
            args.arch,
            model.input_chw(),
            model.num_classes(),
            train.name,
            train.chw,
            train.num_classes,
            train.chw[0],
            train.chw[1],
            train.num_classes
        ));
    }
    // The architecture's recipe, then what the command line says.
    let mut cfg = recipe(&args.arch, &args.dataset);
    if let Some(name) = &args.opt {
        let opt = OptKind::parse(name).map_err(|e| format!("train: {e}"))?;
        if opt != cfg.opt {
            // Another optimizer than the recipe's: its own default lr and weight decay.
            cfg.opt = opt;
            (cfg.lr, cfg.weight_decay) = optimizer_defaults(opt);
        }
    }
    let cfg = TrainConfig {
        epochs: args.epochs.unwrap_or(cfg.epochs),
        batch: args.batch,
        lr: args.lr.unwrap_or(cfg.lr),
        weight_decay: args.weight_decay.unwrap_or(cfg.weight_decay),
        label_smoothing: args.label_smoothing,
        seed: args.seed,
        ..cfg
    };
    let mut trainer = match &args.resume {
        Some(path) => Trainer::resume(cfg, model.as_mut(), train.len(), path)
            .map_err(|e| format!("train: cannot resume: {e}"))?,
        None => {
            Trainer::new(cfg, model.as_mut(), train.len()).map_err(|e| format!("train: {e}"))?
        }
    };
    let progress = !args.json && std::io::stderr().is_terminal();
    if !args.json {
        outln!(
            "tessera train {} on {} ({} train / {} test images), {} epochs, batch {}, {} lr {}, {threads} thread(s){}",
            args.arch,
            train.name,
            train.len(),
            test.len(),
            trainer.cfg.epochs,
            trainer.cfg.batch,
            trainer.cfg.opt.name(),
            trainer.cfg.lr,
            if trainer.epoch > 0 { format!(", resumed at epoch {}", trainer.epoch) } else { String::new() }
        );
    }
    let t0 = Instant::now();
    let start_epoch = trainer.epoch;
    let mut last = None;
    while !trainer.finished() {
        let epochs = trainer.cfg.epochs;
        let mut on_step = |s: &StepInfo| {
            if progress {
                let done = (s.epoch - 1 - start_epoch) * s.steps_per_epoch + s.step_in_epoch;
                let total = (epochs - start_epoch) * s.steps_per_epoch;
                let elapsed = t0.elapsed().as_secs_f64();
                let eta = elapsed / done as f64 * (total - done) as f64;
                let width = 24;
                let filled = s.step_in_epoch * width / s.steps_per_epoch.max(1);
                eprint!(
                    "\repoch {:>3}/{epochs} [{}{}] {:>4}/{} loss {:.4} acc {:.3} {:>6.0} img/s ETA {}   ",
                    s.epoch,
                    "#".repeat(filled),
                    ".".repeat(width - filled),
                    s.step_in_epoch,
                    s.steps_per_epoch,
                    s.loss,
                    s.acc,
                    s.images_per_s,
                    fmt_duration(eta)
                );
                let _ = std::io::stderr().flush();
            }
        };
        let stats = trainer
            .run_epoch(model.as_mut(), &train, &test, &mut on_step)
            .map_err(|e| format!("train: {e}"))?;
        if progress {
            eprint!("\r{}\r", " ".repeat(100));
        }
        if args.json {
            outln!(
                "{}",
                serde_json::json!({
                    "epoch": stats.epoch, "train_loss": stats.train_loss, "train_acc": stats.train_acc,
                    "test_acc": stats.test_acc, "test_top5": stats.test_top5, "images_per_s": stats.images_per_s,
                })
            );
        } else {
            outln!(
                "epoch {:>3}/{}  train loss {:.4}  train acc {:.4}  test acc {:.4}  top-5 {:.4}  {:.0} img/s",
                stats.epoch,
                trainer.cfg.epochs,
                stats.train_loss,
                stats.train_acc,
                stats.test_acc,
                stats.test_top5,
                stats.images_per_s
            );
        }
        if let Some(path) = &args.save {
            trainer
                .save_checkpoint(model.as_ref(), path)
                .map_err(|e| format!("train: cannot save the checkpoint: {e}"))?;
        }
        last = Some(stats);
    }
    let elapsed = t0.elapsed().as_secs_f64();
    let final_acc = last.map(|s| s.test_acc);
    if args.json {
        outln!(
            "{}",
            serde_json::json!({
                "final_test_acc": final_acc, "seconds": elapsed, "epochs": trainer.epoch,
                "opt": trainer.cfg.opt.name(), "lr": trainer.cfg.lr, "weight_decay": trainer.cfg.weight_decay,
            })
        );
    } else {
        match final_acc {
            Some(a) => outln!(
                "done: test accuracy {:.2}% after {} epochs in {}",
                a * 100.0,
                trainer.epoch,
                fmt_duration(elapsed)
            ),
            None => outln!(
                "nothing to do: the checkpoint already completed {} epochs",
                trainer.epoch
            ),
        }
        if let Some(path) = &args.save {
            outln!("checkpoint: {}", path.display());
        }
    }
    Ok(())
}
