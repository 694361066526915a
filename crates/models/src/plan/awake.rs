//! Keeping the thread pool awake for the length of one planned inference.
//!
//! A batch-1 network is a chain of short parallel regions: MobileNetV2 has 54 steps of
//! 30-900 us. Between two regions rayon's idle workers go to sleep after a few rounds of
//! looking for work, and the next region wakes them through the kernel: on a virtual machine
//! that costs tens of microseconds per region and shows up as system time and context
//! switches. ONNX Runtime and XNNPACK's pthreadpool spin their workers between the ops of one
//! inference for the same reason. [`run_awake`] does that on rayon's own pool: while `f` runs
//! on one worker, every other worker spins in [`rayon::yield_now`], which runs any job the
//! plan posts (a GEMM's tasks, a depthwise convolution's planes) as soon as it is posted. The
//! spinning ends when `f` returns, so an idle process sleeps as before.
//!
//! Which worker computes what does not change any result: the kernels split their work the
//! same way for every thread count, so the plan's output is bit-identical with or without it.

use std::cell::Cell;
use std::sync::atomic::{AtomicBool, Ordering};

thread_local! {
    /// Set on a worker while it runs `f` or a spinner: a spinner that lands there returns at
    /// once (it would otherwise block the job it interrupted until `f` ended, a deadlock).
    static BUSY: Cell<bool> = const { Cell::new(false) };
}

/// Runs `f` on a worker of the current rayon pool with every other worker spinning for work
/// until `f` returns (see the module docs). Called from outside the pool, it first moves onto
/// a worker (once: otherwise every parallel region of `f` would be sent to the pool and waited
/// for through the kernel, even with a single worker, where the regions then run inline). With
/// one thread, or when called from inside an awake region, it then simply runs `f`.
pub fn run_awake<T: Send>(f: impl FnOnce() -> T + Send) -> T {
    if rayon::current_thread_index().is_none() {
        return rayon::scope(|_| run_awake(f));
    }
    let workers = rayon::current_num_threads();
    if workers <= 1 || BUSY.with(Cell::get) {
        return f();
    }
    let done = AtomicBool::new(false);
    fan_out(workers - 1, &done, f)
}

/// `f` on this worker beside `spinners` spinner jobs, posted through nested `rayon::join`s
/// (stack jobs: opening a region allocates nothing).
fn fan_out<T: Send>(spinners: usize, done: &AtomicBool, f: impl FnOnce() -> T + Send) -> T {
    if spinners == 0 {
        /// Ends the region when `f` returns or unwinds: a panic in `f` must release the
        /// spinners, or the `join` that carries it would wait for them forever.
        struct Close<'a>(&'a AtomicBool, bool);
        impl Drop for Close<'_> {
            fn drop(&mut self) {
                BUSY.with(|b| b.set(self.1));
                self.0.store(true, Ordering::Release);
            }
        }
        let _close = Close(done, BUSY.with(|b| b.replace(true)));
        return f();
    }
    rayon::join(|| fan_out(spinners - 1, done, f), || spin(done)).0
}

/// A worker's loop while the region is open: run whatever jobs appear, else spin.
fn spin(done: &AtomicBool) {
    if BUSY.with(|b| b.replace(true)) {
        // This worker is already running `f` or another spinner, inside which it picked this
        // job up while waiting: returning lets that work go on.
        return;
    }
    while !done.load(Ordering::Acquire) {
        match rayon::yield_now() {
            Some(rayon::Yield::Executed) => {}
            _ => std::hint::spin_loop(),
        }
    }
    BUSY.with(|b| b.set(false));
}

#[cfg(test)]
mod tests {
    use super::*;
    use rayon::prelude::*;

    #[test]
    fn parallel_work_inside_an_awake_region_completes_on_any_pool() {
        for threads in [1, 2, 3, 4] {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap();
            let sum = pool.install(|| {
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
            // Nested regions run inline.
            let nested = pool.install(|| run_awake(|| run_awake(|| 7)));
            assert_eq!(nested, 7);
        }
        // From a thread outside every pool: `f` runs on a worker of the global pool.
        let on_worker =
            std::thread::spawn(|| run_awake(|| rayon::current_thread_index().is_some()))
                .join()
                .unwrap();
        assert!(on_worker);
    }

    #[test]
    fn a_panic_inside_an_awake_region_propagates_instead_of_hanging() {
        for threads in [2, 3] {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap();
            let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                pool.install(|| run_awake(|| panic!("inside the region")))
            }));
            assert!(r.is_err(), "{threads} threads: the panic did not propagate");
            // The pool still works afterwards.
            assert_eq!(pool.install(|| run_awake(|| 7)), 7);
        }
    }
}
