//! [`Simd`] with one lane (`f32`), so that a generic kernel body also serves the
//! `Isa::Scalar` path in plain Rust. `fma` multiplies then adds (two roundings, no software
//! fma), as the portable form does without `target-cpu` flags. The test oracles stay separate
//! (f64 references beside each kernel family).

use super::Simd;

/// The one-lane "vector ISA".
#[derive(Clone, Copy)]
pub(crate) struct Scalar;

// SAFETY: plain Rust for any target; the only unsafe operations are the raw loads and
// stores, whose pointers the callers guarantee.
unsafe impl Simd for Scalar {
    const L: usize = 1;
    type V = f32;
    type M = bool;

    #[inline(always)]
    unsafe fn splat(x: f32) -> f32 {
        x
    }
    #[inline(always)]
    unsafe fn load(p: *const f32) -> f32 {
        // SAFETY: the caller passes 1 readable float.
        unsafe { p.read() }
    }
    #[inline(always)]
    unsafe fn store(p: *mut f32, v: f32) {
        // SAFETY: the caller passes 1 writable float.
        unsafe { p.write(v) }
    }
    #[inline(always)]
    unsafe fn fma(a: f32, b: f32, c: f32) -> f32 {
        a * b + c
    }
    #[inline(always)]
    unsafe fn fnma(a: f32, b: f32, c: f32) -> f32 {
        c - a * b
    }
    #[inline(always)]
    unsafe fn mul(a: f32, b: f32) -> f32 {
        a * b
    }
    #[inline(always)]
    unsafe fn add(a: f32, b: f32) -> f32 {
        a + b
    }
    #[inline(always)]
    unsafe fn sub(a: f32, b: f32) -> f32 {
        a - b
    }
    #[inline(always)]
    unsafe fn div(a: f32, b: f32) -> f32 {
        a / b
    }
    #[inline(always)]
    unsafe fn min(a: f32, b: f32) -> f32 {
        if a < b {
            a
        } else {
            b
        }
    }
    #[inline(always)]
    unsafe fn max(a: f32, b: f32) -> f32 {
        if a > b {
            a
        } else {
            b
        }
    }
    #[inline(always)]
    unsafe fn and(a: f32, mask: f32) -> f32 {
        f32::from_bits(a.to_bits() & mask.to_bits())
    }
    #[inline(always)]
    unsafe fn or(a: f32, b: f32) -> f32 {
        f32::from_bits(a.to_bits() | b.to_bits())
    }
    #[inline(always)]
    unsafe fn andnot(a: f32, b: f32) -> f32 {
        f32::from_bits(!a.to_bits() & b.to_bits())
    }
    #[inline(always)]
    unsafe fn abs(v: f32) -> f32 {
        v.abs()
    }
    #[inline(always)]
    unsafe fn gt(a: f32, b: f32) -> bool {
        a > b
    }
    #[inline(always)]
    unsafe fn lt(a: f32, b: f32) -> bool {
        a < b
    }
    #[inline(always)]
    unsafe fn mask_and(a: bool, b: bool) -> bool {
        a && b
    }
    #[inline(always)]
    unsafe fn select(m: bool, t: f32, f: f32) -> f32 {
        if m {
            t
        } else {
            f
        }
    }
    #[inline(always)]
    unsafe fn keep(m: bool, v: f32) -> f32 {
        if m {
            v
        } else {
            0.0
        }
    }
    #[inline(always)]
    unsafe fn clear(m: bool, v: f32) -> f32 {
        if m {
            0.0
        } else {
            v
        }
    }
    #[inline(always)]
    unsafe fn select_sign(x: f32, neg: f32, pos: f32) -> f32 {
        if x.is_sign_negative() {
            neg
        } else {
            pos
        }
    }
    #[inline(always)]
    unsafe fn reduce(v: f32) -> f32 {
        v
    }
    #[inline(always)]
    unsafe fn reduce_max(v: f32) -> f32 {
        v
    }
    #[inline(always)]
    unsafe fn iadd(a: f32, b: f32) -> f32 {
        f32::from_bits(a.to_bits().wrapping_add(b.to_bits()))
    }
    #[inline(always)]
    unsafe fn isub(a: f32, b: f32) -> f32 {
        f32::from_bits(a.to_bits().wrapping_sub(b.to_bits()))
    }
    #[inline(always)]
    unsafe fn shl<const N: u32>(v: f32) -> f32 {
        f32::from_bits(v.to_bits() << N)
    }
    #[inline(always)]
    unsafe fn sra<const N: u32>(v: f32) -> f32 {
        f32::from_bits(((v.to_bits() as i32) >> N) as u32)
    }
    #[inline(always)]
    unsafe fn lut8(table: &[f32; 16], idx: f32) -> f32 {
        table[(idx.to_bits() & 7) as usize]
    }
}
