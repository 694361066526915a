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

/// `out[i] = s[i] * x[i]` over one run: `img` (`hw` pixels of `c` channels), channels
/// `c0..c0 + gate.len()`, in place.
#[inline(always)]
fn scale_body(img: &mut [f32], hw: usize, c: usize, c0: usize, gate: &[f32]) {
    let k = gate.len();
    for p in 0..hw {
        for (v, &g) in img[p * c + c0..p * c + c0 + k].iter_mut().zip(gate) {
            *v *= g;
        }
    }
}

type ScaleFn = unsafe fn(&mut [f32], usize, usize, usize, &[f32]);

macro_rules! scale_kernels {
    ($S:ty $(, $feat:literal)?) => {{
        $(#[target_feature(enable = $feat)])?
        unsafe fn run(img: &mut [f32], hw: usize, c: usize, c0: usize, gate: &[f32]) {
            scale_body(img, hw, c, c0, gate)
        }
        run as ScaleFn
    }};
}

static SCALE: Tables<ScaleFn> = tables!(ScaleFn, scale_kernels);

/// `x[b, p, ch] *= s[b, ch]` over channels-last maps `[n, hw, c]` (the squeeze-and-excitation
/// gate applied in place; `s` is `[n, c]`). The tasks are the runs of [`channel_sums_nhwc`],
/// in the same order, so that a thread scales the channels it has just summed while they are
/// in its cache (a split by pixels instead moved half of the map between the cores: 31.5 us
/// for MobileNetV3-Large's 672 x 196 at two threads). Element-wise: the same bits on every
/// path and for any thread count. Errors: lengths that do not match.
pub fn scale_channels_nhwc(
    n: usize,
    hw: usize,
    c: usize,
    x: &mut [f32],
    s: &[f32],
) -> Result<(), crate::error::KernelError> {
    if Some(x.len()) != n.checked_mul(hw).and_then(|v| v.checked_mul(c)) || s.len() != n * c {
        return Err(crate::error::KernelError::invalid(
            "scale_channels_nhwc",
            format!(
                "[{n}, {hw}, {c}] wants x of n*hw*c and s of n*c floats, got {} and {}",
                x.len(),
                s.len()
            ),
        ));
    }
    if c == 0 || hw == 0 {
        return Ok(());
    }
    let run = SCALE.current().map_or(scale_body as ScaleFn, |f| *f);
    let runs = c.div_ceil(RUN);
    let len = x.len();
    let xp = SharedMut(x.as_mut_ptr());
    let one = |t: usize| {
        let (b, r) = (t / runs, t % runs);
        let (c0, k) = (r * RUN, RUN.min(c - r * RUN));
        // SAFETY: task t alone touches channels c0..c0 + k of image b (every pixel), a set
        // no other task reads or writes; the image's hw * c floats lie inside `x` (length
        // checked above), borrowed mutably for the whole call.
        unsafe {
            let img = std::slice::from_raw_parts_mut(xp.get().add(b * hw * c), hw * c);
            run(img, hw, c, c0, &s[b * c + c0..b * c + c0 + k]);
        }
    };
    if len >= PAR_FLOATS && runs * n > 1 {
        crate::parallel::for_each_task(n * runs, one);
    } else {
        (0..n * runs).for_each(one);
    }
    Ok(())
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

    /// Every ISA's scaling kernel and the threaded entry point multiply each element by its
    /// channel's gate exactly once; bad lengths are errors.
    #[test]
    fn scaling_multiplies_each_element_by_its_channel_gate() {
        for (n, hw, c) in [(1, 196, 672), (2, 49, 130), (1, 3, 1), (3, 7, 64)] {
            let x: Vec<f32> = (0..n * hw * c)
                .map(|i| (i % 97) as f32 * 0.37 - 9.0)
                .collect();
            let s: Vec<f32> = (0..n * c).map(|i| (i % 11) as f32 * 0.093 + 0.01).collect();
            let want: Vec<f32> = (0..x.len())
                .map(|i| x[i] * s[(i / (hw * c)) * c + i % c])
                .collect();
            for isa in Isa::available() {
                let run = *SCALE.get(isa).unwrap();
                let mut got = x.clone();
                for b in 0..n {
                    for c0 in (0..c).step_by(RUN) {
                        let k = RUN.min(c - c0);
                        let img = &mut got[b * hw * c..(b + 1) * hw * c];
                        // SAFETY: the ISA is available; the run lies inside the image.
                        unsafe { run(img, hw, c, c0, &s[b * c + c0..b * c + c0 + k]) };
                    }
                }
                assert_eq!(got, want, "{isa:?} {n}x{hw}x{c}");
            }
            let mut got = x.clone();
            scale_channels_nhwc(n, hw, c, &mut got, &s).unwrap();
            assert_eq!(got, want, "{n}x{hw}x{c}");
        }
        let mut x = vec![0.0f32; 12];
        assert!(scale_channels_nhwc(1, 3, 4, &mut x, &[1.0; 3]).is_err());
        assert!(scale_channels_nhwc(1, 4, 4, &mut x, &[1.0; 4]).is_err());
    }
}
