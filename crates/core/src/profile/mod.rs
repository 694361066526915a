//! Profiling: which ops ran, on what shapes, with how many FLOPs and bytes, in how long.
//!
//! Two tools live here.
//! - A per-thread multiply-accumulate counter ([`macs`], [`count_macs`]) that matmul / linear
//!   and conv2d always bump (one thread-local add per op); `tessera info` reads it per stage.
//! - An op recorder. Run code under [`record`] (or between [`Recorder::start`] and
//!   [`Recorder::finish`]) and every op in `crate::ops` that does real work adds an
//!   [`OpRecord`] in execution order: op kind, input and output shapes, FLOPs (and the MACs of
//!   contractions), bytes read and written at f32, wall time. With a graph recorded, each
//!   node's backward rule becomes one `<op>.backward` record when `backward` runs inside the
//!   recording. Name layers with [`scope`] (a guard) or [`end_layer`] (what a
//!   `Model::forward_stages` callback calls), and module paths with [`module_scope`]
//!   (what a model's containers call around each child). `tessera profile` builds its
//!   roofline table on this; embedders can profile their own models the same way. A checking
//!   recording ([`Recorder::start_checking`]) also finds the first op whose output is not
//!   finite, forward or backward: anomaly detection.
//!
//! ```
//! use tessera_core::{profile, Tensor};
//! # fn main() -> tessera_core::Result<()> {
//! let x = Tensor::randn(&[8, 64], 0);
//! let w = Tensor::randn(&[32, 64], 1);
//! let (y, prof) = profile::record(|| -> tessera_core::Result<Tensor> {
//!     let h = x.linear(&w, None)?;
//!     profile::end_layer("fc");
//!     Ok(h.relu())
//! });
//! y?;
//! let ops: Vec<&str> = prof.records.iter().map(|r| r.op.as_str()).collect();
//! assert_eq!(ops, ["linear", "relu"]);
//! assert_eq!(prof.records[0].layer, "fc");
//! assert_eq!(prof.records[0].flops, 2 * 8 * 32 * 64);
//! assert_eq!(prof.records[1].layer, "(other)");
//! # Ok(())
//! # }
//! ```
//!
//! Recording is per thread: ops issued by another thread go to that thread's recorder (if
//! any). When no recorder runs, an op pays one thread-local flag check. The FLOP and byte
//! formulas of every op are listed in `docs/profile.md`; the mechanism is described in
//! `state.rs`.

mod finite;
mod macs;
mod record;
mod state;

pub use finite::NonFinite;
pub(crate) use macs::add_macs;
pub use macs::{count_macs, macs};
pub use record::{OpRecord, Phase, Profile, Totals};
pub(crate) use state::{add_cost, begin, node_tag, NodeTag, OpInfo};
pub use state::{end_layer, is_recording, module_scope, scope, Cost, ScopeGuard, OTHER};

use std::borrow::Cow;
use std::marker::PhantomData;

use tessera_kernels::Activation;

/// Records the ops of this thread until [`Recorder::finish`]. Starting a recorder while
/// another runs on the same thread suspends the outer one: the inner recorder sees the ops in
/// between, the outer resumes (without them) when the inner finishes or is dropped.
#[must_use = "recording stops when the recorder is finished or dropped"]
pub struct Recorder {
    prev: Option<Option<state::State>>,
    /// Tied to the thread that started it.
    _not_send: PhantomData<*const ()>,
}

impl Recorder {
    /// Starts recording on this thread.
    pub fn start() -> Recorder {
        Recorder {
            prev: Some(state::install(false)),
            _not_send: PhantomData,
        }
    }

    /// Starts a recording that also checks values: the output of every op run outside
    /// another op, and every gradient a backward rule returns, until the first that holds NaN
    /// or infinity. That record's [`OpRecord::non_finite`] says how many
    /// ([`Profile::first_non_finite`]), with its op, layer and module. Anomaly detection runs
    /// a training step under it; it costs one pass over each output until the first finding.
    pub fn start_checking() -> Recorder {
        Recorder {
            prev: Some(state::install(true)),
            _not_send: PhantomData,
        }
    }

    /// Stops recording and returns what was recorded.
    pub fn finish(mut self) -> Profile {
        let prev = self.prev.take().unwrap_or(None);
        state::uninstall(prev).unwrap_or_default()
    }
}

impl Drop for Recorder {
    fn drop(&mut self) {
        if let Some(prev) = self.prev.take() {
            state::uninstall(prev);
        }
    }
}

/// Runs `f` with a recorder on this thread and returns its result with the profile.
pub fn record<T>(f: impl FnOnce() -> T) -> (T, Profile) {
    let rec = Recorder::start();
    let out = f();
    (out, rec.finish())
}

/// Times `f` as one record named `op` of `phase` with the given cost (plus the cost of any op
/// it runs, which then leaves no record of its own); the record's output shape is its first
/// input's (an in-place update). Just runs `f` when not recording.
pub fn region<T>(
    op: &str,
    phase: Phase,
    inputs: &[&[usize]],
    cost: Cost,
    f: impl FnOnce() -> T,
) -> T {
    let Some(frame) = begin() else {
        return f();
    };
    let out = f();
    frame.end(phase, || OpInfo {
        op: Cow::Owned(op.to_string()),
        inputs: inputs.iter().map(|s| s.to_vec()).collect(),
        output: inputs.first().map(|s| s.to_vec()).unwrap_or_default(),
        cost,
    });
    out
}

/// Bytes of `n` f32 values.
pub(crate) fn f32_bytes(n: usize) -> u64 {
    4 * n as u64
}

/// Nominal FLOPs per element of an activation: one per arithmetic operation or comparison in
/// its defining formula, a transcendental function (exp, erf, tanh) counted as one.
pub fn activation_flops(a: Activation) -> u64 {
    match a {
        Activation::Identity => 0,
        Activation::Relu => 1,                             // max(x, 0)
        Activation::Relu6 | Activation::LeakyRelu(_) => 2, // min(max(x,0),6) / cmp + mul
        Activation::Sigmoid => 4,                          // 1 / (1 + exp(-x))
        Activation::Tanh => 1,                             // tanh
        Activation::Swish => 5,                            // x * sigmoid(x)
        Activation::HardSigmoid => 4,                      // min(max(x + 3, 0), 6) / 6
        Activation::HardSwish => 5,                        // x * hardsigmoid(x)
        Activation::GeluErf => 5,                          // 0.5 x (1 + erf(x / sqrt 2))
        Activation::GeluTanh => 9,                         // 0.5 x (1 + tanh(c (x + 0.044715 x^3)))
    }
}

/// The op kind with a fused activation appended: `conv2d+relu6`.
pub(crate) fn with_act(op: &'static str, a: Activation) -> Cow<'static, str> {
    match a {
        Activation::Identity => Cow::Borrowed(op),
        a => Cow::Owned(format!("{op}+{}", act_name(a))),
    }
}

/// The short name of an activation (as the ops' names).
pub(crate) fn act_name(a: Activation) -> &'static str {
    match a {
        Activation::Identity => "identity",
        Activation::Relu => "relu",
        Activation::Relu6 => "relu6",
        Activation::LeakyRelu(_) => "leaky_relu",
        Activation::Sigmoid => "sigmoid",
        Activation::Tanh => "tanh",
        Activation::Swish => "silu",
        Activation::HardSigmoid => "hardsigmoid",
        Activation::HardSwish => "hardswish",
        Activation::GeluErf => "gelu",
        Activation::GeluTanh => "gelu_tanh",
    }
}

#[cfg(test)]
mod check_tests;
#[cfg(test)]
mod tests;
