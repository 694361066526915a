//! Fused multi-head self-attention core, forward and backward, on strided slices (no tensor
//! type): scaled dot-product attention of Vaswani et al., "Attention Is All You Need" (2017),
//! eq. 1 and section 3.2.2, over the packed `qkv` projection of a ViT block (Dosovitskiy et al.,
//! 2021; timm's `Attention`), with the heads merged straight into the output.
//!
//! Layout (`n` images, `L` tokens, `h` heads of width `d`, `D = h d`):
//!
//! ```text
//! qkv   [n, L, 3D]   row t of image b: q heads 0..h | k heads 0..h | v heads 0..h
//! out   [n, L, D]    row t of image b: o heads 0..h   (what the `proj` Linear takes)
//! probs [n, h, L, L] the softmax of the scores, saved for the backward
//! ```
//!
//! One task per (image, head), tasks in parallel on the rayon pool, each single-threaded:
//!
//! ```text
//! forward                                   backward (dO = the output gradient's head block)
//! S  = scale Q K^T   GEMM alpha, scratch    dP = dO V^T            GEMM, scratch
//! P  = softmax(S)    rows, into probs       dV = P^T dO            GEMM, into dqkv
//! O  = P V           GEMM, into out         dS = P (dP - rowsum(dP P))  softmax backward rows
//!                                           dQ = scale dS K        GEMM alpha, into dqkv
//!                                           dK = scale dS^T Q      GEMM alpha, into dqkv
//! ```
//!
//! Q, K, V and dO are read in place through their row strides (`3D`, `D`); O, dQ, dK and dV are
//! written in place through theirs, so there is no slice copy, head split or merge, and no
//! zero fill: every element of `out`, `probs` and `dqkv` is written exactly once (GEMM with
//! `beta = 0`). Transposed operands (`K^T`, `V^T`, `P^T`, `dS^T`) are strided views handed to
//! the GEMM, which packs them. The scores and the two `[L, L]` backward temporaries live in a
//! per-thread scratch reused across calls (no allocation once warm).
//!
//! With fewer than two (image, head) tasks per thread (batch-1 inference of a model with few
//! heads), the forward splits each task's rows into units (K^T and V are then packed once per
//! unit); every row is computed the same way whatever the split.
//!
//! Each task runs the same single-threaded code whatever the pool size, and tasks write
//! disjoint elements, so results are bit-identical for any thread count. The SIMD lives in the
//! GEMM and softmax kernels; the `*_with` entry points force their ISA. [`reference`] holds
//! the f64 oracle.

pub mod reference;

use crate::error::KernelError;
use crate::gemm::{gemm_unchecked, Epilogue, GemmConfig};
use crate::isa::Isa;
use crate::parallel::for_each_task;
use crate::softmax::{softmax_backward_with, softmax_with};
use rayon::prelude::*;
use std::cell::Cell;

/// The sizes of one attention call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AttentionShape {
    /// Images `n`.
    pub batch: usize,
    /// Tokens per image `L`.
    pub tokens: usize,
    /// Heads `h`.
    pub heads: usize,
    /// Width of one head `d`.
    pub head_dim: usize,
}

impl AttentionShape {
    /// `n` images of `tokens` tokens, `heads` heads of width `head_dim`.
    pub fn new(batch: usize, tokens: usize, heads: usize, head_dim: usize) -> Self {
        AttentionShape {
            batch,
            tokens,
            heads,
            head_dim,
        }
    }

    /// The model width `D = h d`.
    pub fn dim(&self) -> usize {
        self.heads * self.head_dim
    }

    /// Elements of `qkv` (and of its gradient): `n L 3D`.
    pub fn qkv_len(&self) -> Option<usize> {
        self.batch
            .checked_mul(self.tokens)?
            .checked_mul(self.dim().checked_mul(3)?)
    }

    /// Elements of `out` (and of its gradient): `n L D`.
    pub fn out_len(&self) -> Option<usize> {
        self.batch
            .checked_mul(self.tokens)?
            .checked_mul(self.heads.checked_mul(self.head_dim)?)
    }

    /// Elements of `probs`: `n h L L`.
    pub fn probs_len(&self) -> Option<usize> {
        self.batch
            .checked_mul(self.heads)?
            .checked_mul(self.tokens.checked_mul(self.tokens)?)
    }

    /// Multiply-adds of the forward's two products: `2 n h L^2 d` (the backward does twice
    /// as many).
    pub fn forward_macs(&self) -> u64 {
        2 * (self.batch * self.heads) as u64
            * (self.tokens * self.tokens) as u64
            * self.head_dim as u64
    }
}

/// Checks the shape and every slice length, naming the op and the numbers.
fn check(
    op: &'static str,
    s: &AttentionShape,
    slices: &[(&str, usize, Option<usize>)],
) -> Result<(), KernelError> {
    if s.heads == 0 {
        return Err(KernelError::invalid(op, "heads must be at least 1"));
    }
    for &(name, len, want) in slices {
        match want {
            None => {
                return Err(KernelError::invalid(
                    op,
                    format!("{s:?}: the size of {name} overflows usize"),
                ))
            }
            Some(w) if w != len => {
                return Err(KernelError::invalid(
                    op,
                    format!(
                        "{name} has {len} elements but n {} x L {} x h {} x d {} needs {w}",
                        s.batch, s.tokens, s.heads, s.head_dim
                    ),
                ))
            }
            _ => {}
        }
    }
    Ok(())
}

/// A raw pointer the tasks share; each task touches only its own (image, head) elements.
#[derive(Clone, Copy)]
struct SharedPtr<T>(*mut T);
// SAFETY: the tasks write disjoint elements through it (one head's columns of one image, or
// one head's block of probs) and only read data nobody writes during the call.
unsafe impl<T> Send for SharedPtr<T> {}
unsafe impl<T> Sync for SharedPtr<T> {}

impl<T> SharedPtr<T> {
    /// The pointer (a method, so closures capture the whole `Sync` wrapper).
    fn get(self) -> *mut T {
        self.0
    }
}

/// Per-thread scratch: two buffers of up to `[L, L]` (the scores of a forward unit, or dP and
/// dS).
#[derive(Default)]
struct Scratch {
    a: Vec<f32>,
    b: Vec<f32>,
}

thread_local! {
    /// Taken out while a task uses it (a nested task on the same thread gets a new one), put
    /// back after, so a warm call allocates nothing.
    static SCRATCH: Cell<Option<Box<Scratch>>> = const { Cell::new(None) };
}

/// Runs `f` with this thread's scratch, each buffer at least `len` elements.
fn with_scratch<R>(len: usize, f: impl FnOnce(&mut [f32], &mut [f32]) -> R) -> R {
    let mut s = SCRATCH.with(|c| c.take()).unwrap_or_default();
    if s.a.len() < len {
        s.a = vec![0.0; len];
        s.b = vec![0.0; len];
    }
    let r = f(&mut s.a[..len], &mut s.b[..len]);
    SCRATCH.with(|c| c.set(Some(s)));
    r
}

/// Forward: `out` `[n, L, D]` (heads merged) and `probs` `[n, h, L, L]` from `qkv` `[n, L, 3D]`,
/// `softmax(scale Q K^T) V` per (image, head), on the path [`Isa::current`] picks.
pub fn attention_forward(
    shape: AttentionShape,
    scale: f32,
    qkv: &[f32],
    out: &mut [f32],
    probs: &mut [f32],
) -> Result<(), KernelError> {
    attention_forward_with(Isa::current()?, shape, scale, qkv, out, probs)
}

/// Backward: `dqkv` `[n, L, 3D]` (every element written) from the forward's `qkv` and `probs`
/// and the output gradient `dout` `[n, L, D]`.
pub fn attention_backward(
    shape: AttentionShape,
    scale: f32,
    qkv: &[f32],
    probs: &[f32],
    dout: &[f32],
    dqkv: &mut [f32],
) -> Result<(), KernelError> {
    attention_backward_with(Isa::current()?, shape, scale, qkv, probs, dout, dqkv)
}

/// [`attention_forward`] on the given path (an error if the CPU lacks it).
pub fn attention_forward_with(
    isa: Isa,
    shape: AttentionShape,
    scale: f32,
    qkv: &[f32],
    out: &mut [f32],
    probs: &mut [f32],
) -> Result<(), KernelError> {
    const OP: &str = "attention_forward";
    let isa = isa.check()?;
    check(
        OP,
        &shape,
        &[
            ("qkv", qkv.len(), shape.qkv_len()),
            ("out", out.len(), shape.out_len()),
            ("probs", probs.len(), shape.probs_len()),
        ],
    )?;
    let AttentionShape {
        batch: n,
        tokens: l,
        heads: h,
        head_dim: d,
    } = shape;
    if n == 0 || l == 0 {
        return Ok(());
    }
    let dim = h * d;
    let cfg = GemmConfig::single_thread().isa(isa);
    let ld = 3 * dim;
    let rows = forward_chunk_rows(n * h, l, rayon::current_num_threads());
    let chunks = l.div_ceil(rows);
    let (out_p, probs_p) = (SharedPtr(out.as_mut_ptr()), SharedPtr(probs.as_mut_ptr()));
    // Through `for_each_task`, so that inside an awake region (a compiled plan) the units go to
    // the spinning workers; the first error of any unit is returned.
    let first_err: std::sync::Mutex<Option<KernelError>> = std::sync::Mutex::new(None);
    for_each_task(n * h * chunks, |unit| {
        let (task, r0) = (unit / chunks, (unit % chunks) * rows);
        let (b, hh, m) = (task / h, task % h, rows.min(l - r0));
        let result = with_scratch(rows * l, |s, _| {
            // SAFETY: `check` proved qkv has n L 3D elements, out n L D and probs n h L L, so
            // every offset below (image b < n, head hh < h, rows r0 + i < L, columns < d or
            // < L) is in bounds. This unit writes only rows r0..r0+m of head hh of image b
            // (in `out`: those rows' head-hh columns; in `probs`: those rows of block
            // (b, hh)), a set no other unit touches; `s` is this thread's exclusive scratch;
            // qkv is only read.
            unsafe {
                let q = qkv.as_ptr().add(b * l * ld + hh * d);
                let (k, v) = (q.add(dim), q.add(2 * dim));
                let q = q.add(r0 * ld);
                let o = out_p.get().add((b * l + r0) * dim + hh * d);
                let p =
                    std::slice::from_raw_parts_mut(probs_p.get().add((task * l + r0) * l), m * l);
                let e = Epilogue::NONE;
                // S = scale Q K^T: [m, d] x [d, L] (K^T a view: strides (1, 3D)).
                let sp = s.as_mut_ptr();
                gemm_unchecked(m, l, d, scale, q, ld, 1, k, 1, ld, 0.0, sp, l, 1, e, &cfg)?;
                for (sr, pr) in s.chunks_exact(l).zip(p.chunks_exact_mut(l)) {
                    softmax_with(isa, sr, pr, l)?;
                }
                // O = P V: [m, L] x [L, d], written with row stride D.
                let pp = p.as_ptr();
                gemm_unchecked(m, d, l, 1.0, pp, l, 1, v, ld, 1, 0.0, o, dim, 1, e, &cfg)
            }
        });
        if let Err(e) = result {
            first_err
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .get_or_insert(e);
        }
    });
    first_err
        .into_inner()
        .unwrap_or_else(|p| p.into_inner())
        .map_or(Ok(()), Err)
}

/// Rows of one forward work unit: a whole (image, head) when there are enough of them to
/// keep every thread busy (at least two per thread), else a split of the rows into about
/// four units per thread (batch-1 inference of a model with few heads). Each row's result is
/// the same whatever the split (the GEMM computes every element the same way for any row
/// range, the softmax is per row), so the output does not depend on the thread count.
fn forward_chunk_rows(tasks: usize, l: usize, threads: usize) -> usize {
    const MIN_ROWS: usize = 24;
    if threads <= 1 || tasks >= 2 * threads || l < 2 * MIN_ROWS {
        return l;
    }
    let per_task = (4 * threads).div_ceil(tasks);
    l.div_ceil(per_task).max(MIN_ROWS)
}

/// [`attention_backward`] on the given path (an error if the CPU lacks it).
pub fn attention_backward_with(
    isa: Isa,
    shape: AttentionShape,
    scale: f32,
    qkv: &[f32],
    probs: &[f32],
    dout: &[f32],
    dqkv: &mut [f32],
) -> Result<(), KernelError> {
    const OP: &str = "attention_backward";
    let isa = isa.check()?;
    check(
        OP,
        &shape,
        &[
            ("qkv", qkv.len(), shape.qkv_len()),
            ("probs", probs.len(), shape.probs_len()),
            ("dout", dout.len(), shape.out_len()),
            ("dqkv", dqkv.len(), shape.qkv_len()),
        ],
    )?;
    let AttentionShape {
        batch: n,
        tokens: l,
        heads: h,
        head_dim: d,
    } = shape;
    if n == 0 || l == 0 {
        return Ok(());
    }
    let dim = h * d;
    let cfg = GemmConfig::single_thread().isa(isa);
    let dq_p = SharedPtr(dqkv.as_mut_ptr());
    probs
        .par_chunks(l * l)
        .enumerate()
        .try_for_each(|(task, p)| {
            let (b, hh) = (task / h, task % h);
            with_scratch(l * l, |dp, ds| {
                let ld = 3 * dim;
                let e = Epilogue::NONE;
                // SAFETY: `check` proved qkv and dqkv have n L 3D elements and dout n L D, so
                // every offset below (image b < n, head hh < h, rows < L, columns < d) is in
                // bounds. This task writes only head hh's q, k and v columns of image b in
                // dqkv, a set no other task touches; `dp` and `ds` are exclusive buffers;
                // qkv, probs and dout are only read.
                unsafe {
                    let base = b * l * ld + hh * d;
                    let q = qkv.as_ptr().add(base);
                    let k = q.add(dim);
                    let v = q.add(2 * dim);
                    let g = dout.as_ptr().add(b * l * dim + hh * d);
                    let dq = dq_p.get().add(base);
                    let dk = dq.add(dim);
                    let dv = dq.add(2 * dim);
                    let (pp, dpp) = (p.as_ptr(), dp.as_mut_ptr());
                    // dP = dO V^T: [L, d] x [d, L].
                    gemm_unchecked(l, l, d, 1.0, g, dim, 1, v, 1, ld, 0.0, dpp, l, 1, e, &cfg)?;
                    // dV = P^T dO: [L, L] x [L, d].
                    gemm_unchecked(l, d, l, 1.0, pp, 1, l, g, dim, 1, 0.0, dv, ld, 1, e, &cfg)?;
                    for ((pr, dpr), dsr) in p
                        .chunks_exact(l)
                        .zip(dp.chunks_exact(l))
                        .zip(ds.chunks_exact_mut(l))
                    {
                        softmax_backward_with(isa, pr, dpr, dsr, l)?;
                    }
                    let dsp = ds.as_ptr();
                    // dQ = scale dS K: [L, L] x [L, d].
                    gemm_unchecked(l, d, l, scale, dsp, l, 1, k, ld, 1, 0.0, dq, ld, 1, e, &cfg)?;
                    // dK = scale dS^T Q: [L, L] x [L, d].
                    gemm_unchecked(l, d, l, scale, dsp, 1, l, q, ld, 1, 0.0, dk, ld, 1, e, &cfg)
                }
            })
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_slices_name_the_op_and_shape() {
        let s = AttentionShape::new(2, 5, 3, 4);
        let qkv = vec![0.0; 2 * 5 * 36];
        let mut out = vec![0.0; 2 * 5 * 12 - 1];
        let mut probs = vec![0.0; 2 * 3 * 25];
        let e = attention_forward(s, 0.5, &qkv, &mut out, &mut probs).unwrap_err();
        let m = e.to_string();
        assert!(m.contains("attention_forward") && m.contains("119"), "{m}");
        let mut dqkv = vec![0.0; qkv.len()];
        let e = attention_backward(s, 0.5, &qkv, &probs[1..], &out, &mut dqkv).unwrap_err();
        assert!(e.to_string().contains("probs has 149"), "{e}");
    }

    #[test]
    fn forward_units_split_rows_only_when_tasks_are_few() {
        // Enough tasks, one thread, or too few rows: whole tasks.
        assert_eq!(forward_chunk_rows(96, 197, 2), 197);
        assert_eq!(forward_chunk_rows(1, 197, 1), 197);
        assert_eq!(forward_chunk_rows(1, 40, 2), 40);
        // ViT-Ti at batch 1 on 2 threads: 3 tasks, 3 units each of 66 rows.
        assert_eq!(forward_chunk_rows(3, 197, 2), 66);
        // One task on 2 threads: 8 units of 25 rows; never below 24 rows.
        assert_eq!(forward_chunk_rows(1, 197, 2), 25);
        assert_eq!(forward_chunk_rows(1, 50, 8), 24);
    }

    #[test]
    fn zero_heads_is_an_error() {
        let s = AttentionShape::new(1, 1, 0, 4);
        let e = attention_forward(s, 1.0, &[], &mut [], &mut []).unwrap_err();
        assert!(e.to_string().contains("heads"), "{e}");
    }
}
