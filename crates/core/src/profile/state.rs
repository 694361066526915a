//! The per-thread recorder: an on/off flag, the open op frames, and the records so far.
//!
//! Design (after PyTorch's `torch.profiler` record-function scopes, reduced to what an op-level
//! roofline table needs):
//! - `ACTIVE` is a `Cell<bool>` read once by every op ([`begin`]); when it is false nothing
//!   else happens, so recording costs one thread-local load per op when off.
//! - An op opens a [`Frame`] when it starts and closes it with its own cost when it ends. Frames
//!   nest: an op that calls another op (conv2d making its input contiguous, cross-entropy
//!   running log-softmax, a backward rule running matmuls) adds the inner op's cost to its own,
//!   and only the outermost frame becomes a record, with the wall time of the whole op. Nothing
//!   is counted twice and the records' times never overlap.
//! - Layer names are resolved when the recording finishes: an op takes the innermost
//!   [`crate::profile::scope`] open when it ran, else the first [`crate::profile::end_layer`]
//!   name given after it. Every event (record, autograd node, layer end) takes the next
//!   sequence number; that number decides which layer end comes "after" an op. An autograd
//!   node keeps the sequence number and scope of the forward op that built it
//!   ([`NodeTag`]), so its backward record gets the forward op's layer.
//! - Module paths are a second scope stack ([`module_scope`]), kept apart from layers so that
//!   naming modules does not change how a profile groups its records. A record takes the
//!   innermost module path open when it ran; a backward record, its forward op's.
//! - A checking recording ([`crate::profile::Recorder::start_checking`]) also counts the NaN
//!   and infinite values of each outermost op's output, and of the gradients each backward
//!   rule returns, until the first op that has some; it stops checking after that one.

use std::borrow::Cow;
use std::cell::{Cell, RefCell};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use super::finite::NonFinite;
use super::record::{OpRecord, Phase, Profile};
use crate::tensor::Tensor;

thread_local! {
    static ACTIVE: Cell<bool> = const { Cell::new(false) };
    static STATE: RefCell<Option<State>> = const { RefCell::new(None) };
}

/// Distinguishes recording sessions, so a frame or node from one never lands in another.
static SESSIONS: AtomicU64 = AtomicU64::new(1);

/// The cost an op reports for its own work (excluding the ops it called, which report theirs).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Cost {
    /// Floating-point operations.
    pub flops: u64,
    /// Multiply-accumulates of the contractions.
    pub macs: u64,
    /// Bytes read.
    pub bytes_read: u64,
    /// Bytes written.
    pub bytes_written: u64,
}

impl Cost {
    fn add(&mut self, o: Cost) {
        self.flops += o.flops;
        self.macs += o.macs;
        self.bytes_read += o.bytes_read;
        self.bytes_written += o.bytes_written;
    }
}

/// What a finished op reports.
pub(crate) struct OpInfo {
    pub op: Cow<'static, str>,
    pub inputs: Vec<Vec<usize>>,
    pub output: Vec<usize>,
    pub cost: Cost,
}

/// Where a node's forward op ran: its sequence number, scope and module.
type Origin = (u64, Option<Arc<str>>, Option<Arc<str>>);

struct Raw {
    seq: u64,
    scope: Option<Arc<str>>,
    module: Option<Arc<str>>,
    /// For a backward record: where the forward node was built (none from this session: the
    /// sequence number `u64::MAX` and no scope or module).
    origin: Option<Origin>,
    rec: OpRecord,
}

pub(crate) struct State {
    session: u64,
    start: Instant,
    seq: u64,
    raws: Vec<Raw>,
    /// Costs accumulated by the ops nested in each open frame.
    frames: Vec<Cost>,
    /// `(sequence number, name)` of every `end_layer` call, in order.
    ends: Vec<(u64, String)>,
    scopes: Vec<Arc<str>>,
    /// Open module paths, innermost last.
    modules: Vec<Arc<str>>,
    /// Whether outputs are still checked for non-finite values (until the first is found).
    check: bool,
}

impl State {
    fn new(check: bool) -> State {
        State {
            session: SESSIONS.fetch_add(1, Ordering::Relaxed),
            start: Instant::now(),
            seq: 0,
            raws: Vec::new(),
            frames: Vec::new(),
            ends: Vec::new(),
            scopes: Vec::new(),
            modules: Vec::new(),
            check,
        }
    }

    fn next_seq(&mut self) -> u64 {
        self.seq += 1;
        self.seq
    }

    fn layer_for(&self, seq: u64, scope: &Option<Arc<str>>) -> String {
        if let Some(s) = scope {
            return s.to_string();
        }
        let i = self.ends.partition_point(|(s, _)| *s <= seq);
        match self.ends.get(i) {
            Some((_, name)) => name.clone(),
            None => OTHER.to_string(),
        }
    }

    fn into_profile(self) -> Profile {
        let wall_ns = self.start.elapsed().as_nanos() as u64;
        let mut records = Vec::with_capacity(self.raws.len());
        for raw in &self.raws {
            let mut rec = raw.rec.clone();
            let module = match &raw.origin {
                Some((seq, scope, module)) => {
                    rec.layer = self.layer_for(*seq, scope);
                    module
                }
                None => {
                    rec.layer = self.layer_for(raw.seq, &raw.scope);
                    &raw.module
                }
            };
            rec.module = module.as_deref().unwrap_or_default().to_string();
            records.push(rec);
        }
        Profile { records, wall_ns }
    }
}

/// The layer name of ops after the last [`end_layer`] and outside any scope.
pub const OTHER: &str = "(other)";

/// Whether this thread is recording.
#[inline]
pub fn is_recording() -> bool {
    ACTIVE.with(|a| a.get())
}

/// Installs a fresh state (checking outputs when `check`); returns the previous one (a
/// recorder already running).
pub(crate) fn install(check: bool) -> Option<State> {
    let prev = STATE.with(|s| s.borrow_mut().replace(State::new(check)));
    ACTIVE.with(|a| a.set(true));
    prev
}

/// Takes the current state and puts `prev` back.
pub(crate) fn uninstall(prev: Option<State>) -> Option<Profile> {
    let active = prev.is_some();
    let cur = STATE.with(|s| std::mem::replace(&mut *s.borrow_mut(), prev));
    ACTIVE.with(|a| a.set(active));
    cur.map(State::into_profile)
}

fn with_state<R>(f: impl FnOnce(&mut State) -> R) -> Option<R> {
    STATE.with(|s| s.borrow_mut().as_mut().map(f))
}

/// Marks the ops recorded since the previous call (that no scope names) as layer `name`.
pub fn end_layer(name: &str) {
    if !is_recording() {
        return;
    }
    with_state(|st| {
        let seq = st.next_seq();
        st.ends.push((seq, name.to_string()));
    });
}

/// Restores the scope stack when dropped (see [`scope`] and [`module_scope`]).
#[must_use = "the scope ends when the guard is dropped"]
pub struct ScopeGuard {
    session: Option<u64>,
    module: bool,
}

impl Drop for ScopeGuard {
    fn drop(&mut self) {
        if let Some(session) = self.session {
            with_state(|st| {
                if st.session == session {
                    if self.module {
                        st.modules.pop();
                    } else {
                        st.scopes.pop();
                    }
                }
            });
        }
    }
}

/// Pushes `name` onto `stack`, joined to the innermost open name with `.`.
fn push_joined(stack: &mut Vec<Arc<str>>, name: &str) {
    let full: Arc<str> = match stack.last() {
        Some(outer) if !outer.is_empty() => format!("{outer}.{name}").into(),
        _ => name.into(),
    };
    stack.push(full);
}

/// Names the layer of every op recorded until the guard drops. Scopes nest by joining names
/// with `.` (`scope("blocks.0")` then `scope("attn")` gives `blocks.0.attn`). A no-op when not
/// recording.
pub fn scope(name: &str) -> ScopeGuard {
    if !is_recording() {
        return ScopeGuard {
            session: None,
            module: false,
        };
    }
    let session = with_state(|st| {
        push_joined(&mut st.scopes, name);
        st.session
    });
    ScopeGuard {
        session,
        module: false,
    }
}

/// Names the module path of every op recorded until the guard drops, in
/// [`OpRecord::module`](super::OpRecord::module): a model calls it around each child it runs,
/// with the child's name as its parameters are named (`blocks.3`, then `attn`, then `qkv`
/// gives `blocks.3.attn.qkv`). Module paths do not change an op's layer. An empty name opens
/// nothing (a child whose parameters live in its parent's namespace). When not recording, a
/// no-op that does not format `name`.
pub fn module_scope(name: impl std::fmt::Display) -> ScopeGuard {
    let off = ScopeGuard {
        session: None,
        module: true,
    };
    if !is_recording() {
        return off;
    }
    let name = name.to_string();
    if name.is_empty() {
        return off;
    }
    let session = with_state(|st| {
        push_joined(&mut st.modules, &name);
        st.session
    });
    ScopeGuard {
        session,
        module: true,
    }
}

/// An open op. Dropping it without [`Frame::end`] (an op that returned an error) discards it.
pub(crate) struct Frame {
    session: u64,
    depth: usize,
    start: Instant,
    done: bool,
    /// Non-finite values found in the op's outputs by [`Frame::check`].
    non_finite: Option<NonFinite>,
}

/// Opens a frame if this thread is recording: the one flag check an op pays when it is not.
#[inline]
pub(crate) fn begin() -> Option<Frame> {
    if !is_recording() {
        return None;
    }
    begin_slow()
}

#[cold]
fn begin_slow() -> Option<Frame> {
    let (session, depth) = with_state(|st| {
        st.frames.push(Cost::default());
        (st.session, st.frames.len())
    })?;
    Some(Frame {
        session,
        depth,
        start: Instant::now(),
        done: false,
        non_finite: None,
    })
}

impl Frame {
    /// In a checking recording, counts the non-finite values of `outputs` when this is the
    /// outermost frame (an op called by another op is judged by its caller's output) and no
    /// earlier op had any.
    pub(crate) fn check<'a>(&mut self, outputs: impl IntoIterator<Item = &'a Tensor>) {
        let (session, depth) = (self.session, self.depth);
        let on = with_state(|st| st.check && st.session == session && st.frames.len() == depth)
            .unwrap_or(false);
        if on && depth == 1 {
            self.non_finite = NonFinite::of(outputs);
        }
    }

    /// Closes the frame of a forward op whose output is `out` (checked when the recording
    /// checks outputs).
    pub(crate) fn end_op(mut self, out: &Tensor, info: impl FnOnce() -> OpInfo) {
        self.check([out]);
        self.end(Phase::Forward, info)
    }

    /// Closes the frame: the op's own cost plus its nested ops' becomes a record (outermost
    /// frame) or is added to the enclosing frame.
    pub(crate) fn end(mut self, phase: Phase, info: impl FnOnce() -> OpInfo) {
        self.done = true;
        let ns = self.start.elapsed().as_nanos() as u64;
        let (session, depth, non_finite) = (self.session, self.depth, self.non_finite);
        with_state(|st| {
            if st.session != session || st.frames.len() != depth {
                return;
            }
            let mut cost = st.frames.pop().unwrap_or_default();
            let info = info();
            cost.add(info.cost);
            if let Some(parent) = st.frames.last_mut() {
                parent.add(cost);
                return;
            }
            let seq = st.next_seq();
            let scope = st.scopes.last().cloned();
            let module = st.modules.last().cloned();
            if non_finite.is_some() {
                st.check = false;
            }
            st.raws.push(Raw {
                seq,
                scope,
                module,
                origin: None,
                rec: OpRecord {
                    layer: String::new(),
                    module: String::new(),
                    non_finite,
                    op: info.op.into_owned(),
                    phase,
                    inputs: info.inputs,
                    output: info.output,
                    flops: cost.flops,
                    macs: cost.macs,
                    bytes_read: cost.bytes_read,
                    bytes_written: cost.bytes_written,
                    ns,
                },
            });
        });
    }

    /// Closes the frame of a node's backward rule as `<name>.backward`, attributed to the layer
    /// and module of the forward op that built the node (`tag`). A rule that did no counted
    /// work (a view's inverse view) leaves no record unless [`Frame::check`] found non-finite
    /// values in the gradients it returned.
    pub(crate) fn end_backward(
        mut self,
        tag: Option<&NodeTag>,
        name: &str,
        dy: &[usize],
        shapes: &[Vec<usize>],
    ) {
        self.done = true;
        let ns = self.start.elapsed().as_nanos() as u64;
        let (session, depth, non_finite) = (self.session, self.depth, self.non_finite);
        with_state(|st| {
            if st.session != session || st.frames.len() != depth {
                return;
            }
            let cost = st.frames.pop().unwrap_or_default();
            if cost == Cost::default() && non_finite.is_none() {
                return;
            }
            if let Some(parent) = st.frames.last_mut() {
                parent.add(cost);
                return;
            }
            let seq = st.next_seq();
            let origin = tag
                .filter(|t| t.session == session)
                .map(|t| (t.seq, t.scope.clone(), t.module.clone()));
            let mut inputs = vec![dy.to_vec()];
            inputs.extend(shapes.iter().cloned());
            if non_finite.is_some() {
                st.check = false;
            }
            st.raws.push(Raw {
                seq,
                scope: st.scopes.last().cloned(),
                module: None,
                origin: Some(origin.unwrap_or((u64::MAX, None, None))),
                rec: OpRecord {
                    layer: String::new(),
                    module: String::new(),
                    non_finite,
                    op: format!("{name}.backward"),
                    phase: Phase::Backward,
                    inputs,
                    output: shapes.first().cloned().unwrap_or_default(),
                    flops: cost.flops,
                    macs: cost.macs,
                    bytes_read: cost.bytes_read,
                    bytes_written: cost.bytes_written,
                    ns,
                },
            });
        });
    }
}

impl Drop for Frame {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        let (session, depth) = (self.session, self.depth);
        with_state(|st| {
            if st.session == session && st.frames.len() == depth {
                st.frames.pop();
            }
        });
    }
}

/// Adds `cost` to the innermost open frame: for work an op or backward rule does by calling a
/// kernel directly rather than through another op. A no-op when not recording.
#[inline]
pub(crate) fn add_cost(cost: impl FnOnce() -> Cost) {
    if !is_recording() {
        return;
    }
    let c = cost();
    with_state(|st| {
        if let Some(f) = st.frames.last_mut() {
            f.add(c);
        }
    });
}

/// Where an autograd node was built, kept on the node while recording.
#[derive(Debug, Clone)]
pub(crate) struct NodeTag {
    session: u64,
    seq: u64,
    scope: Option<Arc<str>>,
    module: Option<Arc<str>>,
}

/// The tag for a node being built now (`None` when not recording).
#[inline]
pub(crate) fn node_tag() -> Option<NodeTag> {
    if !is_recording() {
        return None;
    }
    with_state(|st| NodeTag {
        session: st.session,
        seq: st.next_seq(),
        scope: st.scopes.last().cloned(),
        module: st.modules.last().cloned(),
    })
}
