//! The `tessera` command-line program: inference, training, benchmarks and the study tools.
//!
//! Every sub-command reports bad input as a one-line error and a non-zero exit code, never a
//! panic. `--json` output is one JSON object per line.

/// `println!` that ends the program quietly when stdout is closed (`tessera ... | head`)
/// instead of panicking on the broken pipe.
macro_rules! outln {
    ($($arg:tt)*) => { $crate::emit_line(&format!($($arg)*)) };
}

mod attention;
mod bench;
mod cpu;
mod distributed;
mod grads;
mod info;
mod inputs;
mod list;
mod overrides;
mod peak;
mod profile;
mod run;
mod timing;
mod train;
mod tune;

use clap::{Parser, Subcommand};
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
    /// Measure a kernel against its baseline (`gemm`, `activations`, `softmax`, `dwconv`) or a
    /// network's inference latency (an architecture name, or `models` for the four headline
    /// networks).
    Bench(bench::BenchArgs),
    /// Layer table of an architecture: output shapes, parameters and MACs per stage.
    Info(info::InfoArgs),
    /// Classify images (PNG, JPEG, WebP, directories, .npy batches) with pretrained or trained
    /// weights: top-k class names, or logits to .npy.
    Run(run::RunArgs),
    /// Every architecture and preset: input, classes, parameters, MACs, pretrained weights.
    List(list::ListArgs),
    /// This CPU: instruction sets, caches, and the GEMM kernels and block sizes in force.
    Cpu(cpu::CpuArgs),
    /// Measure the GEMM kernel candidates and block sizes on this CPU and cache the fastest.
    Tune(tune::TuneArgs),
    /// Train a network from scratch (or resume) on the embedded digits or CIFAR-10.
    Train(train::TrainArgs),
    /// One training-mode forward and backward (mean cross-entropy): loss, logits and every
    /// parameter's gradient by timm name, to safetensors (gradient parity with PyTorch).
    Grads(grads::GradsArgs),
    /// Per-op roofline table of one forward pass (or training step): FLOPs, bytes, time.
    Profile(profile::ProfileArgs),
    /// Measure this machine's FMA peak and memory bandwidth (cached for `profile`).
    Peak(peak::PeakArgs),
    /// Where a ViT looks: class-token attention per layer and head, and rollout, as an SVG.
    Attention(attention::AttentionArgs),
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

/// Writes one line to stdout; exits with status 0 if the reader has gone away.
pub(crate) fn emit_line(line: &str) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    if let Err(e) = writeln!(out, "{line}") {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            std::process::exit(0);
        }
        eprintln!("tessera: error: cannot write to stdout: {e}");
        std::process::exit(1);
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match &cli.command {
        Command::Bench(args) => bench::run(args),
        Command::Cpu(args) => cpu::run(args),
        Command::Tune(args) => tune::run(args),
        Command::Info(args) => info::run(args),
        Command::Run(args) => run::run(args),
        Command::List(args) => list::run(args),
        Command::Train(args) => train::run(args),
        Command::Grads(args) => grads::run(args),
        Command::Profile(args) => profile::run(args),
        Command::Peak(args) => peak::run(args),
        Command::Attention(args) => attention::run(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(msg) => {
            eprintln!("tessera: error: {msg}");
            ExitCode::FAILURE
        }
    }
}
