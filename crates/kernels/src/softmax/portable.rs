//! Portable row kernels of softmax and log-softmax on `wide::f32x8`, mirroring `avx2.rs`
//! (separate multiply and add instead of FMA). Structure and special cases: see [`super`].

use crate::exp::portable::{exp, exp_flush};
use wide::f32x8;

const W: usize = 8;

#[inline(always)]
fn load(x: &[f32], fill: f32) -> f32x8 {
    let mut a = [fill; W];
    let k = x.len().min(W);
    a[..k].copy_from_slice(&x[..k]);
    f32x8::from(a)
}

#[inline(always)]
fn store(v: f32x8, y: &mut [f32]) {
    let k = y.len().min(W);
    y[..k].copy_from_slice(&v.to_array()[..k]);
}

fn row_max(x: &[f32]) -> f32 {
    let mut m = f32x8::splat(f32::NEG_INFINITY);
    for c in x.chunks(W) {
        m = m.fast_max(load(c, f32::NEG_INFINITY));
    }
    m.to_array().into_iter().fold(f32::NEG_INFINITY, f32::max)
}

/// Softmax of one row (`y.len() == x.len() >= 1`).
pub(crate) fn softmax_row(x: &[f32], y: &mut [f32]) {
    let max = row_max(x);
    if max == f32::NEG_INFINITY {
        y.fill(f32::NAN);
        return;
    }
    let vm = f32x8::splat(max);
    let mut s = f32x8::ZERO;
    for (xc, yc) in x.chunks(W).zip(y.chunks_mut(W)) {
        let e = exp_flush(load(xc, f32::NEG_INFINITY) - vm);
        store(e, yc);
        s += e;
    }
    let inv = f32x8::splat(1.0 / s.reduce_add());
    for yc in y.chunks_mut(W) {
        let v = load(yc, 0.0) * inv;
        store(v, yc);
    }
}

/// Log-softmax of one row (`y.len() == x.len() >= 1`).
pub(crate) fn log_softmax_row(x: &[f32], y: &mut [f32]) {
    let max = row_max(x);
    if max == f32::NEG_INFINITY {
        y.fill(f32::NAN);
        return;
    }
    let vm = f32x8::splat(max);
    let mut s = f32x8::ZERO;
    for (xc, yc) in x.chunks(W).zip(y.chunks_mut(W)) {
        let d = load(xc, f32::NEG_INFINITY) - vm;
        store(d, yc);
        s += exp_flush(d);
    }
    let lse = f32x8::splat((s.reduce_add() as f64).ln() as f32);
    for yc in y.chunks_mut(W) {
        let v = load(yc, 0.0) - lse;
        store(v, yc);
    }
}

/// Softmax backward of one row: `dx = y * (dy - sum(dy * y))`.
pub(crate) fn softmax_backward_row(y: &[f32], dy: &[f32], dx: &mut [f32]) {
    let mut s = f32x8::ZERO;
    for (yc, dc) in y.chunks(W).zip(dy.chunks(W)) {
        s += load(yc, 0.0) * load(dc, 0.0);
    }
    let vs = f32x8::splat(s.reduce_add());
    for ((yc, dc), oc) in y.chunks(W).zip(dy.chunks(W)).zip(dx.chunks_mut(W)) {
        store(load(yc, 0.0) * (load(dc, 0.0) - vs), oc);
    }
}

/// Log-softmax backward of one row: `dx = dy - e^y * sum(dy)`.
pub(crate) fn log_softmax_backward_row(y: &[f32], dy: &[f32], dx: &mut [f32]) {
    let mut s = f32x8::ZERO;
    for dc in dy.chunks(W) {
        s += load(dc, 0.0);
    }
    let vs = f32x8::splat(s.reduce_add());
    for ((yc, dc), oc) in y.chunks(W).zip(dy.chunks(W)).zip(dx.chunks_mut(W)) {
        store(load(dc, 0.0) - exp(load(yc, 0.0)) * vs, oc);
    }
}
