//! `tessera bench gemm`: tessera's GEMM against matrixmultiply on the same inputs, in one
//! process, in alternating runs of consecutive calls after warm-up; prints median GFLOP/s of
//! each and their ratio.
//!
//! Beside them it times the FMA peak loop of `tessera peak` (every pool thread, registers
//! only), in runs as long as one product, alternating with the products. On a machine whose
//! floating-point throughput varies over seconds (a virtual CPU whose sibling hardware thread
//! is busy some of the time), `tessera peak`'s figure, measured minutes apart, can be 10% off
//! the throughput the products actually had; the interleaved peak was taken in the same
//! moments, so tessera's percentage of it measures the GEMM rather than the host's phase.

use super::BenchArgs;
use crate::timing::{reps_for, stats, time_once};
use tessera::kernels::gemm::{
    gemm, gemm_ex, Epilogue, GemmConfig, MatMut, MatRef, Operand, PackedMatrix,
};
use tessera::kernels::memory::AlignedBuf;
use tessera::kernels::parallel::stop_lingering;
use tessera::kernels::Isa;

/// The standard shapes (m, n, k, label): square sizes and the layers of the four networks.
const STANDARD: &[(usize, usize, usize, &str)] = &[
    (256, 256, 256, "256^3"),
    (512, 512, 512, "512^3"),
    (1024, 1024, 1024, "1024^3"),
    (2048, 2048, 2048, "2048^3"),
    (197, 2304, 768, "ViT-B/16 qkv"),
    (197, 768, 3072, "ViT-B/16 MLP fc2"),
    (3136, 64, 576, "ResNet 3x3 conv (im2col)"),
    (12544, 96, 16, "MobileNetV2 1x1 conv"),
];

fn random(len: usize, seed: u64) -> Vec<f32> {
    // xorshift64*: deterministic inputs in [-1, 1).
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            s ^= s >> 12;
            s ^= s << 25;
            s ^= s >> 27;
            let r = s.wrapping_mul(0x2545_F491_4F6C_DD1D);
            ((r >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect()
}

/// Median GFLOP/s of one shape's runs.
struct Row {
    m: usize,
    n: usize,
    k: usize,
    label: String,
    tessera: f64,
    packed_b: f64,
    mm: f64,
    /// The FMA peak loop, timed between the products.
    peak: f64,
}

impl Row {
    /// tessera's percentage of the interleaved FMA peak.
    fn pct_of_peak(&self) -> f64 {
        100.0 * self.tessera / self.peak
    }
}

/// Iterations of the FMA peak loop per thread that take about `secs` on this pool, and at
/// least 1 ms (shorter runs measure the wake-up of the pool more than the FMAs), from one
/// calibrating run.
fn peak_iters(isa: Isa, threads: usize, secs: f64) -> Result<usize, String> {
    const CALIBRATE: usize = 100_000;
    const MIN_SECS: f64 = 1e-3;
    let secs = secs.max(MIN_SECS);
    let gflops = crate::peak::fma_gflops_once(isa, CALIBRATE)?;
    let flops_per_iter = 2.0 * tessera::kernels::peak::state_len(isa) as f64 * threads as f64;
    Ok(((secs * gflops * 1e9 / flops_per_iter) as usize).max(CALIBRATE / 10))
}

/// Median GFLOP/s of tessera, tessera with B pre-packed, matrixmultiply and the interleaved
/// FMA peak on one shape.
fn measure(
    m: usize,
    n: usize,
    k: usize,
    threads: usize,
    isa: Isa,
) -> Result<(f64, f64, f64, f64), String> {
    // On huge pages when large, as the engine's own buffers and numpy's arrays are.
    let a = AlignedBuf::from_slice(&random(m * k, 1));
    let b = AlignedBuf::from_slice(&random(k * n, 2));
    let mut c = AlignedBuf::zeroed(m * n);
    let cfg = GemmConfig {
        isa: Some(isa),
        threads,
        tuning: None,
    };
    let (av, bv) = (MatRef::row_major(&a, m, k), MatRef::row_major(&b, k, n));
    let packed = PackedMatrix::pack_b(bv, Some(isa)).map_err(|e| e.to_string())?;
    let run_tessera = |c: &mut [f32]| {
        gemm(
            1.0,
            av,
            bv,
            0.0,
            MatMut::row_major(c, m, n),
            Epilogue::NONE,
            &cfg,
        )
    };
    let run_packed = |c: &mut [f32]| {
        gemm_ex(
            1.0,
            Operand::View(av),
            Operand::Packed(&packed),
            0.0,
            MatMut::row_major(c, m, n),
            Epilogue::NONE,
            &cfg,
        )
    };
    let run_mm = |c: &mut [f32]| {
        // SAFETY: a, b, c are dense row-major buffers of exactly m*k, k*n, m*n floats.
        unsafe {
            matrixmultiply::sgemm(
                m,
                k,
                n,
                1.0,
                a.as_ptr(),
                k as isize,
                1,
                b.as_ptr(),
                n as isize,
                1,
                0.0,
                c.as_mut_ptr(),
                n as isize,
                1,
            )
        }
    };
    // Warm-up: caches, page faults, packing buffers, thread pools.
    let mut err = None;
    let one = time_once(|| err = run_tessera(&mut c).err().or(run_packed(&mut c).err()));
    if let Some(e) = err {
        return Err(e.to_string());
    }
    time_once(|| run_mm(&mut c));
    let iters = peak_iters(isa, threads, one)?;
    let reps = reps_for(one / 2.0, 1.5, 5, 200);
    // Runs of consecutive calls, the three runs alternating: drift in machine load hits all
    // three alike, and each library is timed as a caller running one product after another
    // sees it (numpy's baseline runs back to back too). tessera's workers linger after a call
    // (`parallel::LINGER`); they are sent to sleep before the other library's run, so they
    // never take its cores. Errors were ruled out by the warm-up call on the same inputs.
    let run_len = (reps / 5).clamp(1, 20);
    let (mut tt, mut tp, mut tm, mut fma) = (
        Vec::with_capacity(reps + run_len),
        Vec::with_capacity(reps + run_len),
        Vec::with_capacity(reps + run_len),
        Vec::with_capacity(reps + run_len),
    );
    while tt.len() < reps {
        for _ in 0..run_len {
            fma.push(crate::peak::fma_gflops_once(isa, iters)?);
        }
        for _ in 0..run_len {
            tt.push(time_once(|| drop(run_tessera(&mut c))));
        }
        for _ in 0..run_len {
            tp.push(time_once(|| drop(run_packed(&mut c))));
        }
        stop_lingering();
        for _ in 0..run_len {
            tm.push(time_once(|| run_mm(&mut c)));
        }
    }
    let flops = 2.0 * m as f64 * n as f64 * k as f64;
    let g = |t: Vec<f64>| flops / stats(t).median / 1e9;
    Ok((g(tt), g(tp), g(tm), stats(fma).median))
}

/// A custom shape is a product to time: every dimension at least 1 (an empty product has no
/// rate to report), and its buffers within the memory budget before any is allocated: A, B,
/// C, the pre-packed copy of B (padded to whole micro-panels: at most one more panel width,
/// counted as 64 columns) and matrixmultiply's packing of the same (another copy of B).
fn check_custom_shape(m: usize, n: usize, k: usize) -> Result<(), String> {
    if m == 0 || n == 0 || k == 0 {
        return Err(format!(
            "bench gemm: --m, --n and --k must each be at least 1 (got {m} x {n} x {k})"
        ));
    }
    use tessera::models::limits::{bytes_of, check};
    let f32s = std::mem::size_of::<f32>();
    let parts = [
        bytes_of(&[m, k], f32s),
        bytes_of(&[k, n], f32s),
        bytes_of(&[m, n], f32s),
        n.checked_add(64).and_then(|np| bytes_of(&[k, np], f32s)),
        bytes_of(&[k, n], f32s),
    ];
    let total = parts
        .iter()
        .try_fold(0u64, |acc, p| p.and_then(|b| acc.checked_add(b)));
    check(&format!("bench gemm --m {m} --n {n} --k {k}"), total)
        .map_err(|e| format!("bench gemm: {e}"))
}

/// Runs the benchmark.
pub fn run(args: &BenchArgs) -> Result<(), String> {
    let shapes: Vec<(usize, usize, usize, String)> = match (args.m, args.n, args.k) {
        (None, None, None) => STANDARD
            .iter()
            .map(|&(m, n, k, l)| (m, n, k, l.to_string()))
            .collect(),
        (Some(m), Some(n), Some(k)) => {
            check_custom_shape(m, n, k)?;
            vec![(m, n, k, format!("{m}x{n}x{k}"))]
        }
        _ => {
            return Err(
                "bench gemm: give all of --m, --n and --k, or none for the standard set".into(),
            )
        }
    };
    let threads = crate::init_threads(args.threads)?;
    // matrixmultiply reads its thread count from the environment once, at first use.
    std::env::set_var("MATMUL_NUM_THREADS", threads.to_string());
    let isa = Isa::current().map_err(|e| e.to_string())?;
    if !args.json {
        outln!("tessera bench gemm: isa {isa}, {threads} thread(s); median GFLOP/s after warm-up, alternating runs of consecutive calls");
        outln!("(packed B: the right operand packed once, as a layer's weights are at load time;");
        outln!(" FMA peak: the register-only loop of `tessera peak`, timed between the products; % of it: tessera's)");
        outln!(
            "{:<26} {:>16} {:>9} {:>9} {:>15} {:>7} {:>9} {:>7}",
            "shape",
            "m x n x k",
            "tessera",
            "packed B",
            "matrixmultiply",
            "ratio",
            "FMA peak",
            "% peak"
        );
    }
    for (m, n, k, label) in shapes {
        let (t, p, mm, peak) = measure(m, n, k, threads, isa)?;
        let row = Row {
            m,
            n,
            k,
            label,
            tessera: t,
            packed_b: p,
            mm,
            peak,
        };
        if args.json {
            outln!(
                "{}",
                serde_json::json!({
                    "op": "gemm", "m": row.m, "n": row.n, "k": row.k, "threads": threads, "isa": isa.name(),
                    "tessera_gflops": round2(row.tessera), "tessera_packed_b_gflops": round2(row.packed_b),
                    "matrixmultiply_gflops": round2(row.mm),
                    "fma_peak_interleaved_gflops": round2(row.peak),
                    "tessera_pct_of_interleaved_peak": round2(row.pct_of_peak()),
                })
            );
        } else {
            outln!(
                "{:<26} {:>16} {:>9.1} {:>9.1} {:>15.1} {:>6.2}x {:>9.1} {:>6.1}%",
                row.label,
                format!("{}x{}x{}", row.m, row.n, row.k),
                row.tessera,
                row.packed_b,
                row.mm,
                row.tessera / row.mm,
                row.peak,
                row.pct_of_peak()
            );
        }
    }
    Ok(())
}

fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}
