//! The float64 kernels of the plan's reference ([`super::reference`]): a direct convolution
//! (any groups, stride, padding, dilation; batch norm applied after it, unfolded), `x W^T`,
//! and attention as `softmax(q k^T / sqrt(d)) v` (Vaswani et al., 2017, eq. 1). Plain loops,
//! parallel over output planes or rows; every sum in f64, so their own error (~1e-16
//! relative per term) is far below the float32 errors they measure.

use super::reference::Bn64;
use rayon::prelude::*;
use tessera_core::kernels::activation::reference::forward as act64;
use tessera_core::kernels::conv::Conv2dShape;
use tessera_core::kernels::Activation;

pub(super) fn mean(v: &[f64]) -> f64 {
    v.iter().sum::<f64>() / v.len().max(1) as f64
}

/// `x[rows, inf] W^T + b` for a row-major `W[out, inf]`, dense `[rows, out]`.
pub(super) fn matmul_t(
    x: &[f64],
    rows: usize,
    inf: usize,
    w: &[f64],
    out: usize,
    b: Option<&[f64]>,
) -> Vec<f64> {
    let mut y = vec![0.0; rows * out];
    y.par_chunks_mut(out).enumerate().for_each(|(r, yr)| {
        let xr = &x[r * inf..(r + 1) * inf];
        for (o, yv) in yr.iter_mut().enumerate() {
            let dot: f64 = xr
                .iter()
                .zip(&w[o * inf..(o + 1) * inf])
                .map(|(a, b)| a * b)
                .sum();
            *yv = dot + b.map_or(0.0, |b| b[o]);
        }
    });
    y
}

/// `y = act(bn(conv(x) + bias) [+ y])`, one output plane per task.
#[allow(clippy::too_many_arguments)]
pub(super) fn conv(
    s: &Conv2dShape,
    x: &[f64],
    w: &[f64],
    bias: Option<&[f64]>,
    bn: Option<&Bn64>,
    act: Activation,
    accumulate: bool,
    y: &mut [f64],
) {
    let (oh, ow) = (s.out_h(), s.out_w());
    let (cig, cog) = (s.c_in / s.groups, s.c_out / s.groups);
    let (sy, sx) = s.stride;
    let (py, px) = s.padding;
    let (dy, dx) = s.dilation;
    y.par_chunks_mut(oh * ow)
        .enumerate()
        .for_each(|(plane, yp)| {
            let (b, co) = (plane / s.c_out, plane % s.c_out);
            let g = co / cog;
            let mut acc = vec![0.0f64; oh * ow];
            for ci in 0..cig {
                let xp = &x[(b * s.c_in + g * cig + ci) * s.h * s.w..][..s.h * s.w];
                for ky in 0..s.kh {
                    for kx in 0..s.kw {
                        let wv = w[((co * cig + ci) * s.kh + ky) * s.kw + kx];
                        let (oy_k, ox_k) = (ky * dy, kx * dx);
                        for oy in 0..oh {
                            let iy = (oy * sy + oy_k).wrapping_sub(py);
                            if iy >= s.h {
                                continue;
                            }
                            let xr = &xp[iy * s.w..][..s.w];
                            let ar = &mut acc[oy * ow..][..ow];
                            for (ox, a) in ar.iter_mut().enumerate() {
                                let ix = (ox * sx + ox_k).wrapping_sub(px);
                                if ix < s.w {
                                    *a += wv * xr[ix];
                                }
                            }
                        }
                    }
                }
            }
            let cb = bias.map_or(0.0, |b| b[co]);
            for (o, a) in yp.iter_mut().zip(&acc) {
                let mut v = a + cb;
                if let Some(bn) = bn {
                    let rstd = 1.0 / (bn.var[co] + bn.eps).sqrt();
                    v = (v - bn.mean[co]) * rstd * bn.gamma[co] + bn.beta[co];
                }
                if accumulate {
                    v += *o;
                }
                *o = act64(act, v);
            }
        });
}

/// `out[b, t, h*d..] = sum_j softmax_j(q_t . k_j / sqrt(d)) v_j` for `qkv [n, L, 3, heads, d]`.
pub(super) fn attention(qkv: &[f64], n: usize, l: usize, heads: usize, d: usize, out: &mut [f64]) {
    let dm = heads * d;
    debug_assert_eq!(out.len(), n * l * dm);
    let scale = 1.0 / (d as f64).sqrt();
    out.par_chunks_mut(l * dm).enumerate().for_each(|(b, ob)| {
        let base = b * l * 3 * dm;
        let at =
            |t: usize, part: usize, h: usize| &qkv[base + t * 3 * dm + part * dm + h * d..][..d];
        let mut p = vec![0.0f64; l];
        for h in 0..heads {
            for t in 0..l {
                let q = at(t, 0, h);
                for (j, pj) in p.iter_mut().enumerate() {
                    *pj = scale * q.iter().zip(at(j, 1, h)).map(|(a, c)| a * c).sum::<f64>();
                }
                let m = p.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                p.iter_mut().for_each(|v| *v = (*v - m).exp());
                let z: f64 = p.iter().sum();
                let o = &mut ob[t * dm + h * d..][..d];
                o.iter_mut().for_each(|v| *v = 0.0);
                for (j, pj) in p.iter().enumerate() {
                    for (ov, vv) in o.iter_mut().zip(at(j, 2, h)) {
                        *ov += pj / z * vv;
                    }
                }
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::reference::eps64;

    #[test]
    fn eps_is_read_as_its_decimal() {
        assert_eq!(eps64(1e-5), 1e-5);
        assert_eq!(eps64(1e-6), 1e-6);
        assert_eq!(eps64(0.001), 0.001);
    }

    #[test]
    fn strided_padded_grouped_conv_matches_a_hand_computed_case() {
        // 1 image, 2 channels 3x3, 2 groups, 2x2 kernel, stride 2, padding 1: out 2x2.
        let s = Conv2dShape {
            n: 1,
            c_in: 2,
            h: 3,
            w: 3,
            c_out: 2,
            kh: 2,
            kw: 2,
            stride: (2, 2),
            padding: (1, 1),
            dilation: (1, 1),
            groups: 2,
        };
        let x: Vec<f64> = (0..18).map(f64::from).collect();
        let w = vec![1.0, 2.0, 3.0, 4.0, 1.0, 0.0, 0.0, 1.0];
        let mut y = vec![0.0; 8];
        conv(
            &s,
            &x,
            &w,
            Some(&[0.5, 0.0]),
            None,
            Activation::Identity,
            false,
            &mut y,
        );
        // Channel 0, output (0, 0) sees only x[0, 0] at tap (1, 1): 4 * 0 + 0.5.
        // Output (1, 1) sees x[1..3, 1..3] = [4 5; 7 8]: 4 + 10 + 21 + 32 + 0.5.
        assert_eq!(y[0], 0.5);
        assert_eq!(y[3], 67.5);
        // Channel 1 (identity-diagonal taps): output (1, 1) = x1[1,1] + x1[2,2] = 13 + 17.
        assert_eq!(y[7], 30.0);
    }
}
