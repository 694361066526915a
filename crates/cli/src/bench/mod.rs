//! `tessera bench TARGET`: side-by-side benchmarks that print medians and ratios.
//!
//! Targets: `gemm`, `activations`, `softmax`, `dwconv`. Each target validates that the options given
//! apply to it.

mod activations;
mod dwconv;
mod gemm;
mod softmax;

use clap::Args;

/// Options of `tessera bench`; which apply depends on the target.
#[derive(Args)]
pub struct BenchArgs {
    /// What to measure: `gemm`, `activations`, `softmax`, `dwconv`.
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
}

/// Runs `tessera bench`.
pub fn run(args: &BenchArgs) -> Result<(), String> {
    match args.target.as_str() {
        "gemm" if args.svg.is_some() => {
            Err("bench gemm: --svg applies to `activations` only".into())
        }
        "gemm" => gemm::run(args),
        "activations" => activations::run(args),
        "softmax" => softmax::run(args),
        "dwconv" => dwconv::run(args),
        other => Err(format!(
            "bench: unknown target {other:?}; expected gemm, activations, softmax or dwconv"
        )),
    }
}
