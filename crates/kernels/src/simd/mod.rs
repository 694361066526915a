//! The vector vocabulary every generic kernel body in this crate is written in: one trait,
//! [`Simd`], with one small implementation per ISA (`avx512.rs`, `avx2.rs`, `portable.rs` on
//! the `wide` crate, and `scalar.rs` with one lane). A kernel is written once as an
//! `#[inline(always)]` function generic over `S: Simd`, and each ISA instantiates it inside a
//! thin `#[target_feature]` wrapper, where the intrinsics inline (the pattern of
//! matrixmultiply, `pulp` and `simdeez`). Every ISA path therefore runs the code the tests
//! exercise on any host, and a new ISA is an impl of this trait, not a copy of each kernel.
//!
//! Lane semantics follow x86 where they matter for special values: [`Simd::min`] and
//! [`Simd::max`] return their *second* operand when either is NaN (`minps` / `maxps`), which
//! the activations use to propagate NaN; masks from the comparisons are all-ones / all-zeros
//! per lane (or a mask register on AVX-512).
//!
//! The integer methods (`iadd`, `isub`, `shl`, `sra`) act on the 32-bit patterns of the lanes:
//! the exponent tricks of [`crate::exp`] need no separate integer vector type.

#[cfg(target_arch = "x86_64")]
pub(crate) mod avx2;
#[cfg(target_arch = "x86_64")]
pub(crate) mod avx512;
pub(crate) mod portable;
pub(crate) mod scalar;

#[cfg(target_arch = "x86_64")]
pub(crate) use avx2::Avx2;
#[cfg(target_arch = "x86_64")]
pub(crate) use avx512::Avx512;
pub(crate) use portable::Portable;
pub(crate) use scalar::Scalar;

/// Builds a kernel family's [`crate::isa::Tables`]: `$build!(S)` / `$build!(S, "features")`
/// must expand to one table of the family's type `$ty` for the vector ISA `S`, its entry
/// points `#[target_feature(enable = features)]` wrappers around the generic bodies. The
/// optional last argument replaces the table of the scalar path (a family whose scalar path is
/// its reference rather than the generic body with one lane).
macro_rules! tables {
    ($ty:ty, $build:ident) => {
        $crate::simd::tables!($ty, $build, {
            static SCALAR: $ty = $build!($crate::simd::Scalar);
            &SCALAR
        })
    };
    ($ty:ty, $build:ident, $scalar:expr) => {{
        #[cfg(target_arch = "x86_64")]
        static AVX512: $ty = $build!($crate::simd::Avx512, "avx512f");
        #[cfg(target_arch = "x86_64")]
        static AVX2: $ty = $build!($crate::simd::Avx2, "avx2,fma");
        static PORTABLE: $ty = $build!($crate::simd::Portable);
        #[cfg(target_arch = "x86_64")]
        let x86: (Option<&'static $ty>, Option<&'static $ty>) = (Some(&AVX512), Some(&AVX2));
        #[cfg(not(target_arch = "x86_64"))]
        let x86: (Option<&'static $ty>, Option<&'static $ty>) = (None, None);
        $crate::isa::Tables::new(x86.0, x86.1, &PORTABLE, $scalar)
    }};
}
pub(crate) use tables;

/// A vector of `L` f32 lanes and its lane mask.
///
/// # Safety
/// Implementations are only called from code compiled for (and running on) their ISA: the
/// generic bodies are instantiated inside `#[target_feature]` functions that the dispatch
/// tables select only after [`crate::isa::Isa::check`]. Pointer arguments must be valid for
/// the stated number of floats.
pub(crate) unsafe trait Simd: Copy + 'static {
    /// Lanes per vector (at most 16).
    const L: usize;
    /// Whether [`Simd::lut8`] is one fast in-register permute, so table-driven formulas pay
    /// off (the flushing exp picks its table form on these ISAs).
    const FAST_LUT: bool = false;
    /// Whether [`Simd::load_masked`] is one masked load about as fast as a plain one (AVX-512's
    /// `vmovups` with a mask register). AVX2's `vmaskmovps` is not on AMD cores: the
    /// depthwise forward that reads planes in place with it measured 13-70% slower than its
    /// padded copy on Zen 4's AVX2 path, so that form uses masked loads only where this
    /// holds (elsewhere, see [`Simd::KEEP_EDGE_LOADS`]).
    const FAST_MASKED_LOAD: bool = false;
    /// Whether an edge load may instead read the whole vector and clear the lanes outside
    /// with one AND ([`Simd::keep`]) where the memory around is readable: a plain load and a
    /// logic op that any of AVX2's four vector pipes runs, so the FMA pipes stay free.
    const KEEP_EDGE_LOADS: bool = false;
    /// Architectural vector registers: how many accumulators a register tile can hold beside
    /// its operands.
    const VREGS: usize = 16;
    /// The register type.
    type V: Copy;
    /// A per-lane boolean (a vector of all-ones / all-zeros lanes, or a mask register).
    type M: Copy;

    /// All lanes `x`.
    unsafe fn splat(x: f32) -> Self::V;
    /// All lanes zero.
    #[inline(always)]
    unsafe fn zero() -> Self::V {
        // SAFETY: forwarded.
        unsafe { Self::splat(0.0) }
    }
    /// All lanes `*p` (one float read; a memory-operand broadcast on x86).
    #[allow(dead_code)] // for kernels that broadcast from memory (the GEMM microkernels)
    #[inline(always)]
    unsafe fn broadcast(p: *const f32) -> Self::V {
        // SAFETY: the caller passes one readable float.
        unsafe { Self::splat(p.read()) }
    }
    /// `L` floats from `p` (unaligned).
    unsafe fn load(p: *const f32) -> Self::V;
    /// `L` floats to `p` (unaligned).
    unsafe fn store(p: *mut f32, v: Self::V);

    /// `a * b + c` (fused where the ISA has FMA; the scalar and portable forms round twice).
    unsafe fn fma(a: Self::V, b: Self::V, c: Self::V) -> Self::V;
    /// `c - a * b` (fused where the ISA has FMA).
    unsafe fn fnma(a: Self::V, b: Self::V, c: Self::V) -> Self::V;
    /// Lane-wise `a * b`.
    unsafe fn mul(a: Self::V, b: Self::V) -> Self::V;
    /// Lane-wise `a + b`.
    unsafe fn add(a: Self::V, b: Self::V) -> Self::V;
    /// Lane-wise `a - b`.
    unsafe fn sub(a: Self::V, b: Self::V) -> Self::V;
    /// Lane-wise `a / b` (correctly rounded).
    unsafe fn div(a: Self::V, b: Self::V) -> Self::V;
    /// Lane-wise minimum; `b` when either is NaN (`minps`).
    unsafe fn min(a: Self::V, b: Self::V) -> Self::V;
    /// Lane-wise maximum; `b` when either is NaN (`maxps`).
    unsafe fn max(a: Self::V, b: Self::V) -> Self::V;

    /// Bitwise and (lanes of `mask` are all-ones or all-zeros, or any bit pattern).
    unsafe fn and(a: Self::V, mask: Self::V) -> Self::V;
    /// Bitwise or.
    unsafe fn or(a: Self::V, b: Self::V) -> Self::V;
    /// Bitwise `!a & b`.
    unsafe fn andnot(a: Self::V, b: Self::V) -> Self::V;
    /// `|v|` (the sign bit cleared).
    #[inline(always)]
    unsafe fn abs(v: Self::V) -> Self::V {
        // SAFETY: forwarded.
        unsafe { Self::andnot(Self::splat(-0.0), v) }
    }

    /// Lanes where `a > b` (false on NaN).
    unsafe fn gt(a: Self::V, b: Self::V) -> Self::M;
    /// Lanes where `a < b` (false on NaN).
    unsafe fn lt(a: Self::V, b: Self::V) -> Self::M;
    /// Lanes true in both masks.
    unsafe fn mask_and(a: Self::M, b: Self::M) -> Self::M;
    /// `m ? t : f` per lane.
    unsafe fn select(m: Self::M, t: Self::V, f: Self::V) -> Self::V;
    /// `m ? v : 0` per lane.
    unsafe fn keep(m: Self::M, v: Self::V) -> Self::V;
    /// `m ? 0 : v` per lane.
    unsafe fn clear(m: Self::M, v: Self::V) -> Self::V;
    /// `neg` where the sign bit of `x` is set (negative numbers, `-0`, negative NaN), else
    /// `pos` (one `blendv` on AVX2: no compare).
    unsafe fn select_sign(x: Self::V, neg: Self::V, pos: Self::V) -> Self::V;

    /// Sum of the lanes, in a fixed order per ISA (`hsum`).
    unsafe fn reduce(v: Self::V) -> f32;
    /// Maximum of the lanes (NaN lanes may be skipped).
    unsafe fn reduce_max(v: Self::V) -> f32;

    /// Lane-wise 32-bit integer `a + b` on the bit patterns.
    unsafe fn iadd(a: Self::V, b: Self::V) -> Self::V;
    /// Lane-wise 32-bit integer `a - b` on the bit patterns.
    unsafe fn isub(a: Self::V, b: Self::V) -> Self::V;
    /// Lane-wise bit pattern shifted left by `N`.
    unsafe fn shl<const N: u32>(v: Self::V) -> Self::V;
    /// Lane-wise bit pattern shifted right by `N`, arithmetic (sign-filling).
    unsafe fn sra<const N: u32>(v: Self::V) -> Self::V;
    /// Lane `i` of the result is `table[idx_i & 7]`, where `idx_i` is the bit pattern of lane
    /// `i` of `idx` and `table` holds 8 entries repeated twice. One permute where
    /// [`Simd::FAST_LUT`] (the table load is loop-invariant), a per-lane gather elsewhere.
    unsafe fn lut8(table: &[f32; 16], idx: Self::V) -> Self::V;

    /// A hint to bring the cache line holding `p` closer; `p` need not be valid (no access).
    #[inline(always)]
    unsafe fn prefetch(_p: *const f32) {}

    /// Asks for the cache line holding `p` in L2 only (a hint: never faults).
    #[inline(always)]
    unsafe fn prefetch_l2(_p: *const f32) {}

    /// The first `n < L` lanes of `v` to `p` (no access past them).
    #[inline(always)]
    unsafe fn store_first(p: *mut f32, v: Self::V, n: usize) {
        let mut tmp = [0.0f32; 16];
        // SAFETY: L <= 16; `p` holds n floats (caller's contract).
        unsafe {
            Self::store(tmp.as_mut_ptr(), v);
            std::ptr::copy_nonoverlapping(tmp.as_ptr(), p, n);
        }
    }

    /// The first `n < L` floats at `p` in the low lanes, zeros above (no access past them).
    #[inline(always)]
    unsafe fn load_first(p: *const f32, n: usize) -> Self::V {
        let mut tmp = [0.0f32; 16];
        // SAFETY: n < L <= 16; `p` holds n floats (caller's contract).
        unsafe {
            std::ptr::copy_nonoverlapping(p, tmp.as_mut_ptr(), n);
            Self::load(tmp.as_ptr())
        }
    }

    /// The mask of lanes `lo..hi` (`lo <= hi <= L`), for [`Simd::load_masked`]: built once
    /// and kept in a register where a loop reuses it.
    #[inline(always)]
    unsafe fn lane_range(lo: usize, hi: usize) -> Self::M {
        let mut iota = [0.0f32; 16];
        for (i, v) in iota.iter_mut().enumerate() {
            *v = i as f32;
        }
        // SAFETY: iota holds 16 >= L floats; lane i is in the range iff lo - 1/2 < i < hi - 1/2.
        unsafe {
            let i = Self::load(iota.as_ptr());
            Self::mask_and(
                Self::gt(i, Self::splat(lo as f32 - 0.5)),
                Self::lt(i, Self::splat(hi as f32 - 0.5)),
            )
        }
    }

    /// The lanes of `m` (from [`Simd::lane_range`]) loaded from the `L` floats at `p`, zeros
    /// elsewhere; the floats of the other lanes are not accessed, so `p` may point before (or
    /// `p + L` past) the memory it may read.
    #[inline(always)]
    unsafe fn load_masked(p: *const f32, m: Self::M) -> Self::V {
        let mut on = [0.0f32; 16];
        let mut tmp = [0.0f32; 16];
        // SAFETY: both arrays hold 16 >= L floats; lane i of `p` is read only when it is in
        // the mask, which the caller guarantees readable.
        unsafe {
            Self::store(
                on.as_mut_ptr(),
                Self::select(m, Self::splat(1.0), Self::zero()),
            );
            for i in 0..Self::L {
                if on[i] != 0.0 {
                    tmp[i] = *p.add(i);
                }
            }
            Self::load(tmp.as_ptr())
        }
    }

    /// The first `n < L` floats at `p` in the low lanes, `fill` above.
    #[inline(always)]
    unsafe fn load_first_or(p: *const f32, n: usize, fill: f32) -> Self::V {
        let mut tmp = [fill; 16];
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
    /// lane `j` of `r[i]` is the former lane `i` of `r[j]`. (AVX2: the 8x8 in-register
    /// transpose, 24 shuffles.)
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

    /// A mask keeping lanes `lo..hi` (all-ones bits) and zeroing the others, for [`Simd::and`].
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

/// Test helper: `fn $name(isa) -> $ret` running the generic `$generic::<S>()` on the
/// [`Simd`] impl of `isa`, inside a `#[target_feature]` wrapper for the x86 ones (the ISA
/// must be supported).
#[cfg(test)]
macro_rules! on_isa {
    ($name:ident, $generic:ident, $ret:ty) => {
        fn $name(isa: $crate::isa::Isa) -> $ret {
            #[cfg(target_arch = "x86_64")]
            #[target_feature(enable = "avx512f")]
            unsafe fn avx512() -> $ret {
                // SAFETY: called only when AVX-512F is supported.
                unsafe { $generic::<$crate::simd::Avx512>() }
            }
            #[cfg(target_arch = "x86_64")]
            #[target_feature(enable = "avx2,fma")]
            unsafe fn avx2() -> $ret {
                // SAFETY: called only when AVX2 + FMA are supported.
                unsafe { $generic::<$crate::simd::Avx2>() }
            }
            assert!(isa.is_supported(), "{isa} is not supported here");
            // SAFETY: the ISA is supported (checked above).
            unsafe {
                match isa {
                    #[cfg(target_arch = "x86_64")]
                    $crate::isa::Isa::Avx512 => avx512(),
                    #[cfg(target_arch = "x86_64")]
                    $crate::isa::Isa::Avx2 => avx2(),
                    $crate::isa::Isa::Portable => $generic::<$crate::simd::Portable>(),
                    _ => $generic::<$crate::simd::Scalar>(),
                }
            }
        }
    };
}
#[cfg(test)]
pub(crate) use on_isa;

#[cfg(test)]
mod tests;
