//! `tessera profile ARCH --plan`: the compiled inference plan's own cost table, step by step.
//!
//! The op-by-op profile times the eager forward; what `tessera run` and `tessera bench` execute
//! is the plan (`Model::plan`: batch norm folded, bias, activation and residual joins fused into
//! the GEMM epilogues, one arena). This table times each plan step (median over `--repeat`
//! passes after a warm-up, `Plan::profile_steps`), with the GEMM steps' task count as the plan
//! chose it (`Plan::tune_threads`), and sums the time per step kind.

use crate::bench::model::run_plan_with;
use crate::overrides;
use crate::profile::ProfileArgs;
use tessera::core::{no_grad, Tensor};
use tessera::models::plan::{PlanOptions, StepTime};

/// Runs `tessera profile --plan`.
pub fn run(args: &ProfileArgs) -> Result<(), String> {
    if args.train {
        return Err("profile: --plan times inference; it does not take --train".into());
    }
    crate::init_threads(args.threads)?;
    let model = overrides::build("profile", &args.arch, &args.overrides, 0)?;
    let [c, h, w] = model.input_chw();
    let _guard = no_grad();
    let fail = |e: tessera::models::ModelError| format!("profile {}: {e}", args.arch);
    let options = PlanOptions {
        channels_last: !args.nchw,
    };
    let mut plan = model
        .plan_with([args.batch, c, h, w], &options)
        .map_err(fail)?;
    run_plan_with(|| plan.tune_threads(9, 2.0)).map_err(fail)?;
    // Every thread's scratch sized before timing, as `bench` does.
    run_plan_with(|| plan.warm_up()).map_err(fail)?;
    let x = Tensor::randn(&[args.batch, c, h, w], 1).to_vec();
    let reps = args.repeat.max(5);
    let steps = run_plan_with(|| plan.profile_steps(&x, reps)).map_err(fail)?;
    if args.json {
        for (i, s) in steps.iter().enumerate() {
            let j = serde_json::json!({
                "step": i + 1, "kind": s.kind, "detail": s.detail,
                "threads": s.threads, "ms": (s.ms * 1e4).round() / 1e4,
            });
            outln!("{j}");
        }
        let total: f64 = steps.iter().map(|s| s.ms).sum();
        outln!(
            "{}",
            serde_json::json!({ "total_ms": (total * 1e4).round() / 1e4 })
        );
        return Ok(());
    }
    print_table(args, &steps, [c, h, w]);
    Ok(())
}

fn print_table(args: &ProfileArgs, steps: &[StepTime], chw: [usize; 3]) {
    let total: f64 = steps.iter().map(|s| s.ms).sum();
    outln!(
        "{} plan, input {}x{}x{}x{}, {} threads in the pool, instruction set {}; median of {} passes",
        args.arch,
        args.batch,
        chw[0],
        chw[1],
        chw[2],
        rayon::current_num_threads(),
        tessera::kernels::Isa::current().map_or("?", |i| i.name()),
        args.repeat.max(5)
    );
    outln!(
        "{:>4}  {:<15} {:<40} {:>7} {:>9} {:>6}",
        "#",
        "step",
        "shape",
        "tasks",
        "ms",
        "%"
    );
    for (i, s) in steps.iter().enumerate() {
        let tasks = match s.threads {
            Some(0) => "pool".to_string(),
            Some(t) => t.to_string(),
            None => "-".to_string(),
        };
        outln!(
            "{:>4}  {:<15} {:<40} {:>7} {:>9.3} {:>6.1}",
            i + 1,
            s.kind,
            s.detail,
            tasks,
            s.ms,
            100.0 * s.ms / total
        );
    }
    outln!("total: {} steps, {:.3} ms", steps.len(), total);
    let mut kinds: Vec<(&str, f64, usize)> = Vec::new();
    for s in steps {
        match kinds.iter_mut().find(|k| k.0 == s.kind) {
            Some(k) => {
                k.1 += s.ms;
                k.2 += 1;
            }
            None => kinds.push((s.kind, s.ms, 1)),
        }
    }
    kinds.sort_by(|a, b| b.1.total_cmp(&a.1));
    outln!("by kind:");
    for (k, ms, n) in kinds {
        outln!(
            "  {:<15} {:>3} steps {:>9.3} ms {:>6.1}%",
            k,
            n,
            ms,
            100.0 * ms / total
        );
    }
}
