//! What an inference costs besides time: heap allocations (a counting global allocator over
//! the system one) and the operating system's view of the process from `getrusage(2)`
//! (context switches, user and system CPU time, summed over every thread).

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicU64, Ordering};

/// The system allocator, counting calls and bytes (two relaxed atomic adds per allocation).
pub struct Counting;

static ALLOCS: AtomicU64 = AtomicU64::new(0);
static BYTES: AtomicU64 = AtomicU64::new(0);

// SAFETY: every method forwards to `System` with the caller's arguments unchanged, so it
// upholds `GlobalAlloc`'s contract exactly as `System` does; the counters are plain atomics.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        BYTES.fetch_add(layout.size() as u64, Ordering::Relaxed);
        // SAFETY: forwarded unchanged (see above).
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        BYTES.fetch_add(layout.size() as u64, Ordering::Relaxed);
        // SAFETY: forwarded unchanged (see above).
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded unchanged (see above).
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        BYTES.fetch_add(new_size as u64, Ordering::Relaxed);
        // SAFETY: forwarded unchanged (see above).
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// A reading of the counters.
#[derive(Debug, Clone, Copy, Default)]
pub struct Usage {
    /// Heap allocations (and reallocations) so far.
    pub allocs: u64,
    /// Bytes requested by them.
    pub alloc_bytes: u64,
    /// Voluntary + involuntary context switches of every thread.
    pub ctx_switches: u64,
    /// User CPU seconds of every thread.
    pub user_s: f64,
    /// System CPU seconds of every thread.
    pub sys_s: f64,
}

impl Usage {
    /// The counters now.
    pub fn now() -> Usage {
        let (ctx_switches, user_s, sys_s) = rusage();
        Usage {
            allocs: ALLOCS.load(Ordering::Relaxed),
            alloc_bytes: BYTES.load(Ordering::Relaxed),
            ctx_switches,
            user_s,
            sys_s,
        }
    }

    /// Adds `d` to these counters.
    pub fn add(&mut self, d: &Usage) {
        self.allocs += d.allocs;
        self.alloc_bytes += d.alloc_bytes;
        self.ctx_switches += d.ctx_switches;
        self.user_s += d.user_s;
        self.sys_s += d.sys_s;
    }

    /// What happened between `self` (earlier) and `later`.
    pub fn delta(&self, later: &Usage) -> Usage {
        Usage {
            allocs: later.allocs - self.allocs,
            alloc_bytes: later.alloc_bytes - self.alloc_bytes,
            ctx_switches: later.ctx_switches.saturating_sub(self.ctx_switches),
            user_s: later.user_s - self.user_s,
            sys_s: later.sys_s - self.sys_s,
        }
    }
}

/// (context switches, user s, system s) of the whole process; zeros where unavailable.
#[cfg(unix)]
fn rusage() -> (u64, f64, f64) {
    let mut ru = std::mem::MaybeUninit::<libc::rusage>::zeroed();
    // SAFETY: `ru` is a valid, writable `rusage`; getrusage only writes into it.
    let rc = unsafe { libc::getrusage(libc::RUSAGE_SELF, ru.as_mut_ptr()) };
    if rc != 0 {
        return (0, 0.0, 0.0);
    }
    // SAFETY: getrusage returned 0, so it filled the struct (and it was zeroed before).
    let ru = unsafe { ru.assume_init() };
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 * 1e-6;
    (
        (ru.ru_nvcsw + ru.ru_nivcsw) as u64,
        secs(ru.ru_utime),
        secs(ru.ru_stime),
    )
}

#[cfg(not(unix))]
fn rusage() -> (u64, f64, f64) {
    (0, 0.0, 0.0)
}
