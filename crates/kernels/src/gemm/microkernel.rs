//! The GEMM microkernel, written once over the crate's vector trait ([`Simd`]) and
//! instantiated per ISA and register tile by thin `#[target_feature]` wrappers (the pattern of
//! matrixmultiply and pulp). See `kernel.rs` for the contract and `table.rs` for the list.
//!
//! An `MR x NR` tile (`NR = NV * L` lanes) keeps `MR * NV` accumulators in registers. Per k
//! step it loads the NV vectors of one B row, broadcasts each of the MR values of the A
//! column, and issues `MR * NV` FMAs:
//!
//! | kernel | accumulators | loads per k | FMAs per k | fits |
//! |---|---|---|---|---|
//! | `avx512_12x32` | 24 zmm | 2 + 12 broadcasts | 24 | 32 zmm: 24 + 2 B + broadcast |
//! | `avx512_24x16` | 24 zmm | 1 + 24 broadcasts | 24 | narrower B panel: larger KC on a 32 KiB L1d |
//! | `avx2_6x16` | 12 ymm | 2 + 6 broadcasts | 12 | 16 ymm: 12 + 2 B + broadcast |
//! | `portable_4x16` | 8 `f32x8` | 2 + 4 broadcasts | 8 | `wide`, any target |
//!
//! The full tiles have short twins (`avx512_4x32_of12`, ...): the same body computing only the
//! first rows of a taller packed A panel, for the last row panel of a product whose M is not a
//! multiple of MR (M = 16 on a 12-row tile would otherwise spend a third of its FMAs on
//! padding rows and go through a padded temporary tile).
//!
//! The tiles of more than one B vector also have narrow twins (`avx512_12x16_of32`,
//! `avx2_6x8_of16`, `portable_4x8_of16`, with short twins of their own for the corner): the
//! same body over the first vector of each B row, for the last column panel when N modulo NR
//! fits in it. N = 196 (a 14 x 14 plane) on a 32-wide tile leaves 4 columns: the full tile
//! would spend 28/32 of that panel's FMAs on padding, the narrow one 12/16. The 12 x 32 tile
//! also has an 8-wide twin on 256-bit vectors (`avx512_12x8_of32`, the same FMA per element):
//! a double-pumped AVX-512 core (Zen 4) issues two 256-bit FMAs per cycle against one 512-bit,
//! so there the 4 columns cost half of what the 16-wide twin spends; a core with two 512-bit
//! pipes runs it at the 16-wide twin's speed.
//!
//! Each has a one-row twin (`avx512_1x32`, `avx512_1x16`, `avx2_1x16`, `portable_1x16`), the
//! same body with MR = 1, for products with a single row: a padded 12-row tile would spend
//! 11/12 of its FMAs on padding there. Its NV accumulators form one FMA chain per vector, so
//! it is bound by the FMA latency rather than throughput, still several times faster than
//! the padded tile, and it accumulates every element in the same order as the full tile.
//!
//! Two full-width 512-bit FMA pipes (Intel Skylake-SP to Sapphire Rapids) retire a 12 x 32
//! step in 12 cycles; a double-pumped one (AMD Zen 4) in 24, with the loads inside the load
//! ports either way. After the k loop each accumulator goes through the epilogue
//! (`alpha`, `beta * C`, scale, bias, activation) in registers before one store.

use super::kernel::{TileEpilogue, WIDE_PANELS};
use super::microkernel_t as transposed;
use crate::activation::vector::{kind, with_kind, VecAct};
use crate::activation::Activation;
use crate::simd::Simd;

/// One k step: the NV vectors of a B row, a broadcast of each of the MR values of the A column,
/// `MR * NV` FMAs. A function, not a closure in [`tile`]: a closure does not inherit the
/// `#[target_feature]`s of the wrapper that instantiates `tile`, and then the intrinsics in it
/// are not inlined (each FMA becomes a call).
///
/// # Safety
/// `a` holds MR floats and `b` NV * S::L floats; `S`'s ISA is enabled in the caller.
#[inline(always)]
unsafe fn step<S: Simd, const MR: usize, const NV: usize>(
    acc: &mut [[S::V; NV]; MR],
    a: *const f32,
    b: *const f32,
) {
    // SAFETY: the function's contract.
    unsafe {
        let mut bv = [S::zero(); NV];
        for (v, x) in bv.iter_mut().enumerate() {
            *x = S::load(b.add(v * S::L));
        }
        for (i, row) in acc.iter_mut().enumerate() {
            let ai = S::broadcast(a.add(i));
            for v in 0..NV {
                row[v] = S::fma(ai, bv[v], row[v]);
            }
        }
    }
}

/// The shared body: an `MR x (NV * S::L)` tile, reading A panels packed `AS` rows tall
/// (`AS = MR` for a full tile; `AS > MR` for a short tile that computes the first MR rows of a
/// taller panel, see [`super::kernel::ShortKernel`]).
///
/// # Safety
/// The contract of [`super::kernel::MicroKernelFn`] with `NR = NV * S::L` and A panels of
/// `kc * AS` floats; the CPU supports `S`'s ISA (every caller is a `#[target_feature]` wrapper
/// below).
#[inline(always)]
unsafe fn tile<S: Simd, const MR: usize, const NV: usize, const AS: usize, const TR: bool>(
    kc: usize,
    a: *const f32,
    b: *const f32,
    rsb: usize,
    c: *mut f32,
    rsc: usize,
    epi: &TileEpilogue,
) {
    let nr = NV * S::L;
    // SAFETY (whole body): a holds kc * AS floats (AS >= MR) and b kc rows of NR floats rsb
    // apart, read one k-slice per step; the tile at c is MR rows of NR floats `rsc` apart; S's ISA is enabled.
    unsafe {
        // Bring the C tile towards L1 while the k loop runs: the epilogue reads (beta, middle
        // depth blocks) and writes it, and its rows are far apart.
        #[cfg(target_arch = "x86_64")]
        if TR {
            for j in 0..nr {
                S::prefetch(c.wrapping_add(j * rsc));
            }
        } else {
            use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
            for i in 0..MR {
                _mm_prefetch::<_MM_HINT_T0>(c.wrapping_add(i * rsc) as *const i8);
                _mm_prefetch::<_MM_HINT_T0>(c.wrapping_add(i * rsc + nr - 1) as *const i8);
            }
        }
        let mut acc = [[S::zero(); NV]; MR];
        let (mut a, mut b) = (a, b);
        // The next in-place B panel, one row (its NR floats: up to three cache lines) per k
        // step, spread over the loop (a burst of them up front would fill the line-fill
        // buffers the kernel's own loads need).
        let (mut pf, pf_rs) = (epi.prefetch, epi.prefetch_rs);
        let mut cp = epi.copy_to;
        if !cp.is_null() {
            // The next panel's copy (see `TileEpilogue::copy_to`): one of its rows per k step,
            // on the load and store ports the FMAs leave idle, a few rows ahead asked for
            // explicitly (the first tile of the panel brought them to L2).
            const AHEAD: usize = 4;
            for _ in 0..kc {
                S::prefetch(pf.wrapping_add(AHEAD * pf_rs));
                S::prefetch(pf.wrapping_add(AHEAD * pf_rs + nr - 1));
                let mut row = [S::zero(); NV];
                for (v, x) in row.iter_mut().enumerate() {
                    *x = S::load(pf.add(v * S::L));
                }
                step::<S, MR, NV>(&mut acc, a, b);
                for (v, x) in row.iter().enumerate() {
                    S::store(cp.add(v * S::L), *x);
                }
                a = a.add(AS);
                b = b.add(rsb);
                pf = pf.add(pf_rs);
                cp = cp.add(nr);
            }
        } else if !pf.is_null() {
            // The hint chosen once, outside the k loop.
            if epi.prefetch_l2 {
                steps_prefetching::<S, MR, NV, AS, true>(&mut acc, kc, a, b, rsb, pf, pf_rs);
            } else {
                steps_prefetching::<S, MR, NV, AS, false>(&mut acc, kc, a, b, rsb, pf, pf_rs);
            }
        }
        let kc = if epi.prefetch.is_null() { kc } else { 0 };
        // Unrolled by 4 to amortise the loop counter; the remainder one step at a time.
        for _ in 0..kc / 4 {
            step::<S, MR, NV>(&mut acc, a, b);
            step::<S, MR, NV>(&mut acc, a.add(AS), b.add(rsb));
            step::<S, MR, NV>(&mut acc, a.add(2 * AS), b.add(2 * rsb));
            step::<S, MR, NV>(&mut acc, a.add(3 * AS), b.add(3 * rsb));
            a = a.add(4 * AS);
            b = b.add(4 * rsb);
        }
        for _ in 0..kc % 4 {
            step::<S, MR, NV>(&mut acc, a, b);
            a = a.add(AS);
            b = b.add(rsb);
        }
        finish::<S, MR, NV, TR>(&mut acc, c, rsc, epi);
    }
}

/// `kc` k steps of [`tile`] that also prefetch one row of the next B panel each (its NR
/// floats: up to three cache lines), into L2 only when `L2`. Not unrolled: measured faster
/// than the unrolled loop with the prefetches interleaved (24 x 3136 x 96 on Sapphire Rapids,
/// 155 against 140 GFLOP/s).
///
/// # Safety
/// As [`tile`]: `a` holds `kc * AS` floats and `b` `kc` rows of NR floats `rsb` apart; `pf`
/// need not be valid (prefetches never fault).
#[inline(always)]
unsafe fn steps_prefetching<
    S: Simd,
    const MR: usize,
    const NV: usize,
    const AS: usize,
    const L2: bool,
>(
    acc: &mut [[S::V; NV]; MR],
    kc: usize,
    mut a: *const f32,
    mut b: *const f32,
    rsb: usize,
    mut pf: *const f32,
    pf_rs: usize,
) {
    let nr = NV * S::L;
    // SAFETY: the function's contract.
    unsafe {
        for _ in 0..kc {
            for line in [pf, pf.wrapping_add(nr / 2), pf.wrapping_add(nr - 1)] {
                if L2 {
                    S::prefetch_l2(line);
                } else {
                    S::prefetch(line);
                }
            }
            step::<S, MR, NV>(acc, a, b);
            a = a.add(AS);
            b = b.add(rsb);
            pf = pf.wrapping_add(pf_rs);
        }
    }
}

/// The epilogue of an `MR x (NV * S::L)` tile of accumulators (see `kernel.rs` for its
/// order), stored at `c` with row stride `rsc`, or transposed (`TR`, see [`transposed`]).
/// Shared with the convolution kernels that compute GEMM tiles without packed operands
/// (`conv/implicit.rs`).
///
/// Every accumulator must be named by a constant index for the tile to stay in registers: a
/// loop that the compiler does not unroll indexes `acc` in memory, and then the whole tile is
/// zeroed on the stack before the k loop and spilled after it (a 1.5 KiB memset and 24 stores
/// per 12 x 32 tile, a third of the work at kc = 16). So the first pass (scale, beta * C,
/// biases, and the one- or two-instruction activations) is short enough to unroll; the other
/// activations run as a second pass over the stored tile, which is in L1.
///
/// # Safety
/// As [`store_tile`]; `S`'s ISA is enabled in the caller.
#[inline(always)]
pub(crate) unsafe fn finish<S: Simd, const MR: usize, const NV: usize, const TR: bool>(
    acc: &mut [[S::V; NV]; MR],
    c: *mut f32,
    rsc: usize,
    epi: &TileEpilogue,
) {
    // SAFETY: the function's contract.
    unsafe {
        match epi.activation {
            Activation::Identity => {
                store_tile::<S, MR, NV, TR, _>(acc, c, rsc, epi, kind::Identity)
            }
            Activation::Relu => store_tile::<S, MR, NV, TR, _>(acc, c, rsc, epi, kind::Relu),
            Activation::Relu6 => store_tile::<S, MR, NV, TR, _>(acc, c, rsc, epi, kind::Relu6),
            act => {
                store_tile::<S, MR, NV, TR, _>(acc, c, rsc, epi, kind::Identity);
                if TR {
                    with_kind!(act, f => transposed::activate::<S, MR, NV, _>(c, rsc, f));
                } else {
                    with_kind!(act, f => activate_tile::<S, MR, NV, _>(c, rsc, f));
                }
            }
        }
    }
}

/// How far ahead, in floats of one B panel, [`row_wide`] prefetches its panels.
const ROW_AHEAD: usize = 1024;

/// Floats in one 64-byte cache line: one prefetch per line.
const LINE_FLOATS: usize = 16;

/// The one-row body over [`WIDE_PANELS`] B micro-panels of `NV` vectors each (`NW = NV *
/// WIDE_PANELS` accumulators): the same k order per element as [`tile`] with `MR = 1`.
///
/// # Safety
/// The contract of [`super::kernel::RowWideFn`] with `nr = NV * S::L`; the CPU supports `S`.
#[inline(always)]
unsafe fn row_wide<S: Simd, const NV: usize, const NW: usize>(
    kc: usize,
    a: *const f32,
    b: *const f32,
    panel_stride: usize,
    c: *mut f32,
    epi: &TileEpilogue,
) {
    let nr = NV * S::L;
    // Each panel is one stream of `nr` floats per k step, from memory when the weights are
    // cold (a batch-1 classifier streams megabytes once per inference): each asks for its
    // line ROW_AHEAD floats ahead into L2, as the squeeze-excitation gate does.
    let ahead = ROW_AHEAD.div_ceil(nr) * nr;
    // SAFETY (whole body): a holds kc floats, each panel kc * nr floats; the NW vectors of C
    // are contiguous at c; S's ISA is enabled; a prefetch never accesses memory, so its
    // address may lie past the panels.
    unsafe {
        let mut acc = [[S::zero(); NW]; 1];
        for p in 0..kc {
            for w in 0..NW / NV {
                let next = b.wrapping_add(w * panel_stride + p * nr + ahead);
                for line in 0..nr.div_ceil(LINE_FLOATS) {
                    S::prefetch_l2(next.wrapping_add(line * LINE_FLOATS));
                }
            }
            let ai = S::broadcast(a.add(p));
            for (w, x) in acc[0].iter_mut().enumerate() {
                let bv = S::load(b.add((w / NV) * panel_stride + p * nr + (w % NV) * S::L));
                *x = S::fma(ai, bv, *x);
            }
        }
        match epi.activation {
            Activation::Identity => {
                store_tile::<S, 1, NW, false, _>(&mut acc, c, 0, epi, kind::Identity)
            }
            Activation::Relu => store_tile::<S, 1, NW, false, _>(&mut acc, c, 0, epi, kind::Relu),
            Activation::Relu6 => store_tile::<S, 1, NW, false, _>(&mut acc, c, 0, epi, kind::Relu6),
            act => {
                store_tile::<S, 1, NW, false, _>(&mut acc, c, 0, epi, kind::Identity);
                with_kind!(act, f => activate_tile::<S, 1, NW, _>(c, 0, f));
            }
        }
    }
}

/// The first epilogue pass: `f(scale * (alpha * acc + beta * C) + bias)` stored over the tile. One
/// loop per term, each branch outside its loop, so each loop is small enough to unroll fully.
/// With `TR`, C is stored transposed (see [`transposed`]): element `(i, j)` at `c + j * rsc + i`.
///
/// # Safety
/// As [`tile`]: the tile at `c` (readable when `epi.load_c`), the bias and scale pointers.
#[inline(always)]
unsafe fn store_tile<S: Simd, const MR: usize, const NV: usize, const TR: bool, A: VecAct>(
    acc: &mut [[S::V; NV]; MR],
    c: *mut f32,
    rsc: usize,
    epi: &TileEpilogue,
    f: A,
) {
    // SAFETY: the function's contract.
    unsafe {
        if epi.alpha != 1.0 {
            let alpha = S::splat(epi.alpha);
            for row in acc.iter_mut() {
                for x in row.iter_mut() {
                    *x = S::mul(*x, alpha);
                }
            }
        }
        if epi.load_c && TR {
            transposed::add_beta_c::<S, MR, NV>(acc, c, rsc, S::splat(epi.beta));
        } else if epi.load_c {
            let beta = S::splat(epi.beta);
            for (i, row) in acc.iter_mut().enumerate() {
                for (h, x) in row.iter_mut().enumerate() {
                    *x = S::fma(S::load(c.add(i * rsc + h * S::L)), beta, *x);
                }
            }
        }
        if !epi.scale_row.is_null() {
            for (i, row) in acc.iter_mut().enumerate() {
                let s = S::broadcast(epi.scale_row.add(i));
                for x in row.iter_mut() {
                    *x = S::mul(*x, s);
                }
            }
        }
        if !epi.scale_col.is_null() {
            for h in 0..NV {
                let s = S::load(epi.scale_col.add(h * S::L));
                for row in acc.iter_mut() {
                    row[h] = S::mul(row[h], s);
                }
            }
        }
        if !epi.bias_row.is_null() {
            for (i, row) in acc.iter_mut().enumerate() {
                let b = S::broadcast(epi.bias_row.add(i));
                for x in row.iter_mut() {
                    *x = S::add(*x, b);
                }
            }
        }
        if !epi.bias_col.is_null() {
            for h in 0..NV {
                let b = S::load(epi.bias_col.add(h * S::L));
                for row in acc.iter_mut() {
                    row[h] = S::add(row[h], b);
                }
            }
        }
        if TR {
            transposed::store::<S, MR, NV, A>(acc, c, rsc, f);
            return;
        }
        for (i, row) in acc.iter().enumerate() {
            for (h, &x) in row.iter().enumerate() {
                S::store(c.add(i * rsc + h * S::L), f.apply::<S>(x));
            }
        }
    }
}

/// The second epilogue pass: `C = f(C)` over the `MR x NV * S::L` tile.
///
/// # Safety
/// As [`tile`]: the tile at `c`, readable and writable.
#[inline(always)]
unsafe fn activate_tile<S: Simd, const MR: usize, const NV: usize, A: VecAct>(
    c: *mut f32,
    rsc: usize,
    f: A,
) {
    // SAFETY: the function's contract.
    unsafe {
        for i in 0..MR {
            for h in 0..NV {
                let cp = c.add(i * rsc + h * S::L);
                S::store(cp, f.apply::<S>(S::load(cp)));
            }
        }
    }
}

/// Declares one ISA entry point per (ISA, tile): a `#[target_feature]` wrapper that
/// instantiates [`tile`], where the vector intrinsics inline. `MR x NV` reads A panels `MR`
/// rows tall; `MR x NV / AS` is a short tile over panels `AS` rows tall; `transposed` stores C
/// column by column (`microkernel_t.rs`). Without a feature string (the portable kernels, on
/// `wide`, which picks its instructions at compile time) the wrapper has no target feature.
macro_rules! kernels {
    ($($(#[$cfg:meta])* $name:ident: $simd:ty, $mr:literal x $nv:literal $(/ $as:literal)? $(, $tr:ident)? $(, $feat:literal)?;)*) => {$(
        $(#[$cfg])*
        /// # Safety
        /// See [`super::kernel::MicroKernelFn`]; the CPU supports this kernel's ISA.
        $(#[target_feature(enable = $feat)])?
        pub(crate) unsafe fn $name(
            kc: usize,
            a: *const f32,
            b: *const f32,
            rsb: usize,
            c: *mut f32,
            rsc: usize,
            epi: &TileEpilogue,
        ) {
            // SAFETY: forwarded contract; the features are enabled on this function.
            unsafe {
                tile::<$simd, $mr, $nv, { kernels!(@as $mr $(, $as)?) }, { kernels!(@tr $($tr)?) }>(
                    kc, a, b, rsb, c, rsc, epi,
                )
            }
        }
    )*};
    (@as $mr:literal) => { $mr };
    (@as $mr:literal, $as:literal) => { $as };
    (@tr) => { false };
    (@tr transposed) => { true };
}

kernels! {
    #[cfg(target_arch = "x86_64")]
    avx512_12x32: crate::simd::Avx512, 12 x 2, "avx512f";
    #[cfg(target_arch = "x86_64")]
    avx512_4x32_of12: crate::simd::Avx512, 4 x 2 / 12, "avx512f";
    #[cfg(target_arch = "x86_64")]
    avx512_8x32_of12: crate::simd::Avx512, 8 x 2 / 12, "avx512f";
    #[cfg(target_arch = "x86_64")]
    avx512_12x32_t: crate::simd::Avx512, 12 x 2, transposed, "avx512f";
    #[cfg(target_arch = "x86_64")]
    avx512_12x16_of32: crate::simd::Avx512, 12 x 1, "avx512f";
    #[cfg(target_arch = "x86_64")]
    avx512_4x16_of12x32: crate::simd::Avx512, 4 x 1 / 12, "avx512f";
    #[cfg(target_arch = "x86_64")]
    avx512_8x16_of12x32: crate::simd::Avx512, 8 x 1 / 12, "avx512f";
    #[cfg(target_arch = "x86_64")]
    avx512_12x8_of32: crate::simd::Avx2, 12 x 1, "avx512f,avx512vl,avx2,fma";
    #[cfg(target_arch = "x86_64")]
    avx512_4x8_of12x32: crate::simd::Avx2, 4 x 1 / 12, "avx512f,avx512vl,avx2,fma";
    #[cfg(target_arch = "x86_64")]
    avx512_8x8_of12x32: crate::simd::Avx2, 8 x 1 / 12, "avx512f,avx512vl,avx2,fma";
    #[cfg(target_arch = "x86_64")]
    avx512_24x16: crate::simd::Avx512, 24 x 1, "avx512f";
    #[cfg(target_arch = "x86_64")]
    avx512_8x16_of24: crate::simd::Avx512, 8 x 1 / 24, "avx512f";
    #[cfg(target_arch = "x86_64")]
    avx512_16x16_of24: crate::simd::Avx512, 16 x 1 / 24, "avx512f";
    #[cfg(target_arch = "x86_64")]
    avx2_6x16: crate::simd::Avx2, 6 x 2, "avx2,fma";
    #[cfg(target_arch = "x86_64")]
    avx2_2x16_of6: crate::simd::Avx2, 2 x 2 / 6, "avx2,fma";
    #[cfg(target_arch = "x86_64")]
    avx2_4x16_of6: crate::simd::Avx2, 4 x 2 / 6, "avx2,fma";
    #[cfg(target_arch = "x86_64")]
    avx2_6x16_t: crate::simd::Avx2, 6 x 2, transposed, "avx2,fma";
    #[cfg(target_arch = "x86_64")]
    avx2_6x8_of16: crate::simd::Avx2, 6 x 1, "avx2,fma";
    #[cfg(target_arch = "x86_64")]
    avx2_2x8_of6x16: crate::simd::Avx2, 2 x 1 / 6, "avx2,fma";
    #[cfg(target_arch = "x86_64")]
    avx2_4x8_of6x16: crate::simd::Avx2, 4 x 1 / 6, "avx2,fma";
    #[cfg(target_arch = "x86_64")]
    avx512_1x32: crate::simd::Avx512, 1 x 2, "avx512f";
    #[cfg(target_arch = "x86_64")]
    avx512_1x16: crate::simd::Avx512, 1 x 1, "avx512f";
    #[cfg(target_arch = "x86_64")]
    avx2_1x16: crate::simd::Avx2, 1 x 2, "avx2,fma";
    portable_4x16: crate::simd::Portable, 4 x 2;
    portable_4x16_t: crate::simd::Portable, 4 x 2, transposed;
    portable_4x8_of16: crate::simd::Portable, 4 x 1;
    portable_1x16: crate::simd::Portable, 1 x 2;
}

/// Declares one ISA entry point per (ISA, panel width) of [`row_wide`].
macro_rules! row_wide_kernels {
    ($($(#[$cfg:meta])* $name:ident: $simd:ty, $nv:literal, $feat:literal;)*) => {$(
        $(#[$cfg])*
        /// # Safety
        /// See [`super::kernel::RowWideFn`]; the CPU supports this kernel's ISA.
        #[target_feature(enable = $feat)]
        pub(crate) unsafe fn $name(
            kc: usize,
            a: *const f32,
            b: *const f32,
            panel_stride: usize,
            c: *mut f32,
            epi: &TileEpilogue,
        ) {
            // SAFETY: forwarded contract; the features are enabled on this function.
            unsafe {
                row_wide::<$simd, $nv, { $nv * WIDE_PANELS }>(kc, a, b, panel_stride, c, epi)
            }
        }
    )*};
}

row_wide_kernels! {
    #[cfg(target_arch = "x86_64")]
    avx512_1x32_wide: crate::simd::Avx512, 2, "avx512f";
    #[cfg(target_arch = "x86_64")]
    avx512_1x16_wide: crate::simd::Avx512, 1, "avx512f";
    #[cfg(target_arch = "x86_64")]
    avx2_1x16_wide: crate::simd::Avx2, 2, "avx2,fma";
}
