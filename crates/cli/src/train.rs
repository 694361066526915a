//! `tessera train ARCH [overrides] --dataset digits|cifar10|folder:DIR ...`: trains a network
//! from scratch, fine-tunes it from pretrained timm weights (`--weights`), or resumes a
//! checkpoint, with the models crate's training loop, showing progress.
//!
//! Files: `--save` writes the trained weights only (a timm `state_dict`, loadable by
//! `timm.create_model(...).load_state_dict(..., strict=True)` and by `tessera run --weights`);
//! `--checkpoint` writes weights, optimizer state and position after every epoch (atomically),
//! which `--resume` continues from; `--plot` draws the loss and accuracy curves as an SVG.
//!
//! Output: a progress line on a terminal (step, loss, accuracy, images/s, ETA), one plain line
//! per epoch otherwise; with `--json`, one object per epoch (`epoch`, `train_loss`, `train_acc`,
//! `test_loss`, `test_acc`, `test_top5`, `images_per_s`, `seconds`) and a final object with
//! `final_test_acc`, `seconds`, `epochs` and the optimizer settings used (`opt`, `lr`,
//! `weight_decay`: the architecture's recipe, `tessera::models::recipes`, unless given on the
//! command line).

use crate::distributed::{Dist, DistArgs};
use crate::overrides::{build, OverrideArgs};
use crate::plot::{self, Panel, Series, PALETTE};
use clap::Args;
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::time::Instant;
use tessera::models::data::{cifar10, digits_split, image_folder_splits, Dataset, ImageFolder};
use tessera::models::finetune::{load_pretrained, save_weights};
use tessera::models::preprocess::{EvalTransform, Interpolation};
use tessera::models::recipes::{finetune_recipe, optimizer_defaults, recipe};
use tessera::models::train::{EpochStats, OptKind, StepInfo, TrainConfig, Trainer};
use tessera::models::zoo::Model;

/// Options of `tessera train`.
#[derive(Args)]
pub struct TrainArgs {
    /// Architecture name (`tessera list` shows them all; the `*_digits` presets suit 8x8 digits).
    pub arch: String,
    #[command(flatten)]
    pub overrides: OverrideArgs,
    /// `digits` (embedded, offline), `cifar10` (binary files in --data) or `folder:DIR` (one
    /// sub-folder of PNG/JPEG/WebP images per class; `DIR/train` + `DIR/val` if both exist,
    /// else a held-out part, --val-fraction).
    #[arg(long, default_value = "digits")]
    pub dataset: String,
    /// Directory of the CIFAR-10 binary files (data_batch_1.bin ... test_batch.bin).
    #[arg(long, value_name = "DIR")]
    pub data: Option<PathBuf>,
    /// Fraction of each class held out for evaluation when a folder data set has no `val/`.
    #[arg(long, default_value_t = 0.2, value_name = "F")]
    pub val_fraction: f64,
    /// Start from these weights (a timm state dict in safetensors, e.g. a Hugging Face
    /// `model.safetensors`, or a `--save` file): fine-tuning. The classifier is re-initialised
    /// when its class count differs from the data set's.
    #[arg(long, value_name = "W")]
    pub weights: Option<PathBuf>,
    /// Epochs (default: the recipe's, `tessera::models::recipes`: 60 for ViT and 20 for the
    /// MobileNets and ResNets on digits, 50 on cifar10, 10 when fine-tuning).
    #[arg(long)]
    pub epochs: Option<usize>,
    /// Batch size (default: the recipe's, 64; 32 when fine-tuning).
    #[arg(long)]
    pub batch: Option<usize>,
    /// Peak learning rate (default: the recipe's, 2e-3 for adamw, 0.02 for the MobileNets with
    /// sgd, 0.05 for others with sgd; a tenth of that when fine-tuning).
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
    /// No augmentation, even where the recipe has some.
    #[arg(long)]
    pub no_augment: bool,
    /// Seed of the initial weights, the data order, the held-out split and the augmentation.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Worker threads (0 = one per core).
    #[arg(long, default_value_t = 0)]
    pub threads: usize,
    /// Write the trained weights only (timm `state_dict` keys, no optimizer state) here at the
    /// end.
    #[arg(long, value_name = "W")]
    pub save: Option<PathBuf>,
    /// Write a resumable checkpoint (weights, optimizer state, epoch) here after every epoch,
    /// atomically.
    #[arg(long, value_name = "CKPT")]
    pub checkpoint: Option<PathBuf>,
    /// Continue from a --checkpoint file (same arch, overrides, data set, --opt and --seed).
    #[arg(long, value_name = "CKPT")]
    pub resume: Option<PathBuf>,
    /// Draw the loss and accuracy per epoch (train and test) to this SVG, rewritten after
    /// every epoch.
    #[arg(long, value_name = "SVG")]
    pub plot: Option<PathBuf>,
    /// One JSON object per epoch and a final summary object.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub dist: DistArgs,
    /// Check the output of every op, forward and backward, for NaN / infinity and stop at the
    /// first, naming the op and the module it ran in (slower).
    #[arg(long)]
    pub detect_anomaly: bool,
}

/// Where the training images come from.
enum Source {
    Digits,
    Cifar10(PathBuf),
    Folder(ImageFolder, ImageFolder),
}

fn source(args: &TrainArgs) -> Result<Source, String> {
    if let Some(dir) = args.dataset.strip_prefix("folder:") {
        if args.data.is_some() {
            return Err(
                "train: --data applies to --dataset cifar10 only (folder:DIR names its directory)"
                    .into(),
            );
        }
        let (train, val) = image_folder_splits(dir, args.val_fraction, args.seed)
            .map_err(|e| format!("train: {e}"))?;
        return Ok(Source::Folder(train, val));
    }
    match args.dataset.as_str() {
        "digits" => {
            if args.data.is_some() {
                return Err(
                    "train: --data applies to --dataset cifar10 only (digits are embedded)".into(),
                );
            }
            Ok(Source::Digits)
        }
        "cifar10" => {
            let dir = args.data.as_ref().ok_or(
                "train: --dataset cifar10 needs --data DIR with the CIFAR-10 binary files",
            )?;
            Ok(Source::Cifar10(dir.clone()))
        }
        other => Err(format!(
            "train: unknown dataset {other:?}; expected digits, cifar10 or folder:DIR"
        )),
    }
}

/// The preprocessing of folder images for `arch`: timm's evaluation transform with the
/// architecture's pretrained config, or, for the 8x8 `*_digits` presets (trained on pixels in
/// [0, 1]), a plain resize without normalisation.
fn folder_transform(arch: &str, chw: [usize; 3]) -> Result<EvalTransform, String> {
    let t = EvalTransform::for_arch(arch, chw).map_err(|e| format!("train: {e}"))?;
    Ok(if arch.ends_with("_digits") {
        EvalTransform {
            crop_pct: 1.0,
            interpolation: Interpolation::Bilinear,
            mean: [0.0; 3],
            std: [1.0; 3],
            ..t
        }
    } else {
        t
    })
}

fn load_data(src: &Source, model: &dyn Model, arch: &str) -> Result<(Dataset, Dataset), String> {
    match src {
        // Pixels stay in [0, 1] (value / 16), no normalisation: a trained model then takes
        // exactly what `tessera run` is given.
        Source::Digits => digits_split().map_err(|e| e.to_string()),
        Source::Cifar10(dir) => {
            let (mut train, mut test) = cifar10(dir).map_err(|e| e.to_string())?;
            // The usual CIFAR-10 channel statistics.
            let (mean, std) = ([0.4914, 0.4822, 0.4465], [0.2470, 0.2435, 0.2616]);
            train.normalize(&mean, &std).map_err(|e| e.to_string())?;
            test.normalize(&mean, &std).map_err(|e| e.to_string())?;
            Ok((train, test))
        }
        Source::Folder(train, val) => {
            let chw = model.input_chw();
            let transform = folder_transform(arch, chw)?;
            let decode = |p: &Path| transform.load(p).map_err(|e| e.to_string());
            let train = train
                .load(chw, &decode)
                .map_err(|e| format!("train: {e}"))?;
            let val = val.load(chw, &decode).map_err(|e| format!("train: {e}"))?;
            Ok((train, val))
        }
    }
}

fn fmt_duration(s: f64) -> String {
    let s = s.max(0.0) as u64;
    format!("{:02}:{:02}", s / 60, s % 60)
}

/// The training configuration: the recipe (fine-tuning or from scratch), then the command line.
fn config(args: &TrainArgs, dataset_kind: &str) -> Result<TrainConfig, String> {
    let mut cfg = if args.weights.is_some() {
        finetune_recipe(&args.arch)
    } else {
        recipe(&args.arch, dataset_kind)
    };
    if let Some(name) = &args.opt {
        let opt = OptKind::parse(name).map_err(|e| format!("train: {e}"))?;
        if opt != cfg.opt {
            // Another optimizer than the recipe's: its own default lr and weight decay.
            let scale = if args.weights.is_some() { 0.1 } else { 1.0 };
            cfg.opt = opt;
            (cfg.lr, cfg.weight_decay) = optimizer_defaults(opt);
            cfg.lr *= scale;
        }
    }
    Ok(TrainConfig {
        epochs: args.epochs.unwrap_or(cfg.epochs),
        batch: args.batch.unwrap_or(cfg.batch),
        lr: args.lr.unwrap_or(cfg.lr),
        weight_decay: args.weight_decay.unwrap_or(cfg.weight_decay),
        label_smoothing: args.label_smoothing,
        seed: args.seed,
        augment: if args.no_augment { None } else { cfg.augment },
        ..cfg
    })
}

/// The `--plot` figure: loss and accuracy per epoch, train and test.
pub fn curves_svg(title: &str, history: &[EpochStats]) -> String {
    let pts = |f: &dyn Fn(&EpochStats) -> f32| -> Vec<(f64, f64)> {
        history
            .iter()
            .map(|s| (s.epoch as f64, f(s) as f64))
            .collect()
    };
    let series = |label: &str, i: usize, dashed: bool, points| Series {
        label: label.into(),
        points,
        colour: PALETTE[i],
        dashed,
    };
    let loss = Panel {
        title: "loss (cross-entropy)".into(),
        x_label: "epoch".into(),
        y_label: "loss".into(),
        series: vec![
            series("train", 0, false, pts(&|s| s.train_loss)),
            series("test", 1, true, pts(&|s| s.test_loss)),
        ],
        y_range: None,
    };
    let acc = Panel {
        title: "top-1 accuracy".into(),
        x_label: "epoch".into(),
        y_label: "accuracy".into(),
        series: vec![
            series("train", 0, false, pts(&|s| s.train_acc)),
            series("test", 1, true, pts(&|s| s.test_acc)),
        ],
        y_range: Some((0.0, 1.0)),
    };
    plot::render(&[loss, acc], title)
}

/// Runs `tessera train`: one process, or one of a data-parallel MPI job (see
/// `docs/distributed.md`), where an error on any process ends the whole job.
pub fn run(args: &TrainArgs) -> Result<(), String> {
    let mut dist = crate::distributed::start(&args.dist)?;
    let result = run_on(args, dist.as_mut());
    if let (Err(msg), Some(d)) = (&result, &dist) {
        if d.size() > 1 {
            d.abort(msg);
        }
    }
    result
}

fn run_on(args: &TrainArgs, mut dist: Option<&mut Dist>) -> Result<(), String> {
    // In a data-parallel job rank 0 alone logs, evaluates and saves.
    let root = dist.as_ref().is_none_or(|d| d.is_root());
    let threads = crate::init_threads(match &dist {
        Some(d) if args.threads == 0 => d.local_threads(),
        _ => args.threads,
    })?;
    tessera::models::anomaly::set_enabled(args.detect_anomaly);
    // A save that would fail is found now, not after the first epoch.
    for (flag, path) in [("--save", &args.save), ("--checkpoint", &args.checkpoint)] {
        if let Some(path) = path {
            tessera::models::io::atomic::check_writable(path)
                .map_err(|e| format!("train: cannot write {flag} {e}"))?;
        }
    }
    let src = source(args)?;
    let mut overrides = args.overrides.clone();
    if let Source::Folder(train, _) = &src {
        let k = train.classes.len();
        match overrides.num_classes {
            Some(n) if n != k => {
                return Err(format!(
                    "train: --num-classes {n} but {} has {k} class folders",
                    train.name
                ))
            }
            _ => overrides.num_classes = Some(k),
        }
    }
    let mut model = build("train", &args.arch, &overrides, args.seed)?;
    let (train, test) = load_data(&src, model.as_ref(), &args.arch)?;
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
    if let Some(w) = &args.weights {
        if args.resume.is_some() {
            return Err(
                "train: --weights starts a new run; --resume continues one (give one of them)"
                    .into(),
            );
        }
        let loaded = load_pretrained(model.as_mut(), w).map_err(|e| format!("train: {e}"))?;
        if root && !loaded.reinitialised.is_empty() && !args.json {
            eprintln!(
                "train: the classifier ({}) is re-initialised: {} classes in {}, {} in the data set",
                loaded.reinitialised.join(", "),
                loaded.file_classes.map_or("none".to_string(), |k| k.to_string()),
                w.display(),
                model.num_classes()
            );
        }
    }
    let kind = if matches!(src, Source::Folder(..)) {
        "folder"
    } else {
        args.dataset.as_str()
    };
    let cfg = config(args, kind)?;
    let mut trainer = match &args.resume {
        // Other ranks receive the resumed state from rank 0 (`prepare`).
        Some(path) if root => Trainer::resume(cfg, model.as_mut(), train.len(), path)
            .map_err(|e| format!("train: cannot resume: {e}"))?,
        _ => Trainer::new(cfg, model.as_mut(), train.len()).map_err(|e| format!("train: {e}"))?,
    };
    if let Some(d) = dist.as_deref_mut() {
        d.prepare(&mut trainer, model.as_mut(), train.len())?;
    }
    let progress = root && !args.json && std::io::stderr().is_terminal();
    if root && !args.json {
        outln!(
            "tessera train {} on {} ({} train / {} test images, {} classes), {} epochs, batch {}, {} lr {}, {threads} thread(s){}{}{}",
            args.arch,
            train.name,
            train.len(),
            test.len(),
            train.num_classes,
            trainer.cfg.epochs,
            trainer.cfg.batch,
            trainer.cfg.opt.name(),
            trainer.cfg.lr,
            if args.weights.is_some() { ", from pretrained weights" } else { "" },
            if trainer.epoch > 0 { format!(", resumed at epoch {}", trainer.epoch) } else { String::new() },
            dist.as_ref().map_or(String::new(), |d| format!(" per process, {} processes", d.size()))
        );
    }
    let t0 = Instant::now();
    let start_epoch = trainer.epoch;
    let mut history: Vec<EpochStats> = Vec::new();
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
        let parallel = dist.as_deref_mut().map(|d| d.parallel());
        let stats = match parallel {
            // On a worker of the pool, so the steps' parallel regions start inside it instead
            // of each being sent to it and waited for (at one thread, MobileNetV3-Large's
            // batch-8 step 388 -> 342 ms). A distributed run stays on the thread that
            // initialised MPI.
            None => crate::bench::model::run_plan_with(|| {
                trainer.run_epoch_parallel(model.as_mut(), &train, &test, None, &mut on_step)
            }),
            Some(p) => {
                trainer.run_epoch_parallel(model.as_mut(), &train, &test, Some(p), &mut on_step)
            }
        }
        .map_err(|e| format!("train: {e}"))?;
        if let Some(d) = dist.as_deref_mut() {
            d.after_epoch(model.as_ref())?;
        }
        if !root {
            history.push(stats);
            continue;
        }
        if progress {
            eprint!("\r{}\r", " ".repeat(100));
        }
        let seconds = t0.elapsed().as_secs_f64();
        if args.json {
            outln!(
                "{}",
                serde_json::json!({
                    "epoch": stats.epoch, "train_loss": stats.train_loss, "train_acc": stats.train_acc,
                    "test_loss": stats.test_loss, "test_acc": stats.test_acc, "test_top5": stats.test_top5,
                    "images_per_s": stats.images_per_s, "seconds": seconds,
                })
            );
        } else {
            outln!(
                "epoch {:>3}/{}  train loss {:.4}  train acc {:.4}  test loss {:.4}  test acc {:.4}  top-5 {:.4}  {:.0} img/s",
                stats.epoch,
                trainer.cfg.epochs,
                stats.train_loss,
                stats.train_acc,
                stats.test_loss,
                stats.test_acc,
                stats.test_top5,
                stats.images_per_s
            );
        }
        if let Some(path) = &args.checkpoint {
            trainer
                .save_checkpoint(model.as_ref(), path)
                .map_err(|e| format!("train: cannot save the checkpoint: {e}"))?;
        }
        history.push(stats);
        if let Some(path) = &args.plot {
            let title = format!(
                "tessera train {} on {}, seed {}",
                args.arch, train.name, args.seed
            );
            plot::write_atomically(path, &curves_svg(&title, &history))
                .map_err(|e| format!("train: {e}"))?;
        }
    }
    let elapsed = t0.elapsed().as_secs_f64();
    if !root {
        return Ok(());
    }
    if let Some(path) = &args.save {
        save_weights(model.as_ref(), path)
            .map_err(|e| format!("train: cannot save the weights: {e}"))?;
    }
    let final_acc = history.last().map(|s| s.test_acc);
    if args.json {
        let mut summary = serde_json::json!({
            "final_test_acc": final_acc, "seconds": elapsed, "epochs": trainer.epoch,
            "opt": trainer.cfg.opt.name(), "lr": trainer.cfg.lr, "weight_decay": trainer.cfg.weight_decay,
        });
        if let Some(d) = &dist {
            summary["distributed"] = d.summary();
        }
        outln!("{summary}");
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
            outln!("weights: {}", path.display());
        }
        if let Some(path) = &args.checkpoint {
            outln!("checkpoint: {}", path.display());
        }
        if let Some(path) = &args.plot {
            outln!("curves: {}", path.display());
        }
    }
    Ok(())
}
