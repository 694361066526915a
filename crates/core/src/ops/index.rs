//! Joining and indexing: cat, stack, index_select, gather.
//!
//! Backward: cat hands each input a narrow view of the gradient (no copy); index_select and
//! gather scatter-add the gradient back into a zero tensor of the input's shape (repeated
//! indices accumulate).

use crate::autograd::needs_grad;
use crate::error::{check_dim, fmt_shape, Result, TensorError};
use crate::layout::{contiguous_strides, walk2};
use crate::ops::elementwise_info;
use crate::profile::{self, f32_bytes, Cost, OpInfo};
use crate::tensor::Tensor;

/// A gather's cost: no FLOPs, the gathered elements read and written once.
fn gather_info(op: &'static str, x: &Tensor, y: &Tensor) -> OpInfo {
    OpInfo {
        op: op.into(),
        inputs: vec![x.shape().to_vec()],
        output: y.shape().to_vec(),
        cost: Cost {
            flops: 0,
            macs: 0,
            bytes_read: f32_bytes(y.numel()),
            bytes_written: f32_bytes(y.numel()),
        },
    }
}

/// A scatter-add backward: one add per gradient element; reads the gradient, writes dx.
fn scatter_cost(g: usize, dx: usize) -> Cost {
    Cost {
        flops: g as u64,
        macs: 0,
        bytes_read: f32_bytes(g),
        bytes_written: f32_bytes(dx),
    }
}

impl Tensor {
    /// Concatenates tensors of equal shape except along `dim`.
    pub fn cat(tensors: &[Tensor], dim: usize) -> Result<Tensor> {
        let first = tensors
            .first()
            .ok_or_else(|| TensorError::arg("cat", "needs at least one tensor"))?;
        check_dim("cat", dim, first.shape())?;
        let mut shape = first.shape().to_vec();
        shape[dim] = 0;
        for t in tensors {
            let ok = t.rank() == first.rank()
                && t.shape()
                    .iter()
                    .zip(first.shape())
                    .enumerate()
                    .all(|(d, (a, b))| d == dim || a == b);
            if !ok {
                let shapes: Vec<String> = tensors.iter().map(|t| fmt_shape(t.shape())).collect();
                return Err(TensorError::shape(
                    "cat",
                    format!("shapes {} differ outside dim {dim}", shapes.join(", ")),
                ));
            }
            shape[dim] += t.shape()[dim];
        }
        let frame = profile::begin();
        let dense = contiguous_strides(&shape);
        let mut out = crate::pool::zeroed(shape.iter().product());
        let mut start = 0;
        for t in tensors {
            let raw = t.raw();
            walk2(
                t.shape(),
                t.strides(),
                t.offset(),
                &dense,
                start * dense[dim],
                |s, d| out[d] = raw[s],
            );
            start += t.shape()[dim];
        }
        let y = Tensor::from_contig(out, &shape);
        let refs: Vec<&Tensor> = tensors.iter().collect();
        if let Some(fr) = frame {
            fr.end_op(&y, || elementwise_info("cat", &refs, &y, 0));
        }
        if !needs_grad(&refs) {
            return Ok(y);
        }
        let sizes: Vec<usize> = tensors.iter().map(|t| t.shape()[dim]).collect();
        Ok(y.record("cat", &refs, move |g| {
            let mut start = 0;
            let mut grads = Vec::with_capacity(sizes.len());
            for &n in &sizes {
                grads.push(Some(g.narrow(dim, start, n)?));
                start += n;
            }
            Ok(grads)
        }))
    }

    /// Stacks tensors of equal shape along a new dim `dim` (`0..=rank`).
    pub fn stack(tensors: &[Tensor], dim: usize) -> Result<Tensor> {
        let first = tensors
            .first()
            .ok_or_else(|| TensorError::arg("stack", "needs at least one tensor"))?;
        if let Some(t) = tensors.iter().find(|t| t.shape() != first.shape()) {
            return Err(TensorError::shape(
                "stack",
                format!(
                    "all tensors need one shape; got {} and {}",
                    fmt_shape(first.shape()),
                    fmt_shape(t.shape())
                ),
            ));
        }
        let parts = tensors
            .iter()
            .map(|t| t.unsqueeze(dim))
            .collect::<Result<Vec<_>>>()?;
        Tensor::cat(&parts, dim)
    }

    /// The slices `indices[i]` along `dim` (output size `indices.len()` in that dim).
    pub fn index_select(&self, dim: usize, indices: &[usize]) -> Result<Tensor> {
        check_dim("index_select", dim, self.shape())?;
        let size = self.shape()[dim];
        if let Some(&bad) = indices.iter().find(|&&i| i >= size) {
            return Err(TensorError::arg(
                "index_select",
                format!(
                    "index {bad} is out of bounds for dim {dim} of {}",
                    fmt_shape(self.shape())
                ),
            ));
        }
        let mut out_shape = self.shape().to_vec();
        out_shape[dim] = indices.len();
        let mut slice_shape = self.shape().to_vec();
        slice_shape[dim] = 1;
        let frame = profile::begin();
        let dense = contiguous_strides(&out_shape);
        let mut out = crate::pool::zeroed(out_shape.iter().product());
        let (raw, sx) = (self.raw(), self.strides());
        for (j, &i) in indices.iter().enumerate() {
            walk2(
                &slice_shape,
                sx,
                self.offset() + i * sx[dim],
                &dense,
                j * dense[dim],
                |s, d| out[d] = raw[s],
            );
        }
        let y = Tensor::from_contig(out, &out_shape);
        if let Some(fr) = frame {
            fr.end_op(&y, || gather_info("index_select", self, &y));
        }
        if !needs_grad(&[self]) {
            return Ok(y);
        }
        let in_shape = self.shape().to_vec();
        let indices = indices.to_vec();
        Ok(y.record("index_select", &[self], move |g| {
            let in_dense = contiguous_strides(&in_shape);
            let mut dx = crate::pool::zeroed(in_shape.iter().product());
            let (graw, gs) = (g.raw(), g.strides());
            for (j, &i) in indices.iter().enumerate() {
                walk2(
                    &slice_shape,
                    gs,
                    g.offset() + j * gs[dim],
                    &in_dense,
                    i * in_dense[dim],
                    |s, d| dx[d] += graw[s],
                );
            }
            profile::add_cost(|| scatter_cost(g.numel(), dx.len()));
            Ok(vec![Some(Tensor::from_contig(dx, &in_shape))])
        }))
    }

    /// `out[i][j]... = self[..., index[i][j]..., ...]` with the index replacing position `dim`
    /// (PyTorch `gather`). `index` is row-major of `index_shape`, which has this tensor's rank
    /// and no larger size than it in the other dims.
    pub fn gather(&self, dim: usize, index: &[usize], index_shape: &[usize]) -> Result<Tensor> {
        check_dim("gather", dim, self.shape())?;
        let bad_shape = index_shape.len() != self.rank()
            || index_shape
                .iter()
                .zip(self.shape())
                .enumerate()
                .any(|(d, (&i, &s))| d != dim && i > s)
            || index.len() != index_shape.iter().product::<usize>();
        if bad_shape {
            return Err(TensorError::shape(
                "gather",
                format!(
                    "index of shape {} ({} values) does not fit input {} along dim {dim}",
                    fmt_shape(index_shape),
                    index.len(),
                    fmt_shape(self.shape())
                ),
            ));
        }
        let size = self.shape()[dim];
        if let Some(&bad) = index.iter().find(|&&i| i >= size) {
            return Err(TensorError::arg(
                "gather",
                format!(
                    "index {bad} is out of bounds for dim {dim} of {}",
                    fmt_shape(self.shape())
                ),
            ));
        }
        let frame = profile::begin();
        // Offsets of the gathered elements with the dim-`dim` coordinate set to 0.
        let mut base_x = Vec::with_capacity(index.len());
        let mut base_c = Vec::with_capacity(index.len());
        let dense = contiguous_strides(self.shape());
        let mut sx = self.strides().to_vec();
        let mut sc = dense.clone();
        sx[dim] = 0;
        sc[dim] = 0;
        walk2(index_shape, &sx, self.offset(), &sc, 0, |o, c| {
            base_x.push(o);
            base_c.push(c);
        });
        let (raw, st) = (self.raw(), self.strides()[dim]);
        let out: Vec<f32> = base_x
            .iter()
            .zip(index)
            .map(|(&o, &i)| raw[o + i * st])
            .collect();
        let y = Tensor::from_contig(out, index_shape);
        if let Some(fr) = frame {
            fr.end_op(&y, || gather_info("gather", self, &y));
        }
        if !needs_grad(&[self]) {
            return Ok(y);
        }
        let in_shape = self.shape().to_vec();
        let pos: Vec<usize> = base_c
            .iter()
            .zip(index)
            .map(|(&c, &i)| c + i * dense[dim])
            .collect();
        Ok(y.record("gather", &[self], move |g| {
            let mut dx = crate::pool::zeroed(in_shape.iter().product());
            let gd = g.data();
            for (&p, &v) in pos.iter().zip(gd.iter()) {
                dx[p] += v;
            }
            profile::add_cost(|| scatter_cost(gd.len(), dx.len()));
            Ok(vec![Some(Tensor::from_contig(dx, &in_shape))])
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cat_stack_gather() {
        let a = Tensor::from_vec(vec![1., 2., 3., 4.], &[2, 2]).unwrap();
        let b = Tensor::from_vec(vec![5., 6.], &[1, 2]).unwrap();
        let c = Tensor::cat(&[a.clone(), b], 0).unwrap();
        assert_eq!(c.shape(), &[3, 2]);
        assert_eq!(c.to_vec(), vec![1., 2., 3., 4., 5., 6.]);
        let s = Tensor::stack(&[a.clone(), a.clone()], 2).unwrap();
        assert_eq!(s.shape(), &[2, 2, 2]);
        let g = a.gather(1, &[1, 0], &[2, 1]).unwrap();
        assert_eq!(g.to_vec(), vec![2., 3.]);
        let i = a.index_select(0, &[1, 1, 0]).unwrap();
        assert_eq!(i.to_vec(), vec![3., 4., 3., 4., 1., 2.]);
        assert!(a.gather(1, &[2, 0], &[2, 1]).is_err());
    }
}
