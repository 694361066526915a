//! The slice API of the activations: `forward`, `forward_inplace`, `backward` and their
//! `_with(isa, ..)` forms, splitting large slices into fixed chunks on the rayon pool
//! (element-wise, so the result never depends on the thread count).
//!
//! The loops are written once over [`Simd`] and the activation type ([`VecAct`]); each ISA's
//! [`ActKernels`] table holds, per activation, a `#[target_feature]` instantiation of them (the
//! `Isa::Scalar` table runs the f64 reference instead).

use super::vector::{kind, VecAct};
use super::Activation;
use crate::error::KernelError;
use crate::isa::{Isa, Tables};
use crate::simd::{tables, Simd};
use rayon::prelude::*;

/// `y[i] = f(x[i])` for `i < n`; `x` may equal `y`.
type FwdFn = unsafe fn(Activation, *const f32, *mut f32, usize);
/// `dx[i] = dy[i] f'(x[i])` for `i < n`; `dx` may equal `x` or `dy`.
type BwdFn = unsafe fn(Activation, *const f32, *const f32, *mut f32, usize);

/// One ISA's slice loops, indexed by [`Activation::index`].
struct ActKernels {
    forward: [FwdFn; 11],
    backward: [BwdFn; 11],
}

/// `y[i] = a(x[i])` for `i < n`: full vectors (two per step), then one masked tail.
///
/// # Safety
/// The CPU supports `S`; `x` readable and `y` writable for `n` floats, identical if they
/// overlap.
#[inline(always)]
unsafe fn forward_body<S: Simd, A: VecAct>(a: A, x: *const f32, y: *mut f32, n: usize) {
    let l = S::L;
    let mut i = 0;
    // SAFETY: every access is below n.
    unsafe {
        while i + 2 * l <= n {
            let (v0, v1) = (S::load(x.add(i)), S::load(x.add(i + l)));
            S::store(y.add(i), a.apply::<S>(v0));
            S::store(y.add(i + l), a.apply::<S>(v1));
            i += 2 * l;
        }
        if i + l <= n {
            S::store(y.add(i), a.apply::<S>(S::load(x.add(i))));
            i += l;
        }
        if i < n {
            let v = a.apply::<S>(S::load_first(x.add(i), n - i));
            S::store_first(y.add(i), v, n - i);
        }
    }
}

/// `dx[i] = a'(x[i]) dy[i]` for `i < n`: full vectors (two per step), then one masked tail.
///
/// # Safety
/// The CPU supports `S`; `x`, `dy` readable and `dx` writable for `n` floats, `dx` equal to or
/// apart from each of them.
#[inline(always)]
unsafe fn backward_body<S: Simd, A: VecAct>(
    a: A,
    x: *const f32,
    dy: *const f32,
    dx: *mut f32,
    n: usize,
) {
    let l = S::L;
    let mut i = 0;
    // SAFETY: every access is below n.
    unsafe {
        while i + 2 * l <= n {
            let g0 = a.grad::<S>(S::load(x.add(i)), S::load(dy.add(i)));
            let g1 = a.grad::<S>(S::load(x.add(i + l)), S::load(dy.add(i + l)));
            S::store(dx.add(i), g0);
            S::store(dx.add(i + l), g1);
            i += 2 * l;
        }
        if i + l <= n {
            let g = a.grad::<S>(S::load(x.add(i)), S::load(dy.add(i)));
            S::store(dx.add(i), g);
            i += l;
        }
        if i < n {
            let k = n - i;
            let g = a.grad::<S>(S::load_first(x.add(i), k), S::load_first(dy.add(i), k));
            S::store_first(dx.add(i), g, k);
        }
    }
}

/// `[$f::<Identity>, $f::<Relu>, ...]` in the order of [`Activation::ALL`].
macro_rules! per_kind {
    ($f:ident) => {
        [
            $f::<kind::Identity>,
            $f::<kind::Relu>,
            $f::<kind::Relu6>,
            $f::<kind::LeakyRelu>,
            $f::<kind::Sigmoid>,
            $f::<kind::Tanh>,
            $f::<kind::Swish>,
            $f::<kind::HardSigmoid>,
            $f::<kind::HardSwish>,
            $f::<kind::GeluErf>,
            $f::<kind::GeluTanh>,
        ]
    };
}

macro_rules! act_kernels {
    ($S:ty $(, $feat:literal)?) => {{
        $(#[target_feature(enable = $feat)])?
        unsafe fn fwd<A: VecAct>(act: Activation, x: *const f32, y: *mut f32, n: usize) {
            // SAFETY: the table is used only on a CPU that supports the ISA; pointers as
            // `FwdFn` requires (the caller's contract).
            unsafe { forward_body::<$S, A>(A::of(act), x, y, n) }
        }
        $(#[target_feature(enable = $feat)])?
        unsafe fn bwd<A: VecAct>(
            act: Activation,
            x: *const f32,
            dy: *const f32,
            dx: *mut f32,
            n: usize,
        ) {
            // SAFETY: as in `fwd`.
            unsafe { backward_body::<$S, A>(A::of(act), x, dy, dx, n) }
        }
        ActKernels {
            forward: per_kind!(fwd),
            backward: per_kind!(bwd),
        }
    }};
}

/// The scalar path: the f64 reference, element by element.
unsafe fn forward_reference(act: Activation, x: *const f32, y: *mut f32, n: usize) {
    for i in 0..n {
        // SAFETY: i < n (the caller's contract); reads before writes, so x == y is fine.
        unsafe { *y.add(i) = act.apply_scalar(*x.add(i)) };
    }
}

unsafe fn backward_reference(
    act: Activation,
    x: *const f32,
    dy: *const f32,
    dx: *mut f32,
    n: usize,
) {
    for i in 0..n {
        // SAFETY: as in `forward_reference`.
        unsafe { *dx.add(i) = act.backward_scalar(*x.add(i), *dy.add(i)) };
    }
}

static REFERENCE: ActKernels = ActKernels {
    forward: [forward_reference; 11],
    backward: [backward_reference; 11],
};

static TABLES: Tables<ActKernels> = tables!(ActKernels, act_kernels, &REFERENCE);

/// Slices shorter than this stay on the calling thread.
const PAR_MIN: usize = 1 << 17;
/// Elements per parallel task (128 KiB of f32: fits L2 with its output).
const PAR_CHUNK: usize = 1 << 15;

fn parallel(n: usize) -> bool {
    n >= PAR_MIN && rayon::current_num_threads() > 1
}

fn check_len(op: &'static str, names: &[(&str, usize)]) -> Result<(), KernelError> {
    let n = names[0].1;
    if names.iter().all(|&(_, l)| l == n) {
        Ok(())
    } else {
        let list: Vec<String> = names.iter().map(|(s, l)| format!("{s} has {l}")).collect();
        Err(KernelError::invalid(
            op,
            format!("slice lengths differ: {}", list.join(", ")),
        ))
    }
}

/// `y[i] = f(x[i])` with the path [`Isa::current`] picks.
pub fn forward(act: Activation, x: &[f32], y: &mut [f32]) -> Result<(), KernelError> {
    forward_on(TABLES.current()?, act, x, y)
}

/// `x[i] = f(x[i])` in place, with the path [`Isa::current`] picks.
///
/// Infallible: it is the one entry point that cannot report a bad `TESSERA_ISA` (a path the
/// CPU lacks, an unknown name); it then uses [`Isa::best`]. Use [`forward_inplace_with`] to
/// force a path and see that error.
pub fn forward_inplace(act: Activation, x: &mut [f32]) {
    let k = TABLES
        .current()
        .or_else(|_| TABLES.get(Isa::best()))
        .unwrap_or(&REFERENCE);
    inplace_on(k, act, x);
}

/// `y[i] = f(x[i])` on the given path (an error if the CPU lacks it or the lengths differ).
pub fn forward_with(
    isa: Isa,
    act: Activation,
    x: &[f32],
    y: &mut [f32],
) -> Result<(), KernelError> {
    forward_on(TABLES.get(isa)?, act, x, y)
}

/// `x[i] = f(x[i])` in place on the given path.
pub fn forward_inplace_with(isa: Isa, act: Activation, x: &mut [f32]) -> Result<(), KernelError> {
    inplace_on(TABLES.get(isa)?, act, x);
    Ok(())
}

/// `dx[i] = dy[i] * f'(x[i])` with the path [`Isa::current`] picks (`x` is the forward input).
pub fn backward(act: Activation, x: &[f32], dy: &[f32], dx: &mut [f32]) -> Result<(), KernelError> {
    backward_on(TABLES.current()?, act, x, dy, dx)
}

/// `dx[i] = dy[i] * f'(x[i])` on the given path.
pub fn backward_with(
    isa: Isa,
    act: Activation,
    x: &[f32],
    dy: &[f32],
    dx: &mut [f32],
) -> Result<(), KernelError> {
    backward_on(TABLES.get(isa)?, act, x, dy, dx)
}

fn forward_on(
    k: &ActKernels,
    act: Activation,
    x: &[f32],
    y: &mut [f32],
) -> Result<(), KernelError> {
    check_len("activation forward", &[("x", x.len()), ("y", y.len())])?;
    let f = k.forward[act.index()];
    let run = |x: &[f32], y: &mut [f32]| {
        // SAFETY: the table of a checked ISA; both chunks hold x.len() floats.
        unsafe { f(act, x.as_ptr(), y.as_mut_ptr(), x.len()) }
    };
    if parallel(x.len()) {
        x.par_chunks(PAR_CHUNK)
            .zip(y.par_chunks_mut(PAR_CHUNK))
            .for_each(|(xc, yc)| run(xc, yc));
    } else {
        run(x, y);
    }
    Ok(())
}

fn inplace_on(k: &ActKernels, act: Activation, x: &mut [f32]) {
    let f = k.forward[act.index()];
    let run = |x: &mut [f32]| {
        let p = x.as_mut_ptr();
        // SAFETY: the table of a checked ISA; source and destination are the same floats.
        unsafe { f(act, p, p, x.len()) }
    };
    if parallel(x.len()) {
        x.par_chunks_mut(PAR_CHUNK).for_each(run);
    } else {
        run(x);
    }
}

fn backward_on(
    k: &ActKernels,
    act: Activation,
    x: &[f32],
    dy: &[f32],
    dx: &mut [f32],
) -> Result<(), KernelError> {
    check_len(
        "activation backward",
        &[("x", x.len()), ("dy", dy.len()), ("dx", dx.len())],
    )?;
    let f = k.backward[act.index()];
    let run = |x: &[f32], dy: &[f32], dx: &mut [f32]| {
        // SAFETY: the table of a checked ISA; all three chunks hold x.len() floats and dx is
        // a distinct &mut.
        unsafe { f(act, x.as_ptr(), dy.as_ptr(), dx.as_mut_ptr(), x.len()) }
    };
    if parallel(x.len()) {
        x.par_chunks(PAR_CHUNK)
            .zip(dy.par_chunks(PAR_CHUNK))
            .zip(dx.par_chunks_mut(PAR_CHUNK))
            .for_each(|((xc, dc), oc)| run(xc, dc, oc));
    } else {
        run(x, dy, dx);
    }
    Ok(())
}
