//! Average pooling and adaptive average pooling, forward and backward, following PyTorch's CPU
//! kernels (`aten/src/ATen/native/cpu/AvgPoolKernel.cpp`, `AdaptiveAvgPoolKernel.cpp`):
//!
//! - window `[y0, min(y0 + kh, h + ph))` in padded coordinates; its size counts the padding
//!   (`count_include_pad`) but not the part past the right padding (ceil mode), then it is
//!   clipped to the input, whose size is the divisor otherwise;
//! - adaptive bin `o` of `out` over `in` is `[floor(o * in / out), ceil((o + 1) * in / out))`.
//!
//! Backward spreads each `dy / divisor` over its window; each input-gradient plane belongs to
//! one thread and is accumulated in output order.

use super::{check_len, per_plane, rename, Pool2dShape};
use crate::error::KernelError;

/// Sum of `v` in eight interleaved f64 partial sums (lane `i` takes elements `i, i + 8, ...`),
/// combined pairwise at the end. f64 because a global average pool sums thousands of values of
/// both signs (a squeeze-and-excitation squeeze over a 56x56 plane after batch norm): in f32
/// the rounding of the partial sums, relative to the largest of them, becomes a large relative
/// error of a mean that cancels, and the SE gate amplifies it through the network. The
/// widening is free next to the memory traffic; the compiler vectorises the lanes (a single
/// running sum is a chain of dependent adds), and the order is fixed, so the result does not
/// depend on the thread count.
#[inline]
pub(crate) fn lane_sum(v: &[f32]) -> f64 {
    lane_sums([v])[0]
}

/// [`lane_sum`] of `P` slices of one length at once, each in its order of lanes and tree (the
/// same bits; `lane_sum` is the case `P = 1`): the slices' partial sums are independent
/// chains, so where one sum waits on the latency of its adds (one vector of eight f64 lanes
/// per add on AVX-512), `P` of them fill the adder. Called from kernels compiled for an ISA, where it is inlined and vectorised.
#[inline(always)]
pub(crate) fn lane_sums<const P: usize>(v: [&[f32]; P]) -> [f64; P] {
    let n = v.first().map_or(0, |s| s.len());
    debug_assert!(
        v.iter().all(|s| s.len() == n),
        "lane_sums: slices of one length"
    );
    let v = v.map(|s| &s[..n]);
    let whole = n / 8 * 8;
    let mut acc = [[0.0f64; 8]; P];
    let mut i = 0;
    while i < whole {
        for (a, s) in acc.iter_mut().zip(&v) {
            for (a, &x) in a.iter_mut().zip(&s[i..i + 8]) {
                *a += f64::from(x);
            }
        }
        i += 8;
    }
    for (a, s) in acc.iter_mut().zip(&v) {
        for (a, &x) in a.iter_mut().zip(&s[whole..]) {
            *a += f64::from(x);
        }
    }
    acc.map(|a| ((a[0] + a[4]) + (a[2] + a[6])) + ((a[1] + a[5]) + (a[3] + a[7])))
}

/// `out[b * c + ch] = mean_p x[(b * hw + p) * c + ch]` of channels-last maps `[n, hw, c]`,
/// summed in f64 pixel by pixel (the squeeze of a channels-last map; `out` holds `n * c`).
pub(crate) fn channel_means_nhwc(n: usize, hw: usize, c: usize, x: &[f32], out: &mut [f64]) {
    let d = hw as f64;
    super::channel_sum::channel_sums_nhwc(n, hw, c, x, out, |v| v / d);
}

/// Global average pooling of channels-last maps: `x` `[n, hw, c]` -> `y` `[n, c]`, each mean
/// summed in f64 and rounded once (the inference plan's channels-last form of
/// [`adaptive_avg_pool2d_forward`] to 1 x 1).
pub fn global_avg_pool_nhwc(
    n: usize,
    hw: usize,
    c: usize,
    x: &[f32],
    y: &mut [f32],
) -> Result<(), KernelError> {
    let want = n.checked_mul(hw).and_then(|v| v.checked_mul(c));
    if hw == 0 || want != Some(x.len()) || n.checked_mul(c) != Some(y.len()) {
        return Err(KernelError::invalid(
            "global_avg_pool_nhwc",
            format!(
                "[{n}, {hw}, {c}] wants x of n*hw*c and y of n*c floats (hw > 0), got {} and {}",
                x.len(),
                y.len()
            ),
        ));
    }
    let d = hw as f64;
    super::channel_sum::channel_sums_nhwc(n, hw, c, x, y, |v| (v / d) as f32);
    Ok(())
}

/// The clipped window `(r0, r1, c0, c1)` of output `(oy, ox)` and its divisor.
#[inline]
fn window(
    s: &Pool2dShape,
    include_pad: bool,
    oy: usize,
    ox: usize,
) -> (usize, usize, usize, usize, f32) {
    let (ph, pw) = (s.padding.0 as isize, s.padding.1 as isize);
    let y0 = (oy * s.stride.0) as isize - ph;
    let x0 = (ox * s.stride.1) as isize - pw;
    let y1 = (y0 + s.kh as isize).min(s.h as isize + ph);
    let x1 = (x0 + s.kw as isize).min(s.w as isize + pw);
    let padded = (y1 - y0) * (x1 - x0);
    let (r0, c0) = (y0.max(0), x0.max(0));
    let (r1, c1) = (y1.min(s.h as isize).max(r0), x1.min(s.w as isize).max(c0));
    let count = if include_pad {
        padded
    } else {
        (r1 - r0) * (c1 - c0)
    };
    (
        r0 as usize,
        r1 as usize,
        c0 as usize,
        c1 as usize,
        count as f32,
    )
}

/// `y = mean over each window of x` (`[n, c, h, w]` -> `[n, c, out_h, out_w]`).
pub fn avg_pool2d_forward(
    s: &Pool2dShape,
    count_include_pad: bool,
    x: &[f32],
    y: &mut [f32],
) -> Result<(), KernelError> {
    const OP: &str = "avg_pool2d_forward";
    s.validate().map_err(|e| rename(e, OP))?;
    check_len(OP, s, "x", x.len(), s.input_len())?;
    check_len(OP, s, "y", y.len(), s.output_len())?;
    let (oh, ow, hw) = (s.out_h(), s.out_w(), s.h * s.w);
    per_plane(y, oh * ow, s.input_len(), |p, out| {
        let xp = &x[p * hw..(p + 1) * hw];
        for oy in 0..oh {
            for ox in 0..ow {
                let (r0, r1, c0, c1, count) = window(s, count_include_pad, oy, ox);
                let mut sum = 0.0f32;
                for r in r0..r1 {
                    for &v in &xp[r * s.w + c0..r * s.w + c1] {
                        sum += v;
                    }
                }
                out[oy * ow + ox] = if r0 < r1 && c0 < c1 { sum / count } else { 0.0 };
            }
        }
    });
    Ok(())
}

/// The gradient of [`avg_pool2d_forward`] (overwrites `dx`).
pub fn avg_pool2d_backward(
    s: &Pool2dShape,
    count_include_pad: bool,
    dy: &[f32],
    dx: &mut [f32],
) -> Result<(), KernelError> {
    const OP: &str = "avg_pool2d_backward";
    s.validate().map_err(|e| rename(e, OP))?;
    check_len(OP, s, "dy", dy.len(), s.output_len())?;
    check_len(OP, s, "dx", dx.len(), s.input_len())?;
    let (oh, ow, hw) = (s.out_h(), s.out_w(), s.h * s.w);
    per_plane(dx, hw, s.input_len(), |p, out| {
        out.fill(0.0);
        let g = &dy[p * oh * ow..(p + 1) * oh * ow];
        for oy in 0..oh {
            for ox in 0..ow {
                let (r0, r1, c0, c1, count) = window(s, count_include_pad, oy, ox);
                let v = g[oy * ow + ox] / count;
                for r in r0..r1 {
                    for o in &mut out[r * s.w + c0..r * s.w + c1] {
                        *o += v;
                    }
                }
            }
        }
    });
    Ok(())
}

/// Adaptive bin `[start, end)` of output `o` of `out` over an input of `len`.
#[inline]
fn bin(o: usize, out: usize, len: usize) -> (usize, usize) {
    ((o * len) / out, ((o + 1) * len).div_ceil(out))
}

fn check_adaptive(
    op: &'static str,
    dims: [usize; 6],
    in_len: usize,
    out_len: usize,
) -> Result<(), KernelError> {
    let [n, c, h, w, oh, ow] = dims;
    // Formatted only on the error paths: a valid call allocates nothing.
    let shape = || format!("x [{n}, {c}, {h}, {w}] -> [{oh}, {ow}]");
    if c == 0 || h == 0 || w == 0 || oh == 0 || ow == 0 {
        return Err(KernelError::invalid(
            op,
            format!(
                "{}: channels, input and output extents must be non-zero",
                shape()
            ),
        ));
    }
    let prod = |d: [usize; 4]| {
        d.iter()
            .try_fold(1usize, |a, &b| a.checked_mul(b))
            .filter(|&v| v <= isize::MAX as usize / 4)
    };
    // (o + 1) * len must not overflow in `bin`.
    let (Some(want_in), Some(want_out), Some(_), Some(_)) = (
        prod([n, c, h, w]),
        prod([n, c, oh, ow]),
        (oh + 1).checked_mul(h),
        (ow + 1).checked_mul(w),
    ) else {
        return Err(KernelError::invalid(
            op,
            format!("{}: sizes overflow", shape()),
        ));
    };
    if in_len != want_in {
        return Err(KernelError::invalid(
            op,
            format!(
                "{}: input has {in_len} elements, expected {want_in}",
                shape()
            ),
        ));
    }
    if out_len != want_out {
        return Err(KernelError::invalid(
            op,
            format!(
                "{}: output has {out_len} elements, expected {want_out}",
                shape()
            ),
        ));
    }
    Ok(())
}

/// PyTorch's `adaptive_avg_pool2d`: `[n, c, h, w]` -> `[n, c, oh, ow]`, each output the mean of
/// its bin (see the module header).
#[allow(clippy::too_many_arguments)]
pub fn adaptive_avg_pool2d_forward(
    n: usize,
    c: usize,
    h: usize,
    w: usize,
    oh: usize,
    ow: usize,
    x: &[f32],
    y: &mut [f32],
) -> Result<(), KernelError> {
    check_adaptive(
        "adaptive_avg_pool2d_forward",
        [n, c, h, w, oh, ow],
        x.len(),
        y.len(),
    )?;
    per_plane(y, oh * ow, x.len(), |p, out| {
        let xp = &x[p * h * w..(p + 1) * h * w];
        for oy in 0..oh {
            let (r0, r1) = bin(oy, oh, h);
            for ox in 0..ow {
                let (c0, c1) = bin(ox, ow, w);
                let sum = if c0 == 0 && c1 == w {
                    // Whole rows (always the case for global pooling): one contiguous run.
                    lane_sum(&xp[r0 * w..r1 * w])
                } else {
                    (r0..r1)
                        .map(|r| lane_sum(&xp[r * w + c0..r * w + c1]))
                        .sum()
                };
                out[oy * ow + ox] = (sum / ((r1 - r0) * (c1 - c0)) as f64) as f32;
            }
        }
    });
    Ok(())
}

/// The gradient of [`adaptive_avg_pool2d_forward`] (overwrites `dx`, `[n, c, h, w]`).
#[allow(clippy::too_many_arguments)]
pub fn adaptive_avg_pool2d_backward(
    n: usize,
    c: usize,
    h: usize,
    w: usize,
    oh: usize,
    ow: usize,
    dy: &[f32],
    dx: &mut [f32],
) -> Result<(), KernelError> {
    check_adaptive(
        "adaptive_avg_pool2d_backward",
        [n, c, h, w, oh, ow],
        dx.len(),
        dy.len(),
    )?;
    let work = dx.len();
    per_plane(dx, h * w, work, |p, out| {
        let g = &dy[p * oh * ow..(p + 1) * oh * ow];
        if oh == 1 && ow == 1 {
            // Global pooling (squeeze-excitation, the head): one value per plane, one write pass.
            out.fill(g[0] / (h * w) as f32);
            return;
        }
        out.fill(0.0);
        for oy in 0..oh {
            let (r0, r1) = bin(oy, oh, h);
            for ox in 0..ow {
                let (c0, c1) = bin(ox, ow, w);
                let v = g[oy * ow + ox] / ((r1 - r0) * (c1 - c0)) as f32;
                for r in r0..r1 {
                    for o in &mut out[r * w + c0..r * w + c1] {
                        *o += v;
                    }
                }
            }
        }
    });
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::{lane_sum, lane_sums};

    #[test]
    fn lane_sums_are_lane_sum_bit_for_bit() {
        // Values of mixed sign and scale, so that the order of summation shows in the bits.
        let v: Vec<f32> = (0..4 * 203_i32)
            .map(|i| ((i * 7919 % 1000) as f32 - 500.0) * 10f32.powi(i % 9 - 4))
            .collect();
        for len in [0, 1, 7, 8, 9, 16, 49, 196, 203] {
            let s: [&[f32]; 4] = std::array::from_fn(|j| &v[j * 203..j * 203 + len]);
            let got = lane_sums(s);
            for j in 0..4 {
                assert_eq!(
                    got[j].to_bits(),
                    lane_sum(s[j]).to_bits(),
                    "len {len} slice {j}"
                );
            }
        }
    }
}
