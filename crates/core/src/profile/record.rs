//! The recorded data: one [`OpRecord`] per op in execution order, the [`Profile`] that holds
//! them, and its [`Totals`].
//!
//! Derived quantities follow the roofline model (Williams, Waterman & Patterson, "Roofline: an
//! insightful visual performance model for multicore architectures", CACM 2009): arithmetic
//! intensity is FLOPs per byte of compulsory traffic (`flops / (bytes_read + bytes_written)`),
//! and an op is memory-bound on a machine when its intensity is below the ridge point
//! `peak GFLOP/s / bandwidth GB/s`.

use super::finite::NonFinite;

/// Which part of a training step a record belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Phase {
    /// An op run by the forward pass (or any op outside a backward walk).
    Forward,
    /// The backward rule of one autograd node (`<op>.backward`), including the ops it ran.
    Backward,
    /// A region timed with [`crate::profile::region`] (the optimizer step of `tessera profile
    /// --train`).
    Update,
}

impl Phase {
    /// `forward`, `backward` or `update`.
    pub fn name(self) -> &'static str {
        match self {
            Phase::Forward => "forward",
            Phase::Backward => "backward",
            Phase::Update => "update",
        }
    }
}

/// One op as it ran.
#[derive(Debug, Clone, PartialEq)]
pub struct OpRecord {
    /// The layer the op belongs to: the innermost [`crate::profile::scope`], else the name
    /// given to [`crate::profile::end_layer`] after it, else `(other)`. A backward record has
    /// the layer of the forward op that built its node.
    pub layer: String,
    /// The module path the op ran in: the innermost [`crate::profile::module_scope`] open
    /// when it ran (`blocks.3.attn.qkv`), empty outside any. A backward record has the
    /// module of the forward op that built its node.
    pub module: String,
    /// The op kind: `conv2d`, `conv2d_dw+relu6`, `linear`, `softmax`, `add`, ...;
    /// `<op>.backward` for a backward rule.
    pub op: String,
    /// Forward, backward or optimizer update.
    pub phase: Phase,
    /// Shapes of the tensor inputs (for a backward record: the output gradient, then the
    /// shapes of the forward inputs it produces gradients for).
    pub inputs: Vec<Vec<usize>>,
    /// Shape of the output (for a backward record: the gradient of the first forward input).
    pub output: Vec<usize>,
    /// Floating-point operations (a multiply-add counts 2; see `docs/profile.md` for each op).
    pub flops: u64,
    /// Multiply-accumulates of contractions (matmul, linear, convolution), included in
    /// `flops` as `2 * macs`.
    pub macs: u64,
    /// Bytes of the input tensors (f32), each counted once: compulsory traffic.
    pub bytes_read: u64,
    /// Bytes of the output tensors written.
    pub bytes_written: u64,
    /// Wall time, nanoseconds.
    pub ns: u64,
    /// In a checking recording ([`crate::profile::Recorder::start_checking`]), on the first
    /// record whose output (forward) or returned gradients (backward) hold NaN or infinite
    /// values: how many. `None` on every other record.
    pub non_finite: Option<NonFinite>,
}

impl OpRecord {
    /// `bytes_read + bytes_written`.
    pub fn bytes(&self) -> u64 {
        self.bytes_read + self.bytes_written
    }

    /// Arithmetic intensity in FLOPs per byte (0 for an op that moves no data).
    pub fn intensity(&self) -> f64 {
        ratio(self.flops as f64, self.bytes() as f64)
    }

    /// Achieved GFLOP/s.
    pub fn gflops(&self) -> f64 {
        ratio(self.flops as f64, self.ns as f64)
    }

    /// Achieved GB/s (compulsory traffic over time).
    pub fn gbs(&self) -> f64 {
        ratio(self.bytes() as f64, self.ns as f64)
    }

    /// Microseconds.
    pub fn us(&self) -> f64 {
        self.ns as f64 / 1e3
    }
}

fn ratio(a: f64, b: f64) -> f64 {
    if b > 0.0 {
        a / b
    } else {
        0.0
    }
}

/// Sums over a set of records.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Totals {
    /// Number of op records.
    pub ops: usize,
    /// Floating-point operations.
    pub flops: u64,
    /// Multiply-accumulates of the contractions (GEMM, convolution).
    pub macs: u64,
    /// Bytes read (f32 inputs, each tensor once).
    pub bytes_read: u64,
    /// Bytes written.
    pub bytes_written: u64,
    /// Sum of the records' times (not the wall time of the region: see [`Profile::wall_ns`]).
    pub ns: u64,
}

impl Totals {
    fn add(&mut self, r: &OpRecord) {
        self.ops += 1;
        self.flops += r.flops;
        self.macs += r.macs;
        self.bytes_read += r.bytes_read;
        self.bytes_written += r.bytes_written;
        self.ns += r.ns;
    }

    /// `bytes_read + bytes_written`.
    pub fn bytes(&self) -> u64 {
        self.bytes_read + self.bytes_written
    }

    /// FLOPs of the contractions, `2 * macs`.
    pub fn contraction_flops(&self) -> u64 {
        2 * self.macs
    }
}

/// Everything recorded on one thread between [`crate::profile::Recorder::start`] and
/// [`crate::profile::Recorder::finish`].
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Profile {
    /// The ops in execution order.
    pub records: Vec<OpRecord>,
    /// Wall time of the whole recorded region, nanoseconds (includes the work between ops:
    /// views, graph bookkeeping, the caller's own code).
    pub wall_ns: u64,
}

impl Profile {
    /// Totals over every record.
    pub fn totals(&self) -> Totals {
        self.totals_where(|_| true)
    }

    /// Totals over the records of one phase.
    pub fn phase_totals(&self, phase: Phase) -> Totals {
        self.totals_where(|r| r.phase == phase)
    }

    /// Totals over the records `keep` selects.
    pub fn totals_where(&self, keep: impl Fn(&OpRecord) -> bool) -> Totals {
        let mut t = Totals::default();
        for r in self.records.iter().filter(|r| keep(r)) {
            t.add(r);
        }
        t
    }

    /// Consecutive runs of records with the same layer, in execution order: `(layer,
    /// records)`. A layer appears again if its ops are not contiguous (a backward pass walks
    /// the layers in reverse).
    pub fn layer_groups(&self) -> Vec<(&str, &[OpRecord])> {
        let mut out: Vec<(&str, &[OpRecord])> = Vec::new();
        let mut start = 0;
        for i in 1..=self.records.len() {
            let split = i == self.records.len()
                || self.records[i].layer != self.records[start].layer
                || self.records[i].phase != self.records[start].phase;
            if split {
                out.push((&self.records[start].layer, &self.records[start..i]));
                start = i;
            }
        }
        out
    }

    /// The first record with non-finite output values (only a checking recording finds one).
    pub fn first_non_finite(&self) -> Option<&OpRecord> {
        self.records.iter().find(|r| r.non_finite.is_some())
    }

    /// Indices of the `n` slowest records, slowest first (ties in execution order).
    pub fn top_by_time(&self, n: usize) -> Vec<usize> {
        let mut idx: Vec<usize> = (0..self.records.len()).collect();
        idx.sort_by(|&a, &b| self.records[b].ns.cmp(&self.records[a].ns).then(a.cmp(&b)));
        idx.truncate(n);
        idx
    }
}
