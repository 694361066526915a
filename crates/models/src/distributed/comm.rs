//! The communicator data parallelism runs on: a private duplicate of an MPI communicator
//! (so its messages never match a host program's), every collective started non-blocking
//! (`MPI_Iallreduce`, `MPI_Ibcast`, MPI-3.1 section 5.12) and polled against a deadline.
//!
//! A collective that has not completed by the deadline means a rank died or hung. MPI cannot
//! cancel a started collective and its buffers stay registered with the library, so the only
//! safe way out is to end the job: [`Comm`] prints which collective timed out on which rank
//! and after how long, then calls `MPI_Abort` on the communicator, which ends every rank of
//! the job (PyTorch's NCCL watchdog does the same with its collective timeout).

use mpi::collective::SystemOperation;
use mpi::request::{Request, Scope};
use mpi::topology::{Communicator, SimpleCommunicator};
use mpi::traits::*;
use std::time::{Duration, Instant};

/// Exit code of a job ended by a collective timeout.
pub const TIMEOUT_EXIT_CODE: i32 = 75;

/// A private MPI communicator with a deadline on every collective.
pub struct Comm {
    comm: SimpleCommunicator,
    timeout: Duration,
    /// Context printed with a timeout ("epoch 3 step 17"), set by the training loop.
    context: std::cell::RefCell<String>,
}

impl Comm {
    /// A duplicate of `comm` (`MPI_Comm_dup`, collective over its ranks) whose collectives
    /// end the job when they take longer than `timeout`.
    pub fn new(comm: &impl Communicator, timeout: Duration) -> Comm {
        Comm {
            comm: comm.duplicate(),
            timeout,
            context: Default::default(),
        }
    }

    /// This process's rank, `0..size`.
    pub fn rank(&self) -> usize {
        self.comm.rank() as usize
    }

    /// Number of processes.
    pub fn size(&self) -> usize {
        self.comm.size() as usize
    }

    /// The deadline of each collective.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Sets what a timeout message says the job was doing.
    pub fn set_context(&self, what: impl Into<String>) {
        *self.context.borrow_mut() = what.into();
    }

    /// Element-wise sum over all ranks of `send` into `recv` (same length).
    pub fn all_reduce_sum(&self, send: &[f32], recv: &mut [f32], what: &str) {
        mpi::request::scope(|sc| {
            let req = self
                .comm
                .immediate_all_reduce_into(sc, send, recv, SystemOperation::sum());
            self.wait(req, what);
        });
    }

    /// [`all_reduce_sum`](Self::all_reduce_sum) over `f64` values, in place.
    pub fn all_reduce_sum_f64(&self, values: &mut [f64], what: &str) {
        let send = values.to_vec();
        mpi::request::scope(|sc| {
            let req =
                self.comm
                    .immediate_all_reduce_into(sc, &send[..], values, SystemOperation::sum());
            self.wait(req, what);
        });
    }

    /// Starts the element-wise sum of `send` into `recv` within `scope`; complete it with
    /// [`wait`](Self::wait) or [`test`](Self::test).
    pub fn start_all_reduce_sum<'a, Sc: Scope<'a>>(
        &self,
        scope: Sc,
        send: &'a [f32],
        recv: &'a mut [f32],
    ) -> Request<'a, [f32], Sc> {
        self.comm
            .immediate_all_reduce_into(scope, send, recv, SystemOperation::sum())
    }

    /// Rank `root`'s `buf` into every rank's `buf` (same length everywhere).
    pub fn broadcast_f32(&self, buf: &mut [f32], root: usize, what: &str) {
        mpi::request::scope(|sc| {
            let req = self
                .comm
                .process_at_rank(root as i32)
                .immediate_broadcast_into(sc, buf);
            self.wait(req, what);
        });
    }

    /// Rank `root`'s bytes into every rank's `buf` (other ranks' contents and lengths are
    /// replaced).
    pub fn broadcast_bytes(&self, buf: &mut Vec<u8>, root: usize, what: &str) {
        let mut len = [buf.len() as u64];
        mpi::request::scope(|sc| {
            let req = self
                .comm
                .process_at_rank(root as i32)
                .immediate_broadcast_into(sc, &mut len[..]);
            self.wait(req, what);
        });
        buf.resize(len[0] as usize, 0);
        mpi::request::scope(|sc| {
            let req = self
                .comm
                .process_at_rank(root as i32)
                .immediate_broadcast_into(sc, &mut buf[..]);
            self.wait(req, what);
        });
    }

    /// Waits for every rank to arrive.
    pub fn barrier(&self, what: &str) {
        let req = self.comm.immediate_barrier();
        self.wait(req, what);
    }

    /// Whether `req` has completed (then it is consumed), polling MPI's progress once.
    pub fn test<'a, D: ?Sized, S: Scope<'a>>(
        &self,
        req: Request<'a, D, S>,
    ) -> Option<Request<'a, D, S>> {
        req.test().err()
    }

    /// Completes `req`, polling until the deadline; past it, ends the job (see the module
    /// documentation).
    pub fn wait<'a, D: ?Sized, S: Scope<'a>>(&self, req: Request<'a, D, S>, what: &str) {
        self.wait_from(req, what, Instant::now());
    }

    /// [`wait`](Self::wait) with the deadline counted from `start` (when the collective
    /// was started).
    pub fn wait_from<'a, D: ?Sized, S: Scope<'a>>(
        &self,
        mut req: Request<'a, D, S>,
        what: &str,
        start: Instant,
    ) {
        let mut polls = 0u32;
        loop {
            match req.test() {
                Ok(_) => return,
                Err(r) => req = r,
            }
            polls = polls.saturating_add(1);
            let waited = start.elapsed();
            if waited > self.timeout {
                // Never returns: the request (and its buffers) stay with MPI until the job ends.
                self.abort_timeout(what, waited);
            }
            // Spin briefly (collectives on one machine finish in microseconds), then yield the
            // core, then sleep: a rank waiting for a slow peer should not steal its CPU.
            if polls > 2000 {
                if waited > Duration::from_millis(50) {
                    std::thread::sleep(Duration::from_micros(50));
                } else {
                    std::thread::yield_now();
                }
            }
        }
    }

    fn abort_timeout(&self, what: &str, waited: Duration) -> ! {
        let ctx = self.context.borrow().clone();
        eprintln!(
            "tessera distributed: rank {} of {}: {what}{} did not complete within {:.1} s \
             (the timeout): another rank died or hung; ending the job. Resume from the last \
             checkpoint (with any number of processes).",
            self.rank(),
            self.size(),
            if ctx.is_empty() {
                String::new()
            } else {
                format!(" ({ctx})")
            },
            waited.as_secs_f64()
        );
        self.comm.abort(TIMEOUT_EXIT_CODE)
    }

    /// Ends every rank of the job with `code` after printing `msg` (for errors one rank
    /// detects that the others cannot: they would otherwise wait for it until the timeout).
    pub fn abort(&self, msg: &str, code: i32) -> ! {
        eprintln!(
            "tessera distributed: rank {} of {}: {msg}",
            self.rank(),
            self.size()
        );
        self.comm.abort(code)
    }
}
