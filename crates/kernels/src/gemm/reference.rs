//! The GEMM test oracle: a naive triple loop that accumulates in f64.
//!
//! It follows the same semantics as [`super::gemm`] (beta == 0 never reads C; alpha == 0 or
//! k == 0 never reads A or B; bias then activation) and is the reference every ISA path is
//! compared with, together with [`error_bound`], the tolerance such a comparison may use.

use super::{Bias, Epilogue, Scale};

/// `C = act(scale * (alpha * A * B + beta * C) + bias)` with strides in elements, naively, in f64.
///
/// Panics if a view does not fit its slice (this is test code; the engine's entry point is
/// [`super::gemm`]).
#[allow(clippy::too_many_arguments)]
pub fn gemm_reference(
    m: usize,
    n: usize,
    k: usize,
    alpha: f32,
    a: &[f32],
    (rsa, csa): (usize, usize),
    b: &[f32],
    (rsb, csb): (usize, usize),
    beta: f32,
    c: &mut [f32],
    (rsc, csc): (usize, usize),
    epilogue: Epilogue<'_>,
) {
    for i in 0..m {
        for j in 0..n {
            let mut acc = 0.0f64;
            if alpha != 0.0 {
                for p in 0..k {
                    acc += a[i * rsa + p * csa] as f64 * b[p * rsb + j * csb] as f64;
                }
            }
            let cij = &mut c[i * rsc + j * csc];
            let mut v = alpha as f64 * acc;
            if beta != 0.0 {
                v += beta as f64 * *cij as f64;
            }
            match epilogue.scale {
                Scale::None => {}
                Scale::PerRow(s) => v *= s[i] as f64,
                Scale::PerCol(s) => v *= s[j] as f64,
            }
            match epilogue.bias {
                Bias::None => {}
                Bias::PerRow(bias) => v += bias[i] as f64,
                Bias::PerCol(bias) => v += bias[j] as f64,
            }
            *cij = epilogue.activation.apply_scalar(v as f32);
        }
    }
}

/// A per-element bound on `|computed - reference|` for an f32 GEMM of depth `k`:
/// `gamma * (|scale| (|alpha| * sum_p |a_ip| |b_pj| + |beta| |c_ij|) + |bias|)` with
/// `gamma = (k + 4) * f32::EPSILON`, the classic forward error bound of a dot product
/// (Higham, *Accuracy and Stability of Numerical Algorithms*, 2nd ed., eq. 3.5) plus the
/// epilogue's few roundings. Activations used here are 1-Lipschitz, so the bound carries over.
#[allow(clippy::too_many_arguments)]
pub fn error_bound(
    m: usize,
    n: usize,
    k: usize,
    alpha: f32,
    a: &[f32],
    (rsa, csa): (usize, usize),
    b: &[f32],
    (rsb, csb): (usize, usize),
    beta: f32,
    c: &[f32],
    (rsc, csc): (usize, usize),
    scale: Scale<'_>,
    bias: Bias<'_>,
) -> Vec<f32> {
    let gamma = (k as f64 + 4.0) * f32::EPSILON as f64;
    let mut out = vec![0.0f32; m * n];
    for i in 0..m {
        for j in 0..n {
            let mut s = 0.0f64;
            if alpha != 0.0 {
                for p in 0..k {
                    s += (a[i * rsa + p * csa] as f64 * b[p * rsb + j * csb] as f64).abs();
                }
            }
            let mut t = alpha.abs() as f64 * s;
            if beta != 0.0 {
                t += (beta as f64 * c[i * rsc + j * csc] as f64).abs();
            }
            t *= match scale {
                Scale::None => 1.0,
                Scale::PerRow(v) => (v[i] as f64).abs(),
                Scale::PerCol(v) => (v[j] as f64).abs(),
            };
            t += match bias {
                Bias::None => 0.0,
                Bias::PerRow(v) => (v[i] as f64).abs(),
                Bias::PerCol(v) => (v[j] as f64).abs(),
            };
            // A floor of a few ulps of the smallest normal keeps exact zeros comparable.
            out[i * n + j] = (gamma * t) as f32 + f32::MIN_POSITIVE;
        }
    }
    out
}
