//! Planned inference: a network compiled for one input shape into a flat list of fused steps
//! over one pre-allocated arena, so a warm call allocates nothing.
//!
//! [`crate::Model::plan`] walks the eager model once and emits [`steps::Step`]s:
//!
//! - every conv + batch norm as one step: a dense convolution's weights packed once for the
//!   GEMM, the batch norm a per-channel scale and shift in its epilogue
//!   ([`crate::layers::ConvBnAct::scale_shift`]; folded into the weights, `w * s`, only where
//!   the residual join is fused into the same GEMM and in depthwise convolutions); bias and
//!   activation in the GEMM or depthwise epilogue;
//! - the residual join fused into the producing 1x1 convolution or linear layer as
//!   `beta = 1` (`C = W X + C`, bias and activation after): the block's input buffer becomes
//!   its output, with no separate add pass;
//! - squeeze-and-excitation as one step (pool, the two small GEMMs, gate, scale); in
//!   SE-ResNet the scale, the residual join and the ReLU are one pass;
//! - ViT's `qkv` written by its GEMM in the `[n, L, 3D]` layout the fused attention kernel
//!   reads, the heads written merged into the `[n, L, D]` the projection reads: no copies
//!   between the three;
//! - the small feature maps of the MobileNet trunks (14 x 14 and below; 28 x 28 when the
//!   channel counts fill the GEMM kernel's column tiles) channels-last
//!   (`[n, h, w, c]`, [`PlanOptions::channels_last`]): their depthwise convolutions run
//!   vectorised across channels with no layout change (`depthwise::nhwc`), their 1x1
//!   convolutions as `Y^T = X^T W^T` with the pixels along the GEMM tile's rows; the switch
//!   is the expansion of the first block whose depthwise convolution lands there (it reads
//!   NCHW and writes channels-last), the global pool reads channels-last;
//! - every intermediate placed in one arena by liveness analysis ([`arena`]).
//!
//! At build time each GEMM step is timed with one task and with the whole pool
//! ([`Plan::tune_threads`]) and keeps the faster. The eager API stays: the plan matches it
//! within float rounding (tests per architecture). The design follows the "compile a static
//! graph, plan its memory, pack its weights" path of ONNX Runtime and TensorFlow Lite.
//!
//! [`crate::Model::plan_reference`] builds the same plan with a float64 reference of every
//! step on the unfolded parameters ([`reference`]); [`Plan::accuracy`] reports each step's
//! error against it ([`accuracy`]).

mod accuracy;
pub mod arena;
mod builder;
mod cnn;
mod execute;
pub mod fused;
mod ref_ops;
mod reference;
pub(crate) mod steps;
mod vit;

pub use accuracy::{Accuracy, StepError};

/// Choices a plan is built with ([`crate::Model::plan_with`]); the default is what
/// [`crate::Model::plan`] builds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PlanOptions {
    /// Store the small feature maps of convolutional trunks channels-last (default on; the
    /// MobileNets use it, other architectures ignore it). Off, every map stays NCHW, as in
    /// [`crate::Model::plan_reference`].
    pub channels_last: bool,
}

impl Default for PlanOptions {
    fn default() -> Self {
        PlanOptions {
            channels_last: true,
        }
    }
}
pub use builder::{Feat, PlanBuilder};
pub(crate) use cnn::{plan_bottleneck, plan_trunk, CHANNELS_LAST_HW};
pub(crate) use vit::plan_vit;

use crate::error::{ModelError, Result};
use arena::Buf;
use std::time::Instant;
use steps::Step;
use tessera_core::Tensor;
use tessera_kernels::parallel::run_awake;

/// A network compiled for one input shape.
pub struct Plan {
    steps: Vec<Step>,
    /// Offset of every buffer (by id) in the arena.
    offs: Vec<usize>,
    arena: tessera_core::kernels::memory::AlignedBuf,
    input: Buf,
    output: Buf,
    input_shape: [usize; 4],
    output_shape: Vec<usize>,
    /// The float64 reference of every step ([`crate::Model::plan_reference`] only).
    reference: Option<accuracy::Reference>,
}

/// One step's median time in [`Plan::profile_steps`].
#[derive(Debug, Clone)]
pub struct StepTime {
    /// The step kind (`pointwise`, `depthwise`, `conv`, `attention`, ...).
    pub kind: &'static str,
    /// Its shape and fused activation ([`steps::Step::describe`]).
    pub detail: String,
    /// GEMM steps: the task count chosen at build (0 = the whole pool, 1 = one task).
    pub threads: Option<usize>,
    /// Median milliseconds.
    pub ms: f64,
}

impl Plan {
    /// Runs the plan on `x` (`input_shape` elements, NCHW) and returns the output (logits
    /// `[n, classes]`), a view into the arena valid until the next run.
    pub fn run(&mut self, x: &[f32]) -> Result<&[f32]> {
        if x.len() != self.input.len {
            return Err(ModelError::config(format!(
                "plan: input has {} values, the plan was built for {:?} ({} values)",
                x.len(),
                self.input_shape,
                self.input.len
            )));
        }
        let i0 = self.offs[self.input.id];
        self.arena[i0..i0 + x.len()].copy_from_slice(x);
        run_awake(|| self.run_steps())?;
        let o = self.offs[self.output.id];
        Ok(&self.arena[o..o + self.output.len])
    }

    /// Prepares every thread of rayon's current pool (and the calling thread, when it is
    /// outside the pool) to run this plan: runs it once on each of them, on a zero input,
    /// every task of every step inline on that thread (see
    /// [`tessera_kernels::parallel::on_each_thread_inline`]). The kernels' per-thread scratch
    /// then has the size this plan needs on every thread, so from the next call on,
    /// [`Plan::run`] on this pool allocates nothing, whichever thread claims which task.
    /// Without it a thread grows its scratch the first time it claims a larger task, which at
    /// two or more threads can be many runs later (a page-faulting allocation in the middle of
    /// serving). Costs one run per thread, once; the arena's contents are overwritten.
    pub fn warm_up(&mut self) -> Result<()> {
        let i0 = self.offs[self.input.id];
        self.arena[i0..i0 + self.input.len].fill(0.0);
        // The plan and the first error, held by one thread at a time (the turns of
        // `on_each_thread_inline`).
        let state = std::sync::Mutex::new((&mut *self, Ok(())));
        tessera_kernels::parallel::on_each_thread_inline(|| {
            let mut guard = state.lock().unwrap_or_else(|e| e.into_inner());
            let (plan, first) = &mut *guard;
            if first.is_ok() {
                *first = plan.run_steps();
            }
        });
        state.into_inner().unwrap_or_else(|e| e.into_inner()).1
    }

    /// [`Plan::run`] on a tensor, returning a new tensor of [`Plan::output_shape`].
    pub fn run_tensor(&mut self, x: &Tensor) -> Result<Tensor> {
        if x.shape() != self.input_shape {
            return Err(ModelError::config(format!(
                "plan: input of shape {:?}, the plan was built for {:?}",
                x.shape(),
                self.input_shape
            )));
        }
        let shape = self.output_shape.clone();
        let y = self.run(&x.data())?.to_vec();
        Ok(Tensor::from_vec(y, &shape)?)
    }

    /// The input shape `[n, c, h, w]` it was built for.
    pub fn input_shape(&self) -> [usize; 4] {
        self.input_shape
    }

    /// The output shape (`[n, classes]`).
    pub fn output_shape(&self) -> &[usize] {
        &self.output_shape
    }

    /// Bytes of the arena holding every intermediate (the input and output included).
    pub fn arena_bytes(&self) -> usize {
        self.arena.len() * 4
    }

    /// Number of steps.
    pub fn len(&self) -> usize {
        self.steps.len()
    }

    /// Whether the plan has no steps.
    pub fn is_empty(&self) -> bool {
        self.steps.is_empty()
    }

    /// `(kind, count)` of the steps, in first-appearance order.
    pub fn step_counts(&self) -> Vec<(&'static str, usize)> {
        let mut v: Vec<(&'static str, usize)> = Vec::new();
        for s in &self.steps {
            match v.iter_mut().find(|(k, _)| *k == s.kind()) {
                Some(e) => e.1 += 1,
                None => v.push((s.kind(), 1)),
            }
        }
        v
    }

    /// Steps that run on one thread (chosen by [`Plan::tune_threads`]).
    pub fn single_thread_steps(&self) -> usize {
        self.steps
            .iter()
            .filter(|s| {
                matches!(
                    s,
                    Step::Pointwise { threads: 1, .. } | Step::Linear { threads: 1, .. }
                )
            })
            .count()
    }

    /// Runs the plan `reps` times on `x` (after one warm-up run) and returns every step's
    /// median time, in order: the compiled plan's own cost table (`tessera profile --plan`).
    pub fn profile_steps(&mut self, x: &[f32], reps: usize) -> Result<Vec<StepTime>> {
        run_awake(|| self.profile_steps_awake(x, reps))
    }

    fn profile_steps_awake(&mut self, x: &[f32], reps: usize) -> Result<Vec<StepTime>> {
        self.run(x)?;
        let reps = reps.max(1);
        let mut times = vec![Vec::with_capacity(reps); self.steps.len()];
        for _ in 0..reps {
            let i0 = self.offs[self.input.id];
            self.arena[i0..i0 + x.len()].copy_from_slice(x);
            for (s, t) in self.steps.iter().zip(times.iter_mut()) {
                let t0 = Instant::now();
                s.run(&mut self.arena, &self.offs)?;
                t.push(t0.elapsed().as_secs_f64() * 1e3);
            }
        }
        Ok(self
            .steps
            .iter()
            .zip(times)
            .map(|(s, mut t)| {
                t.sort_by(f64::total_cmp);
                StepTime {
                    kind: s.kind(),
                    detail: s.describe(),
                    threads: s.threads(),
                    ms: t[t.len() / 2],
                }
            })
            .collect())
    }

    /// Times every GEMM step shorter than `max_ms` with one task and with the whole rayon
    /// pool (median of `reps` runs each, each right after its predecessor step, inside an
    /// awake region as [`Plan::run`] runs, after one run of the whole plan to warm it) and
    /// keeps the faster; with one thread in the pool there is nothing to choose. Results do
    /// not depend on the choice (the GEMM is bit-identical for any task count).
    pub fn tune_threads(&mut self, reps: usize, max_ms: f64) -> Result<()> {
        if rayon::current_num_threads() <= 1 {
            return Ok(());
        }
        // Timed as the plan runs: inside an awake region (see `tessera_kernels::parallel`).
        run_awake(|| self.tune_threads_awake(reps, max_ms))
    }

    fn tune_threads_awake(&mut self, reps: usize, max_ms: f64) -> Result<()> {
        let x = vec![0.0f32; self.input.len];
        self.run(&x)?;
        let reps = reps.max(1);
        for i in 0..self.steps.len() {
            if !self.steps[i].has_thread_choice() {
                continue;
            }
            // One run of the step with `t` tasks, in milliseconds, right after its
            // predecessor (untimed): the step's input then lies in the caches where the real
            // run leaves it (a pool step's output is spread over the cores' L2s, which a
            // one-task step must gather; timed alone, the input stays in one core's L2 and
            // one task looks faster than it is).
            let once = |plan: &mut Plan, t: usize| -> Result<f64> {
                if i > 0 {
                    plan.steps[i - 1].run(&mut plan.arena, &plan.offs)?;
                }
                plan.steps[i].set_threads(t);
                let t0 = Instant::now();
                plan.steps[i].run(&mut plan.arena, &plan.offs)?;
                Ok(t0.elapsed().as_secs_f64() * 1e3)
            };
            let median = |mut v: Vec<f64>| {
                v.sort_by(f64::total_cmp);
                v[v.len() / 2]
            };
            if once(self, 0)? > max_ms {
                self.steps[i].set_threads(0);
                continue;
            }
            once(self, 1)?;
            // The two choices alternate, so drift on a shared machine hits both alike.
            let (mut all, mut one) = (Vec::with_capacity(reps), Vec::with_capacity(reps));
            for _ in 0..reps {
                all.push(once(self, 0)?);
                one.push(once(self, 1)?);
            }
            let (all, one) = (median(all), median(one));
            // One task wins ties: it costs no hand-over.
            self.steps[i].set_threads(if one <= all * 1.02 { 1 } else { 0 });
        }
        self.check_threads_whole(reps)
    }

    /// Every step once, in order, on the arena as it stands.
    fn run_steps(&mut self) -> Result<()> {
        let (steps, arena, offs) = (&self.steps, &mut self.arena, &self.offs);
        steps.iter().try_for_each(|s| s.run(arena, offs))
    }

    /// Keeps the one-task choices of [`Plan::tune_threads`] only if the whole plan runs at
    /// least as fast with them as with every step on the pool (medians of `reps` runs each,
    /// alternating). Each choice was timed on one step after its predecessor, and nine runs
    /// of a sub-millisecond step on a shared machine can mislead: on a 2-core Sapphire
    /// Rapids class guest, MobileNetV3-Large's 64 x 12544 x 16 expansion was sometimes set to
    /// one task, and then took 0.73 ms in the plan against 0.36 ms on the pool.
    fn check_threads_whole(&mut self, reps: usize) -> Result<()> {
        let chosen: Vec<usize> = (0..self.steps.len())
            .filter(|&i| self.steps[i].has_thread_choice() && self.steps[i].threads() == Some(1))
            .collect();
        if chosen.is_empty() {
            return Ok(());
        }
        let set = |plan: &mut Plan, t: usize| {
            for &i in &chosen {
                plan.steps[i].set_threads(t);
            }
        };
        let whole = |plan: &mut Plan| -> Result<f64> {
            let t0 = Instant::now();
            plan.run_steps()?;
            Ok(t0.elapsed().as_secs_f64())
        };
        let (mut tuned, mut pool) = (Vec::with_capacity(reps), Vec::with_capacity(reps));
        for _ in 0..reps.max(1) {
            set(self, 0);
            pool.push(whole(self)?);
            set(self, 1);
            tuned.push(whole(self)?);
        }
        tuned.sort_by(f64::total_cmp);
        pool.sort_by(f64::total_cmp);
        if tuned[tuned.len() / 2] > pool[pool.len() / 2] {
            set(self, 0);
        }
        Ok(())
    }
}
