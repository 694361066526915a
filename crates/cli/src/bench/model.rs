//! `tessera bench ARCH [overrides] [--batch B] [--threads T] [--iters N] [--weights W] [--json]`
//! and `tessera bench models`: inference latency of a whole network (eval mode, no graph
//! recorded, random input), median and 90th percentile over `N` timed runs after two warm-up
//! runs. `models` runs the four headline networks of the seed documents at 224x224:
//! vit_base_patch16_224, mobilenetv2_100, mobilenetv3_large_100 and seresnet101.
//!
//! Weights are random (timm's initialisation) unless `--weights` is given: the time of a dense
//! network does not depend on the values. `--json` rows name the instruction set in use (`isa`)
//! and the CPU model (`cpu`), as the kernel benches do.

use super::BenchArgs;
use crate::overrides;
use crate::timing::{percentile, reps_for};
use std::time::Instant;
use tessera::core::{no_grad, Tensor};
use tessera::models::zoo;

/// The networks `tessera bench models` runs.
pub const HEADLINE: &[&str] = &[
    "vit_base_patch16_224",
    "mobilenetv2_100",
    "mobilenetv3_large_100",
    "seresnet101",
];

/// One measurement.
#[derive(Debug, Clone)]
pub struct Measurement {
    pub arch: String,
    pub batch: usize,
    pub input_chw: [usize; 3],
    pub iters: usize,
    pub median_ms: f64,
    pub p90_ms: f64,
    /// Peak resident memory of the process after a training-step benchmark, in MiB.
    pub peak_rss_mb: Option<f64>,
}

/// Whether any option that applies only to model targets is set.
pub fn model_options_given(args: &BenchArgs) -> bool {
    args.overrides.any()
        || args.batch.is_some()
        || args.iters.is_some()
        || args.weights.is_some()
        || args.train
}

/// Runs `step` `iters` times (or as many as fit in `budget_s`, clamped to `min..=max`, judged
/// from `first`, the warm-up's time) and returns (iters, median ms, p90 ms).
fn sample(
    first: f64,
    iters: Option<usize>,
    (budget_s, min, max): (f64, usize, usize),
    mut step: impl FnMut() -> Result<f64, String>,
) -> Result<(usize, f64, f64), String> {
    let iters = iters.unwrap_or_else(|| reps_for(first, budget_s, min, max));
    let mut samples = Vec::with_capacity(iters);
    for _ in 0..iters {
        samples.push(step()? * 1e3);
    }
    samples.sort_by(f64::total_cmp);
    Ok((iters, percentile(&samples, 0.5), percentile(&samples, 0.9)))
}

/// Times one SGD training step of `arch` (see `--train`).
fn measure_train(arch: &str, args: &BenchArgs) -> Result<Measurement, String> {
    use tessera::models::module::set_requires_grad;
    use tessera::models::optim::{Optimizer, Sgd};
    use tessera::models::Mode;
    let batch = args.batch.unwrap_or(8);
    if batch == 0 || args.iters == Some(0) {
        return Err("bench: --batch and --iters must be at least 1".into());
    }
    let mut model = overrides::build("bench", arch, &args.overrides, 0)?;
    if let Some(w) = &args.weights {
        tessera::models::weights::load(model.as_mut(), w)
            .map_err(|e| format!("bench {arch}: {e}"))?;
    }
    model.set_mode(Mode::Train);
    set_requires_grad(model.as_mut(), true);
    let mut opt = Sgd::new(0.9, false, 0.0).map_err(|e| e.to_string())?;
    let [c, h, w] = model.input_chw();
    let x = Tensor::randn(&[batch, c, h, w], 1);
    let classes = model.num_classes().max(1);
    let labels: Vec<usize> = (0..batch).map(|i| i % classes).collect();
    let mut step = || -> Result<f64, String> {
        let t0 = Instant::now();
        let mut run = || -> Result<(), tessera::models::ModelError> {
            let loss = model.forward(&x)?.cross_entropy(&labels, 0.0)?;
            loss.backward()?;
            opt.step(model.as_mut(), 0.01, 1.0)
        };
        run().map_err(|e| format!("bench {arch} --train: {e}"))?;
        Ok(t0.elapsed().as_secs_f64())
    };
    let first = step()?;
    let (iters, median_ms, p90_ms) = sample(first, args.iters, (10.0, 3, 20), step)?;
    Ok(Measurement {
        arch: arch.to_string(),
        batch,
        input_chw: [c, h, w],
        iters,
        median_ms,
        p90_ms,
        peak_rss_mb: crate::run::peak_rss_bytes().map(|b| b as f64 / (1024.0 * 1024.0)),
    })
}

/// Times `arch` as configured by `args`.
fn measure(arch: &str, args: &BenchArgs) -> Result<Measurement, String> {
    let batch = args.batch.unwrap_or(1);
    if batch == 0 {
        return Err("bench: --batch must be at least 1".into());
    }
    if args.iters == Some(0) {
        return Err("bench: --iters must be at least 1".into());
    }
    let mut model = overrides::build("bench", arch, &args.overrides, 0)?;
    if let Some(w) = &args.weights {
        tessera::models::weights::load_lean(model.as_mut(), w)
            .map_err(|e| format!("bench {arch}: {e}"))?;
    }
    let [c, h, w] = model.input_chw();
    let x = Tensor::randn(&[batch, c, h, w], 1);
    let _guard = no_grad();
    let timed = || -> Result<f64, String> {
        let t0 = Instant::now();
        model
            .forward(&x)
            .map_err(|e| format!("bench {arch}: forward failed: {e}"))?;
        Ok(t0.elapsed().as_secs_f64())
    };
    // Two warm-up runs: the first also sizes every scratch buffer.
    let first = timed()?;
    let second = timed()?;
    let (iters, median_ms, p90_ms) = sample(first.min(second), args.iters, (3.0, 5, 100), timed)?;
    Ok(Measurement {
        arch: arch.to_string(),
        batch,
        input_chw: [c, h, w],
        iters,
        median_ms,
        p90_ms,
        peak_rss_mb: None,
    })
}

fn print(m: &Measurement, threads: usize, json: bool) {
    if json {
        // The host, as the kernel benches report it: the instruction set in use and the CPU.
        let isa = tessera::kernels::Isa::current()
            .map_or_else(|_| "unknown".to_string(), |i| i.name().to_string());
        let cpu = crate::peak::cpu_model();
        outln!(
            "{}",
            match m.peak_rss_mb {
                // A training step.
                Some(rss) => serde_json::json!({
                    "arch": m.arch,
                    "isa": isa,
                    "cpu": cpu,
                    "batch": m.batch,
                    "threads": threads,
                    "input": m.input_chw,
                    "iters": m.iters,
                    "train_step_ms": m.median_ms,
                    "p90_ms": m.p90_ms,
                    "peak_rss_mb": rss,
                    "images_per_s": m.batch as f64 * 1e3 / m.median_ms,
                }),
                None => serde_json::json!({
                    "arch": m.arch,
                    "isa": isa,
                    "cpu": cpu,
                    "batch": m.batch,
                    "threads": threads,
                    "input": m.input_chw,
                    "iters": m.iters,
                    "median_ms": m.median_ms,
                    "p90_ms": m.p90_ms,
                    "images_per_s": m.batch as f64 * 1e3 / m.median_ms,
                }),
            }
        );
    } else {
        let [c, h, w] = m.input_chw;
        if let Some(rss) = m.peak_rss_mb {
            outln!(
                "{:<24} {:>5} {:>7} {:>13} {:>9.1} {:>9.1} {:>9.1}  peak RSS {:.0} MiB (training step)",
                m.arch,
                m.batch,
                threads,
                format!("{c}x{h}x{w}"),
                m.median_ms,
                m.p90_ms,
                m.batch as f64 * 1e3 / m.median_ms,
                rss
            );
            return;
        }
        outln!(
            "{:<24} {:>5} {:>7} {:>13} {:>9.2} {:>9.2} {:>9.1}",
            m.arch,
            m.batch,
            threads,
            format!("{c}x{h}x{w}"),
            m.median_ms,
            m.p90_ms,
            m.batch as f64 * 1e3 / m.median_ms
        );
    }
}

fn header(json: bool) {
    if !json {
        outln!(
            "{:<24} {:>5} {:>7} {:>13} {:>9} {:>9} {:>9}",
            "arch",
            "batch",
            "threads",
            "input",
            "median ms",
            "p90 ms",
            "images/s"
        );
    }
}

/// Runs `tessera bench ARCH` (`target` is an architecture name) or `tessera bench models`.
pub fn run(args: &BenchArgs) -> Result<(), String> {
    if args.m.is_some() || args.n.is_some() || args.k.is_some() || args.svg.is_some() {
        return Err(format!(
            "bench {}: --m/--n/--k/--svg apply to the kernel targets only",
            args.target
        ));
    }
    if args.target == "models" {
        if args.overrides.any() || args.weights.is_some() {
            return Err(
                "bench models: runs the four headline models at their default configuration; \
                 give an architecture name to bench with overrides or weights"
                    .into(),
            );
        }
        let names = zoo::names();
        let missing: Vec<&str> = HEADLINE
            .iter()
            .copied()
            .filter(|a| !names.contains(a))
            .collect();
        if missing.len() == HEADLINE.len() {
            return Err(format!(
                "bench models: none of {} is in this build",
                HEADLINE.join(", ")
            ));
        }
        let threads = crate::init_threads(args.threads)?;
        header(args.json);
        for arch in HEADLINE.iter().filter(|a| names.contains(a)) {
            let m = if args.train {
                measure_train(arch, args)?
            } else {
                measure(arch, args)?
            };
            print(&m, threads, args.json);
        }
        if !missing.is_empty() {
            return Err(format!(
                "bench models: not in this build: {}",
                missing.join(", ")
            ));
        }
        return Ok(());
    }
    let threads = crate::init_threads(args.threads)?;
    let m = if args.train {
        measure_train(&args.target, args)?
    } else {
        measure(&args.target, args)?
    };
    header(args.json);
    print(&m, threads, args.json);
    Ok(())
}
