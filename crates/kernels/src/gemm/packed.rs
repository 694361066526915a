//! Operands packed once and reused: a layer's weights are laid out in the microkernel's panel
//! format at load time, so inference skips packing them on every call (as XNNPACK and oneDNN
//! pack weights once; tract's "packed" operands).
//!
//! A [`PackedMatrix`] holds the whole matrix in the order the driver consumes it: for each KC
//! block of the depth, every MR-row (A side) or NR-column (B side) micro-panel, zero-padded at the
//! edges. It is tied to the ISA it was packed for, whose blocking fixes the layout.

use super::blocking::Blocking;
use super::table::{selected, Tuning};
use super::MatRef;
use crate::error::KernelError;
use crate::isa::Isa;
use rayon::prelude::*;

/// Packed floats from which the depth blocks are packed in parallel.
const PAR_PACK_MIN: usize = 1 << 18;

/// Which operand of `C = A * B` a packed matrix is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// The left operand, `m x k`, in MR-row micro-panels.
    A,
    /// The right operand, `k x n`, in NR-column micro-panels.
    B,
}

/// A matrix packed for one side of the GEMM on one ISA; see the module docs.
#[derive(Debug, Clone)]
pub struct PackedMatrix {
    side: Side,
    isa: Isa,
    rows: usize,
    cols: usize,
    tuning: Tuning,
    blk: Blocking,
    data: crate::memory::AlignedBuf,
}

impl PackedMatrix {
    /// Packs `a` (`m x k`) as the left operand, for `isa` (default: [`Isa::current`]).
    pub fn pack_a(a: MatRef<'_>, isa: Option<Isa>) -> Result<Self, KernelError> {
        Self::pack(Side::A, a, isa)
    }

    /// Packs `b` (`k x n`) as the right operand, for `isa` (default: [`Isa::current`]).
    pub fn pack_b(b: MatRef<'_>, isa: Option<Isa>) -> Result<Self, KernelError> {
        Self::pack(Side::B, b, isa)
    }

    /// Packs `a` (`m x k`) as the left operand into `self`, reusing its storage (no allocation
    /// when the packed size does not grow): for per-call packing of operands that change every
    /// call, such as training weights shared by the images of a batch. On error `self` is
    /// left unchanged.
    pub fn repack_a(&mut self, a: MatRef<'_>, isa: Option<Isa>) -> Result<(), KernelError> {
        let isa = Self::check(a, isa)?;
        let data = std::mem::take(&mut self.data);
        *self = Self::pack_checked(Side::A, a, isa, data);
        Ok(())
    }

    fn pack(side: Side, m: MatRef<'_>, isa: Option<Isa>) -> Result<Self, KernelError> {
        let isa = Self::check(m, isa)?;
        Ok(Self::pack_checked(side, m, isa, Default::default()))
    }

    /// The ISA to pack for, after checking it and the view.
    fn check(m: MatRef<'_>, isa: Option<Isa>) -> Result<Isa, KernelError> {
        let isa = Isa::resolve(isa)?;
        if let Some(seg) = m.segments {
            return Err(KernelError::invalid(
                "gemm pack",
                format!("a segmented view ({seg:?}) cannot be packed ahead; pass it as a view"),
            ));
        }
        super::check_view(
            "gemm pack",
            "matrix",
            m.data.len(),
            m.rows,
            m.cols,
            m.row_stride,
            m.col_stride,
        )?;
        Ok(isa)
    }

    /// Packs a checked view into `data` (resized; every element is written by the packers,
    /// padding included). Depth blocks are independent and packed in parallel when large.
    fn pack_checked(
        side: Side,
        m: MatRef<'_>,
        isa: Isa,
        mut data: crate::memory::AlignedBuf,
    ) -> Self {
        let tuning = selected(isa).tuning;
        let blk = tuning.blocking;
        let (pack_a, pack_b) = (tuning.kernel.pack_a, tuning.kernel.pack_b);
        // Depth and "outer" extent (rows of A / columns of B) and the panel width.
        let (k, outer, tile) = match side {
            Side::A => (m.cols, m.rows, blk.mr),
            Side::B => (m.rows, m.cols, blk.nr),
        };
        let outer_pad = outer.div_ceil(tile) * tile;
        data.resize_zeroed(k * outer_pad);
        let pack_block = |kb: usize, dst: &mut [f32]| {
            let pc = kb * blk.kc;
            let kc = dst.len() / outer_pad.max(1);
            if outer == 0 {
                return;
            }
            let src = m.data.as_ptr();
            // SAFETY: the view was checked to lie in its slice; the block starts at depth pc and
            // spans `outer` rows/columns and kc of depth; dst holds outer_pad * kc floats.
            unsafe {
                match side {
                    Side::A => pack_a(
                        tile,
                        outer,
                        kc,
                        src.add(pc * m.col_stride),
                        m.row_stride,
                        m.col_stride,
                        dst,
                    ),
                    Side::B => pack_b(
                        tile,
                        outer,
                        kc,
                        src.add(pc * m.row_stride),
                        m.row_stride,
                        m.col_stride,
                        dst,
                    ),
                }
            }
        };
        let block_len = (blk.kc * outer_pad).max(1);
        if data.len() >= PAR_PACK_MIN {
            data.par_chunks_mut(block_len)
                .enumerate()
                .for_each(|(kb, dst)| pack_block(kb, dst));
        } else {
            data.chunks_mut(block_len)
                .enumerate()
                .for_each(|(kb, dst)| pack_block(kb, dst));
        }
        PackedMatrix {
            side,
            isa,
            rows: m.rows,
            cols: m.cols,
            tuning,
            blk,
            data,
        }
    }

    /// Rows of the original matrix.
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Columns of the original matrix.
    pub fn cols(&self) -> usize {
        self.cols
    }

    /// The ISA whose layout this is.
    pub fn isa(&self) -> Isa {
        self.isa
    }

    /// The microkernel and blocks whose panel layout this is.
    pub fn tuning(&self) -> Tuning {
        self.tuning
    }

    /// Which operand this is.
    pub fn side(&self) -> Side {
        self.side
    }

    /// Bytes of packed storage.
    pub fn size_bytes(&self) -> usize {
        self.data.len() * 4
    }

    /// The micro-panels of depth block `kb` starting at row (A) or column (B) `outer`, which is
    /// a multiple of the panel width. Panels for consecutive outer positions follow each other,
    /// `kc * tile` floats apart, exactly as the driver's own packing lays them out.
    pub(crate) fn block_ptr(&self, kb: usize, outer: usize) -> *const f32 {
        let (k, ext, tile) = match self.side {
            Side::A => (self.cols, self.rows, self.blk.mr),
            Side::B => (self.rows, self.cols, self.blk.nr),
        };
        debug_assert!(outer.is_multiple_of(tile) && kb * self.blk.kc <= k.max(1));
        let outer_pad = ext.div_ceil(tile) * tile;
        let pc = kb * self.blk.kc;
        let kc = self.blk.kc.min(k.saturating_sub(pc));
        let off = pc * outer_pad + (outer / tile) * kc * tile;
        // An empty matrix has no data: the pointer is never dereferenced then (kc == 0).
        self.data.as_ptr().wrapping_add(off)
    }
}
