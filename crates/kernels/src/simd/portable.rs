//! [`Simd`] on the `wide` crate's `f32x8` (8 lanes; instructions chosen at compile time, so
//! without `target-cpu` flags two SSE halves and an unfused `mul_add`). Masks are all-ones
//! lanes of an `f32x8`. Runs on any target.

use super::Simd;
use wide::{f32x8, i32x8, CmpGt, CmpLt};

/// The portable vector ISA.
#[derive(Clone, Copy)]
pub(crate) struct Portable;

#[inline(always)]
fn bits(v: f32x8) -> i32x8 {
    // SAFETY: f32x8 and i32x8 are plain 32-byte vectors of 8 lanes (bytemuck::Pod); every
    // bit pattern is valid for both.
    unsafe { std::mem::transmute::<f32x8, i32x8>(v) }
}

#[inline(always)]
fn float(v: i32x8) -> f32x8 {
    // SAFETY: as in `bits`.
    unsafe { std::mem::transmute::<i32x8, f32x8>(v) }
}

// SAFETY: `wide` compiles for any target; the only unsafe operations are the raw loads and
// stores, whose pointers the callers guarantee.
unsafe impl Simd for Portable {
    const L: usize = 8;
    type V = f32x8;
    type M = f32x8;

    #[inline(always)]
    unsafe fn splat(x: f32) -> f32x8 {
        f32x8::splat(x)
    }
    #[inline(always)]
    unsafe fn load(p: *const f32) -> f32x8 {
        // SAFETY: the caller passes 8 readable floats.
        f32x8::from(unsafe { std::ptr::read_unaligned(p as *const [f32; 8]) })
    }
    #[inline(always)]
    unsafe fn store(p: *mut f32, v: f32x8) {
        // SAFETY: the caller passes 8 writable floats.
        unsafe { std::ptr::write_unaligned(p as *mut [f32; 8], v.to_array()) }
    }
    #[inline(always)]
    unsafe fn fma(a: f32x8, b: f32x8, c: f32x8) -> f32x8 {
        a.mul_add(b, c)
    }
    #[inline(always)]
    unsafe fn fnma(a: f32x8, b: f32x8, c: f32x8) -> f32x8 {
        a.mul_neg_add(b, c)
    }
    #[inline(always)]
    unsafe fn mul(a: f32x8, b: f32x8) -> f32x8 {
        a * b
    }
    #[inline(always)]
    unsafe fn add(a: f32x8, b: f32x8) -> f32x8 {
        a + b
    }
    #[inline(always)]
    unsafe fn sub(a: f32x8, b: f32x8) -> f32x8 {
        a - b
    }
    #[inline(always)]
    unsafe fn div(a: f32x8, b: f32x8) -> f32x8 {
        a / b
    }
    #[inline(always)]
    unsafe fn min(a: f32x8, b: f32x8) -> f32x8 {
        // `minps` on x86 (second operand on NaN).
        a.fast_min(b)
    }
    #[inline(always)]
    unsafe fn max(a: f32x8, b: f32x8) -> f32x8 {
        a.fast_max(b)
    }
    #[inline(always)]
    unsafe fn and(a: f32x8, mask: f32x8) -> f32x8 {
        a & mask
    }
    #[inline(always)]
    unsafe fn or(a: f32x8, b: f32x8) -> f32x8 {
        a | b
    }
    #[inline(always)]
    unsafe fn andnot(a: f32x8, b: f32x8) -> f32x8 {
        !a & b
    }
    #[inline(always)]
    unsafe fn abs(v: f32x8) -> f32x8 {
        v.abs()
    }
    #[inline(always)]
    unsafe fn gt(a: f32x8, b: f32x8) -> f32x8 {
        a.cmp_gt(b)
    }
    #[inline(always)]
    unsafe fn lt(a: f32x8, b: f32x8) -> f32x8 {
        a.cmp_lt(b)
    }
    #[inline(always)]
    unsafe fn mask_and(a: f32x8, b: f32x8) -> f32x8 {
        a & b
    }
    #[inline(always)]
    unsafe fn select(m: f32x8, t: f32x8, f: f32x8) -> f32x8 {
        m.blend(t, f)
    }
    #[inline(always)]
    unsafe fn keep(m: f32x8, v: f32x8) -> f32x8 {
        m & v
    }
    #[inline(always)]
    unsafe fn clear(m: f32x8, v: f32x8) -> f32x8 {
        !m & v
    }
    #[inline(always)]
    unsafe fn select_sign(x: f32x8, neg: f32x8, pos: f32x8) -> f32x8 {
        // The sign bit spread over the lane: an all-ones / all-zeros mask.
        float(bits(x) >> 31).blend(neg, pos)
    }
    #[inline(always)]
    unsafe fn reduce(v: f32x8) -> f32 {
        v.reduce_add()
    }
    #[inline(always)]
    unsafe fn reduce_max(v: f32x8) -> f32 {
        v.to_array().into_iter().fold(f32::NEG_INFINITY, f32::max)
    }
    #[inline(always)]
    unsafe fn iadd(a: f32x8, b: f32x8) -> f32x8 {
        float(bits(a) + bits(b))
    }
    #[inline(always)]
    unsafe fn isub(a: f32x8, b: f32x8) -> f32x8 {
        float(bits(a) - bits(b))
    }
    #[inline(always)]
    unsafe fn shl<const N: u32>(v: f32x8) -> f32x8 {
        float(bits(v) << N)
    }
    #[inline(always)]
    unsafe fn sra<const N: u32>(v: f32x8) -> f32x8 {
        float(bits(v) >> N)
    }
    #[inline(always)]
    unsafe fn lut8(table: &[f32; 16], idx: f32x8) -> f32x8 {
        f32x8::from(bits(idx).to_array().map(|i| table[(i & 7) as usize]))
    }
}
