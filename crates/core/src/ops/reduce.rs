//! Reductions over any set of dims with `keepdim`: sum, mean, max (with argmax), var, std, and
//! [`Tensor::sum_to`], the one helper that sums a gradient back over broadcast dims.
//!
//! Sums accumulate in f64, one output element at a time in a fixed order, so results do not
//! depend on the thread count. Backward: sum broadcasts `g` back (an expand view, no copy);
//! max routes `g` to the argmax (first maximum); mean, var and std are composed from sum, so
//! their rules follow from the chain rule.

use rayon::prelude::*;

use crate::autograd::needs_grad;
use crate::error::{fmt_shape, Result, TensorError};
use crate::layout::{contiguous_strides, walk1, walk2};
use crate::profile::{self, f32_bytes, Cost, OpInfo};
use crate::tensor::Tensor;

/// How a reduction walks its input: the kept dims (one output element each) and the reduced
/// dims (summed into it), each with the input's strides and the dense strides of its shape.
struct Plan {
    out_shape: Vec<usize>,
    kept_shape: Vec<usize>,
    kept_x: Vec<usize>,
    kept_c: Vec<usize>,
    red_shape: Vec<usize>,
    red_x: Vec<usize>,
    red_c: Vec<usize>,
}

fn normalize_dims(op: &'static str, dims: &[usize], shape: &[usize]) -> Result<Vec<bool>> {
    let mut mask = vec![false; shape.len()];
    for &d in dims {
        if d >= shape.len() {
            return Err(TensorError::dim(
                op,
                format!("dim {d} is out of range for shape {}", fmt_shape(shape)),
            ));
        }
        if mask[d] {
            return Err(TensorError::dim(
                op,
                format!("dim {d} is repeated in {dims:?}"),
            ));
        }
        mask[d] = true;
    }
    Ok(mask)
}

fn plan(op: &'static str, x: &Tensor, dims: &[usize], keepdim: bool) -> Result<Plan> {
    let shape = x.shape();
    let mask = normalize_dims(op, dims, shape)?;
    let dense = contiguous_strides(shape);
    let mut p = Plan {
        out_shape: vec![],
        kept_shape: vec![],
        kept_x: vec![],
        kept_c: vec![],
        red_shape: vec![],
        red_x: vec![],
        red_c: vec![],
    };
    for (d, &size) in shape.iter().enumerate() {
        if mask[d] {
            p.red_shape.push(size);
            p.red_x.push(x.strides()[d]);
            p.red_c.push(dense[d]);
            if keepdim {
                p.out_shape.push(1);
            }
        } else {
            p.kept_shape.push(size);
            p.kept_x.push(x.strides()[d]);
            p.kept_c.push(dense[d]);
            p.out_shape.push(size);
        }
    }
    Ok(p)
}

impl Plan {
    /// Storage offset (input) and dense position of the first element of every output.
    fn bases(&self, offset: usize) -> Vec<(usize, usize)> {
        let mut v = Vec::with_capacity(self.kept_shape.iter().product());
        walk2(
            &self.kept_shape,
            &self.kept_x,
            offset,
            &self.kept_c,
            0,
            |o, c| v.push((o, c)),
        );
        v
    }
}

/// Sum of a contiguous run in f64 with four partial sums (so the adds pipeline).
fn sum_run(x: &[f32]) -> f64 {
    let mut acc = [0.0f64; 4];
    let chunks = x.chunks_exact(4);
    let tail = chunks.remainder();
    for c in chunks {
        for k in 0..4 {
            acc[k] += c[k] as f64;
        }
    }
    let mut s = (acc[0] + acc[1]) + (acc[2] + acc[3]);
    for &v in tail {
        s += v as f64;
    }
    s
}

/// The sums of a reduction plan. Each output is accumulated in f64 in a fixed order whatever
/// the thread count. Two fast paths: when the kept dims form one dense block (reducing leading
/// dims, e.g. a bias gradient `[n, c] -> [c]`), whole rows are added into an f64 accumulator
/// row, in the same order as the generic walk; when the innermost reduced dim is dense, its
/// runs are summed by [`sum_run`].
fn sum_plan(p: &Plan, raw: &[f32], offset: usize) -> Vec<f32> {
    let kept_n: usize = p.kept_shape.iter().product();
    let red_n: usize = p.red_shape.iter().product();
    let kept_dense = p.kept_x == contiguous_strides(&p.kept_shape);
    if kept_n > 1 && kept_dense {
        // Whole rows of kept elements (a bias gradient: the sum over a batch's rows). Column
        // blocks run in parallel, each adding every row in order: the same sums for any
        // thread count.
        const COLS: usize = 256;
        let mut acc = vec![0.0f64; kept_n];
        let block = |(b, acc): (usize, &mut [f64])| {
            let (c0, len) = (b * COLS, acc.len());
            walk1(&p.red_shape, &p.red_x, offset, |o| {
                for (a, &v) in acc.iter_mut().zip(&raw[o + c0..o + c0 + len]) {
                    *a += v as f64;
                }
            });
        };
        if kept_n * red_n >= super::PAR_MIN && kept_n > COLS {
            acc.par_chunks_mut(COLS).enumerate().for_each(block);
        } else {
            acc.chunks_mut(COLS).enumerate().for_each(block);
        }
        return acc.iter().map(|&v| v as f32).collect();
    }
    let bases = p.bases(offset);
    let nr = p.red_shape.len();
    let dense_inner = nr > 0 && p.red_x[nr - 1] == 1;
    let reduce = |&(o, _): &(usize, usize)| {
        let mut acc = 0.0f64;
        if dense_inner {
            let len = p.red_shape[nr - 1];
            walk1(&p.red_shape[..nr - 1], &p.red_x[..nr - 1], o, |i| {
                acc += sum_run(&raw[i..i + len])
            });
        } else {
            walk1(&p.red_shape, &p.red_x, o, |i| acc += raw[i] as f64);
        }
        acc as f32
    };
    if kept_n * red_n >= super::PAR_MIN && kept_n > 1 {
        bases.par_iter().map(reduce).collect()
    } else {
        bases.iter().map(reduce).collect()
    }
}

/// A reduction's cost: one FLOP per input element, the input read, the output written.
fn reduce_info(op: &'static str, x: &Tensor, y: &Tensor) -> OpInfo {
    OpInfo {
        op: op.into(),
        inputs: vec![x.shape().to_vec()],
        output: y.shape().to_vec(),
        cost: Cost {
            flops: x.numel() as u64,
            macs: 0,
            bytes_read: f32_bytes(x.numel()),
            bytes_written: f32_bytes(y.numel()),
        },
    }
}

impl Tensor {
    /// Sum over `dims` (any set, any order); `keepdim` keeps them as size 1.
    pub fn sum(&self, dims: &[usize], keepdim: bool) -> Result<Tensor> {
        let p = plan("sum", self, dims, keepdim)?;
        let frame = profile::begin();
        let out = sum_plan(&p, self.raw(), self.offset());
        let y = Tensor::from_contig(out, &p.out_shape);
        if let Some(fr) = frame {
            // One add per input element.
            fr.end_op(&y, || reduce_info("sum", self, &y));
        }
        if !needs_grad(&[self]) {
            return Ok(y);
        }
        let in_shape = self.shape().to_vec();
        let mut kept_shape = in_shape.clone();
        for &d in dims {
            kept_shape[d] = 1;
        }
        Ok(y.record("sum", &[self], move |g| {
            Ok(vec![Some(g.reshape(&kept_shape)?.expand(&in_shape)?)])
        }))
    }

    /// Sum of all elements, as a rank-0 tensor.
    pub fn sum_all(&self) -> Tensor {
        let dims: Vec<usize> = (0..self.rank()).collect();
        self.sum(&dims, false)
            .expect("every dim of a tensor is in range and distinct")
    }

    /// Mean over `dims`.
    pub fn mean(&self, dims: &[usize], keepdim: bool) -> Result<Tensor> {
        let n: usize = {
            normalize_dims("mean", dims, self.shape())?;
            dims.iter().map(|&d| self.shape()[d]).product()
        };
        Ok(self.sum(dims, keepdim)?.div_scalar(n as f32))
    }

    /// Mean of all elements, as a rank-0 tensor.
    pub fn mean_all(&self) -> Tensor {
        self.sum_all().div_scalar(self.numel() as f32)
    }

    /// Variance over `dims` with `correction` (1 = unbiased, as PyTorch's default; 0 = biased).
    pub fn var(&self, dims: &[usize], keepdim: bool, correction: usize) -> Result<Tensor> {
        normalize_dims("var", dims, self.shape())?;
        let n: usize = dims.iter().map(|&d| self.shape()[d]).product();
        if n <= correction {
            return Err(TensorError::arg(
                "var",
                format!(
                    "{n} elements over dims {dims:?} of {} with correction {correction}",
                    fmt_shape(self.shape())
                ),
            ));
        }
        let mu = self.mean(dims, true)?;
        let d = self.sub(&mu)?;
        Ok(d.mul(&d)?
            .sum(dims, keepdim)?
            .div_scalar((n - correction) as f32))
    }

    /// Standard deviation over `dims` with `correction` (see [`Tensor::var`]).
    pub fn std(&self, dims: &[usize], keepdim: bool, correction: usize) -> Result<Tensor> {
        Ok(self.var(dims, keepdim, correction)?.sqrt())
    }

    /// Maximum over `dims`; the gradient goes to the first maximum of each reduced group.
    pub fn max(&self, dims: &[usize], keepdim: bool) -> Result<Tensor> {
        Ok(self.max_with_argmax(dims, keepdim)?.0)
    }

    /// Maximum over `dims` and, for every output element, the dense row-major position of its
    /// (first) maximum in the input.
    pub fn max_with_argmax(&self, dims: &[usize], keepdim: bool) -> Result<(Tensor, Vec<usize>)> {
        let p = plan("max", self, dims, keepdim)?;
        if p.red_shape.contains(&0) {
            return Err(TensorError::shape(
                "max",
                format!(
                    "cannot take the max over an empty dim of {}",
                    fmt_shape(self.shape())
                ),
            ));
        }
        let frame = profile::begin();
        let raw = self.raw();
        let bases = p.bases(self.offset());
        let mut vals = Vec::with_capacity(bases.len());
        let mut pos = Vec::with_capacity(bases.len());
        for &(o, c) in &bases {
            let (mut best, mut at) = (f32::NEG_INFINITY, usize::MAX);
            walk2(&p.red_shape, &p.red_x, o, &p.red_c, c, |i, ci| {
                let v = raw[i];
                // NaN wins (propagates) as in PyTorch.
                if at == usize::MAX || v > best || (v.is_nan() && !best.is_nan()) {
                    best = v;
                    at = ci;
                }
            });
            vals.push(best);
            pos.push(at);
        }
        let y = Tensor::from_contig(vals, &p.out_shape);
        if let Some(fr) = frame {
            // One comparison per input element.
            fr.end_op(&y, || reduce_info("max", self, &y));
        }
        if !needs_grad(&[self]) {
            return Ok((y, pos));
        }
        let in_shape = self.shape().to_vec();
        let saved = pos.clone();
        let y = y.record("max", &[self], move |g| {
            let gd = g.data();
            let mut dx = crate::pool::zeroed(in_shape.iter().product());
            for (&p, &gv) in saved.iter().zip(gd.iter()) {
                dx[p] += gv;
            }
            profile::add_cost(|| Cost {
                flops: gd.len() as u64,
                macs: 0,
                bytes_read: f32_bytes(gd.len()),
                bytes_written: f32_bytes(dx.len()),
            });
            Ok(vec![Some(Tensor::from_contig(dx, &in_shape))])
        });
        Ok((y, pos))
    }

    /// Index of the (first) maximum along `dim`, for every position of the other dims
    /// (row-major over the shape with `dim` removed).
    pub fn argmax(&self, dim: usize) -> Result<Vec<usize>> {
        crate::error::check_dim("argmax", dim, self.shape())?;
        let (_, pos) = crate::autograd::no_grad_scope(|| self.max_with_argmax(&[dim], false))?;
        let stride = contiguous_strides(self.shape())[dim];
        Ok(pos
            .iter()
            .map(|&p| (p / stride) % self.shape()[dim])
            .collect())
    }

    /// The gradient-reduction helper: sums this tensor over the dims that broadcasting added or
    /// stretched so that it has `shape` (which must broadcast to this tensor's shape).
    pub fn sum_to(&self, shape: &[usize]) -> Result<Tensor> {
        if self.shape() == shape {
            return Ok(self.clone());
        }
        let err = || {
            TensorError::shape(
                "sum_to",
                format!(
                    "{} does not broadcast to {}",
                    fmt_shape(shape),
                    fmt_shape(self.shape())
                ),
            )
        };
        let (n, m) = (self.rank(), shape.len());
        if m > n {
            return Err(err());
        }
        let lead = n - m;
        let mut dims: Vec<usize> = (0..lead).collect();
        for (i, &t) in shape.iter().enumerate() {
            let s = self.shape()[lead + i];
            if t == 1 && s != 1 {
                dims.push(lead + i);
            } else if t != s {
                return Err(err());
            }
        }
        self.sum(&dims, true)?.reshape(shape)
    }
}
