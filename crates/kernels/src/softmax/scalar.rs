//! Scalar row kernels: the same algorithm as the vector paths (max; exp-store-sum; rescale)
//! with the scalar form of the shared exp, summing in element order. The `Isa::Scalar` path.

use crate::exp::scalar::{exp, exp_flush};

fn row_max(x: &[f32]) -> f32 {
    x.iter().copied().fold(f32::NEG_INFINITY, f32::max)
}

pub(crate) fn softmax_row(x: &[f32], y: &mut [f32]) {
    let max = row_max(x);
    if max == f32::NEG_INFINITY {
        y.fill(f32::NAN);
        return;
    }
    let mut sum = 0.0f32;
    for (o, &v) in y.iter_mut().zip(x) {
        *o = exp_flush(v - max);
        sum += *o;
    }
    let inv = 1.0 / sum;
    for o in y.iter_mut() {
        *o *= inv;
    }
}

pub(crate) fn log_softmax_row(x: &[f32], y: &mut [f32]) {
    let max = row_max(x);
    if max == f32::NEG_INFINITY {
        y.fill(f32::NAN);
        return;
    }
    let mut sum = 0.0f32;
    for (o, &v) in y.iter_mut().zip(x) {
        *o = v - max;
        sum += exp_flush(*o);
    }
    let lse = (sum as f64).ln() as f32;
    for o in y.iter_mut() {
        *o -= lse;
    }
}

pub(crate) fn softmax_backward_row(y: &[f32], dy: &[f32], dx: &mut [f32]) {
    let s: f32 = y.iter().zip(dy).map(|(a, b)| a * b).sum();
    for ((o, &a), &d) in dx.iter_mut().zip(y).zip(dy) {
        *o = a * (d - s);
    }
}

pub(crate) fn log_softmax_backward_row(y: &[f32], dy: &[f32], dx: &mut [f32]) {
    let s: f32 = dy.iter().sum();
    for ((o, &a), &d) in dx.iter_mut().zip(y).zip(dy) {
        *o = d - exp(a) * s;
    }
}
