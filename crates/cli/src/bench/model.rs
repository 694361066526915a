//! `tessera bench ARCH [overrides] [--batch B] [--threads T] [--iters N] [--weights W] [--json]`
//! and `tessera bench models`: inference latency of a whole network (eval mode, no graph
//! recorded, random input), median and 90th percentile over `N` timed runs after two warm-up
//! runs. `models` runs the four headline networks of the seed documents at 224x224:
//! vit_base_patch16_224, mobilenetv2_100, mobilenetv3_large_100 and seresnet101.
//!
//! Weights are random (timm's initialisation) unless `--weights` is given: the time of a dense
//! network does not depend on the values. `--json` rows name the instruction set in use (`isa`)
//! and the CPU model (`cpu`), as the kernel benches do.

use super::resources::Usage;
use super::BenchArgs;
use crate::distributed::Dist;
use crate::overrides;
use crate::timing::{percentile, reps_for};
use std::time::Instant;
use tessera::core::{no_grad, Tensor};
use tessera::models::plan::{Plan, PlanOptions};
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
    /// Inference only: what each timed run cost besides time.
    pub cost: Option<InferenceCost>,
    /// A data-parallel training step: the number of processes and the gradient
    /// communication per step (ms exposed after backward, ms copying into and out of the
    /// buckets), means over the timed steps on rank 0.
    pub dist: Option<(usize, f64, f64)>,
}

/// Per-inference costs of the timed runs (means over them).
#[derive(Debug, Clone)]
pub struct InferenceCost {
    /// `plan` or `eager`.
    pub path: &'static str,
    /// Heap allocations per inference.
    pub allocs: f64,
    /// Heap bytes requested per inference.
    pub alloc_bytes: f64,
    /// Context switches (voluntary + involuntary, every thread) per inference.
    pub ctx_switches: f64,
    /// System CPU time over wall time.
    pub sys_frac: f64,
    /// User + system CPU time over wall time (how many cores were busy, on average).
    pub cpu_frac: f64,
    /// The plan's arena (every intermediate), bytes.
    pub arena_bytes: Option<usize>,
    /// Plan steps, and how many of them run on one thread.
    pub steps: Option<(usize, usize)>,
}

/// Whether any option that applies only to model targets is set.
pub fn model_options_given(args: &BenchArgs) -> bool {
    args.overrides.any()
        || args.batch.is_some()
        || args.iters.is_some()
        || args.weights.is_some()
        || args.train
        || args.eager
        || args.nchw
}

/// Runs `step` `iters` times (or as many as fit in `budget_s`, clamped to `min..=max`, judged
/// from `first`, the warm-up's time) and returns (iters, median ms, p90 ms).
fn sample(
    first: f64,
    iters: Option<usize>,
    (budget_s, min, max): (f64, usize, usize),
    step: &mut dyn FnMut() -> Result<f64, String>,
) -> Result<(usize, f64, f64), String> {
    let iters = iters.unwrap_or_else(|| reps_for(first, budget_s, min, max));
    let mut samples = Vec::with_capacity(iters);
    for _ in 0..iters {
        samples.push(step()? * 1e3);
    }
    samples.sort_by(f64::total_cmp);
    Ok((iters, percentile(&samples, 0.5), percentile(&samples, 0.9)))
}

/// Times one SGD training step of `arch` (see `--train`); with `dist`, one data-parallel step
/// of the global batch, this process computing its part.
fn measure_train(
    arch: &str,
    args: &BenchArgs,
    mut dist: Option<&mut Dist>,
) -> Result<Measurement, String> {
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
    let part = dist.as_deref().map_or(0..batch, |d| d.shard(batch));
    if part.is_empty() {
        let n = dist.as_deref().map_or(1, |d| d.size());
        return Err(format!(
            "bench {arch} --train: {n} processes need a batch of at least {n} (--batch {batch})"
        ));
    }
    let local = part.len();
    let x = Tensor::randn(&[local, c, h, w], 1 + part.start as u64);
    let classes = model.num_classes().max(1);
    let labels: Vec<usize> = part.clone().map(|i| i % classes).collect();
    // Communication totals after each step (data-parallel runs).
    let mut comm_log: Vec<(f64, f64)> = Vec::new();
    let processes = dist.as_deref().map(|d| d.size());
    // `mean`: the time averaged over the processes (the same on every one).
    let mut step_with = |mean: bool| -> Result<f64, String> {
        let t0 = Instant::now();
        match dist.as_deref_mut() {
            // On the thread that initialised MPI, as `tessera train` runs under mpirun.
            Some(d) => {
                let loss = model
                    .forward(&x)
                    .and_then(|y| Ok(y.cross_entropy(&labels, 0.0)?))
                    .map_err(|e| format!("bench {arch} --train: {e}"))?;
                d.backward(model.as_mut(), &loss, local, batch)
                    .map_err(|e| format!("bench {arch} --train: {e}"))?;
                opt.step(model.as_mut(), 0.01, 1.0)
                    .map_err(|e| format!("bench {arch} --train: {e}"))?;
                comm_log.push(d.comm_seconds());
                if mean {
                    return Ok(d.mean(t0.elapsed().as_secs_f64()));
                }
            }
            None => {
                let run = || -> Result<(), tessera::models::ModelError> {
                    let loss = model.forward(&x)?.cross_entropy(&labels, 0.0)?;
                    loss.backward()?;
                    opt.step(model.as_mut(), 0.01, 1.0)
                };
                // On a worker of the pool, as the plan runs (see `run_plan_with`).
                run_plan_with(run).map_err(|e| format!("bench {arch} --train: {e}"))?;
            }
        }
        Ok(t0.elapsed().as_secs_f64())
    };
    // Every process must run the same number of steps: the count follows the mean first step.
    let first = step_with(true)?;
    let mut step = || step_with(false);
    let (iters, median_ms, p90_ms) = sample(first, args.iters, (10.0, 3, 20), &mut step)?;
    let dist = processes.map(|n| {
        let (a, b) = (comm_log[0], comm_log[comm_log.len() - 1]);
        let per = |t0: f64, t1: f64| (t1 - t0) * 1e3 / iters as f64;
        (n, per(a.0, b.0), per(a.1, b.1))
    });
    Ok(Measurement {
        arch: arch.to_string(),
        batch,
        input_chw: [c, h, w],
        iters,
        median_ms,
        p90_ms,
        peak_rss_mb: crate::run::peak_rss_bytes().map(|b| b as f64 / (1024.0 * 1024.0)),
        cost: None,
        dist,
    })
}

/// Times `arch` as configured by `args`: the compiled plan (default) or the eager forward.
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
    let fail = |e: tessera::models::ModelError| format!("bench {arch}: forward failed: {e}");
    let mut plan = if args.eager {
        None
    } else {
        let options = PlanOptions {
            channels_last: !args.nchw,
        };
        let mut p = model.plan_with([batch, c, h, w], &options).map_err(fail)?;
        p.tune_threads(9, 2.0).map_err(fail)?;
        // Every thread's kernel scratch sized for this plan: the timed runs then allocate
        // nothing whichever thread claims which task.
        p.warm_up().map_err(fail)?;
        Some(p)
    };
    let xv = x.to_vec();
    // Costs summed over the timed runs only (not the sampling loop around them).
    let total = std::cell::Cell::new((Usage::default(), 0.0f64));
    let mut timed = || -> Result<f64, String> {
        let before = Usage::now();
        let t0 = Instant::now();
        match plan.as_mut() {
            Some(p) => {
                run_plan(p, &xv).map_err(fail)?;
            }
            None => {
                // On a worker too, so that the plan-vs-eager comparison measures the
                // execution, not where the regions are started from; grad mode is per thread.
                run_plan_with(|| {
                    let _guard = no_grad();
                    model.forward(&x).map(|_| ())
                })
                .map_err(fail)?;
            }
        }
        let dt = t0.elapsed().as_secs_f64();
        let (mut used, wall) = total.get();
        used.add(&before.delta(&Usage::now()));
        total.set((used, wall + dt));
        Ok(dt)
    };
    // Two warm-up runs: the first also sizes every scratch buffer.
    let first = timed()?;
    let second = timed()?;
    total.set((Usage::default(), 0.0));
    let (iters, median_ms, p90_ms) =
        sample(first.min(second), args.iters, (3.0, 5, 100), &mut timed)?;
    let (used, wall) = total.get();
    let per = |v: f64| v / iters as f64;
    let cost = InferenceCost {
        path: if plan.is_some() { "plan" } else { "eager" },
        allocs: per(used.allocs as f64),
        alloc_bytes: per(used.alloc_bytes as f64),
        ctx_switches: per(used.ctx_switches as f64),
        sys_frac: used.sys_s / wall,
        cpu_frac: (used.user_s + used.sys_s) / wall,
        arena_bytes: plan.as_ref().map(|p| p.arena_bytes()),
        steps: plan.as_ref().map(|p| (p.len(), p.single_thread_steps())),
    };
    Ok(Measurement {
        arch: arch.to_string(),
        batch,
        input_chw: [c, h, w],
        iters,
        median_ms,
        p90_ms,
        peak_rss_mb: None,
        cost: Some(cost),
        dist: None,
    })
}

/// One planned inference, from the calling thread: `Plan::run` holds the pool's workers in one
/// awake region for the whole inference (on this thread, with the workers lingering between
/// inferences, or on a worker when this thread is one).
pub fn run_plan(p: &mut Plan, x: &[f32]) -> tessera::models::Result<()> {
    p.run(x).map(|_| ())
}

/// Runs `f` on a worker of the rayon pool, so that kernels inside it that use rayon directly
/// (the eager tensor ops) start from inside the pool, a local push, instead of each being
/// sent to the pool and waited for; with one worker too, where they then run inline.
pub fn run_plan_with<T: Send>(f: impl FnOnce() -> T + Send) -> T {
    if rayon::current_thread_index().is_some() {
        return f();
    }
    rayon::scope(|_| f())
}

fn print(m: &Measurement, threads: usize, json: bool) {
    if json {
        // The host, as the kernel benches report it: the instruction set in use and the CPU.
        let isa = tessera::kernels::Isa::current()
            .map_or_else(|_| "unknown".to_string(), |i| i.name().to_string());
        let cpu = crate::peak::cpu_model();
        // The fields every row has, then a training step's or an inference's own.
        let mut j = serde_json::json!({
            "arch": m.arch,
            "isa": isa,
            "cpu": cpu,
            "batch": m.batch,
            "threads": threads,
            "input": m.input_chw,
            "iters": m.iters,
            "p90_ms": m.p90_ms,
            "images_per_s": m.batch as f64 * 1e3 / m.median_ms,
        });
        match m.peak_rss_mb {
            // A training step.
            Some(rss) => {
                j["train_step_ms"] = m.median_ms.into();
                j["peak_rss_mb"] = rss.into();
                if let Some((n, exposed, copy)) = m.dist {
                    // `batch` is the global batch, `threads` and the memory per process.
                    j["processes"] = n.into();
                    j["comm_exposed_ms_per_step"] = exposed.into();
                    j["comm_copy_ms_per_step"] = copy.into();
                }
            }
            None => {
                j["median_ms"] = m.median_ms.into();
                if let Some(c) = &m.cost {
                    j["path"] = c.path.into();
                    j["allocs_per_inference"] = c.allocs.into();
                    j["alloc_bytes_per_inference"] = c.alloc_bytes.into();
                    j["ctx_switches_per_inference"] = c.ctx_switches.into();
                    j["sys_time_fraction"] = c.sys_frac.into();
                    j["cpu_per_wall"] = c.cpu_frac.into();
                    if let Some(a) = c.arena_bytes {
                        j["arena_bytes"] = a.into();
                    }
                    if let Some((n, one)) = c.steps {
                        j["plan_steps"] = n.into();
                        j["single_thread_steps"] = one.into();
                    }
                }
            }
        }
        outln!("{}", j);
    } else {
        let [c, h, w] = m.input_chw;
        if let Some(rss) = m.peak_rss_mb {
            let dist = m.dist.map_or(String::new(), |(n, exposed, copy)| {
                format!(
                    ", {n} processes: communication {exposed:.2} ms exposed + {copy:.2} ms copying per step"
                )
            });
            outln!(
                "{:<24} {:>5} {:>7} {:>13} {:>9.1} {:>9.1} {:>9.1}  peak RSS {:.0} MiB (training step{dist})",
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
        let cost = m.cost.as_ref().map_or(String::new(), |c| {
            format!(
                " {:>6} {:>8.1} {:>9.0} {:>8.1} {:>6.1}% {:>9}",
                c.path,
                c.allocs,
                c.alloc_bytes,
                c.ctx_switches,
                c.sys_frac * 100.0,
                c.arena_bytes.map_or("-".into(), |a| format!(
                    "{:.1}",
                    a as f64 / (1 << 20) as f64
                )),
            )
        });
        outln!(
            "{:<24} {:>5} {:>7} {:>13} {:>9.2} {:>9.2} {:>9.1}{cost}",
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
            "{:<24} {:>5} {:>7} {:>13} {:>9} {:>9} {:>9} {:>6} {:>8} {:>9} {:>8} {:>7} {:>9}",
            "arch",
            "batch",
            "threads",
            "input",
            "median ms",
            "p90 ms",
            "images/s",
            "path",
            "allocs",
            "bytes",
            "ctxsw",
            "sys",
            "arena MiB"
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
                measure_train(arch, args, None)?
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
    // Under mpirun, `--train` times a data-parallel step; rank 0 alone reports.
    let mut dist = if args.train {
        crate::distributed::start(&args.dist).map_err(|e| e.replacen("train:", "bench:", 1))?
    } else {
        None
    };
    let threads = crate::init_threads(match &dist {
        Some(d) if args.threads == 0 => d.local_threads(),
        _ => args.threads,
    })?;
    let root = dist.as_ref().is_none_or(|d| d.is_root());
    let m = if args.train {
        let r = measure_train(&args.target, args, dist.as_mut());
        match (r, &dist) {
            (Err(msg), Some(d)) if d.size() > 1 => d.abort(&msg),
            (r, _) => r?,
        }
    } else {
        measure(&args.target, args)?
    };
    if root {
        header(args.json);
        print(&m, threads, args.json);
    }
    Ok(())
}
