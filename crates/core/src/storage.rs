//! The buffer behind a tensor, tagged by dtype.
//!
//! Only f32 exists today; ops reach the data through [`Storage::as_f32`], so adding a dtype
//! means a new [`Storage`] variant and a match arm in the few places that read raw data, not a
//! rewrite of every op. A live-storage counter lets tests check that memory stays flat.

use std::sync::atomic::{AtomicUsize, Ordering};

static LIVE_STORAGES: AtomicUsize = AtomicUsize::new(0);

/// Element type of a storage.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DType {
    /// 32-bit IEEE float.
    F32,
}

/// An immutable element buffer, shared between tensors through an `Arc`.
#[derive(Debug)]
pub enum Storage {
    /// f32 elements.
    F32(Vec<f32>),
}

impl Storage {
    /// Wraps f32 data.
    pub fn from_f32(data: Vec<f32>) -> Self {
        LIVE_STORAGES.fetch_add(1, Ordering::Relaxed);
        Storage::F32(data)
    }

    /// The element type.
    pub fn dtype(&self) -> DType {
        match self {
            Storage::F32(_) => DType::F32,
        }
    }

    /// The f32 elements.
    pub fn as_f32(&self) -> &[f32] {
        match self {
            Storage::F32(v) => v,
        }
    }

    /// Number of elements held.
    pub fn len(&self) -> usize {
        match self {
            Storage::F32(v) => v.len(),
        }
    }

    /// Whether the storage holds no elements.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Drop for Storage {
    fn drop(&mut self) {
        LIVE_STORAGES.fetch_sub(1, Ordering::Relaxed);
        // An op-output buffer goes back to the pool for the next op (see `pool`).
        match self {
            Storage::F32(v) => crate::pool::recycle(std::mem::take(v)),
        }
    }
}

/// Number of storages currently alive in the process (for memory-leak tests).
pub fn live_storages() -> usize {
    LIVE_STORAGES.load(Ordering::Relaxed)
}
