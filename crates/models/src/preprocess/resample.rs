//! Resize with the centre crop folded in, as PIL's `Image.resize` computes it (Pillow's
//! `libImaging/Resample.c`): separable convolution, horizontal pass first then vertical, each
//! output pixel a weighted sum over the input pixels under the filter stretched by the
//! downscaling factor (antialiasing), weights normalised to sum to one and held in 22-bit fixed
//! point, the intermediate rounded to 8 bits. torchvision's `Resize` calls exactly this on PIL
//! images, so the pixels equal timm's.
//!
//! Only the output pixels inside the crop window are computed: the coefficients of output
//! column `x` depend only on `x`, the input size and the output size, so resizing a 1x20000
//! image to 256x5120000 and cropping 224x224 costs 224 columns x (the rows they need), never the
//! 1.3 G pixels of the full resize.

use super::config::Interpolation;
use std::ops::Range;

/// Fixed-point precision of the weights (Pillow's `PRECISION_BITS` for 8-bit images).
const PRECISION_BITS: u32 = 32 - 8 - 2;

fn bicubic(x: f64) -> f64 {
    const A: f64 = -0.5;
    let x = x.abs();
    if x < 1.0 {
        ((A + 2.0) * x - (A + 3.0)) * x * x + 1.0
    } else if x < 2.0 {
        (((x - 5.0) * x + 8.0) * x - 4.0) * A
    } else {
        0.0
    }
}

fn bilinear(x: f64) -> f64 {
    let x = x.abs();
    if x < 1.0 {
        1.0 - x
    } else {
        0.0
    }
}

/// The weights of a range of output positions along one axis: for output `i` of the range,
/// input positions `first[i] .. first[i] + count[i]` with weights `k[i * ksize ..]`.
struct Coeffs {
    first: Vec<usize>,
    count: Vec<usize>,
    ksize: usize,
    k: Vec<i32>,
}

/// Pillow's `precompute_coeffs` + `normalize_coeffs_8bpc` for outputs `outs` (within
/// `0..out_size`) of an `in_size -> out_size` resize.
fn coeffs(in_size: usize, out_size: usize, outs: Range<usize>, interp: Interpolation) -> Coeffs {
    let (filter, support): (fn(f64) -> f64, f64) = match interp {
        Interpolation::Bicubic => (bicubic, 2.0),
        Interpolation::Bilinear => (bilinear, 1.0),
    };
    let scale = in_size as f64 / out_size as f64;
    let filterscale = scale.max(1.0);
    let support = support * filterscale;
    let ksize = support.ceil() as usize * 2 + 1;
    let n = outs.len();
    let mut c = Coeffs {
        first: Vec::with_capacity(n),
        count: Vec::with_capacity(n),
        ksize,
        k: vec![0; n * ksize],
    };
    let mut w = vec![0.0f64; ksize];
    for (i, xx) in outs.enumerate() {
        let center = (xx as f64 + 0.5) * scale;
        // Pillow rounds with a C cast (towards zero), then clamps.
        let xmin = ((center - support + 0.5) as i64).max(0) as usize;
        let xmax = ((center + support + 0.5) as i64).min(in_size as i64) as usize;
        let count = xmax.saturating_sub(xmin).min(ksize);
        let mut total = 0.0;
        for (x, wx) in w.iter_mut().enumerate().take(count) {
            *wx = filter((x as f64 + xmin as f64 - center + 0.5) / filterscale);
            total += *wx;
        }
        let one = (1u32 << PRECISION_BITS) as f64;
        for (x, &wx) in w.iter().enumerate().take(count) {
            let v = if total != 0.0 { wx / total } else { wx };
            c.k[i * ksize + x] = if v < 0.0 {
                (-0.5 + v * one) as i32
            } else {
                (0.5 + v * one) as i32
            };
        }
        c.first.push(xmin);
        c.count.push(count);
    }
    c
}

/// Pillow's `clip8`: the fixed-point sum back to a byte.
fn clip8(acc: i64) -> u8 {
    (acc >> PRECISION_BITS).clamp(0, 255) as u8
}

/// The part of a resized image inside a crop window, as 8-bit pixels.
pub(crate) struct Window {
    /// Interleaved pixels of the window's rows that lie inside the resized image:
    /// `rows.len() * cols.len() * channels` bytes.
    pub pixels: Vec<u8>,
    /// Rows of the resized image covered (a sub-range of the window's rows).
    pub rows: Range<usize>,
    /// Columns of the resized image covered.
    pub cols: Range<usize>,
}

/// Resizes the `w x h` interleaved `src` (`channels` bytes per pixel) to `nw x nh` and keeps
/// only the pixels in `cols x rows` (clipped to the resized image).
pub(crate) fn resize_window(
    src: &[u8],
    (w, h): (usize, usize),
    channels: usize,
    (nw, nh): (usize, usize),
    cols: Range<usize>,
    rows: Range<usize>,
    interp: Interpolation,
) -> Window {
    let cols = cols.start.min(nw)..cols.end.min(nw);
    let rows = rows.start.min(nh)..rows.end.min(nh);
    let (cw, rh) = (cols.len(), rows.len());
    // Vertical coefficients first: they say which source rows the horizontal pass must produce.
    let vert = (nh != h).then(|| coeffs(h, nh, rows.clone(), interp));
    let src_rows = match &vert {
        Some(v) if rh > 0 => {
            let last = (0..rh).map(|i| v.first[i] + v.count[i]).max().unwrap_or(0);
            v.first[0]..last
        }
        Some(_) => 0..0,
        None => rows.clone(),
    };
    // Horizontal pass over the needed source rows, cropped columns only.
    let mut tmp = vec![0u8; src_rows.len() * cw * channels];
    if nw != w {
        let hc = coeffs(w, nw, cols.clone(), interp);
        for (r, sy) in src_rows.clone().enumerate() {
            let line = &src[sy * w * channels..(sy + 1) * w * channels];
            for i in 0..cw {
                let k = &hc.k[i * hc.ksize..i * hc.ksize + hc.count[i]];
                for ch in 0..channels {
                    let mut acc: i64 = 1 << (PRECISION_BITS - 1);
                    for (j, &kj) in k.iter().enumerate() {
                        acc += line[(hc.first[i] + j) * channels + ch] as i64 * kj as i64;
                    }
                    tmp[(r * cw + i) * channels + ch] = clip8(acc);
                }
            }
        }
    } else {
        for (r, sy) in src_rows.clone().enumerate() {
            let from = (sy * w + cols.start) * channels;
            tmp[r * cw * channels..(r + 1) * cw * channels]
                .copy_from_slice(&src[from..from + cw * channels]);
        }
    }
    let Some(vc) = vert else {
        return Window {
            pixels: tmp,
            rows,
            cols,
        };
    };
    let row_len = cw * channels;
    let mut out = vec![0u8; rh * row_len];
    for i in 0..rh {
        let k = &vc.k[i * vc.ksize..i * vc.ksize + vc.count[i]];
        let base = vc.first[i] - src_rows.start;
        for x in 0..row_len {
            let mut acc: i64 = 1 << (PRECISION_BITS - 1);
            for (j, &kj) in k.iter().enumerate() {
                acc += tmp[(base + j) * row_len + x] as i64 * kj as i64;
            }
            out[i * row_len + x] = clip8(acc);
        }
    }
    Window {
        pixels: out,
        rows,
        cols,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn full(
        src: &[u8],
        wh: (usize, usize),
        c: usize,
        n: (usize, usize),
        i: Interpolation,
    ) -> Vec<u8> {
        resize_window(src, wh, c, n, 0..n.0, 0..n.1, i).pixels
    }

    #[test]
    fn a_constant_image_stays_constant() {
        for interp in [Interpolation::Bicubic, Interpolation::Bilinear] {
            let src = vec![77u8; 13 * 7 * 3];
            for size in [(5, 3), (13, 7), (40, 20), (1, 1)] {
                assert!(full(&src, (13, 7), 3, size, interp)
                    .iter()
                    .all(|&v| v == 77));
            }
        }
    }

    #[test]
    fn the_window_equals_the_crop_of_the_full_resize() {
        let (w, h) = (23, 17);
        let src: Vec<u8> = (0..w * h * 3).map(|i| (i * 37 % 251) as u8).collect();
        for interp in [Interpolation::Bicubic, Interpolation::Bilinear] {
            let (nw, nh) = (31, 12);
            let all = full(&src, (w, h), 3, (nw, nh), interp);
            let win = resize_window(&src, (w, h), 3, (nw, nh), 4..20, 2..40, interp);
            assert_eq!((win.cols.clone(), win.rows.clone()), (4..20, 2..12));
            for (r, y) in win.rows.clone().enumerate() {
                for (c, x) in win.cols.clone().enumerate() {
                    for ch in 0..3 {
                        assert_eq!(
                            win.pixels[(r * 16 + c) * 3 + ch],
                            all[(y * nw + x) * 3 + ch]
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn an_extreme_aspect_ratio_costs_only_the_window() {
        // 1 x 20000 resized to 256 x 5_120_000: only the 8x8 window is produced.
        let src = vec![9u8; 20_000];
        let win = resize_window(
            &src,
            (1, 20_000),
            1,
            (256, 5_120_000),
            124..132,
            2_559_996..2_560_004,
            Interpolation::Bicubic,
        );
        assert_eq!(win.pixels.len(), 64);
        assert!(win.pixels.iter().all(|&v| v == 9));
    }
}
