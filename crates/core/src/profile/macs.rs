//! Operation accounting: a per-thread counter of multiply-accumulates performed by the
//! compute-heavy ops (matmul / linear, conv2d), so tools can report MACs per layer
//! (`tessera info`) without re-deriving each layer's formula.
//!
//! The counter is per thread because an op is issued from the thread that calls it (the kernels'
//! own worker threads do not count). Counting costs one thread-local add per op.

use std::cell::Cell;

thread_local! {
    static MACS: Cell<u64> = const { Cell::new(0) };
}

/// Adds `n` multiply-accumulates to this thread's counter (called by the ops).
pub(crate) fn add_macs(n: usize) {
    MACS.with(|c| c.set(c.get().wrapping_add(n as u64)));
}

/// The multiply-accumulates this thread's ops have performed so far. Take the difference of two
/// readings to measure a region of code.
pub fn macs() -> u64 {
    MACS.with(|c| c.get())
}

/// Runs `f` and returns its result with the multiply-accumulates it performed.
pub fn count_macs<T>(f: impl FnOnce() -> T) -> (T, u64) {
    let before = macs();
    let out = f();
    (out, macs().wrapping_sub(before))
}
