//! Timing helpers shared by the benchmark sub-commands: warm-up, repeated runs, medians.

use std::time::Instant;

/// Summary statistics of repeated timings, in seconds.
#[derive(Debug, Clone, Copy)]
pub struct Stats {
    pub median: f64,
}

/// Percentile of a sample (nearest rank on the sorted values); `q` in [0, 1].
pub fn percentile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let idx = ((sorted.len() - 1) as f64 * q).round() as usize;
    sorted[idx.min(sorted.len() - 1)]
}

/// Summarises a set of timings.
pub fn stats(mut samples: Vec<f64>) -> Stats {
    samples.sort_by(f64::total_cmp);
    Stats {
        median: percentile(&samples, 0.5),
    }
}

/// Times one call of `f`, in seconds.
pub fn time_once(mut f: impl FnMut()) -> f64 {
    let t0 = Instant::now();
    f();
    t0.elapsed().as_secs_f64()
}

/// How many repetitions fit in `budget_s` seconds for a call that takes `one_s`, clamped.
pub fn reps_for(one_s: f64, budget_s: f64, min: usize, max: usize) -> usize {
    if one_s <= 0.0 {
        return max;
    }
    ((budget_s / one_s) as usize).clamp(min, max)
}

/// Median seconds per call of `f`: one warm-up call, then calls batched so that each timed
/// sample lasts at least ~20 us (timer resolution), as many samples as fit in `budget_s`
/// (at least `min_samples`, at most 1000).
pub fn median_per_call(mut f: impl FnMut(), budget_s: f64, min_samples: usize) -> f64 {
    let one = time_once(&mut f).max(1e-9);
    let batch = ((20e-6 / one).ceil() as usize).clamp(1, 10_000);
    let sample = one * batch as f64;
    let samples = reps_for(sample, budget_s, min_samples, 1000);
    let times: Vec<f64> = (0..samples)
        .map(|_| {
            time_once(|| {
                for _ in 0..batch {
                    f();
                }
            }) / batch as f64
        })
        .collect();
    stats(times).median
}
