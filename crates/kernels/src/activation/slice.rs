//! The slice API of the activations: `forward`, `forward_inplace`, `backward` and their
//! `_with(isa, ..)` forms, dispatching to the per-ISA loops and splitting large slices into
//! fixed chunks on the rayon pool (element-wise, so the result never depends on the thread
//! count).

use super::Activation;
use crate::error::KernelError;
use crate::isa::Isa;
use rayon::prelude::*;

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
    forward_with(Isa::current()?, act, x, y)
}

/// `x[i] = f(x[i])` in place, with the path [`Isa::current`] picks.
///
/// Infallible: it is the one entry point that cannot report a bad `TESSERA_ISA` (a path the
/// CPU lacks, an unknown name); it then uses [`Isa::best`]. Use [`forward_inplace_with`] to
/// force a path and see that error.
pub fn forward_inplace(act: Activation, x: &mut [f32]) {
    let isa = Isa::current().unwrap_or_else(|_| Isa::best());
    inplace_any(isa, act, x);
}

/// `y[i] = f(x[i])` on the given path (an error if the CPU lacks it or the lengths differ).
pub fn forward_with(
    isa: Isa,
    act: Activation,
    x: &[f32],
    y: &mut [f32],
) -> Result<(), KernelError> {
    let isa = isa.check()?;
    check_len("activation forward", &[("x", x.len()), ("y", y.len())])?;
    if parallel(x.len()) {
        x.par_chunks(PAR_CHUNK)
            .zip(y.par_chunks_mut(PAR_CHUNK))
            .for_each(|(xc, yc)| forward_serial(isa, act, xc, yc));
    } else {
        forward_serial(isa, act, x, y);
    }
    Ok(())
}

/// `x[i] = f(x[i])` in place on the given path.
pub fn forward_inplace_with(isa: Isa, act: Activation, x: &mut [f32]) -> Result<(), KernelError> {
    inplace_any(isa.check()?, act, x);
    Ok(())
}

fn inplace_any(isa: Isa, act: Activation, x: &mut [f32]) {
    if parallel(x.len()) {
        x.par_chunks_mut(PAR_CHUNK)
            .for_each(|c| inplace_serial(isa, act, c));
    } else {
        inplace_serial(isa, act, x);
    }
}

/// `dx[i] = dy[i] * f'(x[i])` with the path [`Isa::current`] picks (`x` is the forward input).
pub fn backward(act: Activation, x: &[f32], dy: &[f32], dx: &mut [f32]) -> Result<(), KernelError> {
    backward_with(Isa::current()?, act, x, dy, dx)
}

/// `dx[i] = dy[i] * f'(x[i])` on the given path.
pub fn backward_with(
    isa: Isa,
    act: Activation,
    x: &[f32],
    dy: &[f32],
    dx: &mut [f32],
) -> Result<(), KernelError> {
    let isa = isa.check()?;
    check_len(
        "activation backward",
        &[("x", x.len()), ("dy", dy.len()), ("dx", dx.len())],
    )?;
    if parallel(x.len()) {
        x.par_chunks(PAR_CHUNK)
            .zip(dy.par_chunks(PAR_CHUNK))
            .zip(dx.par_chunks_mut(PAR_CHUNK))
            .for_each(|((xc, dc), oc)| backward_serial(isa, act, xc, dc, oc));
    } else {
        backward_serial(isa, act, x, dy, dx);
    }
    Ok(())
}

fn forward_serial(isa: Isa, act: Activation, x: &[f32], y: &mut [f32]) {
    let n = x.len().min(y.len());
    match isa {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: `isa` passed `Isa::check` (AVX-512F present); both slices hold n floats.
        Isa::Avx512 => unsafe { super::avx512::forward_raw(act, x.as_ptr(), y.as_mut_ptr(), n) },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: `isa` passed `Isa::check` (AVX2 + FMA present); both slices hold n floats.
        Isa::Avx2 => unsafe { super::avx2::forward_raw(act, x.as_ptr(), y.as_mut_ptr(), n) },
        Isa::Portable => super::portable::forward_slice(act, x, y),
        _ => {
            for (o, &v) in y.iter_mut().zip(x) {
                *o = act.apply_scalar(v);
            }
        }
    }
}

fn inplace_serial(isa: Isa, act: Activation, x: &mut [f32]) {
    let n = x.len();
    let p = x.as_mut_ptr();
    match isa {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: AVX-512F present; source and destination are the same n floats.
        Isa::Avx512 => unsafe { super::avx512::forward_raw(act, p, p, n) },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: AVX2 + FMA present; source and destination are the same n floats.
        Isa::Avx2 => unsafe { super::avx2::forward_raw(act, p, p, n) },
        Isa::Portable => super::portable::forward_inplace_slice(act, x),
        _ => {
            for v in x.iter_mut() {
                *v = act.apply_scalar(*v);
            }
        }
    }
}

fn backward_serial(isa: Isa, act: Activation, x: &[f32], dy: &[f32], dx: &mut [f32]) {
    let n = x.len().min(dy.len()).min(dx.len());
    match isa {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: AVX-512F present; all three slices hold n floats and dx is a distinct &mut.
        Isa::Avx512 => unsafe {
            super::avx512::backward_raw(act, x.as_ptr(), dy.as_ptr(), dx.as_mut_ptr(), n)
        },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: AVX2 + FMA present; all three slices hold n floats and dx is a distinct &mut.
        Isa::Avx2 => unsafe {
            super::avx2::backward_raw(act, x.as_ptr(), dy.as_ptr(), dx.as_mut_ptr(), n)
        },
        Isa::Portable => super::portable::backward_slice(act, x, dy, dx),
        _ => {
            for ((o, &v), &d) in dx.iter_mut().zip(x).zip(dy) {
                *o = act.backward_scalar(v, d);
            }
        }
    }
}
