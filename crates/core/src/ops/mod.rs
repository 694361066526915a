//! Tensor ops, one file per family, each op's forward and backward side by side.
//!
//! The helpers here are the element-wise engines every family builds on: [`map`] (one input),
//! [`zip`] (two inputs with NumPy broadcasting). Both take a fast path over contiguous slices
//! (split over rayon for large tensors; element-wise, so bit-identical for any thread count) and
//! otherwise walk the strided layouts with [`crate::layout::walk1`] / [`walk2`](crate::layout::walk2).

pub mod activation;
pub mod elementwise;
pub mod index;
pub mod matmul;
pub mod reduce;
pub mod view;

use rayon::prelude::*;

use crate::error::Result;
use crate::layout::{broadcast_shapes, walk1, walk2};
use crate::tensor::Tensor;

/// Element count from which element-wise loops are split over rayon.
pub(crate) const PAR_MIN: usize = 1 << 15;
/// Chunk length of parallel element-wise loops.
const PAR_CHUNK: usize = 1 << 13;

/// `f` applied to every element, as a new contiguous tensor (no graph).
pub(crate) fn map(x: &Tensor, f: impl Fn(f32) -> f32 + Sync + Send) -> Tensor {
    let l = x.layout();
    let n = l.numel();
    let raw = x.raw();
    let out: Vec<f32> = if l.is_contiguous() {
        let src = &raw[l.offset..l.offset + n];
        if n >= PAR_MIN {
            let mut out = vec![0.0; n];
            out.par_chunks_mut(PAR_CHUNK)
                .zip(src.par_chunks(PAR_CHUNK))
                .for_each(|(o, s)| o.iter_mut().zip(s).for_each(|(o, &s)| *o = f(s)));
            out
        } else {
            src.iter().map(|&v| f(v)).collect()
        }
    } else {
        let mut out = Vec::with_capacity(n);
        walk1(&l.shape, &l.strides, l.offset, |o| out.push(f(raw[o])));
        out
    };
    Tensor::from_contig(out, &l.shape)
}

/// `f(a, b)` over the NumPy broadcast of the two shapes, as a new contiguous tensor (no graph).
pub(crate) fn zip(
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
            let mut out = vec![0.0; n];
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
    let ba = la.broadcast_to(op, &shape)?;
    let bb = lb.broadcast_to(op, &shape)?;
    let mut out = Vec::with_capacity(n);
    walk2(
        &shape,
        &ba.strides,
        ba.offset,
        &bb.strides,
        bb.offset,
        |oa, ob| out.push(f(ra[oa], rb[ob])),
    );
    Ok(Tensor::from_contig(out, &shape))
}
