//! Segmented matrix dimensions: one dimension of an operand cut into equal runs stored apart,
//! so a GEMM can read and write the images of an NCHW batch side by side without copying them
//! into one matrix first.
//!
//! ```text
//! NCHW x [n, c, hw]:  the matrix X[c, (img, pixel)] has columns in n segments of hw,
//!                     segment `img` starting img * c * hw elements in:
//!   element (i, j) at  i * row_stride + (j / len) * seg_stride + (j % len) * col_stride
//! ```
//! This is the batched convolution's operand (Chellapilla et al., 2006, with the images along
//! N as Caffe and oneDNN batch them), addressed the way BLIS's "generalized strides" address a
//! matrix (Van Zee & van de Geijn, 2015): the layout is resolved only when a block is packed or
//! a tile is stored. Packing splits a block at segment boundaries and packs each piece with the
//! ordinary fast packers; a tile of C inside one segment is stored directly, one that straddles
//! two goes through the driver's temporary tile. The arithmetic of every element is unchanged.

use super::kernel::PackFn;

/// Largest MR or NR of any microkernel (AVX-512: 12 x 32).
pub(crate) const MAX_PANEL: usize = 32;

/// Which dimension of a view is segmented.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Axis {
    /// The runs cut the rows.
    Rows,
    /// The runs cut the columns.
    Cols,
}

/// A dimension cut into segments of `len` indices, segment `t` starting `t * stride` elements
/// in; within a segment the view's ordinary row or column stride applies. See the module docs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Segments {
    /// Which dimension is cut into runs.
    pub axis: Axis,
    /// Rows (or columns) per run.
    pub len: usize,
    /// Elements between the starts of consecutive runs.
    pub stride: usize,
}

impl Segments {
    /// Segments along the columns.
    pub fn cols(len: usize, stride: usize) -> Self {
        Segments {
            axis: Axis::Cols,
            len,
            stride,
        }
    }

    /// Segments along the rows.
    pub fn rows(len: usize, stride: usize) -> Self {
        Segments {
            axis: Axis::Rows,
            len,
            stride,
        }
    }

    /// The same segments seen from the transposed view.
    pub(crate) fn transposed(self) -> Self {
        Segments {
            axis: match self.axis {
                Axis::Rows => Axis::Cols,
                Axis::Cols => Axis::Rows,
            },
            ..self
        }
    }
}

/// A view's addressing: `(i, j)` at `i * rs + j * cs`, one dimension possibly segmented.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Layout {
    pub rs: usize,
    pub cs: usize,
    pub seg: Option<Segments>,
}

impl Layout {
    /// Element offset of `(i, j)`: always `row_part(i) + col_part(j)`.
    #[inline]
    pub fn offset(&self, i: usize, j: usize) -> usize {
        self.row_part(i) + self.col_part(j)
    }

    /// The row's share of an offset.
    #[inline]
    pub fn row_part(&self, i: usize) -> usize {
        match self.seg {
            Some(s) if s.axis == Axis::Rows => (i / s.len) * s.stride + (i % s.len) * self.rs,
            _ => i * self.rs,
        }
    }

    /// The column's share of an offset.
    #[inline]
    pub fn col_part(&self, j: usize) -> usize {
        match self.seg {
            Some(s) if s.axis == Axis::Cols => (j / s.len) * s.stride + (j % s.len) * self.cs,
            _ => j * self.cs,
        }
    }

    /// Whether indices `[lo, lo + count)` of `axis` lie in one segment (always, unsegmented).
    #[inline]
    pub fn contiguous_run(&self, axis: Axis, lo: usize, count: usize) -> bool {
        match self.seg {
            Some(s) if s.axis == axis && count > 0 => lo / s.len == (lo + count - 1) / s.len,
            _ => true,
        }
    }

    /// The end of the run starting at `lo` along `axis`, at most `hi`: the next segment
    /// boundary (or `hi` when the axis is not segmented).
    #[inline]
    pub fn run_end(&self, axis: Axis, lo: usize, hi: usize) -> usize {
        match self.seg {
            Some(s) if s.axis == axis => ((lo / s.len + 1) * s.len).min(hi),
            _ => hi,
        }
    }
}

/// Validates a segmented view's geometry: a non-zero segment length. Returns the highest
/// offset touched plus one, or `None` on overflow. Unsegmented views use `required_len`.
pub(crate) fn required_len(rows: usize, cols: usize, l: &Layout) -> Option<usize> {
    let Some(s) = l.seg else {
        return super::required_len(rows, cols, l.rs, l.cs);
    };
    if rows == 0 || cols == 0 {
        return Some(0);
    }
    // The segmented extent and its in-segment stride; the other extent and its stride.
    let (ext, unit, other, other_stride) = match s.axis {
        Axis::Cols => (cols, l.cs, rows, l.rs),
        Axis::Rows => (rows, l.rs, cols, l.cs),
    };
    let last = ext - 1;
    let at = |t: usize, r: usize| t.checked_mul(s.stride)?.checked_add(r.checked_mul(unit)?);
    // The last index, or the end of the segment before it, is the farthest along this axis.
    let mut far = at(last / s.len, last % s.len)?;
    if last / s.len > 0 {
        far = far.max(at(last / s.len - 1, s.len - 1)?);
    }
    (other - 1)
        .checked_mul(other_stride)?
        .checked_add(far)?
        .checked_add(1)
}

/// Whether a segmented view addresses every element at a distinct offset (conservatively:
/// each segment is a distinct strided block and segments do not overlap).
pub(crate) fn distinct(rows: usize, cols: usize, l: &Layout) -> bool {
    let Some(s) = l.seg else {
        return super::strides_are_distinct(rows, cols, l.rs, l.cs);
    };
    let (r, c) = match s.axis {
        Axis::Cols => (rows, cols.min(s.len)),
        Axis::Rows => (rows.min(s.len), cols),
    };
    let extent = match s.axis {
        Axis::Cols => cols,
        Axis::Rows => rows,
    };
    let one_segment = extent <= s.len;
    super::strides_are_distinct(r, c, l.rs, l.cs)
        && (one_segment
            || super::required_len(r, c, l.rs, l.cs).is_some_and(|need| s.stride >= need))
}

/// Packs rows `[i0, i0 + mc)` x depth `[pc, pc + kc)` of A (at `a`, layout `l`) into `mr`-row
/// panels in `dst`, as [`PackFn`] would for an unsegmented block: pieces that lie inside one
/// segment go through `pack`, panels that straddle a row segment are gathered element-wise.
///
/// # Safety
/// Every `(i, p)` of the block is readable at `a + l.offset(i, p)`; `dst` holds
/// `ceil(mc / mr) * mr * kc` floats.
#[allow(clippy::too_many_arguments)]
pub(crate) unsafe fn pack_a_block(
    pack: PackFn,
    mr: usize,
    a: *const f32,
    l: &Layout,
    (i0, mc): (usize, usize),
    (pc, kc): (usize, usize),
    dst: &mut [f32],
) {
    // SAFETY (all calls below): each piece lies inside the block (contract) and its panel
    // slice of dst holds mr floats per depth step of the piece.
    unsafe {
        if l.seg.is_none()
            || (l.contiguous_run(Axis::Rows, i0, mc) && l.contiguous_run(Axis::Cols, pc, kc))
        {
            return pack(mr, mc, kc, a.add(l.offset(i0, pc)), l.rs, l.cs, dst);
        }
        for q in 0..mc.div_ceil(mr) {
            let (r0, rows) = (i0 + q * mr, mr.min(mc - q * mr));
            let panel = &mut dst[q * mr * kc..(q + 1) * mr * kc];
            if !l.contiguous_run(Axis::Rows, r0, rows) {
                // Offsets split into row and depth parts, so no division per element.
                let mut row_at = [0usize; MAX_PANEL];
                for (i, at) in row_at.iter_mut().enumerate().take(rows) {
                    *at = l.row_part(r0 + i);
                }
                for p in 0..kc {
                    let src = a.add(l.col_part(pc + p));
                    for i in 0..mr {
                        panel[p * mr + i] = if i < rows { *src.add(row_at[i]) } else { 0.0 };
                    }
                }
                continue;
            }
            let mut k0 = pc;
            while k0 < pc + kc {
                let k1 = l.run_end(Axis::Cols, k0, pc + kc);
                let at = a.add(l.offset(r0, k0));
                pack(
                    mr,
                    rows,
                    k1 - k0,
                    at,
                    l.rs,
                    l.cs,
                    &mut panel[(k0 - pc) * mr..],
                );
                k0 = k1;
            }
        }
    }
}

/// Packs depth `[pc, pc + kc)` x columns `[j0, j0 + nc)` of B (at `b`, layout `l`) into
/// `nr`-column panels in `dst`; the counterpart of [`pack_a_block`].
///
/// # Safety
/// Every `(p, j)` of the block is readable at `b + l.offset(p, j)`; `dst` holds
/// `ceil(nc / nr) * nr * kc` floats.
#[allow(clippy::too_many_arguments)]
pub(crate) unsafe fn pack_b_block(
    pack: PackFn,
    nr: usize,
    b: *const f32,
    l: &Layout,
    (pc, kc): (usize, usize),
    (j0, nc): (usize, usize),
    dst: &mut [f32],
) {
    // SAFETY (all calls below): as in `pack_a_block`.
    unsafe {
        if l.seg.is_none()
            || (l.contiguous_run(Axis::Rows, pc, kc) && l.contiguous_run(Axis::Cols, j0, nc))
        {
            return pack(nr, nc, kc, b.add(l.offset(pc, j0)), l.rs, l.cs, dst);
        }
        for q in 0..nc.div_ceil(nr) {
            let (c0, cols) = (j0 + q * nr, nr.min(nc - q * nr));
            let panel = &mut dst[q * nr * kc..(q + 1) * nr * kc];
            if !l.contiguous_run(Axis::Cols, c0, cols) {
                let mut col_at = [0usize; MAX_PANEL];
                for (j, at) in col_at.iter_mut().enumerate().take(cols) {
                    *at = l.col_part(c0 + j);
                }
                for p in 0..kc {
                    let src = b.add(l.row_part(pc + p));
                    for j in 0..nr {
                        panel[p * nr + j] = if j < cols { *src.add(col_at[j]) } else { 0.0 };
                    }
                }
                continue;
            }
            let mut k0 = pc;
            while k0 < pc + kc {
                let k1 = l.run_end(Axis::Rows, k0, pc + kc);
                let at = b.add(l.offset(k0, c0));
                pack(
                    nr,
                    cols,
                    k1 - k0,
                    at,
                    l.rs,
                    l.cs,
                    &mut panel[(k0 - pc) * nr..],
                );
                k0 = k1;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets_and_lengths() {
        // [2, 7] with columns in segments of 3, 10 apart: columns 0..3 at 0, 3..6 at 10, 6 at 20.
        let l = Layout {
            rs: 3,
            cs: 1,
            seg: Some(Segments::cols(3, 10)),
        };
        assert_eq!(l.offset(0, 2), 2);
        assert_eq!(l.offset(1, 4), 3 + 10 + 1);
        assert_eq!(l.offset(1, 6), 3 + 20);
        assert_eq!(required_len(2, 7, &l), Some(24));
        assert_eq!(required_len(2, 6, &l), Some(3 + 10 + 2 + 1));
        assert!(l.contiguous_run(Axis::Cols, 3, 3));
        assert!(!l.contiguous_run(Axis::Cols, 2, 2));
        assert!(distinct(2, 7, &l));
        // Segments 5 apart overlap the 6-element footprint of a 2 x 3 segment.
        let overlapping = Layout {
            seg: Some(Segments::cols(3, 5)),
            ..l
        };
        assert!(!distinct(2, 7, &overlapping));
        // Rows segmented: [5, 2], rows in segments of 2, 100 apart.
        let r = Layout {
            rs: 2,
            cs: 1,
            seg: Some(Segments::rows(2, 100)),
        };
        assert_eq!(r.offset(3, 1), 100 + 2 + 1);
        assert_eq!(required_len(5, 2, &r), Some(200 + 1 + 1));
    }
}
