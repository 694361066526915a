//! Reuse of large op-output buffers, so a warm forward or training step does not go back to the
//! operating system for every activation.
//!
//! Without it, every large output (`vec![0.0; n]` of a few MiB) is a fresh `mmap` from the C
//! allocator, and every page of it is faulted in and zeroed by the kernel on first touch. The ops take
//! their large outputs from here (`zeroed`); when the last tensor over such a buffer is dropped,
//! [`Storage`](crate::Storage) hands the buffer back instead of freeing it. Only buffers this pool
//! handed out come back (a model's weights, built with `Tensor::from_vec`, are freed normally), and
//! the pool holds at most [`limit`] bytes, evicting the buffer idle longest first beyond it. By
//! default that bound follows the workload: the larger of 1 GiB and the most bytes of pool
//! buffers ever in use at once, so a training step (whose saved activations are freed only
//! in its backward pass, often several GiB) finds all of them again in the next step instead of
//! faulting in fresh pages at 3-9 GB/s; memory stays bounded by that peak working set, as with
//! PyTorch's caching allocator. [`set_limit`] fixes the bound instead; [`clear`] frees all.
//!
//! Contents never leak between tensors: `zeroed` returns zero-filled memory whether the buffer
//! is new or reused, and `for_overwrite` (no zero fill) is used only for outputs the kernel
//! writes entirely before reading, so results are bit-identical with or without the pool. `for_overwrite`
//! skips that zero fill (a full pass over memory, ~5% of a ViT training step) for outputs the
//! op writes completely before anyone reads them (GEMM with `beta = 0`, element-wise maps,
//! gathers): its elements are initialised (zeros or values of a dead tensor of this process) but
//! unspecified, and every caller overwrites all of them.
//! (The idea is the caching allocator of PyTorch and the arena of ONNX Runtime, reduced to a
//! best-fit free list.)

use std::collections::HashSet;
use std::sync::{LazyLock, Mutex};

/// Buffers below this many elements (128 KiB) come from the C allocator's heap, which already
/// reuses them cheaply.
pub const MIN_POOLED_ELEMS: usize = 1 << 15;

/// The least bound on the bytes held by the pool when it follows the workload.
const DEFAULT_LIMIT_BYTES: usize = 1 << 30;

struct Pool {
    /// Free buffers (capacity >= MIN_POOLED_ELEMS), keeping their old length and contents, in
    /// the order they came back (the longest idle first).
    free: Vec<Vec<f32>>,
    /// Bytes held in `free`.
    held: usize,
    /// Fixed upper bound on `held`, or `None`: the larger of `DEFAULT_LIMIT_BYTES` and
    /// `peak_in_use`.
    fixed_limit: Option<usize>,
    /// Bytes of pool buffers handed out and not yet returned.
    in_use: usize,
    /// The most `in_use` has been.
    peak_in_use: usize,
    /// Addresses of the buffers handed out (or held) by the pool: only these come back.
    issued: HashSet<usize>,
    hits: u64,
    misses: u64,
}

static POOL: LazyLock<Mutex<Pool>> = LazyLock::new(|| {
    Mutex::new(Pool {
        free: Vec::new(),
        held: 0,
        fixed_limit: None,
        in_use: 0,
        peak_in_use: 0,
        issued: HashSet::new(),
        hits: 0,
        misses: 0,
    })
});

fn lock() -> std::sync::MutexGuard<'static, Pool> {
    // A panic while holding the lock leaves the pool consistent (every edit is a single push,
    // remove or counter update), so a poisoned lock is still usable.
    POOL.lock().unwrap_or_else(|e| e.into_inner())
}

/// A zero-filled buffer of `n` elements, reused from the pool when one fits (capacity between
/// `n` and `2n`, the smallest such).
pub(crate) fn zeroed(n: usize) -> Vec<f32> {
    if n < MIN_POOLED_ELEMS {
        return vec![0.0; n];
    }
    match take(n) {
        Some(mut v) => {
            v.clear();
            v.resize(n, 0.0);
            v
        }
        None => fresh(n),
    }
}

/// A buffer of `n` initialised elements whose values are unspecified (zeros, or what a dropped
/// op output held): for an output the caller overwrites entirely before it is read. Skips the
/// zero fill [`zeroed`] pays on a reused buffer.
pub(crate) fn for_overwrite(n: usize) -> Vec<f32> {
    if n < MIN_POOLED_ELEMS {
        return vec![0.0; n];
    }
    match take(n) {
        Some(mut v) => {
            // Only the part beyond the old length is written (zeros); the rest keeps old values.
            if v.len() >= n {
                v.truncate(n);
            } else {
                v.resize(n, 0.0);
            }
            v
        }
        None => fresh(n),
    }
}

/// A new zero-filled buffer the pool will take back.
fn fresh(n: usize) -> Vec<f32> {
    let v = vec![0.0; n];
    let mut p = lock();
    p.issued.insert(v.as_ptr() as usize);
    p.lend(v.capacity());
    v
}

/// The best-fitting held buffer for `n` elements, if any.
fn take(n: usize) -> Option<Vec<f32>> {
    let mut p = lock();
    let best = p
        .free
        .iter()
        .enumerate()
        .filter(|(_, v)| v.capacity() >= n && v.capacity() <= 2 * n)
        .min_by_key(|(_, v)| v.capacity())
        .map(|(i, _)| i);
    match best {
        Some(i) => {
            let v = p.free.remove(i);
            p.held -= v.capacity() * 4;
            p.hits += 1;
            p.lend(v.capacity());
            Some(v)
        }
        None => {
            p.misses += 1;
            None
        }
    }
}

/// Takes `v` back if the pool handed it out; otherwise lets it be freed.
pub(crate) fn recycle(v: Vec<f32>) {
    if v.capacity() < MIN_POOLED_ELEMS {
        return;
    }
    let mut p = lock();
    if !p.issued.contains(&(v.as_ptr() as usize)) {
        return;
    }
    p.held += v.capacity() * 4;
    p.in_use = p.in_use.saturating_sub(v.capacity() * 4);
    p.free.push(v);
    p.evict_to_limit();
}

impl Pool {
    /// Records a buffer of `capacity` elements handed out.
    fn lend(&mut self, capacity: usize) {
        self.in_use += capacity * 4;
        self.peak_in_use = self.peak_in_use.max(self.in_use);
    }

    fn limit(&self) -> usize {
        self.fixed_limit
            .unwrap_or(DEFAULT_LIMIT_BYTES.max(self.peak_in_use))
    }

    /// Frees held buffers, the longest idle first, until the pool is within its limit: what a
    /// repeating workload (a training loop) uses every step stays, stale sizes go.
    fn evict_to_limit(&mut self) {
        let mut evict = 0;
        let mut held = self.held;
        while held > self.limit() && evict < self.free.len() {
            held -= self.free[evict].capacity() * 4;
            evict += 1;
        }
        for old in self.free.drain(..evict) {
            self.issued.remove(&(old.as_ptr() as usize));
        }
        self.held = held;
    }
}

/// Bytes the pool may hold while idle (now: it follows the peak unless fixed).
pub fn limit() -> usize {
    lock().limit()
}

/// Fixes the bound on the bytes the pool holds (0 turns reuse off); frees the excess now.
pub fn set_limit(bytes: usize) {
    let mut p = lock();
    p.fixed_limit = Some(bytes);
    p.evict_to_limit();
}

/// Returns to the default bound: the larger of 1 GiB and the peak bytes of pool buffers in
/// use at once.
pub fn set_limit_auto() {
    let mut p = lock();
    p.fixed_limit = None;
    p.evict_to_limit();
}

/// Frees every buffer the pool holds (tensors alive keep theirs).
pub fn clear() {
    let mut p = lock();
    for v in std::mem::take(&mut p.free) {
        p.issued.remove(&(v.as_ptr() as usize));
    }
    p.held = 0;
}

/// What the pool holds and how often it served a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolStats {
    /// Idle buffers held.
    pub buffers: usize,
    /// Bytes of the idle buffers.
    pub bytes: usize,
    /// Requests served from a held buffer.
    pub hits: u64,
    /// Requests that allocated a new buffer.
    pub misses: u64,
    /// Bytes of pool buffers in use now (inside live tensors).
    pub bytes_in_use: usize,
    /// The most bytes of pool buffers ever in use at once.
    pub peak_bytes_in_use: usize,
}

/// Current statistics.
pub fn stats() -> PoolStats {
    let p = lock();
    PoolStats {
        buffers: p.free.len(),
        bytes: p.held,
        hits: p.hits,
        misses: p.misses,
        bytes_in_use: p.in_use,
        peak_bytes_in_use: p.peak_in_use,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reused_buffers_are_zeroed_and_foreign_buffers_are_not_kept() {
        let n = MIN_POOLED_ELEMS + 7;
        let mut a = zeroed(n);
        a.iter_mut().for_each(|v| *v = 3.0);
        let ptr = a.as_ptr() as usize;
        recycle(a);
        // Another test may take it first (tests share the pool); either way it is zeroed.
        let b = zeroed(n);
        assert!(b.iter().all(|&v| v == 0.0));
        assert_eq!(b.len(), n);
        let foreign = vec![1.0f32; n];
        let fptr = foreign.as_ptr() as usize;
        recycle(foreign);
        assert!(!lock().free.iter().any(|v| v.as_ptr() as usize == fptr));
        let _ = ptr;
        recycle(b);
    }

    #[test]
    fn for_overwrite_has_the_requested_length_and_zeroed_stays_zero_after_it() {
        for n in [MIN_POOLED_ELEMS + 3, MIN_POOLED_ELEMS + 900, 10] {
            let mut a = for_overwrite(n);
            assert_eq!(a.len(), n);
            a.iter_mut().for_each(|v| *v = -5.0);
            recycle(a);
            let b = for_overwrite(n - 1);
            assert_eq!(b.len(), n - 1);
            recycle(b);
            let c = zeroed(n);
            assert!(c.iter().all(|&v| v == 0.0));
            recycle(c);
        }
    }

    #[test]
    fn small_requests_bypass_the_pool() {
        let v = zeroed(10);
        assert_eq!(v, vec![0.0; 10]);
    }
}
