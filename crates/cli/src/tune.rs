//! `tessera tune`: measures the GEMM microkernel candidates and block sizes of every ISA this
//! CPU has (about a minute at most) and caches the winners for this exact CPU, so later runs
//! use them instead of the analytical defaults. See `tessera_kernels::gemm::tune`.

use clap::Args;
use std::time::Duration;
use tessera::kernels::gemm::tune::{tune_isa, DEEP_SHAPES, SHAPES};
use tessera::kernels::gemm::tune_cache;
use tessera::kernels::host::Host;
use tessera::kernels::Isa;

/// Arguments of `tessera tune`.
#[derive(Args)]
pub struct TuneArgs {
    /// Seconds of measurement per ISA at most.
    #[arg(long, default_value_t = 25)]
    seconds: u64,
    /// Print every configuration tried.
    #[arg(long)]
    verbose: bool,
    /// Measure and print, but do not write the cache.
    #[arg(long)]
    dry_run: bool,
}

/// GFLOP/s per shape, one decimal, space-separated.
fn rates(gflops: &[f64]) -> String {
    gflops
        .iter()
        .map(|g| format!("{g:.1}"))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Runs `tessera tune`.
pub fn run(args: &TuneArgs) -> Result<(), String> {
    if args.seconds == 0 || args.seconds > 3600 {
        return Err(format!(
            "--seconds {}: must be between 1 and 3600",
            args.seconds
        ));
    }
    let isas: Vec<Isa> = Isa::available()
        .into_iter()
        .filter(|i| matches!(i, Isa::Avx512 | Isa::Avx2))
        .collect();
    if isas.is_empty() {
        return Err("no SIMD kernel set to tune on this CPU (portable and scalar paths have one kernel each)".into());
    }
    let key = Host::get().identity.key();
    outln!("tuning GEMM for {key}");
    outln!(
        "shapes (one thread, GFLOP/s): {}",
        SHAPES
            .iter()
            .map(|s| format!("{} {}x{}x{}", s.0, s.1, s.2, s.3))
            .collect::<Vec<_>>()
            .join(", ")
    );
    outln!(
        "deep KC for products whose C outgrows L2 (one thread, GFLOP/s): {}",
        DEEP_SHAPES
            .iter()
            .map(|s| format!("{}x{}x{}", s.1, s.2, s.3))
            .collect::<Vec<_>>()
            .join(", ")
    );
    let mut winners = Vec::new();
    for isa in isas {
        let r = tune_isa(isa, Duration::from_secs(args.seconds));
        let show = |t: &tessera::kernels::gemm::tune::Trial, tag: &str| {
            let b = t.tuning.blocking;
            format!(
                "  {:8} {:14} KC {:3} MC {:4} NC {:4}  score {:6.1}  [{}] {tag}",
                isa.name(),
                t.tuning.kernel.name,
                b.kc,
                b.mc,
                b.nc,
                t.score,
                rates(&t.gflops)
            )
        };
        if args.verbose {
            for t in &r.trials {
                outln!("{}", show(t, ""));
            }
        }
        outln!("{}", show(&r.trials[0], "(analytical)"));
        outln!("{}", show(r.winner(), "(winner)"));
        for (i, t) in r.deep_trials.iter().enumerate() {
            outln!(
                "  {:8} {:14} deep KC {:3}  score {:6.1}  [{}] {}",
                isa.name(),
                t.tuning.kernel.name,
                t.tuning.deep_kc,
                t.score,
                rates(&t.gflops),
                if i == r.deep_best { "(winner)" } else { "" }
            );
        }
        winners.push(r.tuning());
    }
    if args.dry_run {
        return Ok(());
    }
    let path = tune_cache::path()
        .ok_or("no cache location: set TESSERA_TUNE_CACHE or HOME (and not TESSERA_TUNE=off)")?;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)
            .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    }
    tessera::models::io::atomic::write_bytes(&path, tune_cache::format(&key, &winners).as_bytes())
        .map_err(|e| format!("cannot write the tuning cache: {e}"))?;
    outln!(
        "written to {} (used by every later run on this CPU; `tessera cpu` shows it)",
        path.display()
    );
    Ok(())
}
