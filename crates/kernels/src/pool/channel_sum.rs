//! Per-channel sums of channels-last maps `[n, hw, c]` in f64: the global average pool and the
//! squeeze-and-excitation squeeze of the inference plan's channels-last stages.
//!
//! Each channel is summed in f64 (why f64: see [`super::avg::lane_sum`]), pixel by pixel in
//! pixel order, or on a large map in fixed blocks of pixels whose sums are then added in block
//! order. The channels go in runs of [`RUN`]: a run's 64 f64 sums stay in registers (eight
//! 512-bit vectors, sixteen 256-bit ones) while the pixels stream past, each pixel adding one
//! contiguous run of 64 floats. The body is plain Rust instantiated inside a
//! `#[target_feature]` wrapper per ISA, so the compiler vectorises it at that width. The
//! blocks depend on the channel count only: each sum is the same chain of adds on every path
//! and for any thread count. [`scale_channels_nhwc`] applies the gate over the same blocks.

use crate::isa::Tables;
use crate::parallel::SharedMut;
use crate::simd::tables;

/// Channels per run of sums kept in registers.
const RUN: usize = 64;

/// Floats of `x` from which the pixels are split into blocks over the pool.
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

/// Floats per pixel block of the parallel form (whole pixels, at least one).
const BLOCK_FLOATS: usize = 1 << 13;

/// Pixels per block of the parallel form: fixed by the channel count alone, so the order of
/// summation does not depend on the thread count.
fn block_pixels(c: usize) -> usize {
    (BLOCK_FLOATS / c.max(1)).max(1)
}

thread_local! {
    /// The per-block partial sums (taken for a call, put back after: a warm call allocates
    /// nothing).
    static PARTIAL: std::cell::Cell<Option<Vec<f64>>> = const { std::cell::Cell::new(None) };
}

/// `out[b * c + ch] = conv(sum_p x[(b * hw + p) * c + ch])` (`x`: `n * hw * c` floats,
/// `out`: `n * c`; the caller checks the lengths) on the path of
/// [`crate::isa::Isa::current`], or the plain loop if no table can be used. A small map is
/// summed pixel by pixel; a large one in blocks of [`block_pixels`] pixels, one task per
/// block, each channel's block sums then added in block order. The tasks run the pixels in
/// order, as the depthwise convolution before and the pointwise one after (tasks of output
/// rows, and of pixel rows of `X^T`), so each thread reads the pixels it wrote. Warm, it
/// allocates nothing.
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
    // Sums of pixels p0..p1 of image b into `dst` (c floats).
    let block_sums = |b: usize, p0: usize, p1: usize, dst: &mut [f64]| {
        let img = &x[(b * hw + p0) * c..(b * hw + p1) * c];
        for r in 0..runs {
            let (c0, k) = (r * RUN, RUN.min(c - r * RUN));
            // SAFETY: the table's ISA was checked (or this is the plain body); `img` holds
            // p1 - p0 pixels of c floats and the run k <= RUN channels from c0 < c.
            unsafe { run(img, p1 - p0, c, c0, &mut dst[c0..c0 + k]) };
        }
    };
    if x.len() < PAR_FLOATS || hw < 2 {
        let mut sums = [0.0f64; RUN];
        for b in 0..n {
            let img = &x[b * hw * c..(b + 1) * hw * c];
            for r in 0..runs {
                let (c0, k) = (r * RUN, RUN.min(c - r * RUN));
                // SAFETY: as in `block_sums`, over the whole image.
                unsafe { run(img, hw, c, c0, &mut sums[..k]) };
                for (o, &v) in out[b * c + c0..b * c + c0 + k].iter_mut().zip(&sums[..k]) {
                    *o = conv(v);
                }
            }
        }
        return;
    }
    let pb = block_pixels(c);
    let blocks = hw.div_ceil(pb);
    let mut partial = PARTIAL.with(|p| p.take()).unwrap_or_default();
    if partial.len() < n * blocks * c {
        partial.resize(n * blocks * c, 0.0);
    }
    let pp = SharedMut(partial.as_mut_ptr());
    crate::parallel::for_each_task(n * blocks, |t| {
        let (b, blk) = (t / blocks, t % blocks);
        // SAFETY: task t alone writes the c partial sums of its block, floats t * c.. of
        // `partial` (n * blocks * c long, held for the whole call).
        let dst = unsafe { std::slice::from_raw_parts_mut(pp.get().add(t * c), c) };
        block_sums(b, blk * pb, ((blk + 1) * pb).min(hw), dst);
    });
    for b in 0..n {
        let first = &partial[b * blocks * c..(b * blocks + 1) * c];
        let o = &mut out[b * c..(b + 1) * c];
        for ch in 0..c {
            let mut acc = first[ch];
            for blk in 1..blocks {
                acc += partial[(b * blocks + blk) * c + ch];
            }
            o[ch] = conv(acc);
        }
    }
    PARTIAL.with(|p| p.set(Some(partial)));
}

/// `px[ch] *= gate[ch]` for every pixel `px` of `img` (whole pixels of `gate.len()`
/// channels), in place.
#[inline(always)]
fn scale_body(img: &mut [f32], gate: &[f32]) {
    for px in img.chunks_exact_mut(gate.len().max(1)) {
        for (v, &g) in px.iter_mut().zip(gate) {
            *v *= g;
        }
    }
}

type ScaleFn = unsafe fn(&mut [f32], &[f32]);

macro_rules! scale_kernels {
    ($S:ty $(, $feat:literal)?) => {{
        $(#[target_feature(enable = $feat)])?
        unsafe fn run(img: &mut [f32], gate: &[f32]) {
            scale_body(img, gate)
        }
        run as ScaleFn
    }};
}

static SCALE: Tables<ScaleFn> = tables!(ScaleFn, scale_kernels);

/// `x[b, p, ch] *= s[b, ch]` over channels-last maps `[n, hw, c]` (the squeeze-and-excitation
/// gate applied in place; `s` is `[n, c]`), one task per pixel block of
/// [`channel_sums_nhwc`], in the same order, so that a thread scales the pixels it has just
/// summed (and wrote in the step before). Element-wise: the same bits on every path and for
/// any thread count. Errors: lengths that do not match.
pub fn scale_channels_nhwc(
    n: usize,
    hw: usize,
    c: usize,
    x: &mut [f32],
    s: &[f32],
) -> Result<(), crate::error::KernelError> {
    if Some(x.len()) != n.checked_mul(hw).and_then(|v| v.checked_mul(c))
        || Some(s.len()) != n.checked_mul(c)
    {
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
    let pb = block_pixels(c);
    let blocks = hw.div_ceil(pb);
    let len = x.len();
    let xp = SharedMut(x.as_mut_ptr());
    let one = |t: usize| {
        let (b, blk) = (t / blocks, t % blocks);
        let (p0, p1) = (blk * pb, ((blk + 1) * pb).min(hw));
        // SAFETY: task t alone touches pixels p0..p1 of image b, floats
        // (b * hw + p0) * c..(b * hw + p1) * c of `x` (length checked above), borrowed
        // mutably for the whole call.
        unsafe {
            let img =
                std::slice::from_raw_parts_mut(xp.get().add((b * hw + p0) * c), (p1 - p0) * c);
            run(img, &s[b * c..(b + 1) * c]);
        }
    };
    if len >= PAR_FLOATS && blocks * n > 1 {
        crate::parallel::for_each_task(n * blocks, one);
    } else {
        (0..n * blocks).for_each(one);
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
            // The entry point: pixel order on a small map, block sums added in block order on
            // a large one; the same bits on one thread and on three.
            let want = if x.len() < PAR_FLOATS || hw < 2 {
                want
            } else {
                let pb = block_pixels(c);
                (0..n * c)
                    .map(|bc| {
                        let (b, ch) = (bc / c, bc % c);
                        let block = |p0: usize| {
                            (p0..(p0 + pb).min(hw))
                                .fold(0.0f64, |a, p| a + f64::from(x[(b * hw + p) * c + ch]))
                        };
                        (pb..hw).step_by(pb).fold(block(0), |a, p0| a + block(p0))
                    })
                    .collect()
            };
            for threads in [1, 3] {
                let pool = rayon::ThreadPoolBuilder::new()
                    .num_threads(threads)
                    .build()
                    .unwrap();
                let mut got = vec![0.0f64; n * c];
                pool.install(|| channel_sums_nhwc(n, hw, c, &x, &mut got, |v| v));
                assert_eq!(got, want, "{n}x{hw}x{c} on {threads} threads");
            }
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
                    let img = &mut got[b * hw * c..(b + 1) * hw * c];
                    // SAFETY: the ISA is available.
                    unsafe { run(img, &s[b * c..(b + 1) * c]) };
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
