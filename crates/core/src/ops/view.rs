//! Views that never copy: reshape (when strides allow), permute/transpose, narrow/select,
//! squeeze/unsqueeze, expand. [`Tensor::contiguous`] is the one place that copies.
//!
//! Each view records a node whose backward is the inverse view of the gradient: reshape back,
//! the inverse permutation, zero-padding for narrow, a sum over the broadcast dims for expand.

use crate::autograd::needs_grad;
use crate::error::{check_dim, fmt_shape, Result, TensorError};
use crate::layout::{contiguous_strides, Layout};
use crate::ops::elementwise_info;
use crate::profile::{self, f32_bytes, Cost};
use crate::tensor::Tensor;

impl Tensor {
    /// A dense row-major copy, or this tensor itself when it already is one.
    pub fn contiguous(&self) -> Tensor {
        if self.is_contiguous() {
            return self.clone();
        }
        let frame = profile::begin();
        let y = Tensor::from_contig(self.to_vec(), self.shape());
        if let Some(fr) = frame {
            fr.end_op(&y, || elementwise_info("contiguous", &[self], &y, 0));
        }
        if !needs_grad(&[self]) {
            return y;
        }
        y.record("contiguous", &[self], |g| Ok(vec![Some(g.clone())]))
    }

    /// The same elements in `shape` (same count): a view when the strides allow, else one copy.
    pub fn reshape(&self, shape: &[usize]) -> Result<Tensor> {
        let n = crate::layout::checked_numel(shape).ok_or_else(|| {
            TensorError::shape(
                "reshape",
                format!("{}: the element count overflows", fmt_shape(shape)),
            )
        })?;
        if n != self.numel() {
            return Err(TensorError::shape(
                "reshape",
                format!(
                    "cannot reshape {} ({} elements) to {} ({n} elements)",
                    fmt_shape(self.shape()),
                    self.numel(),
                    fmt_shape(shape)
                ),
            ));
        }
        if self.shape() == shape {
            return Ok(self.clone());
        }
        let src = match self.layout().reshape_strides(shape) {
            Some(_) => self.clone(),
            None => self.contiguous(),
        };
        let strides = src
            .layout()
            .reshape_strides(shape)
            .unwrap_or_else(|| contiguous_strides(shape));
        let y = src.with_layout(Layout {
            shape: shape.to_vec(),
            strides,
            offset: src.offset(),
        });
        if !needs_grad(&[&src]) {
            return Ok(y);
        }
        let back = src.shape().to_vec();
        Ok(y.record("reshape", &[&src], move |g| {
            Ok(vec![Some(g.reshape(&back)?)])
        }))
    }

    /// Merges dims `start..=end` into one.
    pub fn flatten(&self, start: usize, end: usize) -> Result<Tensor> {
        if self.rank() == 0 {
            return self.reshape(&[1]);
        }
        check_dim("flatten", end, self.shape())?;
        if start > end {
            return Err(TensorError::dim(
                "flatten",
                format!("start dim {start} > end dim {end}"),
            ));
        }
        let s = self.shape();
        let mut shape = s[..start].to_vec();
        shape.push(s[start..=end].iter().product());
        shape.extend_from_slice(&s[end + 1..]);
        self.reshape(&shape)
    }

    /// Reorders the dims: output dim `i` is input dim `dims[i]`.
    pub fn permute(&self, dims: &[usize]) -> Result<Tensor> {
        let r = self.rank();
        let mut seen = vec![false; r];
        if dims.len() != r
            || dims
                .iter()
                .any(|&d| d >= r || std::mem::replace(&mut seen[d], true))
        {
            return Err(TensorError::dim(
                "permute",
                format!(
                    "{dims:?} is not a permutation of the dims of {}",
                    fmt_shape(self.shape())
                ),
            ));
        }
        let l = self.layout();
        let y = self.with_layout(Layout {
            shape: dims.iter().map(|&d| l.shape[d]).collect(),
            strides: dims.iter().map(|&d| l.strides[d]).collect(),
            offset: l.offset,
        });
        if !needs_grad(&[self]) {
            return Ok(y);
        }
        let mut inv = vec![0; r];
        for (i, &d) in dims.iter().enumerate() {
            inv[d] = i;
        }
        Ok(y.record("permute", &[self], move |g| {
            Ok(vec![Some(g.permute(&inv)?)])
        }))
    }

    /// Swaps two dims.
    pub fn transpose(&self, d0: usize, d1: usize) -> Result<Tensor> {
        check_dim("transpose", d0, self.shape())?;
        check_dim("transpose", d1, self.shape())?;
        let mut dims: Vec<usize> = (0..self.rank()).collect();
        dims.swap(d0, d1);
        self.permute(&dims)
    }

    /// The transpose of a 2-D tensor.
    pub fn t(&self) -> Result<Tensor> {
        if self.rank() != 2 {
            return Err(TensorError::dim(
                "t",
                format!("expects a 2-D tensor, got {}", fmt_shape(self.shape())),
            ));
        }
        self.transpose(0, 1)
    }

    /// Elements `start..start + len` along `dim`, as a view.
    pub fn narrow(&self, dim: usize, start: usize, len: usize) -> Result<Tensor> {
        check_dim("narrow", dim, self.shape())?;
        let size = self.shape()[dim];
        if !matches!(start.checked_add(len), Some(e) if e <= size) {
            return Err(TensorError::arg(
                "narrow",
                format!(
                    "range {start}..{} is out of bounds for dim {dim} of {}",
                    start.saturating_add(len),
                    fmt_shape(self.shape())
                ),
            ));
        }
        let l = self.layout();
        let mut shape = l.shape.clone();
        shape[dim] = len;
        let y = self.with_layout(Layout {
            shape,
            strides: l.strides.clone(),
            offset: l.offset + if len > 0 { start * l.strides[dim] } else { 0 },
        });
        if !needs_grad(&[self]) {
            return Ok(y);
        }
        let full = self.shape().to_vec();
        Ok(y.record_narrow(self, dim, start, move |g| {
            Ok(vec![Some(pad_narrow(g, &full, dim, start))])
        }))
    }

    /// Index `index` of `dim`, with that dim removed (e.g. the class token `x.select(1, 0)`).
    pub fn select(&self, dim: usize, index: usize) -> Result<Tensor> {
        check_dim("select", dim, self.shape())?;
        if index >= self.shape()[dim] {
            return Err(TensorError::arg(
                "select",
                format!(
                    "index {index} is out of bounds for dim {dim} of {}",
                    fmt_shape(self.shape())
                ),
            ));
        }
        self.narrow(dim, index, 1)?.squeeze(dim)
    }

    /// Removes `dim` if it has size 1 (otherwise returns the tensor unchanged, as PyTorch).
    pub fn squeeze(&self, dim: usize) -> Result<Tensor> {
        check_dim("squeeze", dim, self.shape())?;
        if self.shape()[dim] != 1 {
            return Ok(self.clone());
        }
        let mut shape = self.shape().to_vec();
        shape.remove(dim);
        self.reshape(&shape)
    }

    /// Inserts a size-1 dim at position `dim` (`0..=rank`).
    pub fn unsqueeze(&self, dim: usize) -> Result<Tensor> {
        if dim > self.rank() {
            return Err(TensorError::dim(
                "unsqueeze",
                format!(
                    "dim {dim} is out of range for shape {} (allowed 0..={})",
                    fmt_shape(self.shape()),
                    self.rank()
                ),
            ));
        }
        let mut shape = self.shape().to_vec();
        shape.insert(dim, 1);
        self.reshape(&shape)
    }

    /// Broadcasts to `shape` as a view (stride 0 on stretched dims; NumPy rules).
    pub fn expand(&self, shape: &[usize]) -> Result<Tensor> {
        if self.shape() == shape {
            return Ok(self.clone());
        }
        let l = self.layout().broadcast_to("expand", shape)?;
        let y = self.with_layout(l);
        if !needs_grad(&[self]) {
            return Ok(y);
        }
        let back = self.shape().to_vec();
        Ok(y.record("expand", &[self], move |g| Ok(vec![Some(g.sum_to(&back)?)])))
    }

    /// Same as [`Tensor::expand`].
    pub fn broadcast_to(&self, shape: &[usize]) -> Result<Tensor> {
        self.expand(shape)
    }
}

/// A zero tensor of `full` shape with `g` written at `start..` along `dim` (narrow's backward).
pub(crate) fn pad_narrow(g: &Tensor, full: &[usize], dim: usize, start: usize) -> Tensor {
    let mut out = crate::pool::for_overwrite(full.iter().product());
    let gd = g.data();
    place_narrowed(&mut out, full, &gd, dim, start);
    profile::add_cost(|| Cost {
        flops: 0,
        macs: 0,
        bytes_read: f32_bytes(gd.len()),
        bytes_written: f32_bytes(out.len()),
    });
    Tensor::from_contig(out, full)
}

/// `out = 0` outside the region and `out[region] = g` (see [`add_narrowed`]): one write pass.
fn place_narrowed(out: &mut [f32], full: &[usize], g: &[f32], dim: usize, start: usize) {
    use rayon::prelude::*;
    let inner: usize = full[dim + 1..].iter().product();
    let block = full[dim] * inner;
    if block == 0 {
        return;
    }
    let run = g.len() / (out.len() / block).max(1);
    let place = |(dst, src): (&mut [f32], &[f32])| {
        let (head, rest) = dst.split_at_mut(start * inner);
        let (mid, tail) = rest.split_at_mut(run);
        head.fill(0.0);
        mid.copy_from_slice(src);
        tail.fill(0.0);
    };
    if run == 0 {
        out.fill(0.0);
    } else if out.len() >= 1 << 16 {
        out.par_chunks_mut(block)
            .zip(g.par_chunks(run))
            .for_each(place);
    } else {
        out.chunks_mut(block).zip(g.chunks(run)).for_each(place);
    }
}

/// `acc[region] += g`: `acc` is a contiguous tensor of shape `full`, `g` the contiguous
/// elements of its narrow along `dim` from `start`. Each of the `prod(full[..dim])` outer
/// blocks holds the region as one contiguous run, added with a plain (vectorisable) loop,
/// blocks in parallel when large (element-wise, so bit-identical for any thread count).
pub(crate) fn add_narrowed(acc: &mut [f32], full: &[usize], g: &[f32], dim: usize, start: usize) {
    use rayon::prelude::*;
    let inner: usize = full[dim + 1..].iter().product();
    let block = full[dim] * inner;
    let run = if full[dim] == 0 {
        0
    } else {
        g.len() / (acc.len() / block.max(1)).max(1)
    };
    if block == 0 || run == 0 {
        return;
    }
    let add = |(dst, src): (&mut [f32], &[f32])| {
        for (d, s) in dst[start * inner..start * inner + run].iter_mut().zip(src) {
            *d += s;
        }
    };
    if acc.len() >= 1 << 16 {
        acc.par_chunks_mut(block)
            .zip(g.par_chunks(run))
            .for_each(add);
    } else {
        acc.chunks_mut(block).zip(g.chunks(run)).for_each(add);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn views_share_storage() {
        let x = Tensor::arange(0.0, 24.0, 1.0)
            .unwrap()
            .reshape(&[2, 3, 4])
            .unwrap();
        let t = x.transpose(0, 2).unwrap();
        assert!(t.same_storage(&x));
        assert_eq!(t.shape(), &[4, 3, 2]);
        let n = x.narrow(2, 1, 2).unwrap();
        assert!(n.same_storage(&x));
        assert_eq!(n.to_vec()[..4], [1.0, 2.0, 5.0, 6.0]);
        // reshape of a transposed tensor copies
        let r = t.reshape(&[24]).unwrap();
        assert!(!r.same_storage(&x));
        assert_eq!(r.to_vec()[..3], [0.0, 12.0, 4.0]);
        let e = Tensor::ones(&[3, 1]).expand(&[2, 3, 4]).unwrap();
        assert_eq!(e.strides(), &[0, 1, 0]);
    }

    #[test]
    fn narrow_grad_pads() {
        let x = Tensor::ones(&[2, 3]).requires_grad_(true);
        x.narrow(1, 1, 2).unwrap().sum_all().backward().unwrap();
        assert_eq!(x.grad().unwrap().to_vec(), vec![0., 1., 1., 0., 1., 1.]);
    }
}
