//! A warm planned inference allocates nothing on the heap: this test binary counts every
//! allocation made on the threads that run the plan (the workers of the measurement's own
//! pool, one of which runs the measuring closure) with its own global allocator, and runs
//! inferences after `Plan::warm_up` and a few uncounted runs, inside the rayon pool (entering
//! the pool from outside allocates a queue block every few dozen entries; that is rayon's, not
//! the plan's), for every family: the kernels keep their scratch per thread, build their tap
//! tables inline and format error messages only on the error paths.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use tessera::core::Tensor;
use tessera::models::{create, Overrides};

struct Counting;

static BYTES: AtomicU64 = AtomicU64::new(0);
static CALLS: AtomicU64 = AtomicU64::new(0);

/// The pool whose threads are being counted (0: none). Each measurement builds its own pool
/// and numbers it.
static ACTIVE_POOL: AtomicU64 = AtomicU64::new(0);
static NEXT_POOL: AtomicU64 = AtomicU64::new(1);

thread_local! {
    /// The pool this thread works for (0: none, e.g. the test harness's threads, which
    /// allocate meanwhile: spawning the next test, printing a result, capturing a failed
    /// test's backtrace, none of it the plan's doing).
    static POOL: Cell<u64> = const { Cell::new(0) };
}

/// Adds one allocation of `size` bytes if this thread belongs to the pool being measured.
/// Only that pool's threads count: a worker of an earlier measurement's pool, exiting after
/// its pool was dropped, frees its thread-local state then, and crossbeam-epoch (under
/// rayon's deques) allocates a 2072-byte queue node to hand its last garbage bag to the
/// global collector; that exit can fall inside a later measurement's window.
fn count(size: usize) {
    // `try_with`: during thread teardown the slot may already be gone (not counted then).
    let pool = POOL.try_with(Cell::get).unwrap_or(0);
    if pool != 0 && pool == ACTIVE_POOL.load(Ordering::Relaxed) {
        CALLS.fetch_add(1, Ordering::Relaxed);
        BYTES.fetch_add(size as u64, Ordering::Relaxed);
    }
}

// SAFETY: forwards every call unchanged to `System`, adding to two atomic counters.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        count(l.size());
        // SAFETY: forwarded unchanged.
        unsafe { System.alloc(l) }
    }
    unsafe fn alloc_zeroed(&self, l: Layout) -> *mut u8 {
        count(l.size());
        // SAFETY: forwarded unchanged.
        unsafe { System.alloc_zeroed(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        // SAFETY: forwarded unchanged.
        unsafe { System.dealloc(p, l) }
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, n: usize) -> *mut u8 {
        count(n);
        // SAFETY: forwarded unchanged.
        unsafe { System.realloc(p, l, n) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Heap (bytes, calls) of twenty planned inferences of `arch` at batch `n` on a two-thread
/// pool, after [`Plan::warm_up`](tessera::models::plan::Plan::warm_up) and twenty uncounted
/// runs. `warm_up` runs the plan once on each thread with every task inline, so every
/// per-thread scratch buffer the kernels keep has its size on every worker before the first
/// counted run, whichever worker later claims which task.
fn warm_run_allocations(arch: &str, o: &Overrides, n: usize) -> (u64, u64) {
    // The counters are process-wide: one measurement at a time.
    static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());
    let _guard = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let id = NEXT_POOL.fetch_add(1, Ordering::Relaxed);
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(2)
        .start_handler(move |_| POOL.with(|p| p.set(id)))
        .build()
        .unwrap();
    let m = create(arch, o, 0).unwrap();
    let [c, h, w] = m.input_chw();
    let x = Tensor::randn(&[n, c, h, w], 1).to_vec();
    let mut plan = m.plan([n, c, h, w]).unwrap();
    pool.install(|| {
        // One run on each thread, every task inline: every thread's scratch is then sized.
        plan.warm_up().unwrap();
        // From the first run after it, none allocates, whichever thread claims which task.
        // A few uncounted runs first, so that only the steady state is counted: rayon's
        // work-stealing deques may still grow their buffers on the first busy runs.
        for _ in 0..20 {
            plan.run(&x).unwrap();
        }
        let (b0, c0) = (BYTES.load(Ordering::SeqCst), CALLS.load(Ordering::SeqCst));
        ACTIVE_POOL.store(id, Ordering::SeqCst);
        for _ in 0..20 {
            let y = plan.run(&x).unwrap();
            assert!(y.iter().all(|v| v.is_finite()));
        }
        ACTIVE_POOL.store(0, Ordering::SeqCst);
        (
            BYTES.load(Ordering::SeqCst) - b0,
            CALLS.load(Ordering::SeqCst) - c0,
        )
    })
}

fn img(size: usize) -> Overrides {
    Overrides {
        img_size: Some(size),
        ..Overrides::default()
    }
}

#[test]
fn a_warm_planned_vit_inference_allocates_nothing() {
    for (arch, o, n) in [
        ("vit_digits", Overrides::default(), 1),
        ("vit_tiny_patch16_224", img(64), 1),
    ] {
        assert_eq!(
            warm_run_allocations(arch, &o, n),
            (0, 0),
            "{arch} batch {n}"
        );
    }
}

#[test]
fn a_warm_planned_resnet_inference_allocates_nothing() {
    for (arch, o, n) in [
        ("resnet_digits", Overrides::default(), 3),
        ("seresnet50", img(64), 1),
        // Winograd blocks in parallel at 28 x 28 (each thread its own block buffer), then
        // larger single blocks at 7 x 7: every thread's buffer must already have the larger
        // size.
        ("seresnet50", img(112), 8),
    ] {
        assert_eq!(
            warm_run_allocations(arch, &o, n),
            (0, 0),
            "{arch} batch {n}"
        );
    }
}

/// At batch 2 the patch embedding's GEMM writes token rows 1.. of each image through a
/// segmented view.
#[test]
fn a_warm_planned_vit_inference_at_batch_2_allocates_nothing() {
    let o = Overrides::default();
    assert_eq!(warm_run_allocations("vit_digits", &o, 2), (0, 0));
}

#[test]
fn a_warm_planned_mobilenet_inference_allocates_nothing() {
    for (arch, o, n) in [
        ("mobilenetv2_100", img(64), 1),
        ("mobilenetv3_large_100", img(64), 2),
    ] {
        assert_eq!(
            warm_run_allocations(arch, &o, n),
            (0, 0),
            "{arch} batch {n}"
        );
    }
}
