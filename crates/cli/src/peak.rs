//! `tessera peak [--threads T] [--json]`: this machine's roofline limits, measured once and
//! cached.
//!
//! - **FMA peak** (GFLOP/s): every pool thread runs the register-resident FMA loop of
//!   `tessera_kernels::peak` (12 independent vector chains, no memory traffic) at the same
//!   time; FLOPs of all threads over the wall time, best of 200 runs of about 1 ms (best of
//!   many short runs, so that on a shared machine the figure is the core's, not its share).
//! - **Memory bandwidth** (GB/s): a read-only sum over a 256 MiB buffer, and McCalpin's STREAM
//!   triad `a = b + s c` over three 64 MiB arrays, split over the threads; bytes counted as
//!   STREAM does (12 per triad element: two reads and one write, no write-allocate). Each pass
//!   streams the buffers in blocks (8 MiB per thread; 4 MiB per array for the triad) timed one
//!   by one, and the figure is the best block over 5 passes after an untimed pass that faults
//!   the pages in (a block comes from DRAM: it was last touched a whole buffer earlier; timing
//!   blocks keeps a descheduled thread on a busy machine from dragging it down). The triad figure is the memory roof
//!   `tessera profile` uses: ops read inputs and write outputs as the triad does.
//!
//! The result is cached as JSON in `$TESSERA_PEAK_CACHE`, else
//! `$XDG_CACHE_HOME/tessera/peak.json`, else `~/.cache/tessera/peak.json`, one entry per
//! (CPU identity, instruction set, threads), where the identity is the vendor, brand string,
//! family, model and stepping (`tessera::kernels::host`; two CPUs sold under one name, or a VM
//! moved to another host, get separate entries). The file is replaced atomically (a synced temporary
//! file, then a rename). `tessera peak` always re-measures and updates it; `tessera profile`
//! reads it, and when there is no entry measures quickly (fewer runs, smaller buffers) and
//! caches that, marked as quick, so its header can say which measurement it uses; a later
//! `tessera peak` replaces a quick entry.

use clap::Args;
use std::path::PathBuf;
use std::time::Instant;
use tessera::kernels::peak;
use tessera::kernels::Isa;

/// Options of `tessera peak`.
#[derive(Args)]
pub struct PeakArgs {
    /// Worker threads (0 = one per core).
    #[arg(long, default_value_t = 0)]
    pub threads: usize,
    /// One JSON object instead of text.
    #[arg(long)]
    pub json: bool,
}

/// The measured limits of this machine for one thread count.
#[derive(Debug, Clone, PartialEq)]
pub struct Limits {
    /// CPU model name.
    pub cpu: String,
    /// Vendor, family, model and stepping ([`cpu_identity`]).
    pub cpu_id: String,
    /// Instruction set in use.
    pub isa: String,
    pub threads: usize,
    /// FMA peak, GFLOP/s.
    pub fma_gflops: f64,
    /// Read-only streaming bandwidth, GB/s.
    pub read_gbs: f64,
    /// STREAM triad bandwidth, GB/s (the memory roof).
    pub triad_gbs: f64,
    /// Buffer size of the read measurement, MiB.
    pub buffer_mib: usize,
    /// Seconds since the Unix epoch when measured.
    pub measured_at: u64,
    /// Measured by `tessera profile`'s quick fallback, not by `tessera peak`.
    pub quick: bool,
}

impl Limits {
    /// The ridge point of the roofline: FLOPs per byte above which an op can be compute-bound.
    pub fn ridge(&self) -> f64 {
        self.fma_gflops / self.triad_gbs.max(1e-9)
    }

    fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "cpu": self.cpu,
            "cpu_id": self.cpu_id,
            "isa": self.isa,
            "threads": self.threads,
            "fma_gflops": self.fma_gflops,
            "read_gbs": self.read_gbs,
            "triad_gbs": self.triad_gbs,
            "ridge_flop_per_byte": self.ridge(),
            "buffer_mib": self.buffer_mib,
            "measured_at": self.measured_at,
            "quick": self.quick,
        })
    }

    fn from_json(v: &serde_json::Value) -> Option<Limits> {
        Some(Limits {
            cpu: v.get("cpu")?.as_str()?.to_string(),
            // Entries without an identity (an older cache) never match and get replaced.
            cpu_id: v.get("cpu_id")?.as_str()?.to_string(),
            isa: v.get("isa")?.as_str()?.to_string(),
            threads: v.get("threads")?.as_u64()? as usize,
            fma_gflops: v.get("fma_gflops")?.as_f64()?,
            read_gbs: v.get("read_gbs")?.as_f64()?,
            triad_gbs: v.get("triad_gbs")?.as_f64()?,
            buffer_mib: v.get("buffer_mib")?.as_u64()? as usize,
            measured_at: v.get("measured_at")?.as_u64()?,
            quick: v.get("quick").and_then(|q| q.as_bool()).unwrap_or(true),
        })
        .filter(|l| l.fma_gflops > 0.0 && l.triad_gbs > 0.0 && l.read_gbs > 0.0)
    }
}

/// The CPU model name (`/proc/cpuinfo` on Linux), or `unknown`.
pub fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_string())
        })
        .unwrap_or_else(|| "unknown".to_string())
}

/// The CPU's identity: vendor, brand string, family, model and stepping, as the kernels'
/// host detection reports it (the same key as the GEMM tuning cache).
pub fn cpu_identity() -> String {
    tessera::kernels::host::Host::get().identity.key()
}

/// Whether a cache entry was measured on this machine's CPU, instruction set and `threads`.
fn same_machine(l: &Limits, cpu: &str, cpu_id: &str, isa: &str, threads: usize) -> bool {
    l.cpu == cpu && l.cpu_id == cpu_id && l.isa == isa && l.threads == threads
}

/// Where the cache lives (see the module docs).
pub fn cache_path() -> Option<PathBuf> {
    let env = |k: &str| std::env::var_os(k).filter(|v| !v.is_empty());
    if let Some(p) = env("TESSERA_PEAK_CACHE") {
        return Some(PathBuf::from(p));
    }
    let base = env("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| env("HOME").map(|h| PathBuf::from(h).join(".cache")))?;
    Some(base.join("tessera").join("peak.json"))
}

fn read_cache(path: &std::path::Path) -> Vec<Limits> {
    let Ok(text) = std::fs::read_to_string(path) else {
        return Vec::new();
    };
    let Ok(v) = serde_json::from_str::<serde_json::Value>(&text) else {
        return Vec::new();
    };
    v.get("entries")
        .and_then(|e| e.as_array())
        .map(|a| a.iter().filter_map(Limits::from_json).collect())
        .unwrap_or_default()
}

/// The cached limits for this CPU, the instruction set in use and `threads`, if any.
pub fn cached(threads: usize) -> Option<Limits> {
    let isa = Isa::current().ok()?.name();
    let (cpu, cpu_id) = (cpu_model(), cpu_identity());
    read_cache(&cache_path()?)
        .into_iter()
        .find(|l| same_machine(l, &cpu, &cpu_id, isa, threads))
}

/// Adds or replaces `l`'s entry in the cache file (atomically: a synced temporary file, then a
/// rename).
pub fn store(l: &Limits) -> Result<PathBuf, String> {
    let path = cache_path().ok_or("peak: no cache directory (set HOME or TESSERA_PEAK_CACHE)")?;
    let mut entries: Vec<Limits> = read_cache(&path)
        .into_iter()
        .filter(|e| !same_machine(e, &l.cpu, &l.cpu_id, &l.isa, l.threads))
        .collect();
    entries.push(l.clone());
    let json = serde_json::json!({
        "entries": entries.iter().map(Limits::to_json).collect::<Vec<_>>()
    });
    let err = |e: std::io::Error| format!("peak: cannot write {}: {e}", path.display());
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(err)?;
    }
    tessera::models::io::atomic::write_bytes(&path, format!("{json:#}\n").as_bytes())
        .map_err(|e| format!("peak: cannot write the cache: {e}"))?;
    Ok(path)
}

/// FMA peak of the current pool (all threads at once), GFLOP/s: best of `runs`.
fn fma_peak(isa: Isa, iters: usize, runs: usize) -> Result<f64, String> {
    let mut best = 0.0f64;
    for _ in 0..runs {
        best = best.max(fma_gflops_once(isa, iters)?);
    }
    Ok(best)
}

/// One run of the FMA loop on every thread of the current pool at once, `iters` iterations
/// each: FLOPs of all threads over the wall time, GFLOP/s. `tessera bench gemm` interleaves
/// such runs with its products, so that its percentage of peak compares the two in the same
/// moments of a shared machine.
pub(crate) fn fma_gflops_once(isa: Isa, iters: usize) -> Result<f64, String> {
    let t0 = Instant::now();
    let flops: Vec<Result<u64, String>> = rayon::broadcast(|ctx| {
        let mut state: Vec<f32> = (0..peak::state_len(isa))
            .map(|i| (i + ctx.index()) as f32)
            .collect();
        let f = peak::fma_chains_with(isa, iters, 0.25, &mut state)
            .map_err(|e| format!("peak: {e}"))?;
        // Keep the result alive so the loop cannot be removed.
        std::hint::black_box(&state);
        Ok(f)
    });
    let secs = t0.elapsed().as_secs_f64();
    let total: u64 = flops
        .into_iter()
        .collect::<Result<Vec<_>, _>>()?
        .iter()
        .sum();
    Ok(total as f64 / secs / 1e9)
}

/// Read and triad bandwidth, GB/s, over a buffer of `mib` MiB (read) and three of `mib / 4`
/// (triad), after one untimed pass. Each pass streams the whole buffer in blocks of 8 MiB per
/// thread (4 MiB per array for the triad), each block timed on its own; the result is the best
/// block over `passes` passes. A block was last touched a whole buffer earlier, so it comes
/// from DRAM; timing blocks rather than the whole buffer keeps a descheduled thread on a busy
/// machine from dragging the figure down.
fn bandwidth(mib: usize, passes: usize) -> (f64, f64) {
    use rayon::prelude::*;
    let threads = rayon::current_num_threads().max(1);
    let n = mib * (1 << 20) / 4;
    let x = vec![1.0f32; n];
    let per_thread = (8 << 20) / 4;
    let mut best_read = 0.0f64;
    for pass in 0..=passes {
        for block in x.chunks(per_thread * threads) {
            let t0 = Instant::now();
            let s: f32 = block.par_chunks(per_thread).map(peak::stream_read).sum();
            std::hint::black_box(s);
            let secs = t0.elapsed().as_secs_f64();
            if pass > 0 {
                best_read = best_read.max((block.len() * 4) as f64 / secs / 1e9);
            }
        }
    }
    drop(x);
    let m = n / 4;
    let (b, c) = (vec![1.0f32; m], vec![2.0f32; m]);
    let mut a = vec![0.0f32; m];
    let per_thread = (4 << 20) / 4;
    let block = per_thread * threads;
    let mut best_triad = 0.0f64;
    for pass in 0..=passes {
        for ((a, b), c) in a
            .chunks_mut(block)
            .zip(b.chunks(block))
            .zip(c.chunks(block))
        {
            let t0 = Instant::now();
            a.par_chunks_mut(per_thread)
                .zip(b.par_chunks(per_thread).zip(c.par_chunks(per_thread)))
                .for_each(|(a, (b, c))| {
                    // The chunks of equal-length blocks have equal lengths.
                    let _ = peak::stream_triad(a, b, c, 3.0);
                });
            let secs = t0.elapsed().as_secs_f64();
            if pass > 0 {
                best_triad = best_triad.max((a.len() * 12) as f64 / secs / 1e9);
            }
        }
    }
    std::hint::black_box(&a);
    (best_read, best_triad)
}

/// Measures the limits with the current pool. `quick` uses 40 FMA runs instead of 200 and a
/// 128 MiB read buffer instead of 256 MiB (about half a second in all).
pub fn measure(quick: bool) -> Result<Limits, String> {
    let isa = Isa::current().map_err(|e| format!("peak: {e}"))?;
    // Many short FMA runs (about 1 ms each at 100 GFLOP/s) and the best one: on a shared
    // machine some run gets the core to itself.
    let (runs, mib) = if quick { (40, 128) } else { (200, 256) };
    let fma_gflops = fma_peak(isa, 500_000, runs)?;
    let (read_gbs, triad_gbs) = bandwidth(mib, if quick { 2 } else { 5 });
    Ok(Limits {
        cpu: cpu_model(),
        cpu_id: cpu_identity(),
        quick,
        isa: isa.name().to_string(),
        threads: rayon::current_num_threads(),
        fma_gflops,
        read_gbs,
        triad_gbs,
        buffer_mib: mib,
        measured_at: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()),
    })
}

/// The limits for the current pool: cached, or measured now (quick) and cached. Returns the
/// limits and a note on where they came from.
pub fn limits_for_profile() -> Result<(Limits, String), String> {
    let threads = rayon::current_num_threads();
    if let Some(l) = cached(threads) {
        let at = cache_path()
            .map(|p| p.display().to_string())
            .unwrap_or_default();
        let when = utc_date(l.measured_at);
        let note = if l.quick {
            format!("a quick measurement by `tessera profile` ({when}, cached in {at}); run `tessera peak --threads {threads}` for the full one")
        } else {
            format!("measured by `tessera peak --threads {threads}` ({when}, cached in {at})")
        };
        return Ok((l, note));
    }
    let l = measure(true)?;
    let note = match store(&l) {
        Ok(p) => format!(
            "no cached entry: a quick measurement now (cached in {} as quick); run `tessera peak --threads {threads}` for the full one",
            p.display()
        ),
        Err(e) => format!("no cached entry: a quick measurement now (not cached: {e})"),
    };
    Ok((l, note))
}

/// `YYYY-MM-DD HH:MM UTC` of a Unix time (proleptic Gregorian, Howard Hinnant's
/// `civil_from_days`).
pub fn utc_date(secs: u64) -> String {
    let days = (secs / 86_400) as i64;
    let (hh, mm) = ((secs % 86_400) / 3600, (secs % 3600) / 60);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + (m <= 2) as i64;
    format!("{y:04}-{m:02}-{d:02} {hh:02}:{mm:02} UTC")
}

/// Runs `tessera peak`.
pub fn run(args: &PeakArgs) -> Result<(), String> {
    crate::init_threads(args.threads)?;
    let l = measure(false)?;
    let stored = store(&l);
    if args.json {
        let mut j = l.to_json();
        j["cache"] = match &stored {
            Ok(p) => serde_json::json!(p.display().to_string()),
            Err(_) => serde_json::Value::Null,
        };
        outln!("{j}");
    } else {
        outln!(
            "cpu:              {} [{}] ({} threads, {})",
            l.cpu,
            l.cpu_id,
            l.threads,
            l.isa
        );
        outln!(
            "FMA peak:         {:.1} GFLOP/s (register-resident FMA loop, all threads)",
            l.fma_gflops
        );
        outln!(
            "memory bandwidth: {:.1} GB/s STREAM triad, {:.1} GB/s read-only ({} MiB buffer)",
            l.triad_gbs,
            l.read_gbs,
            l.buffer_mib
        );
        outln!(
            "ridge point:      {:.1} FLOP/byte (below it an op is memory-bound)",
            l.ridge()
        );
        match &stored {
            Ok(p) => outln!("cached in:        {}", p.display()),
            Err(e) => outln!("not cached:       {e}"),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utc_dates() {
        assert_eq!(utc_date(0), "1970-01-01 00:00 UTC");
        // 2000-02-29 (a leap day in a century leap year) 12:34.
        assert_eq!(utc_date(951_827_640), "2000-02-29 12:34 UTC");
        assert_eq!(utc_date(1_796_289_000), "2026-12-03 09:10 UTC");
    }

    fn limits(cpu_id: &str, quick: bool) -> Limits {
        Limits {
            cpu: "Test CPU".into(),
            cpu_id: cpu_id.into(),
            isa: "avx2".into(),
            threads: 2,
            fma_gflops: 100.0,
            read_gbs: 10.0,
            triad_gbs: 8.0,
            buffer_mib: 128,
            measured_at: 1,
            quick,
        }
    }

    #[test]
    fn entries_round_trip_and_match_the_full_identity() {
        let l = limits("GenuineIntel family 6 model 143 stepping 8", false);
        assert_eq!(Limits::from_json(&l.to_json()), Some(l.clone()));
        assert!(same_machine(&l, "Test CPU", &l.cpu_id, "avx2", 2));
        // Same model name, other stepping / ISA / thread count: another entry.
        assert!(!same_machine(
            &l,
            "Test CPU",
            "GenuineIntel family 6 model 143 stepping 6",
            "avx2",
            2
        ));
        assert!(!same_machine(&l, "Test CPU", &l.cpu_id, "avx512", 2));
        assert!(!same_machine(&l, "Test CPU", &l.cpu_id, "avx2", 1));
        // An entry without an identity (older cache format) is not read.
        let mut old = l.to_json();
        old.as_object_mut().unwrap().remove("cpu_id");
        assert_eq!(Limits::from_json(&old), None);
        let q = limits("x", true);
        assert!(Limits::from_json(&q.to_json()).unwrap().quick);
    }

    #[test]
    fn the_identity_names_family_model_and_stepping() {
        let id = cpu_identity();
        if std::path::Path::new("/proc/cpuinfo").exists() && id != "unknown" {
            assert!(
                id.contains("family") && id.contains("model") && id.contains("stepping"),
                "{id}"
            );
        }
    }
}
