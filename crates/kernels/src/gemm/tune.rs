//! `tessera tune`'s measurement: times the microkernel candidates and block sizes of each ISA
//! on this host and returns the fastest, which `tune_cache.rs` stores.
//!
//! The search starts from the analytical blocking (`blocking.rs`): first each candidate kernel
//! with its analytical blocks, then a grid of KC x MC values for each kernel, best first, as
//! far as the time budget goes. A
//! configuration's score is the geometric mean GFLOP/s over shapes that stand for the
//! engine's products (a square GEMM, a ResNet 3x3 convolution as im2col, a MobileNet 1x1
//! convolution, a ViT projection), one thread, median of several runs. Every configuration
//! computes the same product, so a candidate that is wrong cannot win: its result is checked
//! against the first configuration's within a tolerance before it is timed. Last, the
//! winner's deep depth block (`Tuning::blocking_for`: products whose C outgrows L2) is chosen
//! among the model's, its own KC and deeper ones on [`DEEP_SHAPES`].

use super::table::{analytical_default, candidates, Tuning};
use super::{gemm_ex, Epilogue, GemmConfig, MatMut, MatRef, Operand};
use crate::isa::Isa;
use std::time::{Duration, Instant};

/// The products a configuration is timed on: `(label, m, n, k)`.
pub const SHAPES: [(&str, usize, usize, usize); 4] = [
    ("square 1024^3", 1024, 1024, 1024),
    ("ResNet 3x3 im2col", 3136, 64, 576),
    ("MobileNet 1x1", 3136, 96, 24),
    ("ViT-B qkv", 197, 2304, 768),
];

/// The products a deeper depth block for large C (`Tuning::blocking_for`) is timed on: C of 4
/// and 16 MiB, larger than the L2 of every x86-64 core so far. On a host whose L2 holds them
/// every candidate runs the same blocks, and the winner's own KC stays.
pub const DEEP_SHAPES: [(&str, usize, usize, usize); 2] = [
    ("square 1024^3", 1024, 1024, 1024),
    ("2048 x 2048 x 1024", 2048, 2048, 1024),
];

/// The deep depth blocks tried besides the model's and none (those deeper than the winner's
/// KC).
const DEEP_KCS: [usize; 4] = [384, 512, 768, 1024];

/// How much better (score ratio) a configuration must measure to replace the incumbent.
pub const MARGIN: f64 = 1.03;

/// One measured configuration.
#[derive(Debug, Clone)]
pub struct Trial {
    /// What was run.
    pub tuning: Tuning,
    /// GFLOP/s per shape of [`SHAPES`].
    pub gflops: Vec<f64>,
    /// Geometric mean of `gflops`.
    pub score: f64,
}

/// The outcome for one ISA.
#[derive(Debug, Clone)]
pub struct IsaResult {
    /// The ISA.
    pub isa: Isa,
    /// Every configuration tried, in order.
    pub trials: Vec<Trial>,
    /// The index of the winner in `trials` (the analytical default is the first).
    pub best: usize,
    /// The winner with each deep depth block tried, timed on [`DEEP_SHAPES`]; the first keeps
    /// the winner's own KC.
    pub deep_trials: Vec<Trial>,
    /// The index of the winning deep depth block in `deep_trials`.
    pub deep_best: usize,
}

impl IsaResult {
    /// The winning configuration (its score on [`SHAPES`]).
    pub fn winner(&self) -> &Trial {
        &self.trials[self.best]
    }

    /// What the cache stores: the winner with the winning deep depth block.
    pub fn tuning(&self) -> Tuning {
        self.deep_trials
            .get(self.deep_best)
            .map_or(self.winner().tuning, |t| t.tuning)
    }
}

struct Bench {
    a: Vec<f32>,
    b: Vec<f32>,
    c: Vec<f32>,
}

fn data(len: usize, seed: u32) -> Vec<f32> {
    let mut x = seed.wrapping_mul(2_654_435_761).max(1);
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            (x >> 8) as f32 / (1u32 << 24) as f32 - 0.5
        })
        .collect()
}

impl Bench {
    fn new(m: usize, n: usize, k: usize) -> Bench {
        Bench {
            a: data(m * k, 1),
            b: data(k * n, 2),
            c: vec![0.0; m * n],
        }
    }

    /// Median seconds of `reps` runs (after one warm-up).
    fn time(&mut self, m: usize, n: usize, k: usize, t: Tuning, reps: usize) -> f64 {
        let cfg = GemmConfig::single_thread().tuning(t);
        let run = |c: &mut [f32]| {
            gemm_ex(
                1.0,
                Operand::View(MatRef::row_major(&self.a, m, k)),
                Operand::View(MatRef::row_major(&self.b, k, n)),
                0.0,
                MatMut::row_major(c, m, n),
                Epilogue::default(),
                &cfg,
            )
            .expect("tuning shapes are valid");
        };
        let mut c = std::mem::take(&mut self.c);
        run(&mut c);
        let mut times: Vec<f64> = (0..reps)
            .map(|_| {
                let t0 = Instant::now();
                run(&mut c);
                t0.elapsed().as_secs_f64()
            })
            .collect();
        self.c = c;
        times.sort_by(f64::total_cmp);
        times[reps / 2]
    }
}

fn measure(
    benches: &mut [Bench],
    t: Tuning,
    reps: usize,
    check: Option<&[Vec<f32>]>,
) -> Option<Trial> {
    measure_on(&SHAPES, benches, t, reps, check)
}

fn measure_on(
    shapes: &[(&str, usize, usize, usize)],
    benches: &mut [Bench],
    t: Tuning,
    reps: usize,
    check: Option<&[Vec<f32>]>,
) -> Option<Trial> {
    let mut gflops = Vec::with_capacity(shapes.len());
    for (i, &(_, m, n, k)) in shapes.iter().enumerate() {
        let secs = benches[i].time(m, n, k, t, reps);
        if let Some(want) = check {
            let got = &benches[i].c;
            let ok = got
                .iter()
                .zip(&want[i])
                .all(|(g, w)| (g - w).abs() <= 1e-3 * (1.0 + w.abs()));
            if !ok {
                return None;
            }
        }
        gflops.push(2.0 * (m * n * k) as f64 / secs / 1e9);
    }
    let score = (gflops.iter().map(|g| g.ln()).sum::<f64>() / gflops.len() as f64).exp();
    Some(Trial {
        tuning: t,
        gflops,
        score,
    })
}

/// Tunes `isa` (which must be supported): about `budget` of search, plus a runoff of the four
/// best configurations.
pub fn tune_isa(isa: Isa, budget: Duration) -> IsaResult {
    let start = Instant::now();
    let mut benches: Vec<Bench> = SHAPES
        .iter()
        .map(|&(_, m, n, k)| Bench::new(m, n, k))
        .collect();
    let reps = 5;
    let first = Tuning::analytical(analytical_default(isa));
    let mut trials = vec![measure(&mut benches, first, reps, None).expect("no check")];
    let reference: Vec<Vec<f32>> = benches.iter().map(|b| b.c.clone()).collect();
    let mut best = 0;
    let mut try_one = |t: Tuning, trials: &mut Vec<Trial>, best: &mut usize| {
        // Time is checked per configuration: the runoff below takes about as long again.
        if start.elapsed() > budget || trials.iter().any(|x| x.tuning == t) {
            return;
        }
        if let Some(trial) = measure(&mut benches, t, reps, Some(&reference)) {
            trials.push(trial);
            // A challenger must beat the incumbent by a margin larger than the run-to-run
            // noise of a shared machine, or the analytical choice stays.
            if trials.last().unwrap().score > trials[*best].score * MARGIN {
                *best = trials.len() - 1;
            }
        }
    };
    // 1. Each kernel with its analytical blocks.
    for k in candidates(isa) {
        try_one(Tuning::analytical(k), &mut trials, &mut best);
    }
    // 2. A grid of depth and row blocks around each kernel's analytical ones, the best kernel
    //    of step 1 first: KC and MC interact (a deeper block wants fewer rows in L2), so a
    //    coordinate search along one then the other misses the best pairs; and a kernel whose
    //    model KC is shallow on this L1 may still win deeper (the model keeps B's micro-panel
    //    resident under LRU, which real replacement policies need not be).
    let mut kernels: Vec<&Trial> = trials.iter().collect();
    kernels.sort_by(|x, y| y.score.total_cmp(&x.score));
    let kernels: Vec<Tuning> = kernels.into_iter().map(|t| t.tuning).collect();
    for w in kernels {
        let mr = w.kernel.mr;
        for kc in [w.blocking.kc, 192, 256, 384, 512] {
            for rows in [w.blocking.mc, 96, 192, 288, 432, 576, 888] {
                let mc = (rows / mr).max(1) * mr;
                if let Some(t) = Tuning::with_blocks(w.kernel, kc, mc) {
                    try_one(t, &mut trials, &mut best);
                }
            }
        }
    }
    // 3. Runoff: the analytical choice and the three best of the search measured again,
    //    alternating, with more runs each; a single lucky measurement cannot win.
    let mut order: Vec<usize> = (1..trials.len()).collect();
    order.sort_by(|&x, &y| trials[y].score.total_cmp(&trials[x].score));
    let mut finalists: Vec<usize> = vec![0];
    finalists.extend(order.into_iter().take(3));
    let mut totals = vec![0.0f64; finalists.len()];
    for _ in 0..3 {
        for (slot, &i) in finalists.iter().enumerate() {
            if let Some(t) = measure(&mut benches, trials[i].tuning, reps, None) {
                totals[slot] += t.score.ln();
            }
        }
    }
    let mut best = 0;
    for slot in 1..finalists.len() {
        if totals[slot] > totals[best] + (3.0 * MARGIN.ln()) * if best == 0 { 1.0 } else { 0.0 } {
            best = slot;
        }
    }
    let best = finalists[best];
    let (deep_trials, deep_best) = tune_deep(trials[best].tuning);
    IsaResult {
        isa,
        trials,
        best,
        deep_trials,
        deep_best,
    }
}

/// The deep depth block for `winner`: the model's (`winner.deep_kc`, from
/// `blocking::derive_deep_kc`), its own KC (no deeper block) and each deeper one of
/// [`DEEP_KCS`], timed on [`DEEP_SHAPES`] in three alternating rounds. Another wins if its
/// mean log score beats the model's by [`MARGIN`]. Returns the trials (the first with the
/// model's; GFLOP/s and score averaged over the rounds) and the index of the winner.
fn tune_deep(winner: Tuning) -> (Vec<Trial>, usize) {
    let mut benches: Vec<Bench> = DEEP_SHAPES
        .iter()
        .map(|&(_, m, n, k)| Bench::new(m, n, k))
        .collect();
    let reps = 3;
    let mut tunings = vec![winner];
    tunings.extend(
        std::iter::once(winner.blocking.kc)
            .chain(
                DEEP_KCS
                    .iter()
                    .copied()
                    .filter(|&kc| kc > winner.blocking.kc),
            )
            .filter(|&kc| kc != winner.deep_kc)
            .filter_map(|kc| winner.with_deep_kc(kc)),
    );
    // The first run of the winner's own blocks is the reference every candidate must match.
    let Some(first) = measure_on(&DEEP_SHAPES, &mut benches, winner, reps, None) else {
        return (Vec::new(), 0);
    };
    let reference: Vec<Vec<f32>> = benches.iter().map(|b| b.c.clone()).collect();
    let mut runs: Vec<Vec<Trial>> = vec![Vec::new(); tunings.len()];
    runs[0].push(first);
    for round in 0..3 {
        for (i, &t) in tunings.iter().enumerate() {
            if round == 0 && i == 0 {
                continue;
            }
            if let Some(trial) = measure_on(&DEEP_SHAPES, &mut benches, t, reps, Some(&reference)) {
                runs[i].push(trial);
            }
        }
    }
    // A candidate whose product disagreed in any round is dropped.
    let trials: Vec<Trial> = runs
        .iter()
        .filter(|r| r.len() == 3)
        .map(|r| {
            let ln = r.iter().map(|t| t.score.ln()).sum::<f64>() / 3.0;
            Trial {
                tuning: r[0].tuning,
                gflops: (0..DEEP_SHAPES.len())
                    .map(|s| r.iter().map(|t| t.gflops[s]).sum::<f64>() / 3.0)
                    .collect(),
                score: ln.exp(),
            }
        })
        .collect();
    let mut best = 0;
    for (i, t) in trials.iter().enumerate().skip(1) {
        if t.score > trials[0].score * MARGIN && t.score > trials[best].score {
            best = i;
        }
    }
    (trials, best)
}
