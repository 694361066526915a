//! Shape, strides (in elements) and offset: how a tensor's elements sit in its storage.
//!
//! After candle's `Layout`: views (permute, narrow, expand, reshape when strides allow) only make
//! a new layout over the same storage. Strides are unsigned; a broadcast dimension has stride 0.
//! The strided walkers here ([`walk1`], [`walk2`]) are the index machinery every op uses on
//! non-contiguous inputs: an outer odometer over all but the last dimension and a tight inner
//! loop over the last one.

use rayon::prelude::*;

use crate::error::{fmt_shape, Result, TensorError};

/// Shape, strides and start offset of a tensor view.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    pub(crate) shape: Vec<usize>,
    pub(crate) strides: Vec<usize>,
    pub(crate) offset: usize,
}

/// Row-major strides of a dense tensor of `shape`.
pub fn contiguous_strides(shape: &[usize]) -> Vec<usize> {
    let mut strides = vec![0; shape.len()];
    let mut acc = 1;
    for (s, &d) in strides.iter_mut().zip(shape).rev() {
        *s = acc;
        acc *= d;
    }
    strides
}

impl Layout {
    /// A dense row-major layout starting at offset 0.
    pub fn contiguous(shape: &[usize]) -> Self {
        Layout {
            shape: shape.to_vec(),
            strides: contiguous_strides(shape),
            offset: 0,
        }
    }

    /// The dimensions.
    pub fn shape(&self) -> &[usize] {
        &self.shape
    }

    /// The strides, in elements.
    pub fn strides(&self) -> &[usize] {
        &self.strides
    }

    /// The storage index of the first element.
    pub fn offset(&self) -> usize {
        self.offset
    }

    /// Number of elements.
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }

    /// Whether elements are dense and row-major from `offset` (size-1 dims may have any stride).
    pub fn is_contiguous(&self) -> bool {
        let mut acc = 1;
        for (&d, &s) in self.shape.iter().zip(&self.strides).rev() {
            if d != 1 && s != acc {
                return false;
            }
            acc *= d;
        }
        true
    }

    /// Highest storage index touched plus one (0 when empty).
    pub fn required_len(&self) -> usize {
        if self.numel() == 0 {
            return 0;
        }
        self.offset
            + self
                .shape
                .iter()
                .zip(&self.strides)
                .map(|(&d, &s)| (d - 1) * s)
                .sum::<usize>()
            + 1
    }

    /// This layout broadcast to `shape` (NumPy rules: align right, size-1 dims get stride 0).
    pub fn broadcast_to(&self, op: &'static str, shape: &[usize]) -> Result<Layout> {
        let err = || {
            TensorError::shape(
                op,
                format!(
                    "cannot broadcast {} to {}",
                    fmt_shape(&self.shape),
                    fmt_shape(shape)
                ),
            )
        };
        if shape.len() < self.shape.len() || checked_numel(shape).is_none() {
            return Err(err());
        }
        let lead = shape.len() - self.shape.len();
        let mut strides = vec![0; shape.len()];
        for i in 0..self.shape.len() {
            let (d, want) = (self.shape[i], shape[lead + i]);
            strides[lead + i] = if d == want {
                self.strides[i]
            } else if d == 1 {
                0
            } else {
                return Err(err());
            };
        }
        Ok(Layout {
            shape: shape.to_vec(),
            strides,
            offset: self.offset,
        })
    }

    /// Strides for viewing this layout as `new_shape` without copying, if possible (the
    /// algorithm of PyTorch's `computeStride`: split the old dims into contiguous chunks and
    /// map each chunk onto a run of new dims of the same element count).
    pub fn reshape_strides(&self, new_shape: &[usize]) -> Option<Vec<usize>> {
        if self.numel() <= 1 {
            return Some(contiguous_strides(new_shape));
        }
        let mut new_strides = vec![0; new_shape.len()];
        let mut view_d = new_shape.len() as isize - 1;
        let mut chunk_base = *self.strides.last().unwrap_or(&1);
        let mut tensor_numel = 1usize;
        let mut view_numel = 1usize;
        for td in (0..self.shape.len()).rev() {
            tensor_numel *= self.shape[td];
            let chunk_end = td == 0
                || (self.shape[td - 1] != 1 && self.strides[td - 1] != tensor_numel * chunk_base);
            if chunk_end {
                while view_d >= 0 && (view_numel < tensor_numel || new_shape[view_d as usize] == 1)
                {
                    new_strides[view_d as usize] = view_numel * chunk_base;
                    view_numel *= new_shape[view_d as usize];
                    view_d -= 1;
                }
                if view_numel != tensor_numel {
                    return None;
                }
                if td > 0 {
                    chunk_base = self.strides[td - 1];
                    tensor_numel = 1;
                    view_numel = 1;
                }
            }
        }
        if view_d != -1 {
            return None;
        }
        Some(new_strides)
    }
}

/// The NumPy broadcast of two shapes, or a shape error naming `op` and both shapes.
pub fn broadcast_shapes(op: &'static str, a: &[usize], b: &[usize]) -> Result<Vec<usize>> {
    let n = a.len().max(b.len());
    let mut out = vec![0; n];
    for i in 0..n {
        let da = if i + a.len() >= n {
            a[i + a.len() - n]
        } else {
            1
        };
        let db = if i + b.len() >= n {
            b[i + b.len() - n]
        } else {
            1
        };
        out[i] = if da == db || db == 1 {
            da
        } else if da == 1 {
            db
        } else {
            return Err(TensorError::shape(
                op,
                format!(
                    "{} and {} do not broadcast (dim {i}: {da} vs {db})",
                    fmt_shape(a),
                    fmt_shape(b)
                ),
            ));
        };
    }
    Ok(out)
}

/// Calls `f(offset)` for every element of a strided view, in row-major order.
#[inline]
pub fn walk1(shape: &[usize], strides: &[usize], offset: usize, mut f: impl FnMut(usize)) {
    if shape.contains(&0) {
        return;
    }
    let nd = shape.len();
    if nd == 0 {
        f(offset);
        return;
    }
    let (inner, is) = (shape[nd - 1], strides[nd - 1]);
    let mut idx = vec![0usize; nd - 1];
    let mut base = offset;
    loop {
        let mut o = base;
        for _ in 0..inner {
            f(o);
            o += is;
        }
        // Odometer over the outer dims.
        let mut d = nd - 1;
        loop {
            if d == 0 {
                return;
            }
            d -= 1;
            idx[d] += 1;
            base += strides[d];
            if idx[d] < shape[d] {
                break;
            }
            base -= strides[d] * shape[d];
            idx[d] = 0;
        }
    }
}

/// Calls `f(offset_a, offset_b)` for every index of `shape`, walking two strided views together.
#[inline]
pub fn walk2(
    shape: &[usize],
    sa: &[usize],
    oa: usize,
    sb: &[usize],
    ob: usize,
    mut f: impl FnMut(usize, usize),
) {
    if shape.contains(&0) {
        return;
    }
    let nd = shape.len();
    if nd == 0 {
        f(oa, ob);
        return;
    }
    let (inner, ia, ib) = (shape[nd - 1], sa[nd - 1], sb[nd - 1]);
    let mut idx = vec![0usize; nd - 1];
    let (mut ba, mut bb) = (oa, ob);
    loop {
        let (mut a, mut b) = (ba, bb);
        for _ in 0..inner {
            f(a, b);
            a += ia;
            b += ib;
        }
        let mut d = nd - 1;
        loop {
            if d == 0 {
                return;
            }
            d -= 1;
            idx[d] += 1;
            ba += sa[d];
            bb += sb[d];
            if idx[d] < shape[d] {
                break;
            }
            ba -= sa[d] * shape[d];
            bb -= sb[d] * shape[d];
            idx[d] = 0;
        }
    }
}

/// The elements of a strided view in row-major order, as a new dense buffer.
///
/// When the view's unit-stride dim is not its last one (a transposed or permuted tensor), the
/// copy runs in 16 x 8 tiles over that dim and the last one (dense writes innermost), so each
/// strided read line is used whole instead of touching a new line per element. The tiles are
/// small because power-of-two strides map a tile's lines onto few cache sets (16 x 8 measured
/// fastest of 8x8 .. 64x4 on a 1024 x 1024 transpose).
pub fn gather(raw: &[f32], l: &Layout) -> Vec<f32> {
    // 16 along the unit-stride dim (one 64-byte line of reads), 8 along the last dim.
    const TILE_P: usize = 16;
    const TILE_L: usize = 8;
    let n = l.numel();
    let nd = l.shape.len();
    let unit = (0..nd).rev().find(|&d| l.strides[d] == 1 && l.shape[d] > 1);
    let tiled = nd >= 2
        && n > 0
        && l.strides[nd - 1] != 1
        && l.shape[nd - 1] > 1
        && unit.is_some_and(|p| p < nd - 1);
    if !tiled {
        // A pooled buffer: large gathers (views copied by `contiguous`) recur every step.
        let mut out = crate::pool::for_overwrite(n);
        if n > 0 && nd >= 1 && l.strides[nd - 1] == 1 {
            // Unit-stride rows (e.g. the attention head merge, [n, h, L, d] -> [n, L, h, d]):
            // one slice copy per row, rows split over rayon when large (a copy, so the result
            // does not depend on the thread count).
            let inner = l.shape[nd - 1];
            let mut starts = Vec::with_capacity(n / inner);
            walk1(&l.shape[..nd - 1], &l.strides[..nd - 1], l.offset, |o| {
                starts.push(o)
            });
            let copy = |(dst, &s): (&mut [f32], &usize)| dst.copy_from_slice(&raw[s..s + inner]);
            if n >= crate::ops::PAR_MIN {
                out.par_chunks_mut(inner)
                    .zip(starts.par_iter())
                    .for_each(copy);
            } else {
                out.chunks_mut(inner).zip(&starts).for_each(copy);
            }
            return out;
        }
        let mut i = 0;
        walk1(&l.shape, &l.strides, l.offset, |o| {
            out[i] = raw[o];
            i += 1;
        });
        return out;
    }
    let p = unit.expect("checked above");
    let last = nd - 1;
    let dense = contiguous_strides(&l.shape);
    let (np, nl) = (l.shape[p], l.shape[last]);
    let (sl, dp) = (l.strides[last], dense[p]);
    // The other dims, walked with the input strides and the output (dense) strides together.
    let mut oshape = l.shape.clone();
    oshape[p] = 1;
    oshape[last] = 1;
    let mut out = crate::pool::for_overwrite(n);
    walk2(&oshape, &l.strides, l.offset, &dense, 0, |src, dst| {
        for i0 in (0..np).step_by(TILE_P) {
            for j0 in (0..nl).step_by(TILE_L) {
                for i in i0..(i0 + TILE_P).min(np) {
                    for j in j0..(j0 + TILE_L).min(nl) {
                        out[dst + i * dp + j] = raw[src + i + j * sl];
                    }
                }
            }
        }
    });
    out
}

/// The number of elements of `shape`, or `None` when it overflows `usize` (a shape no tensor
/// can have: constructors and views refuse it rather than wrap around).
pub fn checked_numel(shape: &[usize]) -> Option<usize> {
    shape.iter().try_fold(1usize, |a, &d| a.checked_mul(d))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn broadcast() {
        assert_eq!(
            broadcast_shapes("t", &[2, 1, 3], &[4, 1]).unwrap(),
            vec![2, 4, 3]
        );
        assert!(broadcast_shapes("t", &[2, 3], &[4, 3]).is_err());
    }

    #[test]
    fn reshape_view() {
        let l = Layout::contiguous(&[2, 3, 4]);
        assert_eq!(l.reshape_strides(&[6, 4]), Some(vec![4, 1]));
        // transposed [3, 2] from [2, 3]: cannot flatten
        let t = Layout {
            shape: vec![3, 2],
            strides: vec![1, 3],
            offset: 0,
        };
        assert_eq!(t.reshape_strides(&[6]), None);
        assert_eq!(t.reshape_strides(&[3, 2, 1]), Some(vec![1, 3, 3]));
    }

    #[test]
    fn gather_tiled_matches_walk() {
        let raw: Vec<f32> = (0..3 * 70 * 50).map(|v| v as f32).collect();
        // [3, 50, 70] viewed from a [3, 70, 50] buffer with the last two dims swapped.
        let l = Layout {
            shape: vec![3, 50, 70],
            strides: vec![3500, 1, 50],
            offset: 0,
        };
        let mut want = vec![];
        walk1(&l.shape, &l.strides, 0, |o| want.push(raw[o]));
        assert_eq!(gather(&raw, &l), want);
    }

    #[test]
    fn walk_transposed() {
        let mut v = vec![];
        walk1(&[3, 2], &[1, 3], 0, |o| v.push(o));
        assert_eq!(v, vec![0, 3, 1, 4, 2, 5]);
    }
}
