//! Per-channel sums of channels-last maps `[n, hw, c]` in f64: the global average pool and the
//! squeeze-and-excitation squeeze of the inference plan's channels-last stages.
//!
//! Each channel is summed pixel by pixel, in pixel order, in f64 (why f64: see
//! [`super::avg::lane_sum`]). The channels go in runs of [`RUN`]: a run's 64 f64 sums stay in
//! registers (eight 512-bit vectors, sixteen 256-bit ones) while the pixels stream past, each
//! pixel adding one contiguous run of 64 floats. The body is plain Rust instantiated inside a
//! `#[target_feature]` wrapper per ISA, so the compiler vectorises it at that width; the runs
//! of all images are split over the pool when the map is large. Each sum is the same chain of
//! adds on every path and for any thread count, so the bits never change.

use crate::isa::Tables;
use crate::parallel::SharedMut;
use crate::simd::tables;

/// Channels per run (and per task).
const RUN: usize = 64;

/// Floats of `x` from which the runs are split over the pool.
const PAR_FLOATS: usize = 1 << 15;

/// `out[i] = sum_p img[p * c + c0 + i]` for the `out.len() <= RUN` channels from `c0`.
#[inline(always)]
fn run_body(img: &[f32], hw: usize, c: usize, c0: usize, out: &mut [f64]) {
    let mut acc = [0.0f64; RUN];
    let k = out.len();
    if k == RUN {
        for p in 0..hw {
            let px = &img[p * c + c0..p * c + c0 + RUN];
            for (a, &v) in acc.iter_mut().zip(px) {
                *a += f64::from(v);
            }
        }
    } else {
        for p in 0..hw {
            for (a, &v) in acc.iter_mut().zip(&img[p * c + c0..p * c + c0 + k]) {
                *a += f64::from(v);
            }
        }
    }
    out.copy_from_slice(&acc[..k]);
}

type RunFn = unsafe fn(&[f32], usize, usize, usize, &mut [f64]);

macro_rules! sum_kernels {
    ($S:ty $(, $feat:literal)?) => {{
        $(#[target_feature(enable = $feat)])?
        unsafe fn run(img: &[f32], hw: usize, c: usize, c0: usize, out: &mut [f64]) {
            run_body(img, hw, c, c0, out)
        }
        run as RunFn
    }};
}

static TABLES: Tables<RunFn> = tables!(RunFn, sum_kernels);

/// `out[b * c + ch] = conv(sum_p x[(b * hw + p) * c + ch])` (`x`: `n * hw * c` floats,
/// `out`: `n * c`; the caller checks the lengths) on the path of
/// [`crate::isa::Isa::current`], or the plain loop if no table can be used. Allocates nothing.
pub(crate) fn channel_sums_nhwc<T: Send>(
    n: usize,
    hw: usize,
    c: usize,
    x: &[f32],
    out: &mut [T],
    conv: impl Fn(f64) -> T + Sync,
) {
    let run = TABLES.current().map_or(run_body as RunFn, |f| *f);
    let runs = c.div_ceil(RUN);
    let o = SharedMut(out.as_mut_ptr());
    let one = |t: usize| {
        let (b, r) = (t / runs, t % runs);
        let (c0, k) = (r * RUN, RUN.min(c - r * RUN));
        let mut sums = [0.0f64; RUN];
        // SAFETY: the table's ISA was checked (or this is the plain body); image b holds
        // hw * c floats and the run k <= RUN channels from c0 < c.
        unsafe { run(&x[b * hw * c..(b + 1) * hw * c], hw, c, c0, &mut sums[..k]) };
        for (i, &v) in sums[..k].iter().enumerate() {
            // SAFETY: task t alone writes channels c0..c0 + k of image b, inside `out`
            // (n * c elements, borrowed mutably for the whole call).
            unsafe { *o.get().add(b * c + c0 + i) = conv(v) };
        }
    };
    if x.len() >= PAR_FLOATS && runs * n > 1 {
        crate::parallel::for_each_task(n * runs, one);
    } else {
        (0..n * runs).for_each(one);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::isa::Isa;

    /// Every ISA's run kernel, and the threaded entry point, give exactly the bits of the plain
    /// pixel-order f64 sum, on full and partial runs.
    #[test]
    fn every_path_sums_in_pixel_order() {
        for (n, hw, c) in [
            (1, 49, 960),
            (2, 196, 72),
            (1, 3, 1),
            (3, 7, 130),
            (1, 784, 120),
        ] {
            let x: Vec<f32> = (0..n * hw * c)
                .map(|i| ((i * 7919 % 1000) as f32 - 500.0) * 1.37e-3)
                .collect();
            let want: Vec<f64> = (0..n * c)
                .map(|bc| {
                    let (b, ch) = (bc / c, bc % c);
                    (0..hw).fold(0.0f64, |a, p| a + f64::from(x[(b * hw + p) * c + ch]))
                })
                .collect();
            for isa in Isa::available() {
                let run = *TABLES.get(isa).unwrap();
                for b in 0..n {
                    for c0 in (0..c).step_by(RUN) {
                        let k = RUN.min(c - c0);
                        let mut got = [0.0f64; RUN];
                        // SAFETY: the ISA is available; image b and the run lie inside x.
                        unsafe { run(&x[b * hw * c..(b + 1) * hw * c], hw, c, c0, &mut got[..k]) };
                        for i in 0..k {
                            let w = want[b * c + c0 + i];
                            assert_eq!(got[i].to_bits(), w.to_bits(), "{isa:?} {n}x{hw}x{c}");
                        }
                    }
                }
            }
            let mut got = vec![0.0f64; n * c];
            channel_sums_nhwc(n, hw, c, &x, &mut got, |v| v);
            assert_eq!(got, want, "{n}x{hw}x{c}");
        }
    }
}
