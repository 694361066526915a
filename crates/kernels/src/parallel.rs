//! Fork-join for the kernels, and keeping the thread pool awake for a chain of short parallel
//! regions (a planned inference).
//!
//! Every kernel splits its work into tasks the same way for any thread count, and hands them
//! to [`for_each_task`] (or [`for_each_chunk_mut`] for disjoint output chunks). Outside an awake
//! region that is rayon's `for_each` over the task indices on a worker, and a job slot that
//! the calling thread works on too from any other thread ([`outside`]: lingering workers, so
//! no call waits for a sleeping core). Inside a region, it is a
//! pthreadpool-style job slot (the scheme of XNNPACK's pthreadpool and ONNX Runtime's spinning
//! thread pool): the thread that runs the region's body posts the job, every other worker of
//! the pool is already spinning on the slot, and they all claim task indices from one atomic
//! ticket, a run of consecutive ones per claim (a share of what is left, as OpenMP's
//! `guided` schedule: thousands of tiny tasks, an im2col row each, would otherwise contend for
//! the ticket one by one), until none is left; the poster then spins until the claimed ones are done. Nothing
//! sleeps or calls into the OS between regions. Rayon's own join would make the first thread
//! to finish wait in rayon's idle loop, which calls `sched_yield` for a few rounds and then
//! sleeps on a futex: on a virtual machine that showed as 5-10% system time at batch 1.
//!
//! [`run_awake`] opens a region on rayon's current pool: while `f` runs on one worker, every
//! other worker runs [`spin`], which claims tasks from the slot and also runs any rayon job
//! that appears (code inside `f` that still uses rayon directly keeps working). The region
//! ends when `f` returns, so an idle process sleeps as before.
//!
//! Which thread runs which task never changes a result: the tasks and their order of
//! summation are fixed by the kernel, so results are bit-identical with or without a region
//! and for any thread count. A task that itself calls [`for_each_task`] runs its subtasks
//! inline, in order.

mod outside;

pub use outside::{linger_time, stop_lingering, LINGER};

use rayon::prelude::*;
use std::any::Any;
use std::cell::{Cell, UnsafeCell};
use std::panic::{catch_unwind, resume_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Mutex;

/// A task body with its lifetime erased (see [`Region::run`] for why it stays valid).
type TaskFn = *const (dyn Fn(usize) + Sync + 'static);

/// The job slot of one awake region.
struct Region {
    /// `generation << 32 | next unclaimed task`; the generation is odd while a job is posted.
    ticket: AtomicU64,
    /// Tasks of the posted job.
    tasks: AtomicUsize,
    /// Threads of the pool (the poster and its spinners): sets the size of a claim.
    workers: usize,
    /// Tasks of the posted job that have finished.
    finished: AtomicUsize,
    /// The posted job's body: written only by the poster while no job is posted, read only
    /// by a thread holding a claimed task of the posted job.
    body: UnsafeCell<Option<TaskFn>>,
    /// The first panic of a task of the posted job, re-raised by the poster.
    panic: Mutex<Option<Box<dyn Any + Send>>>,
}

// SAFETY: `body` is the only non-Sync field; the ticket protocol of `Region::run` orders every
// write to it (poster, no job posted) before every read (claimers of the job it belongs to).
unsafe impl Sync for Region {}
// SAFETY: `body` is the only non-Send field: a pointer that is dereferenced only under the
// protocol above, by whichever thread holds a claimed task, never owned by a thread.
unsafe impl Send for Region {}

thread_local! {
    /// The region whose body runs on this thread (null elsewhere): where its jobs are posted.
    static POSTER: Cell<*const Region> = const { Cell::new(std::ptr::null()) };
    /// Set while this thread runs a task: nested jobs then run inline.
    static IN_TASK: Cell<bool> = const { Cell::new(false) };
    /// Set on a worker while it runs a region's body or spins for one: a spinner that lands
    /// there returns at once (it would otherwise block the job it interrupted until the region
    /// ended, a deadlock).
    static BUSY: Cell<bool> = const { Cell::new(false) };
}

const LOW: u64 = (1 << 32) - 1;

impl Region {
    fn new() -> Region {
        Region {
            ticket: AtomicU64::new(0),
            tasks: AtomicUsize::new(0),
            workers: rayon::current_num_threads().max(1),
            finished: AtomicUsize::new(0),
            body: UnsafeCell::new(None),
            panic: Mutex::new(None),
        }
    }

    /// Claims and runs the next tasks of the posted job (a batch of consecutive indices);
    /// false if there are none to claim.
    fn help(&self) -> bool {
        let t = self.ticket.load(Ordering::Acquire);
        let (first, tasks) = ((t & LOW) as usize, self.tasks.load(Ordering::Acquire));
        if (t >> 32) & 1 == 0 || first >= tasks {
            return false;
        }
        // Guided scheduling (OpenMP's `guided`): a claim takes 1 / workers of what is left.
        // Thousands of tiny tasks (an im2col row each) then cost a few claims, the last
        // claims are single tasks that even out the finish, and the first claims are the
        // contiguous shares a static split would give (the poster claims first: the first
        // share), so a step's data tends to stay on the core that produced it in the step
        // before, as with rayon's halving.
        let end = first + ((tasks - first) / self.workers).max(1);
        // The claim succeeds only while `t` is the current ticket, i.e. the job read above is
        // still the posted one and tasks `first..end` are unclaimed (a stale `tasks` read
        // makes the compare fail, because posting a job changes the generation).
        if self
            .ticket
            .compare_exchange(
                t,
                t + (end - first) as u64,
                Ordering::AcqRel,
                Ordering::Acquire,
            )
            .is_err()
        {
            return true; // contention: look again
        }
        // SAFETY: holding claimed tasks of the posted job, whose body the poster wrote before
        // publishing the ticket (Release) and keeps alive until `finished` counts these tasks
        // (see `run`).
        let body = unsafe { &*(*self.body.get()).expect("a posted job has a body") };
        for i in first..end {
            self.run_task(body, i);
        }
        true
    }

    fn run_task(&self, body: &(dyn Fn(usize) + Sync), i: usize) {
        let was = IN_TASK.with(|c| c.replace(true));
        if let Err(p) = catch_unwind(AssertUnwindSafe(|| body(i))) {
            let mut slot = self.panic.lock().unwrap_or_else(|e| e.into_inner());
            slot.get_or_insert(p);
        }
        IN_TASK.with(|c| c.set(was));
        self.finished.fetch_add(1, Ordering::Release);
    }

    /// Posts `tasks` tasks of `body`, runs as many as it can claim, and returns once every
    /// task has finished (re-raising a task's panic). Called only by the region's poster.
    fn run(&self, tasks: usize, body: &(dyn Fn(usize) + Sync)) {
        assert!((tasks as u64) < LOW, "too many tasks for one job");
        let generation = self.ticket.load(Ordering::Relaxed) >> 32;
        debug_assert_eq!(generation & 1, 0, "a job is already posted");
        // SAFETY: no job is posted (even generation), so no thread reads `body`; the erased
        // lifetime is sound because this function does not return before every claimed
        // task has finished, and no task can be claimed after the generation turns even.
        unsafe {
            let erased: TaskFn =
                std::mem::transmute::<*const (dyn Fn(usize) + Sync + '_), TaskFn>(body as *const _);
            *self.body.get() = Some(erased);
        }
        self.tasks.store(tasks, Ordering::Relaxed);
        self.finished.store(0, Ordering::Relaxed);
        self.ticket.store((generation + 1) << 32, Ordering::Release);
        while self.help() {}
        while self.finished.load(Ordering::Acquire) < tasks {
            std::hint::spin_loop();
        }
        self.ticket.store((generation + 2) << 32, Ordering::Release);
        let panic = self.panic.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(p) = panic {
            resume_unwind(p);
        }
    }
}

/// Runs `f(0)`, ..., `f(tasks - 1)`, in parallel where there are threads: on the posted-job
/// slot inside an awake region, on rayon's pool when called from one of its workers, on the
/// process-wide slot with the caller working when called from any other thread
/// ([`outside`]), inline inside another task or on a one-thread pool.
pub fn for_each_task(tasks: usize, f: impl Fn(usize) + Sync) {
    if tasks <= 1 || IN_TASK.with(Cell::get) || rayon::current_num_threads() == 1 {
        (0..tasks).for_each(f);
        return;
    }
    let region = POSTER.with(Cell::get);
    if region.is_null() {
        if rayon::current_thread_index().is_none() {
            outside::run(tasks, &f);
        } else {
            let f = &f;
            (0..tasks).into_par_iter().for_each(f);
        }
    } else {
        // SAFETY: `POSTER` points at the region of the body running on this thread, which
        // lives until that body returns (`fan_out`), after this call.
        unsafe { &*region }.run(tasks, &f);
    }
}

/// A raw pointer that tasks may share (each writes only its own, disjoint part).
pub(crate) struct SharedMut<T>(pub(crate) *mut T);

impl<T> SharedMut<T> {
    /// The pointer (a method, so that closures capture the `Sync` wrapper, not the field).
    pub(crate) fn get(self) -> *mut T {
        self.0
    }
}
impl<T> Clone for SharedMut<T> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<T> Copy for SharedMut<T> {}
// SAFETY: every user (`for_each_chunk_mut`, the Winograd convolution's phases) has its tasks
// touch disjoint parts through it.
unsafe impl<T: Send> Send for SharedMut<T> {}
unsafe impl<T: Send> Sync for SharedMut<T> {}

/// `f(i, chunk_i)` for the consecutive `chunk`-long pieces of `data` (the last may be
/// shorter), as tasks of [`for_each_task`].
pub fn for_each_chunk_mut<T: Send>(
    data: &mut [T],
    chunk: usize,
    f: impl Fn(usize, &mut [T]) + Sync,
) {
    if chunk == 0 || data.is_empty() {
        return;
    }
    let len = data.len();
    let base = SharedMut(data.as_mut_ptr());
    let base = &base;
    for_each_task(len.div_ceil(chunk), |i| {
        let start = i * chunk;
        let n = chunk.min(len - start);
        // SAFETY: task `i` alone gets elements `start..start + n` of `data`, which is
        // borrowed mutably for the whole call; the ranges of different tasks are disjoint.
        let part = unsafe { std::slice::from_raw_parts_mut(base.0.add(start), n) };
        f(i, part)
    });
}

/// Runs `f` with every other worker of the pool spinning for work until `f` returns (see the
/// module docs). On a worker, `f` runs there and the others spin on a region of their own.
/// Called from a thread outside the pool, `f` runs on that thread, which holds the process-wide
/// slot of [`outside`] for the whole of `f` while the pool's workers linger on it (no thread
/// changes, so no wake-up of the caller at the end); if another thread holds that slot, `f`
/// first moves onto a worker. With one thread, or when called from inside an awake region, it
/// simply runs `f`.
pub fn run_awake<T: Send>(f: impl FnOnce() -> T + Send) -> T {
    if IN_TASK.with(Cell::get) {
        // Inside a task (or [`on_each_thread_inline`]) everything runs inline.
        return f();
    }
    if rayon::current_thread_index().is_none() {
        return outside::run_awake(f);
    }
    let workers = rayon::current_num_threads();
    if workers <= 1 || BUSY.with(Cell::get) {
        return f();
    }
    let region = Region::new();
    let done = AtomicBool::new(false);
    fan_out(workers - 1, &region, &done, f)
}

/// Runs `f` once on the calling thread (unless it is a worker of the pool) and once on every
/// worker of rayon's current pool, one thread at a time, with every parallel region and task
/// inside `f` run inline on that thread, the tasks split as they would be in parallel.
///
/// What it is for: kernels keep their scratch per thread (GEMM packing buffers, im2col
/// columns, padded planes) and grow it the first time a thread meets a larger task. Which
/// thread claims which task changes from run to run, so in parallel a thread may meet its
/// largest task, and allocate, many runs after the first. After `f` has run every task on
/// every thread, running the same work in parallel on this pool allocates nothing, whichever
/// thread claims what. A panic in `f` is re-raised here once every thread has had its turn.
pub fn on_each_thread_inline(f: impl Fn() + Sync) {
    let inline = || {
        let was = IN_TASK.with(|c| c.replace(true));
        let r = catch_unwind(AssertUnwindSafe(&f));
        IN_TASK.with(|c| c.set(was));
        r
    };
    let mut first_panic = None;
    if rayon::current_thread_index().is_none() {
        first_panic = inline().err();
    }
    // One worker at a time: `f` may use state that only one thread may touch at once.
    let turn = Mutex::new(first_panic);
    rayon::broadcast(|_| {
        let mut slot = turn.lock().unwrap_or_else(|e| e.into_inner());
        if let Err(p) = inline() {
            slot.get_or_insert(p);
        }
    });
    let panic = turn.into_inner().unwrap_or_else(|e| e.into_inner());
    if let Some(p) = panic {
        resume_unwind(p);
    }
}

/// `f` on this worker beside `spinners` spinner jobs, posted through nested `rayon::join`s
/// (stack jobs: opening a region allocates nothing).
fn fan_out<T: Send>(
    spinners: usize,
    region: &Region,
    done: &AtomicBool,
    f: impl FnOnce() -> T + Send,
) -> T {
    if spinners == 0 {
        /// Ends the region when `f` returns or unwinds: a panic in `f` must release the
        /// spinners, or the `join` that carries it would wait for them forever.
        struct Close<'a> {
            done: &'a AtomicBool,
            busy: bool,
            poster: *const Region,
        }
        impl Drop for Close<'_> {
            fn drop(&mut self) {
                BUSY.with(|b| b.set(self.busy));
                POSTER.with(|p| p.set(self.poster));
                self.done.store(true, Ordering::Release);
            }
        }
        let _close = Close {
            done,
            busy: BUSY.with(|b| b.replace(true)),
            poster: POSTER.with(|p| p.replace(region)),
        };
        return f();
    }
    rayon::join(
        || fan_out(spinners - 1, region, done, f),
        || spin(region, done),
    )
    .0
}

/// A worker's loop while the region is open: claim posted tasks, run whatever rayon jobs
/// appear, else spin.
fn spin(region: &Region, done: &AtomicBool) {
    if BUSY.with(|b| b.replace(true)) {
        // This worker is already running `f` or another spinner, inside which it picked this
        // job up while waiting: returning lets that work go on.
        return;
    }
    let mut idle = 0u32;
    while !done.load(Ordering::Acquire) {
        if region.help() {
            idle = 0;
            continue;
        }
        // The slot is checked every round; rayon's queues (a steal attempt over every
        // worker, far slower than one load of the ticket) every 32nd.
        idle = idle.wrapping_add(1);
        if idle.is_multiple_of(32) {
            if let Some(rayon::Yield::Executed) = rayon::yield_now() {
                idle = 0;
            }
        } else {
            std::hint::spin_loop();
        }
    }
    BUSY.with(|b| b.set(false));
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicU64;

    fn pool(threads: usize) -> rayon::ThreadPool {
        rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap()
    }

    /// `on_each_thread_inline` runs `f` on every worker (and an outside caller), one at a time,
    /// each running every task of `f`'s regions itself, in order.
    #[test]
    fn each_thread_runs_every_task_inline_in_turn() {
        for threads in [1, 2, 3] {
            let pool = pool(threads);
            let log = Mutex::new(Vec::new());
            let inside = AtomicUsize::new(0);
            let f = || {
                assert_eq!(
                    inside.fetch_add(1, Ordering::SeqCst),
                    0,
                    "one thread at a time"
                );
                let me = std::thread::current().id();
                run_awake(|| {
                    for_each_task(5, |t| {
                        assert_eq!(std::thread::current().id(), me);
                        log.lock().unwrap().push((me, t));
                    })
                });
                inside.fetch_sub(1, Ordering::SeqCst);
            };
            // From a worker: every worker once, the caller included.
            pool.install(|| on_each_thread_inline(f));
            let runs = std::mem::take(&mut *log.lock().unwrap());
            assert_eq!(runs.len(), 5 * threads, "{threads} threads");
            for chunk in runs.chunks(5) {
                let tasks: Vec<usize> = chunk.iter().map(|&(_, t)| t).collect();
                assert_eq!(tasks, [0, 1, 2, 3, 4]);
                assert!(chunk.iter().all(|&(id, _)| id == chunk[0].0));
            }
            let mut ids: Vec<_> = runs.iter().map(|&(id, _)| format!("{id:?}")).collect();
            ids.dedup();
            assert_eq!(ids.len(), threads, "each worker once");
        }
        // From outside every pool: the caller, then each worker of the global pool.
        let log = Mutex::new(Vec::new());
        std::thread::scope(|s| {
            s.spawn(|| {
                on_each_thread_inline(|| log.lock().unwrap().push(std::thread::current().id()))
            });
        });
        assert_eq!(log.lock().unwrap().len(), rayon::current_num_threads() + 1);
        // A panic in `f` comes back to the caller after every thread's turn.
        let turns = AtomicUsize::new(0);
        let caught = std::panic::catch_unwind(AssertUnwindSafe(|| {
            pool(2).install(|| {
                on_each_thread_inline(|| {
                    turns.fetch_add(1, Ordering::SeqCst);
                    panic!("boom")
                })
            })
        }));
        assert!(caught.is_err());
        assert_eq!(turns.load(Ordering::SeqCst), 2);
    }

    /// Every task runs exactly once, inside and outside a region, on any pool, nested too.
    #[test]
    fn every_task_runs_once_in_and_out_of_a_region() {
        for threads in [1, 2, 3, 4] {
            let pool = pool(threads);
            for awake in [false, true] {
                let counts: Vec<AtomicU64> = (0..1000).map(|_| AtomicU64::new(0)).collect();
                let job = || {
                    for round in 0..50 {
                        for_each_task(round % 7 + 2, |t| {
                            for_each_task(3, |u| {
                                counts[(t * 3 + u + round * 20) % 1000]
                                    .fetch_add(1, Ordering::Relaxed);
                            });
                        });
                    }
                };
                pool.install(|| if awake { run_awake(job) } else { job() });
                let total: u64 = counts.iter().map(|c| c.load(Ordering::Relaxed)).sum();
                let expect: u64 = (0..50).map(|r| (r % 7 + 2) as u64 * 3).sum();
                assert_eq!(total, expect, "{threads} threads, awake {awake}");
            }
            // Nested regions run inline.
            assert_eq!(pool.install(|| run_awake(|| run_awake(|| 7))), 7);
        }
        // From threads outside every pool: `f` runs on the calling thread holding the slot, or
        // on a worker of the global pool while another thread holds it; either way every task
        // of its jobs runs once, nested regions included.
        let callers: Vec<_> = (0..3)
            .map(|_| {
                std::thread::spawn(|| {
                    run_awake(|| {
                        let n = AtomicU64::new(0);
                        for round in 0..100 {
                            for_each_task(round % 4 + 2, |_| {
                                run_awake(|| n.fetch_add(1, Ordering::Relaxed));
                            });
                        }
                        n.load(Ordering::Relaxed)
                    })
                })
            })
            .collect();
        let expect: u64 = (0..100).map(|r| (r % 4 + 2) as u64).sum();
        for c in callers {
            assert_eq!(c.join().unwrap(), expect);
        }
    }

    /// From threads outside every pool (the global pool's callers): every task runs once,
    /// with several callers at once (one holds the slot, the others take rayon's path), with
    /// nested jobs, before and after the workers stop lingering; a task's panic reaches its
    /// caller and releases the slot.
    #[test]
    fn callers_outside_the_pool_run_every_task_once() {
        let callers: Vec<_> = (0..4)
            .map(|c| {
                std::thread::spawn(move || {
                    let counts: Vec<AtomicU64> = (0..64).map(|_| AtomicU64::new(0)).collect();
                    for round in 0..200 {
                        for_each_task(round % 5 + 2, |t| {
                            for_each_task(2, |u| {
                                counts[(t * 2 + u + round) % 64].fetch_add(1, Ordering::Relaxed);
                            });
                        });
                        if round % 50 == c {
                            stop_lingering();
                        }
                    }
                    counts
                        .iter()
                        .map(|c| c.load(Ordering::Relaxed))
                        .sum::<u64>()
                })
            })
            .collect();
        let expect: u64 = (0..200).map(|r| (r % 5 + 2) as u64 * 2).sum();
        for c in callers {
            assert_eq!(c.join().unwrap(), expect);
        }
        let r = std::thread::spawn(|| {
            catch_unwind(AssertUnwindSafe(|| {
                for_each_task(6, |t| {
                    if t == 4 {
                        panic!("task 4")
                    }
                })
            }))
            .is_err()
        })
        .join()
        .unwrap();
        assert!(r, "a task's panic did not reach its caller");
        let n = AtomicU64::new(0);
        std::thread::scope(|s| {
            s.spawn(|| {
                for_each_task(7, |_| {
                    n.fetch_add(1, Ordering::Relaxed);
                })
            });
        });
        assert_eq!(n.load(Ordering::Relaxed), 7);
    }

    /// Chunks cover the slice once, in order, the last one short.
    #[test]
    fn chunks_cover_the_slice() {
        let pool = pool(3);
        let mut v = vec![0usize; 1003];
        pool.install(|| {
            run_awake(|| for_each_chunk_mut(&mut v, 10, |i, c| c.iter_mut().for_each(|x| *x += i)))
        });
        assert!(v.iter().enumerate().all(|(j, &x)| x == j / 10));
    }

    /// Rayon work inside a region still completes (code that uses rayon directly).
    #[test]
    fn rayon_work_inside_a_region_completes() {
        for threads in [2, 3] {
            let sum = pool(threads).install(|| {
                run_awake(|| {
                    (0..200)
                        .map(|i| {
                            (0..1000usize)
                                .into_par_iter()
                                .with_min_len(50)
                                .map(|x| x as u64 * i)
                                .sum::<u64>()
                        })
                        .sum::<u64>()
                })
            });
            assert_eq!(sum, 499_500 * 19_900, "{threads} threads");
        }
    }

    /// A panic in a task or in the body propagates; the pool and later regions still work.
    #[test]
    fn a_panic_propagates_instead_of_hanging() {
        for threads in [2, 3] {
            let pool = pool(threads);
            let r = catch_unwind(AssertUnwindSafe(|| {
                pool.install(|| {
                    run_awake(|| {
                        for_each_task(8, |t| {
                            if t == 5 {
                                panic!("task 5")
                            }
                        })
                    })
                })
            }));
            assert!(
                r.is_err(),
                "{threads} threads: a task's panic did not propagate"
            );
            let r = catch_unwind(AssertUnwindSafe(|| {
                pool.install(|| run_awake(|| panic!("inside the region")))
            }));
            assert!(
                r.is_err(),
                "{threads} threads: the body's panic did not propagate"
            );
            let n = AtomicU64::new(0);
            pool.install(|| {
                run_awake(|| {
                    for_each_task(9, |_| {
                        n.fetch_add(1, Ordering::Relaxed);
                    })
                })
            });
            assert_eq!(n.load(Ordering::Relaxed), 9);
        }
    }
}
