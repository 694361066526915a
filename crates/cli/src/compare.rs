//! `tessera compare ARCH... --plot FILE.svg`: trains several architectures on the embedded
//! digits, each with its own recipe (`tessera::models::recipes::recipe`), one after the other
//! in this process, and plots their test accuracy against epochs and against wall-clock
//! seconds in one SVG. It puts the claim that a vision transformer trains faster than a ResNet
//! to a measurement (`docs/training.md`).
//!
//! The seconds are training plus the per-epoch evaluation, as the user waits for them; the
//! runs are sequential, so they do not compete for cores.

use crate::overrides::{build, OverrideArgs};
use crate::plot::{self, Panel, Series, PALETTE};
use clap::Args;
use std::path::PathBuf;
use std::time::Instant;
use tessera::models::data::digits_split;
use tessera::models::recipes::recipe;
use tessera::models::train::{TrainConfig, Trainer};

/// Options of `tessera compare`.
#[derive(Args)]
pub struct CompareArgs {
    /// Architectures to train on the digits (at least one; e.g. `vit_digits resnet_digits`).
    #[arg(required = true, num_args = 1..)]
    pub archs: Vec<String>,
    /// Epochs for every architecture (default: each one's recipe: 60 for ViT, 20 for the
    /// ResNets and MobileNets).
    #[arg(long)]
    pub epochs: Option<usize>,
    /// Seed of the weights and the data order.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Worker threads (0 = one per core).
    #[arg(long, default_value_t = 0)]
    pub threads: usize,
    /// Write the accuracy-vs-epochs and accuracy-vs-seconds chart here.
    #[arg(long, value_name = "SVG")]
    pub plot: Option<PathBuf>,
    /// One JSON object per epoch of each run (`arch`, `epoch`, `seconds`, `test_acc`,
    /// `train_loss`) and one summary per run.
    #[arg(long)]
    pub json: bool,
}

/// One run's curve: `(epoch, seconds since the start, test accuracy)`.
struct Curve {
    arch: String,
    points: Vec<(usize, f64, f32)>,
}

/// The chart: test accuracy against epochs (left) and against seconds (right).
fn chart(curves: &[Curve], caption: &str) -> String {
    let mk = |x_label: &str, by_time: bool| Panel {
        title: format!("test accuracy vs {x_label}"),
        x_label: x_label.into(),
        y_label: "test top-1 accuracy".into(),
        series: curves
            .iter()
            .enumerate()
            .map(|(i, c)| Series {
                label: c.arch.clone(),
                points: c
                    .points
                    .iter()
                    .map(|&(e, s, a)| (if by_time { s } else { e as f64 }, a as f64))
                    .collect(),
                colour: PALETTE[i % PALETTE.len()],
                dashed: false,
            })
            .collect(),
        y_range: Some((0.0, 1.0)),
    };
    plot::render(
        &[mk("epochs", false), mk("wall-clock seconds", true)],
        caption,
    )
}

/// Runs `tessera compare`.
pub fn run(args: &CompareArgs) -> Result<(), String> {
    let threads = crate::init_threads(args.threads)?;
    let (train, test) = digits_split().map_err(|e| e.to_string())?;
    let mut curves = Vec::new();
    for arch in &args.archs {
        let mut model = build("compare", arch, &OverrideArgs::default(), args.seed)?;
        if model.input_chw() != train.chw || model.num_classes() != train.num_classes {
            return Err(format!(
                "compare: {arch} takes {:?} images with {} classes; the digits are {:?} with {} (use *_digits presets)",
                model.input_chw(),
                model.num_classes(),
                train.chw,
                train.num_classes
            ));
        }
        let base = recipe(arch, "digits");
        let cfg = TrainConfig {
            epochs: args.epochs.unwrap_or(base.epochs),
            seed: args.seed,
            ..base
        };
        if !args.json {
            outln!(
                "{arch}: {} epochs, {} lr {}, batch {}, {threads} thread(s)",
                cfg.epochs,
                cfg.opt.name(),
                cfg.lr,
                cfg.batch
            );
        }
        let mut trainer =
            Trainer::new(cfg, model.as_mut(), train.len()).map_err(|e| format!("compare: {e}"))?;
        let t0 = Instant::now();
        let mut points = Vec::new();
        while !trainer.finished() {
            // On a worker of the pool, as `tessera train` runs its epochs (see
            // `run_plan_with`).
            let stats = crate::bench::model::run_plan_with(|| {
                trainer.run_epoch(model.as_mut(), &train, &test, &mut |_| {})
            })
            .map_err(|e| format!("compare {arch}: {e}"))?;
            let s = t0.elapsed().as_secs_f64();
            points.push((stats.epoch, s, stats.test_acc));
            if args.json {
                outln!(
                    "{}",
                    serde_json::json!({"arch": arch, "epoch": stats.epoch, "seconds": s,
                        "test_acc": stats.test_acc, "train_loss": stats.train_loss})
                );
            } else {
                outln!(
                    "  epoch {:>3}  {:>7.1} s  test acc {:.4}",
                    stats.epoch,
                    s,
                    stats.test_acc
                );
            }
        }
        let (last_epoch, secs, acc) = points.last().copied().unwrap_or((0, 0.0, 0.0));
        // First epoch at which the run reaches 95% test accuracy, with its time.
        let at95 = points.iter().find(|p| p.2 >= 0.95).copied();
        if args.json {
            outln!(
                "{}",
                serde_json::json!({"arch": arch, "final_test_acc": acc, "epochs": last_epoch, "seconds": secs,
                    "epoch_to_95": at95.map(|p| p.0), "seconds_to_95": at95.map(|p| p.1)})
            );
        } else {
            outln!(
                "{arch}: {:.2}% after {last_epoch} epochs in {secs:.1} s; 95% first reached {}",
                acc * 100.0,
                at95.map_or("never".to_string(), |p| format!(
                    "at epoch {} ({:.1} s)",
                    p.0, p.1
                ))
            );
        }
        curves.push(Curve {
            arch: arch.clone(),
            points,
        });
    }
    if let Some(path) = &args.plot {
        let isa = tessera::kernels::Isa::current().map_or("?".into(), |i| i.name().to_string());
        let caption = format!(
            "tessera compare {} --seed {} on the embedded digits (1437 train / 360 test), {threads} thread(s), {isa}; each with its recipe",
            args.archs.join(" "),
            args.seed
        );
        plot::write_atomically(path, &chart(&curves, &caption))?;
        if !args.json {
            outln!("chart: {}", path.display());
        }
    }
    Ok(())
}
