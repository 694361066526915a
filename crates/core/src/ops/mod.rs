//! Tensor ops, one file per family, each op's forward and backward side by side.
//!
//! The helpers here are the element-wise engines every family builds on: `map` (one input),
//! `zip` (two inputs with NumPy broadcasting). Both take a fast path over contiguous slices
//! (split over rayon for large tensors; element-wise, so bit-identical for any thread count) and
//! otherwise walk the strided layouts with [`crate::layout::walk1`] / [`crate::layout::walk2`].

pub mod activation;
pub mod attention;
pub mod conv;
pub mod conv_packed;
pub mod elementwise;
pub mod index;
pub mod loss;
pub mod matmul;
pub mod norm;
pub mod pool;
pub mod reduce;
pub mod softmax;
pub mod squeeze_excite;
pub mod view;

use rayon::prelude::*;

use crate::error::Result;
use crate::layout::{broadcast_shapes, walk2};
use crate::profile::{self, f32_bytes, Cost, OpInfo};
use crate::tensor::Tensor;

/// Element count from which element-wise loops are split over rayon.
pub(crate) const PAR_MIN: usize = 1 << 15;
/// Chunk length of parallel element-wise loops.
const PAR_CHUNK: usize = 1 << 13;

/// `f` applied to every element, as a new contiguous tensor (no graph). Profiled as `map`
/// (one FLOP per element) unless an enclosing op names it.
pub(crate) fn map(x: &Tensor, f: impl Fn(f32) -> f32 + Sync + Send) -> Tensor {
    let frame = profile::begin();
    let y = map_impl(x, f);
    if let Some(fr) = frame {
        fr.end_op(&y, || elementwise_info("map", &[x], &y, 1));
    }
    y
}

/// The FLOP and byte count of an element-wise op: `per_elem` FLOPs per output element, every
/// input read once, the output written once.
pub(crate) fn elementwise_info(
    op: &'static str,
    inputs: &[&Tensor],
    y: &Tensor,
    per_elem: u64,
) -> OpInfo {
    OpInfo {
        op: op.into(),
        inputs: inputs.iter().map(|t| t.shape().to_vec()).collect(),
        output: y.shape().to_vec(),
        cost: Cost {
            flops: per_elem * y.numel() as u64,
            macs: 0,
            bytes_read: inputs.iter().map(|t| f32_bytes(t.numel())).sum(),
            bytes_written: f32_bytes(y.numel()),
        },
    }
}

/// An op's name and shapes with no cost of its own (the ops it called report theirs).
pub(crate) fn shapes_info(op: &'static str, inputs: &[&Tensor], y: &Tensor) -> OpInfo {
    OpInfo {
        op: op.into(),
        inputs: inputs.iter().map(|t| t.shape().to_vec()).collect(),
        output: y.shape().to_vec(),
        cost: Cost::default(),
    }
}

fn map_impl(x: &Tensor, f: impl Fn(f32) -> f32 + Sync + Send) -> Tensor {
    let l = x.layout();
    let n = l.numel();
    let raw = x.raw();
    let out: Vec<f32> = if l.is_contiguous() {
        let src = &raw[l.offset..l.offset + n];
        if n >= PAR_MIN {
            let mut out = crate::pool::for_overwrite(n);
            out.par_chunks_mut(PAR_CHUNK)
                .zip(src.par_chunks(PAR_CHUNK))
                .for_each(|(o, s)| o.iter_mut().zip(s).for_each(|(o, &s)| *o = f(s)));
            out
        } else {
            src.iter().map(|&v| f(v)).collect()
        }
    } else {
        let mut out = crate::layout::gather(raw, l);
        out.iter_mut().for_each(|v| *v = f(*v));
        out
    };
    Tensor::from_contig(out, &l.shape)
}

/// `f(a, b)` over the NumPy broadcast of the two shapes, as a new contiguous tensor (no graph).
/// Profiled as op `op` with one FLOP per output element.
pub(crate) fn zip(
    op: &'static str,
    a: &Tensor,
    b: &Tensor,
    f: impl Fn(f32, f32) -> f32 + Sync + Send,
) -> Result<Tensor> {
    let frame = profile::begin();
    let y = zip_impl(op, a, b, f)?;
    if let Some(fr) = frame {
        fr.end_op(&y, || elementwise_info(op, &[a, b], &y, 1));
    }
    Ok(y)
}

/// The per-plane broadcast of `zip`: one operand dense with the output's shape, the other dense
/// with that shape's leading dims and ones after them (a `[n, c, 1, 1]` squeeze-excitation gate
/// or per-channel scale against `[n, c, h, w]`): each plane of the full operand meets one
/// value, in a plain loop, planes in parallel. `None` when the operands have another form.
fn zip_per_plane(
    a: &Tensor,
    b: &Tensor,
    shape: &[usize],
    f: &(impl Fn(f32, f32) -> f32 + Sync + Send),
) -> Option<Tensor> {
    let (la, lb) = (a.layout(), b.layout());
    if !la.is_contiguous() || !lb.is_contiguous() || la.shape.len() != lb.shape.len() {
        return None;
    }
    let (full_is_a, full, small) = if la.shape == shape {
        (true, la, lb)
    } else if lb.shape == shape {
        (false, lb, la)
    } else {
        return None;
    };
    // small = shape[..k] followed by ones, with at least one broadcast dim.
    let k = small
        .shape
        .iter()
        .rposition(|&d| d != 1)
        .map_or(0, |i| i + 1);
    if small.shape[..k] != shape[..k]
        || small.shape[k..]
            .iter()
            .zip(&shape[k..])
            .all(|(s, t)| s == t)
    {
        return None;
    }
    let inner: usize = shape[k..].iter().product();
    let n: usize = shape.iter().product();
    if inner == 0 || n == 0 {
        return None;
    }
    let (rf, rs) = if full_is_a {
        (a.raw(), b.raw())
    } else {
        (b.raw(), a.raw())
    };
    let xf = &rf[full.offset..full.offset + n];
    let xs = &rs[small.offset..small.offset + n / inner];
    let mut out = crate::pool::for_overwrite(n);
    let plane = |((o, x), &v): ((&mut [f32], &[f32]), &f32)| {
        if full_is_a {
            o.iter_mut().zip(x).for_each(|(o, &x)| *o = f(x, v));
        } else {
            o.iter_mut().zip(x).for_each(|(o, &x)| *o = f(v, x));
        }
    };
    if n >= PAR_MIN {
        out.par_chunks_mut(inner)
            .zip(xf.par_chunks(inner))
            .zip(xs.par_iter())
            .for_each(plane);
    } else {
        out.chunks_mut(inner)
            .zip(xf.chunks(inner))
            .zip(xs)
            .for_each(plane);
    }
    Some(Tensor::from_contig(out, shape))
}

fn zip_impl(
    op: &'static str,
    a: &Tensor,
    b: &Tensor,
    f: impl Fn(f32, f32) -> f32 + Sync + Send,
) -> Result<Tensor> {
    let shape = broadcast_shapes(op, a.shape(), b.shape())?;
    let n: usize = shape.iter().product();
    let (ra, rb) = (a.raw(), b.raw());
    let (la, lb) = (a.layout(), b.layout());
    if la.shape == shape && lb.shape == shape && la.is_contiguous() && lb.is_contiguous() {
        let sa = &ra[la.offset..la.offset + n];
        let sb = &rb[lb.offset..lb.offset + n];
        let out = if n >= PAR_MIN {
            let mut out = crate::pool::for_overwrite(n);
            out.par_chunks_mut(PAR_CHUNK)
                .zip(sa.par_chunks(PAR_CHUNK).zip(sb.par_chunks(PAR_CHUNK)))
                .for_each(|(o, (x, y))| {
                    for i in 0..o.len() {
                        o[i] = f(x[i], y[i]);
                    }
                });
            out
        } else {
            sa.iter().zip(sb).map(|(&x, &y)| f(x, y)).collect()
        };
        return Ok(Tensor::from_contig(out, &shape));
    }
    if let Some(y) = zip_per_plane(a, b, &shape, &f) {
        return Ok(y);
    }
    // An operand whose last dim is strided (a transposed view) is first gathered into a dense
    // buffer (a tiled copy), so the loop below never reads one cache line per element.
    let inner_ok = |l: &crate::layout::Layout| {
        l.strides.last().is_none_or(|&s| s <= 1) || l.shape.last() == Some(&1)
    };
    if !inner_ok(la) || !inner_ok(lb) {
        let dense = |t: &Tensor| Tensor::from_contig(t.to_vec(), t.shape());
        let da = if inner_ok(la) { a.clone() } else { dense(a) };
        let db = if inner_ok(lb) { b.clone() } else { dense(b) };
        return zip_impl(op, &da, &db, f);
    }
    let ba = la.broadcast_to(op, &shape)?;
    let bb = lb.broadcast_to(op, &shape)?;
    let mut out = crate::pool::for_overwrite(n);
    if n == 0 {
        return Ok(Tensor::from_contig(out, &shape));
    }
    // Walk the outer dims; each inner row is one of four loops by its (stride a, stride b).
    let nd = shape.len();
    let (inner, ia, ib) = match nd {
        0 => (1, 0, 0),
        _ => (shape[nd - 1], ba.strides[nd - 1], bb.strides[nd - 1]),
    };
    let outer = nd.saturating_sub(1);
    let mut rows = out.chunks_mut(inner);
    walk2(
        &shape[..outer],
        &ba.strides[..outer],
        ba.offset,
        &bb.strides[..outer],
        bb.offset,
        |oa, ob| {
            let o = rows.next().expect("one output row per outer index");
            match (ia, ib) {
                (1, 1) => {
                    let (x, y) = (&ra[oa..oa + inner], &rb[ob..ob + inner]);
                    for i in 0..inner {
                        o[i] = f(x[i], y[i]);
                    }
                }
                (1, 0) => {
                    let (x, y) = (&ra[oa..oa + inner], rb[ob]);
                    for i in 0..inner {
                        o[i] = f(x[i], y);
                    }
                }
                (0, 1) => {
                    let (x, y) = (ra[oa], &rb[ob..ob + inner]);
                    for i in 0..inner {
                        o[i] = f(x, y[i]);
                    }
                }
                _ => {
                    for (i, o) in o.iter_mut().enumerate() {
                        *o = f(ra[oa + i * ia], rb[ob + i * ib]);
                    }
                }
            }
        },
    );
    Ok(Tensor::from_contig(out, &shape))
}
