//! The small vector vocabulary the depthwise kernels are written in, so that one generic loop
//! nest (`kernel.rs`) serves every ISA. Each ISA file implements [`Simd`] with
//! `#[inline(always)]` methods and instantiates the generic kernels inside its own
//! `#[target_feature]` entry points, where the intrinsics inline (the pattern of `pulp` and
//! `simdeez`).

use crate::activation::Activation;

/// A vector of `L` f32 lanes.
///
/// # Safety
/// Implementations are only called from code compiled for (and running on) their ISA; pointer
/// arguments must be valid for the stated number of floats.
pub(crate) unsafe trait Simd: Copy {
    /// Lanes per vector.
    const L: usize;
    /// The register type.
    type V: Copy;
    /// All lanes `x`.
    unsafe fn splat(x: f32) -> Self::V;
    /// `L` floats from `p` (unaligned).
    unsafe fn load(p: *const f32) -> Self::V;
    /// `L` floats to `p` (unaligned).
    unsafe fn store(p: *mut f32, v: Self::V);
    /// `a * b + c`.
    unsafe fn fma(a: Self::V, b: Self::V, c: Self::V) -> Self::V;
    /// Lane-wise `a * b`.
    unsafe fn mul(a: Self::V, b: Self::V) -> Self::V;
    /// Lane-wise `a + b`.
    unsafe fn add(a: Self::V, b: Self::V) -> Self::V;
    /// Bitwise and (lanes of `mask` are all-ones or all-zeros).
    unsafe fn and(a: Self::V, mask: Self::V) -> Self::V;
    /// The activation on every lane (the activation module's vector form for this ISA).
    unsafe fn act(a: Activation, v: Self::V) -> Self::V;
    /// Sum of the lanes.
    unsafe fn reduce(v: Self::V) -> f32;

    /// A hint to bring the cache line holding `p` closer; `p` need not be valid (no access).
    #[inline(always)]
    unsafe fn prefetch(_p: *const f32) {}

    /// The first `n < L` lanes of `v` to `p`.
    #[inline(always)]
    unsafe fn store_first(p: *mut f32, v: Self::V, n: usize) {
        let mut tmp = [0.0f32; 16];
        // SAFETY: L <= 16; `p` holds n floats (caller's contract).
        unsafe {
            Self::store(tmp.as_mut_ptr(), v);
            std::ptr::copy_nonoverlapping(tmp.as_ptr(), p, n);
        }
    }

    /// The first `n < L` floats at `p` in the low lanes, zeros above.
    #[inline(always)]
    unsafe fn load_first(p: *const f32, n: usize) -> Self::V {
        let mut tmp = [0.0f32; 16];
        // SAFETY: n < L <= 16; `p` holds n floats (caller's contract).
        unsafe {
            std::ptr::copy_nonoverlapping(p, tmp.as_mut_ptr(), n);
            Self::load(tmp.as_ptr())
        }
    }

    /// Splits the `2L` floats `a ++ b` into their even- and odd-indexed elements.
    #[inline(always)]
    unsafe fn deinterleave(a: Self::V, b: Self::V) -> (Self::V, Self::V) {
        let (mut x, mut e, mut o) = ([0.0f32; 32], [0.0f32; 16], [0.0f32; 16]);
        // SAFETY: 2L <= 32 floats in x, L <= 16 in e and o.
        unsafe {
            Self::store(x.as_mut_ptr(), a);
            Self::store(x.as_mut_ptr().add(Self::L), b);
            for i in 0..Self::L {
                e[i] = x[2 * i];
                o[i] = x[2 * i + 1];
            }
            (Self::load(e.as_ptr()), Self::load(o.as_ptr()))
        }
    }

    /// The inverse of [`Simd::deinterleave`]: `(e0, o0, e1, o1, ...)` as two vectors.
    #[inline(always)]
    unsafe fn interleave(e: Self::V, o: Self::V) -> (Self::V, Self::V) {
        let (mut x, mut ea, mut oa) = ([0.0f32; 32], [0.0f32; 16], [0.0f32; 16]);
        // SAFETY: as in `deinterleave`.
        unsafe {
            Self::store(ea.as_mut_ptr(), e);
            Self::store(oa.as_mut_ptr(), o);
            for i in 0..Self::L {
                x[2 * i] = ea[i];
                x[2 * i + 1] = oa[i];
            }
            (Self::load(x.as_ptr()), Self::load(x.as_ptr().add(Self::L)))
        }
    }

    /// Transposes the `L x L` matrix whose rows are `r[0..L]` (`r.len() == L`): afterwards
    /// lane `j` of `r[i]` is the former lane `i` of `r[j]`.
    #[inline(always)]
    unsafe fn transpose(r: &mut [Self::V]) {
        let mut m = [0.0f32; 256];
        let l = Self::L;
        // SAFETY: L * L <= 256 floats in m; r holds L vectors (caller's contract).
        unsafe {
            for (i, v) in r.iter().enumerate().take(l) {
                Self::store(m.as_mut_ptr().add(i * l), *v);
            }
            let mut t = [0.0f32; 16];
            for (i, v) in r.iter_mut().enumerate().take(l) {
                for (j, tj) in t.iter_mut().enumerate().take(l) {
                    *tj = m[j * l + i];
                }
                *v = Self::load(t.as_ptr());
            }
        }
    }

    /// A mask keeping lanes `lo..hi` (all-ones bits) and zeroing the others.
    #[inline(always)]
    unsafe fn mask(lo: usize, hi: usize) -> Self::V {
        let mut m = [0.0f32; 16];
        for (i, v) in m.iter_mut().enumerate().take(Self::L) {
            if i >= lo && i < hi {
                *v = f32::from_bits(u32::MAX);
            }
        }
        // SAFETY: m holds 16 >= L floats.
        unsafe { Self::load(m.as_ptr()) }
    }
}

/// `S` with the activation fixed at compile time: `A` = 0 identity, 1 ReLU, 2 ReLU6,
/// 3 hard-swish (the depthwise activations of the four networks). With a runtime
/// [`Activation`], the inlined `match` over every activation (and its hoisted constants) sat
/// inside the tile loops and spilled registers: the identity forward ran at half speed. The
/// entry points pick a fixed instantiation with [`fixed_act_code`] and fall back to `S` itself
/// for the other activations.
#[derive(Clone, Copy)]
pub(crate) struct Fixed<S, const A: u8>(std::marker::PhantomData<S>);

/// The `A` of [`Fixed`] for `act`, if it has one.
pub(crate) fn fixed_act_code(act: Activation) -> Option<u8> {
    match act {
        Activation::Identity => Some(0),
        Activation::Relu => Some(1),
        Activation::Relu6 => Some(2),
        Activation::HardSwish => Some(3),
        _ => None,
    }
}

// SAFETY: every method forwards to `S`, whose contract is unchanged.
unsafe impl<S: Simd, const A: u8> Simd for Fixed<S, A> {
    const L: usize = S::L;
    type V = S::V;
    #[inline(always)]
    unsafe fn splat(x: f32) -> Self::V {
        // SAFETY: forwarded.
        unsafe { S::splat(x) }
    }
    #[inline(always)]
    unsafe fn load(p: *const f32) -> Self::V {
        // SAFETY: forwarded.
        unsafe { S::load(p) }
    }
    #[inline(always)]
    unsafe fn store(p: *mut f32, v: Self::V) {
        // SAFETY: forwarded.
        unsafe { S::store(p, v) }
    }
    #[inline(always)]
    unsafe fn fma(a: Self::V, b: Self::V, c: Self::V) -> Self::V {
        // SAFETY: forwarded.
        unsafe { S::fma(a, b, c) }
    }
    #[inline(always)]
    unsafe fn mul(a: Self::V, b: Self::V) -> Self::V {
        // SAFETY: forwarded.
        unsafe { S::mul(a, b) }
    }
    #[inline(always)]
    unsafe fn add(a: Self::V, b: Self::V) -> Self::V {
        // SAFETY: forwarded.
        unsafe { S::add(a, b) }
    }
    #[inline(always)]
    unsafe fn and(a: Self::V, mask: Self::V) -> Self::V {
        // SAFETY: forwarded.
        unsafe { S::and(a, mask) }
    }
    #[inline(always)]
    unsafe fn act(_a: Activation, v: Self::V) -> Self::V {
        // SAFETY: forwarded; the activation is a constant, so the match folds away.
        unsafe {
            match A {
                0 => v,
                1 => S::act(Activation::Relu, v),
                2 => S::act(Activation::Relu6, v),
                _ => S::act(Activation::HardSwish, v),
            }
        }
    }
    #[inline(always)]
    unsafe fn reduce(v: Self::V) -> f32 {
        // SAFETY: forwarded.
        unsafe { S::reduce(v) }
    }
    #[inline(always)]
    unsafe fn prefetch(p: *const f32) {
        // SAFETY: forwarded.
        unsafe { S::prefetch(p) }
    }
    #[inline(always)]
    unsafe fn store_first(p: *mut f32, v: Self::V, n: usize) {
        // SAFETY: forwarded.
        unsafe { S::store_first(p, v, n) }
    }
    #[inline(always)]
    unsafe fn load_first(p: *const f32, n: usize) -> Self::V {
        // SAFETY: forwarded.
        unsafe { S::load_first(p, n) }
    }
    #[inline(always)]
    unsafe fn deinterleave(a: Self::V, b: Self::V) -> (Self::V, Self::V) {
        // SAFETY: forwarded.
        unsafe { S::deinterleave(a, b) }
    }
    #[inline(always)]
    unsafe fn interleave(e: Self::V, o: Self::V) -> (Self::V, Self::V) {
        // SAFETY: forwarded.
        unsafe { S::interleave(e, o) }
    }
    #[inline(always)]
    unsafe fn transpose(r: &mut [Self::V]) {
        // SAFETY: forwarded.
        unsafe { S::transpose(r) }
    }
    #[inline(always)]
    unsafe fn mask(lo: usize, hi: usize) -> Self::V {
        // SAFETY: forwarded.
        unsafe { S::mask(lo, hi) }
    }
}

/// Calls `$f::<Fixed<$S, code>>($args)` for the fixed activations and `$f::<$S>` otherwise.
macro_rules! with_fixed_act {
    ($S:ty, $act:expr, $($f:ident)::+, ($($arg:expr),*)) => {
        match $crate::conv::depthwise::simd::fixed_act_code($act) {
            Some(0) => $($f)::+::<$crate::conv::depthwise::simd::Fixed<$S, 0>>($($arg),*),
            Some(1) => $($f)::+::<$crate::conv::depthwise::simd::Fixed<$S, 1>>($($arg),*),
            Some(2) => $($f)::+::<$crate::conv::depthwise::simd::Fixed<$S, 2>>($($arg),*),
            Some(_) => $($f)::+::<$crate::conv::depthwise::simd::Fixed<$S, 3>>($($arg),*),
            None => $($f)::+::<$S>($($arg),*),
        }
    };
}
pub(crate) use with_fixed_act;
