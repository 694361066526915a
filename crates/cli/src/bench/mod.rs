//! `tessera bench TARGET`: side-by-side benchmarks that print medians and ratios.
//!
//! Targets: the kernels (`gemm`, `activations`, `softmax`, `dwconv`) and the networks (any
//! architecture name, or `models` for the four headline ones). Each target validates that the
//! options given apply to it.

mod activations;
mod dwconv;
mod gemm;
pub mod model;
pub mod resources;
mod softmax;

use clap::Args;

/// Options of `tessera bench`; which apply depends on the target.
#[derive(Args)]
pub struct BenchArgs {
    /// What to measure: `gemm`, `activations`, `softmax`, `dwconv`, an architecture name
    /// (`tessera info` lists them in its errors) or `models`.
    pub target: String,
    /// Rows of A and C (gemm; with --n and --k, one custom shape instead of the standard set).
    #[arg(long)]
    pub m: Option<usize>,
    /// Columns of B and C (gemm).
    #[arg(long)]
    pub n: Option<usize>,
    /// Inner dimension (gemm).
    #[arg(long)]
    pub k: Option<usize>,
    /// Worker threads (0 = one per core).
    #[arg(long, default_value_t = 0)]
    pub threads: usize,
    /// One JSON object per line instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Write an SVG chart of the results to this file (activations).
    #[arg(long)]
    pub svg: Option<std::path::PathBuf>,
    /// Models: images per forward pass (default 1).
    #[arg(long)]
    pub batch: Option<usize>,
    /// Models: timed runs after warm-up (default: as many as fit in about 3 s, 5 to 100).
    #[arg(long)]
    pub iters: Option<usize>,
    /// Models: weights to load (safetensors); random weights if omitted.
    #[arg(long, value_name = "FILE")]
    pub weights: Option<std::path::PathBuf>,
    /// Models: time one SGD training step (forward in training mode, mean cross-entropy,
    /// backward, momentum update; default batch 8) instead of inference, and report the peak
    /// resident memory. Under `mpirun` (the `distributed` feature), one data-parallel step of
    /// the global batch (each process its part, gradients all-reduced), with the
    /// communication time per step, reported by rank 0.
    #[arg(long)]
    pub train: bool,
    /// Models: time the eager forward (op by op) instead of the compiled inference plan.
    #[arg(long)]
    pub eager: bool,
    /// Models: keep every feature map of the plan NCHW (by default the MobileNets' small maps
    /// are channels-last), to compare the two layouts.
    #[arg(long)]
    pub nchw: bool,
    #[command(flatten)]
    pub overrides: crate::overrides::OverrideArgs,
    /// Data-parallel options (`--train` under `mpirun`).
    #[command(flatten)]
    pub dist: crate::distributed::DistArgs,
}

/// The kernel targets (everything else is `models` or an architecture name).
pub const KERNEL_TARGETS: &[&str] = &["gemm", "activations", "softmax", "dwconv"];

/// Runs `tessera bench`.
pub fn run(args: &BenchArgs) -> Result<(), String> {
    let t = args.target.as_str();
    if t == "models" || tessera::models::zoo::names().contains(&t) {
        return model::run(args);
    }
    if KERNEL_TARGETS.contains(&t) && model::model_options_given(args) {
        return Err(format!(
            "bench {t}: --batch/--iters/--weights and architecture overrides apply to models only"
        ));
    }
    match t {
        "gemm" if args.svg.is_some() => {
            Err("bench gemm: --svg applies to `activations` only".into())
        }
        "gemm" => gemm::run(args),
        "activations" => activations::run(args),
        "softmax" => softmax::run(args),
        "dwconv" => dwconv::run(args),
        other => Err(format!(
            "bench: unknown target {other:?}; kernel targets: {}; models: `models` or an \
             architecture name: {}",
            KERNEL_TARGETS.join(", "),
            crate::overrides::known_names()
        )),
    }
}
