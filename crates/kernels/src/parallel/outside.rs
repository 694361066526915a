//! Kernels called from a thread outside the pool: the caller works too, and the workers
//! linger between calls.
//!
//! A kernel called from a thread that is not one of rayon's workers (an embedder's own thread,
//! a test, `tessera bench gemm`) would, through rayon, inject its tasks into the pool and sleep
//! on a latch until they are done: one sleeping worker is woken, it wakes a second, and the
//! last to finish wakes the caller. Each of those wake-ups of an idle core is a futex call and,
//! on a virtual machine, the wake-up of a halted vCPU: a 256^3 GEMM at two threads on a 2-vCPU
//! Zen 4 KVM guest took 164 us called back to back and 289 us with 300 us of other work between
//! the calls.
//!
//! Instead the caller posts the tasks on one process-wide job slot (the [`Region`] of an awake
//! region), claims and runs tasks itself, and spins until the claimed ones have finished. The
//! pool's workers are brought in by *lingering* jobs: a lingering worker claims tasks from the
//! slot and, once there are none, keeps spinning on it for [`LINGER`] (2 ms; `TESSERA_LINGER_US`
//! sets another time) after the last task it ran, as OpenMP runtimes (`KMP_BLOCKTIME`, `GOMP_SPINCOUNT`) and OpenBLAS keep their threads
//! spinning between parallel regions. A burst of calls (the ops of an eager forward, one GEMM
//! after another) then pays no wake-up after its first call, and even that one does not wait
//! for a worker: tasks go to whoever is free, the caller included, so a late worker only takes
//! what is left. A lingering worker still runs other rayon work that reaches it (checked every
//! few rounds), and [`stop_lingering`] sends every lingering worker back to sleep at once.
//!
//! An awake region opened from such a thread ([`super::run_awake`]: a compiled plan's
//! inference) runs its body on that thread holding the slot throughout, so the workers linger
//! on it from the first step to the last and between back-to-back inferences, and nobody has
//! to wake the caller when the inference ends.
//!
//! Only one thread at a time holds the slot; a second concurrent caller (several threads of
//! an embedder running kernels at once) takes rayon's path instead, and a second region moves
//! onto a worker. Which thread runs a task
//! never changes a result: the tasks and their summation order are fixed by the kernel.

use super::{Region, BUSY, IN_TASK};
use rayon::prelude::*;
use std::cell::Cell;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::OnceLock;
use std::thread::LocalKey;
use std::time::{Duration, Instant};

/// How long a worker keeps spinning on the slot after the last task it ran, unless
/// `TESSERA_LINGER_US` says otherwise (see [`linger_time`]).
pub const LINGER: Duration = Duration::from_millis(2);

/// The lingering time in force: `TESSERA_LINGER_US` (microseconds; 0 sends a worker back to
/// sleep as soon as no task is left) if set, else [`LINGER`]. Read once; a value that is not a
/// whole number of at most 10 s is reported on stderr and the default used.
pub fn linger_time() -> Duration {
    static TIME: OnceLock<Duration> = OnceLock::new();
    *TIME.get_or_init(|| match std::env::var("TESSERA_LINGER_US") {
        Ok(v) => match v.trim().parse::<u64>() {
            Ok(us) if us <= 10_000_000 => Duration::from_micros(us),
            _ => {
                eprintln!(
                    "tessera: warning: TESSERA_LINGER_US={v:?} is not a number of microseconds \
                     in 0..=10000000; using {} us",
                    LINGER.as_micros()
                );
                LINGER
            }
        },
        Err(_) => LINGER,
    })
}

/// The process-wide slot for callers outside the pool.
struct Outside {
    /// The job slot; its `workers` is the global pool's size (the caller plus the lingerers).
    region: Region,
    /// Set while a caller owns the slot.
    posting: AtomicBool,
    /// Lingering jobs spawned and not yet returned.
    lingering: AtomicUsize,
    /// Bumped by [`stop_lingering`]: a lingering job that sees it change returns.
    epoch: AtomicU64,
}

static OUTSIDE: OnceLock<Outside> = OnceLock::new();

fn outside() -> &'static Outside {
    OUTSIDE.get_or_init(|| Outside {
        region: Region::new(),
        posting: AtomicBool::new(false),
        lingering: AtomicUsize::new(0),
        epoch: AtomicU64::new(0),
    })
}

/// Sends every worker that lingers after a kernel call back to sleep now (they would within
/// [`LINGER`]), freeing the cores for other work: a benchmark timing another library next, or
/// an embedder about to run its own threads.
pub fn stop_lingering() {
    if let Some(o) = OUTSIDE.get() {
        o.epoch.fetch_add(1, Ordering::AcqRel);
    }
}

thread_local! {
    /// Set on a thread outside the pool while it runs an awake region's body
    /// ([`run_awake`]): it holds the slot for the whole body.
    static OWNER: Cell<bool> = const { Cell::new(false) };
    /// Set on a worker while it lingers: a lingering job it picks up meanwhile returns.
    static LINGERING: Cell<bool> = const { Cell::new(false) };
}

/// Releases the slot when a job or a region's body returns or unwinds.
struct Release<'a>(&'a AtomicBool);
impl Drop for Release<'_> {
    fn drop(&mut self) {
        self.0.store(false, Ordering::Release);
    }
}

/// Sets a thread-local flag while alive; lowers it when the body returns or unwinds.
struct Raised(&'static LocalKey<Cell<bool>>);
impl Raised {
    fn new(flag: &'static LocalKey<Cell<bool>>) -> Raised {
        flag.with(|c| c.set(true));
        Raised(flag)
    }
}
impl Drop for Raised {
    fn drop(&mut self) {
        self.0.with(|c| c.set(false));
    }
}

fn try_acquire(o: &Outside) -> bool {
    o.posting
        .compare_exchange(false, true, Ordering::Acquire, Ordering::Relaxed)
        .is_ok()
}

/// Spawns lingering jobs until `want` are alive (each costs a rayon spawn, the one
/// allocation of this path, only when the last ones have ended).
fn ensure_lingering(o: &'static Outside, want: usize) {
    let mut have = o.lingering.load(Ordering::Acquire);
    while have < want {
        match o
            .lingering
            .compare_exchange(have, have + 1, Ordering::AcqRel, Ordering::Acquire)
        {
            Ok(_) => {
                rayon::spawn(move || linger(o));
                have += 1;
            }
            Err(now) => have = now,
        }
    }
}

/// Runs `f(0)..f(tasks - 1)` for a caller outside the pool (see the module docs): on the
/// process-wide slot with the caller working, or through rayon if another caller holds it.
pub(super) fn run(tasks: usize, f: &(dyn Fn(usize) + Sync)) {
    let o = outside();
    let owner = OWNER.with(Cell::get);
    if !owner && !try_acquire(o) {
        (0..tasks).into_par_iter().for_each(f);
        return;
    }
    let _release = (!owner).then(|| Release(&o.posting));
    // One helper per further task, up to the pool's other threads (the caller is the first).
    ensure_lingering(o, tasks.min(o.region.workers) - 1);
    o.region.run(tasks, f);
}

/// An awake region whose body runs on this thread, outside the pool: the thread holds the
/// slot for the whole of `f`, the workers linger on it from the start, and every kernel
/// inside posts its tasks there. If another thread holds the slot, `f` moves onto a worker
/// and runs in an awake region of the pool instead.
pub(super) fn run_awake<T: Send>(f: impl FnOnce() -> T + Send) -> T {
    let o = outside();
    if OWNER.with(Cell::get) {
        return f();
    }
    if !try_acquire(o) {
        return rayon::scope(|_| super::run_awake(f));
    }
    let _release = Release(&o.posting);
    // Declared after `_release`, so lowered first.
    let _owner = Raised::new(&OWNER);
    ensure_lingering(o, o.region.workers - 1);
    f()
}

/// A worker's job: claim tasks from the slot until none has been posted for [`linger_time`]
/// or [`stop_lingering`] is called; other rayon work that reaches the worker meanwhile runs.
fn linger(o: &'static Outside) {
    /// Counts this job out however it ends.
    struct Done<'a>(&'a AtomicUsize);
    impl Drop for Done<'_> {
        fn drop(&mut self) {
            self.0.fetch_sub(1, Ordering::AcqRel);
        }
    }
    let _done = Done(&o.lingering);
    // A worker that picked this job up while running an awake region's body or spinner (both
    // look for other rayon work while they wait), a task, or another lingering job, must get
    // back to it.
    if BUSY.with(Cell::get) || IN_TASK.with(Cell::get) || LINGERING.with(Cell::get) {
        return;
    }
    let _lingering = Raised::new(&LINGERING);
    let epoch = o.epoch.load(Ordering::Acquire);
    let linger = linger_time();
    let mut last = Instant::now();
    let mut idle = 0u32;
    loop {
        if o.region.help() {
            idle = 0;
            last = Instant::now();
            continue;
        }
        idle = idle.wrapping_add(1);
        if !idle.is_multiple_of(64) {
            std::hint::spin_loop();
            continue;
        }
        if o.epoch.load(Ordering::Acquire) != epoch || last.elapsed() >= linger {
            return;
        }
        // Other rayon work that reached this worker (a kernel that uses rayon directly, called
        // by the slot's owner) runs here; the lingering time restarts after it.
        if let Some(rayon::Yield::Executed) = rayon::yield_now() {
            last = Instant::now();
        }
    }
}
