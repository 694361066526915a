//! `tessera profile ARCH [overrides] [--batch B] [--threads T] [--train] [--json]`: one
//! forward pass (with `--train`: forward, mean cross-entropy on fixed labels, backward and one
//! SGD update) recorded op by op with `tessera_core::profile`, printed as a roofline table.
//!
//! Each op gets its FLOPs, bytes, time, achieved GFLOP/s and GB/s, arithmetic intensity and a
//! verdict against this machine's limits (measured by `tessera peak` and cached, or a quick
//! measurement when the cache has no entry for this CPU, ISA and thread count; the header says
//! which, and when it was taken): memory-bound when its
//! intensity is below the ridge point `FMA peak / triad bandwidth`, compute-bound otherwise
//! (Williams, Waterman & Patterson, "Roofline", CACM 2009). Layers come from
//! `Model::forward_stages`: its callback calls `profile::end_layer(name)`, so the ops since the
//! previous stage belong to that stage. A warm-up pass runs first (unrecorded), so scratch
//! buffers and folded weights are in place; the recorded pass is the second.
//!
//! The forward FLOPs of the contractions equal `2 x` the MACs `tessera info` reports (both
//! come from the same ops; the totals show both counts side by side).

use crate::info::thousands;
use crate::overrides::{self, OverrideArgs};
use crate::peak::{self, Limits};
use clap::Args;
use tessera::core::profile::{self, Cost, OpRecord, Phase, Profile, Totals};
use tessera::core::{no_grad, Tensor};
use tessera::models::module::{named_parameters, set_requires_grad};
use tessera::models::optim::{Optimizer, Sgd};
use tessera::models::zoo::Model;
use tessera::models::Mode;

/// Options of `tessera profile`.
#[derive(Args)]
pub struct ProfileArgs {
    /// Architecture name, as in timm (`mobilenetv2_100`, `vit_base_patch16_224`, ...).
    pub arch: String,
    #[command(flatten)]
    pub overrides: OverrideArgs,
    /// Images per batch.
    #[arg(long, default_value_t = 1)]
    pub batch: usize,
    /// Worker threads (0 = one per core).
    #[arg(long, default_value_t = 0)]
    pub threads: usize,
    /// Also record the backward pass and one SGD update (training-mode forward).
    #[arg(long)]
    pub train: bool,
    /// Record this many passes (after the warm-up) and report each op's median time: steadier
    /// numbers on a busy machine. FLOPs and bytes are the same in every pass.
    #[arg(long, default_value_t = 1)]
    pub repeat: usize,
    /// One JSON object per op, then a totals object, instead of the table.
    #[arg(long)]
    pub json: bool,
    /// Time the compiled inference plan step by step (what `run` and `bench` execute: batch
    /// norm folded, epilogues and residual joins fused) instead of the eager forward op by op.
    #[arg(long)]
    pub plan: bool,
    /// With `--plan`: keep every feature map NCHW (by default the MobileNets' small maps are
    /// channels-last), to compare the two layouts step by step.
    #[arg(long)]
    pub nchw: bool,
}

/// What one profiled run produced.
pub struct Run {
    pub profile: Profile,
    /// MACs of the recorded forward pass as `tessera info` counts them (`profile::count_macs`).
    pub info_macs: u64,
}

/// Nominal cost of one SGD step with momentum over `params` values: `d = g + wd p`, `b = mu b +
/// d`, `p -= lr b` (7 FLOPs), reading p, g, b and writing p, b (20 bytes).
fn sgd_cost(params: usize) -> Cost {
    let n = params as u64;
    Cost {
        flops: 7 * n,
        macs: 0,
        bytes_read: 12 * n,
        bytes_written: 8 * n,
    }
}

/// Profiles `model` on `x` `repeat` times (see the module docs) and keeps each op's median
/// time (and the median wall time). Errors if two passes ran different ops.
pub fn profile_repeated(
    model: &mut dyn Model,
    x: &Tensor,
    train: bool,
    repeat: usize,
) -> Result<Run, String> {
    let mut runs = Vec::with_capacity(repeat);
    for _ in 0..repeat.max(1) {
        runs.push(profile_model(model, x, train)?);
    }
    let mut first = runs.swap_remove(0);
    if runs.is_empty() {
        return Ok(first);
    }
    let same = |a: &OpRecord, b: &OpRecord| {
        a.op == b.op && a.layer == b.layer && a.inputs == b.inputs && a.flops == b.flops
    };
    for r in &runs {
        let p = &r.profile;
        if p.records.len() != first.profile.records.len()
            || !p
                .records
                .iter()
                .zip(&first.profile.records)
                .all(|(a, b)| same(a, b))
        {
            return Err(format!(
                "profile {}: passes ran different ops ({} and {} records); use --repeat 1",
                model.arch(),
                first.profile.records.len(),
                p.records.len()
            ));
        }
    }
    let median = |mut v: Vec<u64>| {
        v.sort_unstable();
        v[v.len() / 2]
    };
    for (i, rec) in first.profile.records.iter_mut().enumerate() {
        let mut ns: Vec<u64> = runs.iter().map(|r| r.profile.records[i].ns).collect();
        ns.push(rec.ns);
        rec.ns = median(ns);
    }
    let mut wall: Vec<u64> = runs.iter().map(|r| r.profile.wall_ns).collect();
    wall.push(first.profile.wall_ns);
    first.profile.wall_ns = median(wall);
    Ok(first)
}

/// Profiles `model` on `x` once (see the module docs).
pub fn profile_model(model: &mut dyn Model, x: &Tensor, train: bool) -> Result<Run, String> {
    let arch = model.arch().to_string();
    let fail = |e: tessera::models::ModelError| format!("profile {arch}: {e}");
    if !train {
        model.set_mode(Mode::Eval);
        let _g = no_grad();
        model.forward(x).map_err(fail)?;
        let rec = profile::Recorder::start();
        let (out, info_macs) = profile::count_macs(|| {
            model.forward_stages(x, &mut |name, _| profile::end_layer(name))
        });
        let p = rec.finish();
        out.map_err(fail)?;
        return Ok(Run {
            profile: p,
            info_macs,
        });
    }
    model.set_mode(Mode::Train);
    set_requires_grad(model, true);
    let mut opt = Sgd::new(0.9, false, 0.0).map_err(fail)?;
    let classes = model.num_classes().max(1);
    let labels: Vec<usize> = (0..x.shape()[0]).map(|i| i % classes).collect();
    let params: usize = named_parameters(model).iter().map(|(_, t)| t.numel()).sum();
    let mut step = |model: &mut dyn Model, recording: bool| -> Result<u64, String> {
        let (logits, macs) = profile::count_macs(|| {
            model.forward_stages(x, &mut |name, _| profile::end_layer(name))
        });
        let loss = logits
            .map_err(fail)?
            .cross_entropy(&labels, 0.0)
            .map_err(|e| format!("profile {arch}: {e}"))?;
        profile::end_layer("loss");
        loss.backward()
            .map_err(|e| format!("profile {arch}: {e}"))?;
        let _s = profile::scope("optimizer");
        let cost = if recording {
            sgd_cost(params)
        } else {
            Cost::default()
        };
        profile::region("sgd.step", Phase::Update, &[&[params]], cost, || {
            opt.step(model, 0.01, 1.0)
        })
        .map_err(fail)?;
        Ok(macs)
    };
    step(model, false)?;
    let rec = profile::Recorder::start();
    let info_macs = step(model, true);
    let p = rec.finish();
    Ok(Run {
        profile: p,
        info_macs: info_macs?,
    })
}

/// `[1, 197, 768]` -> `1x197x768` (`scalar` for rank 0).
pub fn shape_str(s: &[usize]) -> String {
    if s.is_empty() {
        return "scalar".into();
    }
    s.iter()
        .map(|d| d.to_string())
        .collect::<Vec<_>>()
        .join("x")
}

/// `compute` or `memory` against the limits' ridge point.
pub fn verdict(r: &OpRecord, l: &Limits) -> &'static str {
    if r.flops > 0 && r.intensity() >= l.ridge() {
        "compute"
    } else {
        "memory"
    }
}

/// Achieved performance as a fraction of the roof at the op's intensity (`min(peak, AI x
/// bandwidth)`); for an op without FLOPs, achieved GB/s over the bandwidth.
pub fn roof_fraction(r: &OpRecord, l: &Limits) -> f64 {
    if r.flops == 0 {
        return r.gbs() / l.triad_gbs;
    }
    let roof = l.fma_gflops.min(r.intensity() * l.triad_gbs);
    if roof > 0.0 {
        r.gflops() / roof
    } else {
        0.0
    }
}

fn op_json(i: usize, r: &OpRecord, l: &Limits) -> serde_json::Value {
    serde_json::json!({
        "index": i,
        "layer": r.layer,
        "op": r.op,
        "phase": r.phase.name(),
        "inputs": r.inputs,
        "output": r.output,
        "flops": r.flops,
        "macs": r.macs,
        "bytes": r.bytes(),
        "bytes_read": r.bytes_read,
        "bytes_written": r.bytes_written,
        "us": r.us(),
        "gflops": r.gflops(),
        "gbs": r.gbs(),
        "intensity": r.intensity(),
        "bound": verdict(r, l),
        "roof_fraction": roof_fraction(r, l),
    })
}

fn totals_json(t: &Totals) -> serde_json::Value {
    serde_json::json!({
        "ops": t.ops, "flops": t.flops, "macs_x2": t.contraction_flops(),
        "bytes": t.bytes(), "us": t.ns as f64 / 1e3,
    })
}

/// Fits `s` in `w` columns (cut with `~`).
fn fit(s: &str, w: usize) -> String {
    if s.chars().count() <= w {
        s.to_string()
    } else {
        let mut t: String = s.chars().take(w.saturating_sub(1)).collect();
        t.push('~');
        t
    }
}

fn print_table(args: &ProfileArgs, run: &Run, l: &Limits, note: &str, chw: [usize; 3]) {
    let p = &run.profile;
    let [c, h, w] = chw;
    outln!(
        "tessera profile {}: batch {}, input {c}x{h}x{w}, {} threads, {}{}",
        args.arch,
        args.batch,
        l.threads,
        if args.repeat > 1 {
            format!("median of {} passes, ", args.repeat)
        } else {
            String::new()
        },
        if args.train {
            "training step (forward, loss, backward, SGD)"
        } else {
            "inference (eval mode, no graph)"
        }
    );
    outln!(
        "machine: {} [{}, {}] | FMA peak {:.1} GFLOP/s | memory {:.1} GB/s (triad; read {:.1}) | ridge {:.1} FLOP/B",
        l.cpu,
        l.cpu_id,
        l.isa,
        l.fma_gflops,
        l.triad_gbs,
        l.read_gbs,
        l.ridge()
    );
    outln!("         limits {note}");
    outln!("MB = bytes read + written (f32, each tensor once); FLOP/B = arithmetic intensity; us = wall time of the op");
    outln!("");
    outln!(
        "{:>4} {:<18} {:<22} {:<14} {:>8} {:>7} {:>8} {:>7} {:>6} {:>6} {:<4}",
        "#",
        "op",
        "inputs",
        "output",
        "MFLOP",
        "MB",
        "us",
        "GFLOP/s",
        "GB/s",
        "FLOP/B",
        "bound"
    );
    let mut i = 0;
    for (layer, recs) in p.layer_groups() {
        let t = recs
            .iter()
            .fold((0u64, 0u64), |a, r| (a.0 + r.ns, a.1 + r.flops));
        let phase = match recs[0].phase {
            Phase::Forward => "",
            Phase::Backward => " [backward]",
            Phase::Update => " [update]",
        };
        outln!(
            "-- {layer}{phase}: {} ops, {:.3} ms, {:.2} MFLOP",
            recs.len(),
            t.0 as f64 / 1e6,
            t.1 as f64 / 1e6
        );
        for r in recs {
            i += 1;
            let inputs: Vec<String> = r.inputs.iter().map(|s| shape_str(s)).collect();
            outln!(
                "{:>4} {:<18} {:<22} {:<14} {:>8.2} {:>7.3} {:>8.1} {:>7.1} {:>6.1} {:>6.2} {:<4}",
                i,
                fit(&r.op, 18),
                fit(&inputs.join(" "), 22),
                fit(&shape_str(&r.output), 14),
                r.flops as f64 / 1e6,
                r.bytes() as f64 / 1e6,
                r.us(),
                r.gflops(),
                r.gbs(),
                r.intensity(),
                if verdict(r, l) == "compute" {
                    "comp"
                } else {
                    "mem"
                }
            );
        }
    }
    let t = p.totals();
    let fwd = p.phase_totals(Phase::Forward);
    outln!("");
    outln!(
        "total: {} ops, {} FLOPs, {:.2} MB, {:.3} ms in ops ({:.3} ms wall), {:.1} GFLOP/s",
        t.ops,
        thousands(t.flops),
        t.bytes() as f64 / 1e6,
        t.ns as f64 / 1e6,
        p.wall_ns as f64 / 1e6,
        t.flops as f64 / t.ns.max(1) as f64
    );
    outln!(
        "forward: {} FLOPs = contractions {} + other ops {}",
        thousands(fwd.flops),
        thousands(fwd.contraction_flops()),
        thousands(fwd.flops - fwd.contraction_flops())
    );
    outln!(
        "         contractions = 2 x {} MACs, as `tessera info` counts them{}: {}",
        thousands(fwd.macs),
        if args.batch > 1 {
            format!(" (x {} images)", args.batch)
        } else {
            String::new()
        },
        if fwd.macs == run.info_macs {
            "equal".to_string()
        } else {
            format!("DIFFERS, info counts {}", thousands(run.info_macs))
        }
    );
    if args.train {
        for ph in [Phase::Backward, Phase::Update] {
            let pt = p.phase_totals(ph);
            outln!(
                "{}: {} ops, {} FLOPs ({} MACs), {:.2} MB, {:.3} ms",
                ph.name(),
                pt.ops,
                thousands(pt.flops),
                thousands(pt.macs),
                pt.bytes() as f64 / 1e6,
                pt.ns as f64 / 1e6
            );
        }
    }
    let bound_ns = |b: &str| -> u64 {
        p.records
            .iter()
            .filter(|r| verdict(r, l) == b)
            .map(|r| r.ns)
            .sum()
    };
    outln!(
        "time in memory-bound ops {:.1}%, compute-bound ops {:.1}%",
        100.0 * bound_ns("memory") as f64 / t.ns.max(1) as f64,
        100.0 * bound_ns("compute") as f64 / t.ns.max(1) as f64
    );
    outln!("");
    outln!("top 10 ops by time:");
    for (rank, &k) in p.top_by_time(10).iter().enumerate() {
        let r = &p.records[k];
        outln!(
            "{:>3}. #{:<4} {:<18} {:<18} {:<14} {:>9.1} us {:>5.1}% {:>6.1} GFLOP/s {:>6.1} GB/s {}",
            rank + 1,
            k + 1,
            fit(&r.layer, 18),
            fit(&r.op, 18),
            fit(&shape_str(&r.output), 14),
            r.us(),
            100.0 * r.ns as f64 / t.ns.max(1) as f64,
            r.gflops(),
            r.gbs(),
            verdict(r, l)
        );
    }
}

fn print_json(args: &ProfileArgs, run: &Run, l: &Limits, note: &str) {
    let p = &run.profile;
    for (i, r) in p.records.iter().enumerate() {
        outln!("{}", op_json(i, r, l));
    }
    let t = p.totals();
    let fwd = p.phase_totals(Phase::Forward);
    let mut j = serde_json::json!({
        "totals": true,
        "arch": args.arch,
        "batch": args.batch,
        "threads": l.threads,
        "train": args.train,
        "repeat": args.repeat,
        "ops": t.ops,
        "flops": t.flops,
        "macs_x2": t.contraction_flops(),
        "bytes": t.bytes(),
        "bytes_read": t.bytes_read,
        "bytes_written": t.bytes_written,
        "us": t.ns as f64 / 1e3,
        "wall_us": p.wall_ns as f64 / 1e3,
        "forward_flops": fwd.flops,
        "forward_macs_x2": fwd.contraction_flops(),
        "info_macs_x2": 2 * run.info_macs,
        "forward": totals_json(&fwd),
        "peak_gflops": l.fma_gflops,
        "bandwidth_gbs": l.triad_gbs,
        "read_gbs": l.read_gbs,
        "ridge": l.ridge(),
        "limits": note,
        "limits_quick": l.quick,
        "cpu": l.cpu,
        "cpu_id": l.cpu_id,
        "isa": l.isa,
        "top": p.top_by_time(10),
    });
    if args.train {
        j["backward"] = totals_json(&p.phase_totals(Phase::Backward));
        j["update"] = totals_json(&p.phase_totals(Phase::Update));
    }
    outln!("{j}");
}

/// Runs `tessera profile`.
pub fn run(args: &ProfileArgs) -> Result<(), String> {
    if args.plan {
        return crate::profile_plan::run(args);
    }
    if args.batch == 0 || args.repeat == 0 {
        return Err(format!(
            "profile: --batch ({}) and --repeat ({}) must be at least 1",
            args.batch, args.repeat
        ));
    }
    crate::init_threads(args.threads)?;
    let mut model = overrides::build("profile", &args.arch, &args.overrides, 0)?;
    let [c, h, w] = model.input_chw();
    if args.train && args.batch < 2 && has_batch_norm(model.as_ref()) {
        return Err(format!(
            "profile {} --train: batch norm in training mode needs --batch 2 or more",
            args.arch
        ));
    }
    let (limits, note) = peak::limits_for_profile()?;
    let x = Tensor::randn(&[args.batch, c, h, w], 1);
    let run = profile_repeated(model.as_mut(), &x, args.train, args.repeat)?;
    if args.json {
        print_json(args, &run, &limits, &note);
    } else {
        print_table(args, &run, &limits, &note, [c, h, w]);
    }
    Ok(())
}

/// Whether the model has batch-norm statistics (a training-mode forward at batch 1 over 1x1
/// maps would fail).
fn has_batch_norm(m: &dyn Model) -> bool {
    let mut found = false;
    m.visit("", &mut |name, _, _| {
        found |= name.ends_with("running_mean")
    });
    found
}
