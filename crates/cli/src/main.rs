//! The `tessera` command-line program: benchmarks, inference, training and fine-tuning, and
//! the study tools (profile, attention maps).
//!
//! Every sub-command reports bad input as a one-line error and a non-zero exit code, never a
//! panic. `--json` output is one JSON object per line.

/// `println!` that ends the program quietly when stdout is closed (`tessera ... | head`)
/// instead of panicking on the broken pipe.
macro_rules! outln {
    ($($arg:tt)*) => { $crate::emit_line(&format!($($arg)*)) };
}

mod accuracy;
mod attention;
mod bench;
mod compare;
mod cpu;
mod distributed;
mod grads;
mod info;
mod inputs;
mod list;
mod overrides;
mod peak;
mod plot;
mod profile;
mod profile_plan;
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
    /// Train several architectures on the digits with their recipes and chart test accuracy
    /// against epochs and wall-clock seconds.
    Compare(compare::CompareArgs),
    /// Train a network from scratch, fine-tune it from pretrained weights, or resume, on the
    /// embedded digits, CIFAR-10 or a folder of images (one sub-folder per class).
    Train(train::TrainArgs),
    /// One training-mode forward and backward (mean cross-entropy): loss, logits and every
    /// parameter's gradient by timm name, to safetensors (gradient parity with PyTorch).
    Grads(grads::GradsArgs),
    /// Per-op roofline table of one forward pass (or training step): FLOPs, bytes, time.
    Profile(profile::ProfileArgs),
    /// Per-step relative error of the float32 inference plan against the same forward in
    /// float64 (batch norm unfolded): where the bits go.
    Accuracy(accuracy::AccuracyArgs),
    /// Measure this machine's FMA peak and memory bandwidth (cached for `profile`).
    Peak(peak::PeakArgs),
    /// Where a ViT looks: class-token attention per layer and head, and rollout, as an SVG.
    Attention(attention::AttentionArgs),
}

/// Most worker threads per logical core `--threads` may ask for: more only adds scheduling
/// overhead (results are the same for any count), and an absurd count would spend minutes
/// spawning threads or exhaust the process's thread limit.
pub(crate) const MAX_THREADS_PER_CORE: usize = 8;

/// Builds the global rayon pool with `threads` workers (0 = one per core, at most
/// [`MAX_THREADS_PER_CORE`] per core).
pub(crate) fn init_threads(threads: usize) -> Result<usize, String> {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let max = cores.saturating_mul(MAX_THREADS_PER_CORE);
    if threads > max {
        return Err(format!(
            "--threads {threads} is more than {MAX_THREADS_PER_CORE} per logical core ({max} on this machine's {cores} cores)"
        ));
    }
    let n = if threads == 0 { cores } else { threads };
    rayon::ThreadPoolBuilder::new()
        .num_threads(n)
        // Commands run their work on a worker (a plan, a training epoch): give workers the
        // main thread's usual stack.
        .stack_size(8 << 20)
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

/// Checks of flag values that need no work done first: sizes against the memory budget
/// (`tessera::models::limits`), so an absurd `--batch` is an error before any allocation.
fn preflight(command: &Command) -> Result<(), String> {
    use tessera::models::limits;
    match command {
        Command::Profile(a) if tessera::models::zoo::names().contains(&a.arch.as_str()) => {
            limits::check_batch(
                &a.arch,
                &a.overrides.to_overrides(),
                a.batch,
                a.train,
                &format!("--batch {}", a.batch),
            )
            .map_err(|e| format!("profile {}: {e}", a.arch))
        }
        Command::Train(a) if tessera::models::zoo::names().contains(&a.arch.as_str()) => {
            // Without --batch the recipe's batch (at most 64) applies.
            let batch = a.batch.unwrap_or(64);
            limits::check_batch(
                &a.arch,
                &a.overrides.to_overrides(),
                batch,
                true,
                &format!("--batch {batch}"),
            )
            .map_err(|e| format!("train {}: {e}", a.arch))
        }
        Command::Bench(a) if tessera::models::zoo::names().contains(&a.target.as_str()) => {
            let batch = a.batch.unwrap_or(if a.train { 8 } else { 1 });
            limits::check_batch(
                &a.target,
                &a.overrides.to_overrides(),
                batch,
                a.train,
                &format!("--batch {batch}"),
            )
            .map_err(|e| format!("bench {}: {e}", a.target))
        }
        Command::Accuracy(a) if tessera::models::zoo::names().contains(&a.arch.as_str()) => {
            limits::check_batch(
                &a.arch,
                &a.overrides.to_overrides(),
                a.batch,
                false,
                &format!("--batch {}", a.batch),
            )
            .map_err(|e| format!("accuracy {}: {e}", a.arch))
        }
        Command::Run(a) if a.overrides.num_classes == Some(0) => Err(format!(
            "run {}: --num-classes 0 builds the network without its classifier (it returns \
             pooled features), so there are no classes to rank; give --num-classes N >= 1",
            a.arch
        )),
        _ => Ok(()),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Err(msg) = preflight(&cli.command) {
        eprintln!("tessera: error: {msg}");
        return ExitCode::FAILURE;
    }
    let result = match &cli.command {
        Command::Bench(args) => bench::run(args),
        Command::Cpu(args) => cpu::run(args),
        Command::Tune(args) => tune::run(args),
        Command::Info(args) => info::run(args),
        Command::Run(args) => run::run(args),
        Command::List(args) => list::run(args),
        Command::Train(args) => train::run(args),
        Command::Compare(args) => compare::run(args),
        Command::Grads(args) => grads::run(args),
        Command::Profile(args) => profile::run(args),
        Command::Accuracy(args) => accuracy::run(args),
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
