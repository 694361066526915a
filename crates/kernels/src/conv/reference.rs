//! The convolution test oracle: naive loops over PyTorch's definition of `Conv2d`,
//! accumulating in f64.
//!
//! ```text
//! y[n, oc, oh, ow] = bias[oc] + sum_{icg, i, j} x[n, g*cig + icg, oh*sh - ph + i*dh, ow*sw - pw + j*dw]
//!                                              * w[oc, icg, i, j]        (g = oc / cog; x = 0 outside)
//! ```
//! The gradients are the adjoints of that same index map: the input gradient scatters
//! `w * dy` back through it, the weight gradient gathers `x * dy` over the batch and the output
//! plane. These functions assume a validated shape and correct lengths (they panic otherwise:
//! this is test code); the engine's entry points are in [`super`].
//!
//! Because convolution is bilinear, calling the oracle on `|x|` and `|w|` gives
//! `sum |x| |w|` per output, from which tests build the classic dot-product error bound
//! `(K + 4) * eps * sum |x| |w|` (Higham, *Accuracy and Stability of Numerical Algorithms*,
//! eq. 3.5), with `K` the number of terms.

use super::Conv2dShape;
use crate::activation::Activation;

/// Calls `f(x_index, w_index, y_index)` for every multiply-add of the forward pass.
fn for_each_tap(s: &Conv2dShape, mut f: impl FnMut(usize, usize, usize)) {
    let (oh, ow) = (s.out_h(), s.out_w());
    let (cig, cog) = (s.c_in / s.groups, s.c_out / s.groups);
    for n in 0..s.n {
        for oc in 0..s.c_out {
            let g = oc / cog;
            for y in 0..oh {
                for x in 0..ow {
                    let yi = ((n * s.c_out + oc) * oh + y) * ow + x;
                    for icg in 0..cig {
                        let ic = g * cig + icg;
                        for i in 0..s.kh {
                            let ih =
                                (y * s.stride.0 + i * s.dilation.0) as isize - s.padding.0 as isize;
                            if ih < 0 || ih >= s.h as isize {
                                continue;
                            }
                            for j in 0..s.kw {
                                let iw = (x * s.stride.1 + j * s.dilation.1) as isize
                                    - s.padding.1 as isize;
                                if iw < 0 || iw >= s.w as isize {
                                    continue;
                                }
                                let xi =
                                    ((n * s.c_in + ic) * s.h + ih as usize) * s.w + iw as usize;
                                let wi = ((oc * cig + icg) * s.kh + i) * s.kw + j;
                                f(xi, wi, yi);
                            }
                        }
                    }
                }
            }
        }
    }
}

/// `y = act(conv(x, w) + bias)`, accumulated in f64 and rounded once.
pub fn conv2d_forward(
    s: &Conv2dShape,
    x: &[f32],
    w: &[f32],
    bias: Option<&[f32]>,
    act: Activation,
    y: &mut [f32],
) {
    let mut acc = vec![0.0f64; s.output_len()];
    for_each_tap(s, |xi, wi, yi| acc[yi] += x[xi] as f64 * w[wi] as f64);
    let plane = s.out_h() * s.out_w();
    for (i, (out, a)) in y.iter_mut().zip(&acc).enumerate() {
        let b = bias.map_or(0.0, |b| b[(i / plane) % s.c_out] as f64);
        *out = act.apply_scalar((a + b) as f32);
    }
}

/// The input gradient (overwrites `dx`).
pub fn conv2d_backward_input(s: &Conv2dShape, w: &[f32], dy: &[f32], dx: &mut [f32]) {
    let mut acc = vec![0.0f64; s.input_len()];
    for_each_tap(s, |xi, wi, yi| acc[xi] += w[wi] as f64 * dy[yi] as f64);
    for (o, a) in dx.iter_mut().zip(acc) {
        *o = a as f32;
    }
}

/// The weight gradient, summed over the batch (overwrites `dw`).
pub fn conv2d_backward_weight(s: &Conv2dShape, x: &[f32], dy: &[f32], dw: &mut [f32]) {
    let mut acc = vec![0.0f64; s.weight_len()];
    for_each_tap(s, |xi, wi, yi| acc[wi] += x[xi] as f64 * dy[yi] as f64);
    for (o, a) in dw.iter_mut().zip(acc) {
        *o = a as f32;
    }
}

/// The bias gradient (overwrites `db`).
pub fn conv2d_backward_bias(s: &Conv2dShape, dy: &[f32], db: &mut [f32]) {
    let plane = s.out_h() * s.out_w();
    let mut acc = vec![0.0f64; s.c_out];
    for (i, &g) in dy.iter().enumerate() {
        acc[(i / plane) % s.c_out] += g as f64;
    }
    for (o, a) in db.iter_mut().zip(acc) {
        *o = a as f32;
    }
}

/// The most terms any output of the forward pass sums (`c_in / groups * kh * kw`); the input
/// gradient sums at most `c_out / groups * kh * kw` and the weight gradient
/// `n * out_h * out_w`. Tests scale `f32::EPSILON` by these for their bounds.
pub fn terms(s: &Conv2dShape) -> (usize, usize, usize) {
    (
        s.c_in / s.groups * s.kh * s.kw,
        s.c_out / s.groups * s.kh * s.kw,
        s.n * s.out_h() * s.out_w(),
    )
}
