//! The residual join of a squeeze-and-excitation block with one rounding:
//! `r = act(fma(x, s_plane, r))`, every element of plane `p` of `x` scaled by its gate value
//! `s[p]` and added to the shortcut `r` in one fused multiply-add (timm's `SEModule` followed
//! by ResNet's `x += shortcut; act(x)`; Hu et al., "Squeeze-and-Excitation Networks", 2018).
//!
//! Why one rounding: the join cancels. Deep in a trained or random ResNet the shortcut and the
//! gated branch are of similar size and opposite sign, so `|x s + r|` is several times smaller
//! than `|x s|`; rounding `x s` to f32 before the add leaves an error of half an ulp of the
//! *product*, which is several ulps of the output. With the fused form the only rounding is
//! the final one, half an ulp of the output.
//!
//! One generic body over [`Simd`] plus [`Fused`], the multiply-add rounded once on every path:
//! the hardware FMA on AVX-512F and AVX2 + FMA; on the portable and scalar paths
//! `fl32(x s + r)` evaluated in f64, where `x s` is exact (24 + 24 bits) and the sum is rounded
//! to 53 bits before the rounding to f32. That double rounding can differ from the fused
//! result only when the f64 sum lands exactly on a midpoint between two f32 values (a relative
//! 2^-29 of the cases), and then by at most 2^-29 ulp beyond half an ulp; it vectorises where
//! `f32::mul_add` without the `fma` target feature is a call into the C library per element.
//! The scalar reference [`scale_join_reference`] is that f64 formula one element at a time,
//! the test oracle. The activation is fused for identity and ReLU (`0 > v ? 0 : v`, NaN
//! propagating, as the activation kernels have it); any other runs the activation kernels'
//! forward over the joined chunk.

use crate::activation::Activation;
use crate::error::KernelError;
use crate::isa::{Isa, Tables};
use crate::simd::{tables, Simd};

/// A multiply-add with a single rounding to f32 on every path (unlike [`Simd::fma`], which the
/// portable and scalar paths round twice in f32): see the module docs.
///
/// # Safety
/// As [`Simd`]: called only on a CPU that supports the ISA.
pub(crate) unsafe trait Fused: Simd {
    /// `a * b + c`, rounded once.
    unsafe fn fused(a: Self::V, b: Self::V, c: Self::V) -> Self::V;
}

/// `fl32(a b + c)` evaluated in f64.
#[inline(always)]
fn fused_f64(a: f32, b: f32, c: f32) -> f32 {
    (f64::from(a) * f64::from(b) + f64::from(c)) as f32
}

/// [`fused_f64`] lane by lane, through arrays (vectorised by the compiler).
#[inline(always)]
unsafe fn fused_lanes<S: Simd>(a: S::V, b: S::V, c: S::V) -> S::V {
    let (mut x, mut y, mut z) = ([0.0f32; 16], [0.0f32; 16], [0.0f32; 16]);
    // SAFETY: L <= 16 floats in each array.
    unsafe {
        S::store(x.as_mut_ptr(), a);
        S::store(y.as_mut_ptr(), b);
        S::store(z.as_mut_ptr(), c);
        for i in 0..S::L {
            z[i] = fused_f64(x[i], y[i], z[i]);
        }
        S::load(z.as_ptr())
    }
}

#[cfg(target_arch = "x86_64")]
// SAFETY: AVX-512F's `fma` is `vfmadd231ps` (one rounding); same ISA contract as `Simd`.
unsafe impl Fused for crate::simd::Avx512 {
    #[inline(always)]
    unsafe fn fused(a: Self::V, b: Self::V, c: Self::V) -> Self::V {
        // SAFETY: forwarded (the caller runs on AVX-512F).
        unsafe { Self::fma(a, b, c) }
    }
}

#[cfg(target_arch = "x86_64")]
// SAFETY: the AVX2 path's `fma` is `vfmadd231ps` (FMA3, one rounding).
unsafe impl Fused for crate::simd::Avx2 {
    #[inline(always)]
    unsafe fn fused(a: Self::V, b: Self::V, c: Self::V) -> Self::V {
        // SAFETY: forwarded (the caller runs on AVX2 + FMA).
        unsafe { Self::fma(a, b, c) }
    }
}

// SAFETY: plain Rust on any target.
unsafe impl Fused for crate::simd::Portable {
    #[inline(always)]
    unsafe fn fused(a: Self::V, b: Self::V, c: Self::V) -> Self::V {
        // SAFETY: array round trip of 8 lanes.
        unsafe { fused_lanes::<Self>(a, b, c) }
    }
}

// SAFETY: plain Rust on any target.
unsafe impl Fused for crate::simd::Scalar {
    #[inline(always)]
    unsafe fn fused(a: f32, b: f32, c: f32) -> f32 {
        fused_f64(a, b, c)
    }
}

/// `r[i] = act(fl(x[i] * g + r[i]))` for `i < n`, `act` ReLU if `relu` else identity.
///
/// # Safety
/// The CPU supports `S`; `x` readable and `r` writable for `n` floats, not overlapping.
#[inline(always)]
unsafe fn plane_body<S: Fused>(x: *const f32, g: f32, r: *mut f32, n: usize, relu: bool) {
    let l = S::L;
    // SAFETY: every access is below n.
    unsafe {
        let (gv, zero) = (S::splat(g), S::zero());
        let act = |v: S::V| if relu { S::max(zero, v) } else { v };
        let mut i = 0;
        while i + 2 * l <= n {
            let v0 = S::fused(S::load(x.add(i)), gv, S::load(r.add(i)));
            let v1 = S::fused(S::load(x.add(i + l)), gv, S::load(r.add(i + l)));
            S::store(r.add(i), act(v0));
            S::store(r.add(i + l), act(v1));
            i += 2 * l;
        }
        if i + l <= n {
            let v = S::fused(S::load(x.add(i)), gv, S::load(r.add(i)));
            S::store(r.add(i), act(v));
            i += l;
        }
        if i < n {
            let k = n - i;
            let v = S::fused(S::load_first(x.add(i), k), gv, S::load_first(r.add(i), k));
            S::store_first(r.add(i), act(v), k);
        }
    }
}

/// `planes` planes of `hw` floats each, gate `s[p]` for plane `p`.
type JoinFn = unsafe fn(*const f32, *const f32, *mut f32, usize, usize, bool);

struct JoinKernels {
    join: JoinFn,
}

macro_rules! join_kernels {
    ($S:ty $(, $feat:literal)?) => {{
        $(#[target_feature(enable = $feat)])?
        unsafe fn join(
            x: *const f32,
            s: *const f32,
            r: *mut f32,
            planes: usize,
            hw: usize,
            relu: bool,
        ) {
            for p in 0..planes {
                // SAFETY: the table is used only on a CPU that supports the ISA; `x`, `r`
                // hold `planes * hw` floats and `s` holds `planes` (the caller's contract).
                unsafe { plane_body::<$S>(x.add(p * hw), *s.add(p), r.add(p * hw), hw, relu) }
            }
        }
        JoinKernels { join }
    }};
}

static TABLES: Tables<JoinKernels> = tables!(JoinKernels, join_kernels);

/// Floats per parallel task (whole planes, at least one; 128 KiB of `x`).
const PAR_CHUNK: usize = 1 << 15;
/// Joins smaller than this stay on the calling thread.
const PAR_MIN: usize = 1 << 17;

/// The fused activation: ReLU in the loop, identity, or another applied afterwards.
fn fused_act(act: Activation) -> bool {
    act == Activation::Relu
}

fn check(planes: usize, hw: usize, x: &[f32], s: &[f32], r: &[f32]) -> Result<(), KernelError> {
    let n = planes.checked_mul(hw).ok_or_else(|| {
        KernelError::invalid("scale_join", format!("{planes} planes of {hw} overflow"))
    })?;
    if x.len() != n || r.len() != n || s.len() != planes {
        return Err(KernelError::invalid(
            "scale_join",
            format!(
                "{planes} planes of {hw}: x has {}, r has {} (want {n}), s has {} (want {planes})",
                x.len(),
                r.len(),
                s.len()
            ),
        ));
    }
    Ok(())
}

/// `r = act(fma(x, s, r))` per plane (`x`, `r`: `[planes, hw]`, `s`: `[planes]`) with the path
/// [`Isa::current`] picks; the same bits on every path and for any thread count.
pub fn scale_join(
    act: Activation,
    planes: usize,
    hw: usize,
    x: &[f32],
    s: &[f32],
    r: &mut [f32],
) -> Result<(), KernelError> {
    join_on(TABLES.current()?, Isa::current()?, act, planes, hw, x, s, r)
}

/// [`scale_join`] on a given path (an error if the CPU lacks it).
pub fn scale_join_with(
    isa: Isa,
    act: Activation,
    planes: usize,
    hw: usize,
    x: &[f32],
    s: &[f32],
    r: &mut [f32],
) -> Result<(), KernelError> {
    join_on(TABLES.get(isa)?, isa, act, planes, hw, x, s, r)
}

#[allow(clippy::too_many_arguments)]
fn join_on(
    k: &'static JoinKernels,
    isa: Isa,
    act: Activation,
    planes: usize,
    hw: usize,
    x: &[f32],
    s: &[f32],
    r: &mut [f32],
) -> Result<(), KernelError> {
    check(planes, hw, x, s, r)?;
    if hw == 0 || planes == 0 {
        return Ok(());
    }
    let relu = fused_act(act);
    let run = |xc: &[f32], sc: &[f32], rc: &mut [f32]| {
        // SAFETY: `k` belongs to a checked ISA; `xc`, `rc` hold `sc.len() * hw` floats
        // (whole planes of the checked slices) and do not overlap (`&` / `&mut`).
        unsafe {
            (k.join)(
                xc.as_ptr(),
                sc.as_ptr(),
                rc.as_mut_ptr(),
                sc.len(),
                hw,
                relu,
            )
        };
        if !relu && act != Activation::Identity {
            crate::activation::slice::forward_inplace_with(isa, act, rc)
                .expect("the ISA was checked above");
        }
    };
    if planes * hw >= PAR_MIN && rayon::current_num_threads() > 1 {
        let per = (PAR_CHUNK / hw).max(1);
        let len = per * hw;
        crate::parallel::for_each_chunk_mut(r, len, |i, rc| {
            let xc = &x[i * len..][..rc.len()];
            run(xc, &s[i * per..][..rc.len() / hw], rc)
        });
    } else {
        run(x, s, r);
    }
    Ok(())
}

/// The reference: `r = act(fl32(x s + r))` element by element, the sum in f64 (the
/// activation in f64 and rounded, as the activations' scalar path).
pub fn scale_join_reference(
    act: Activation,
    planes: usize,
    hw: usize,
    x: &[f32],
    s: &[f32],
    r: &mut [f32],
) -> Result<(), KernelError> {
    check(planes, hw, x, s, r)?;
    for (p, &g) in s.iter().enumerate() {
        for (rv, &xv) in r[p * hw..(p + 1) * hw]
            .iter_mut()
            .zip(&x[p * hw..(p + 1) * hw])
        {
            *rv = act.apply_scalar(fused_f64(xv, g, *rv));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Operands whose join cancels: `r` near `-x s`, so the product's rounding would show.
    fn case(planes: usize, hw: usize, seed: u32) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
        let mut st = seed.wrapping_mul(2_654_435_761).wrapping_add(1);
        let mut u = move || {
            st ^= st << 13;
            st ^= st >> 17;
            st ^= st << 5;
            (st >> 8) as f32 / (1u32 << 24) as f32 - 0.5
        };
        let s: Vec<f32> = (0..planes).map(|_| 0.5 + u()).collect();
        let x: Vec<f32> = (0..planes * hw).map(|_| 8.0 * u()).collect();
        let r: Vec<f32> = x
            .iter()
            .enumerate()
            .map(|(i, &v)| -v * s[i / hw.max(1)] * (1.0 + 0.01 * u()) + 1e-3 * u())
            .collect();
        (x, s, r)
    }

    #[test]
    fn every_path_matches_the_fused_reference_bit_for_bit() {
        let acts = [Activation::Relu, Activation::Identity, Activation::Sigmoid];
        for isa in Isa::available() {
            for &(planes, hw) in &[(1, 1), (3, 7), (2, 15), (4, 16), (3, 17), (5, 33), (64, 49)] {
                for act in acts {
                    let (x, s, r0) = case(planes, hw, (planes * 131 + hw) as u32);
                    let (mut got, mut want) = (r0.clone(), r0.clone());
                    scale_join_with(isa, act, planes, hw, &x, &s, &mut got).unwrap();
                    scale_join_reference(act, planes, hw, &x, &s, &mut want).unwrap();
                    if act == Activation::Sigmoid && isa != Isa::Scalar {
                        // The vector sigmoid's own ulps after an identical join.
                        let mut joined = r0.clone();
                        scale_join_reference(Activation::Identity, planes, hw, &x, &s, &mut joined)
                            .unwrap();
                        crate::activation::slice::forward_inplace_with(isa, act, &mut joined)
                            .unwrap();
                        want = joined;
                    }
                    for (i, (g, w)) in got.iter().zip(&want).enumerate() {
                        assert_eq!(
                            g.to_bits(),
                            w.to_bits(),
                            "{isa} {act:?} {planes}x{hw} [{i}]"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn one_rounding_beats_two_on_a_cancelling_join() {
        // Against the exact f64 value: the fused join is within half an ulp of the output,
        // the two-rounding form is not.
        let (planes, hw) = (16, 256);
        let (x, s, r0) = case(planes, hw, 7);
        for isa in Isa::available() {
            let mut fused = r0.clone();
            scale_join_with(isa, Activation::Identity, planes, hw, &x, &s, &mut fused).unwrap();
            let (mut worst_fused, mut worst_two) = (0.0f64, 0.0f64);
            for i in 0..planes * hw {
                let exact = x[i] as f64 * s[i / hw] as f64 + r0[i] as f64;
                let ulp = (exact.abs() as f32).to_bits();
                let half = (f32::from_bits(ulp + 1) - f32::from_bits(ulp)) as f64 / 2.0;
                let two = x[i] * s[i / hw] + r0[i];
                worst_fused = worst_fused.max((fused[i] as f64 - exact).abs() / half);
                worst_two = worst_two.max((two as f64 - exact).abs() / half);
            }
            assert!(
                worst_fused <= 1.0,
                "{isa} fused join: {worst_fused} half-ulps"
            );
            assert!(worst_two > 4.0, "two roundings: only {worst_two} half-ulps");
        }
    }

    #[test]
    fn relu_propagates_nan_and_same_bits_for_any_thread_count() {
        let (planes, hw) = (40, 3136); // above the parallel threshold
        let (x, s, mut r0) = case(planes, hw, 3);
        r0[5] = f32::NAN;
        let mut par = r0.clone();
        scale_join(Activation::Relu, planes, hw, &x, &s, &mut par).unwrap();
        let mut one = r0.clone();
        rayon::ThreadPoolBuilder::new()
            .num_threads(1)
            .build()
            .unwrap()
            .install(|| scale_join(Activation::Relu, planes, hw, &x, &s, &mut one).unwrap());
        assert!(par[5].is_nan());
        assert!(par.iter().all(|v| v.is_nan() || *v >= 0.0));
        assert_eq!(
            par.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
            one.iter().map(|v| v.to_bits()).collect::<Vec<_>>()
        );
    }

    #[test]
    fn rejects_mismatched_lengths() {
        let mut r = vec![0.0; 6];
        assert!(scale_join(Activation::Relu, 2, 3, &[0.0; 5], &[1.0; 2], &mut r).is_err());
        assert!(scale_join(Activation::Relu, 2, 3, &[0.0; 6], &[1.0; 3], &mut r).is_err());
    }
}
