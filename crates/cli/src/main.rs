//! The `tessera` command-line program: benchmarks now; inference, training and the study tools
//! as the models and training issues land.
//!
//! Every sub-command reports bad input as a one-line error and a non-zero exit code, never a
//! panic. `--json` output is one JSON object per line.

mod bench;
mod timing;

use clap::{Args, Parser, Subcommand};
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "tessera",
    version,
    about = "A from-scratch CPU tensor engine: benchmarks, inference, training and study tools"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Measure a kernel against its baseline: `gemm` (tessera vs matrixmultiply).
    Bench(bench::BenchArgs),
    /// Show the instruction sets this CPU supports and the one tessera uses.
    Cpu(CpuArgs),
}

#[derive(Args)]
struct CpuArgs {
    /// One JSON object instead of text.
    #[arg(long)]
    json: bool,
}

/// Builds the global rayon pool with `threads` workers (0 = one per core).
pub(crate) fn init_threads(threads: usize) -> Result<usize, String> {
    let n = if threads == 0 {
        std::thread::available_parallelism().map_or(1, |n| n.get())
    } else {
        threads
    };
    rayon::ThreadPoolBuilder::new()
        .num_threads(n)
        .build_global()
        .map_err(|e| format!("cannot start {n} threads: {e}"))?;
    Ok(n)
}

fn cpu(args: &CpuArgs) -> Result<(), String> {
    use tessera::kernels::Isa;
    let current = Isa::current().map_err(|e| e.to_string())?;
    let available: Vec<&str> = Isa::available().iter().map(|i| i.name()).collect();
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    if args.json {
        println!(
            "{}",
            serde_json::json!({ "isa": current.name(), "available": available, "cores": threads })
        );
    } else {
        println!("instruction set in use: {current} (override with TESSERA_ISA)");
        println!("available on this CPU:  {}", available.join(", "));
        println!("logical cores:          {threads}");
    }
    Ok(())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match &cli.command {
        Command::Bench(args) => bench::run(args),
        Command::Cpu(args) => cpu(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(msg) => {
            eprintln!("tessera: error: {msg}");
            ExitCode::FAILURE
        }
    }
}
