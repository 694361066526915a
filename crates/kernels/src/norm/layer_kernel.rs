//! The row kernel of layer normalisation's forward pass (Ba, Kiros & Hinton, "Layer
//! Normalization", 2016; PyTorch's `torch.nn.LayerNorm`), written once over [`Simd`] and
//! instantiated per ISA by [`super::layer`]'s table.
//!
//! One row of `d` floats in three passes, each streaming the row from L1:
//!
//! ```text
//! mean = sum(x) / d                         four vector accumulators, fixed order
//! var  = sum((x - mean)^2) / d              the same, about the mean (two-pass: no
//!                                           cancellation for rows far from zero)
//! y    = ((x - mean) * rstd) * gamma + beta one fused multiply-add per lane
//! ```
//!
//! A row's operations depend only on `d` and the ISA, never on which thread runs it, so the
//! result is bit-identical for any thread count. Tails shorter than a vector are loaded with
//! zeros above them and masked out of the variance.

use crate::simd::Simd;

/// `sum(x)` or, with `centre`, `sum((x - centre)^2)` over the `n` floats at `x`: four vector
/// accumulators over blocks of `4 L`, the leftover whole vectors into the first, the tail
/// (zero-filled, masked about the centre) into the second; reduced in a fixed order.
///
/// # Safety
/// The CPU supports `S`; `x` readable for `n` floats.
#[inline(always)]
unsafe fn row_sum<S: Simd, const SQ: bool>(x: *const f32, n: usize, centre: f32) -> f32 {
    let l = S::L;
    // SAFETY: every load is below n (the tail through `load_first`).
    unsafe {
        let c = S::splat(centre);
        let term = |v: S::V| {
            if SQ {
                let d = S::sub(v, c);
                S::mul(d, d)
            } else {
                v
            }
        };
        let mut acc = [S::zero(); 4];
        let mut i = 0;
        while i + 4 * l <= n {
            for (k, a) in acc.iter_mut().enumerate() {
                *a = S::add(*a, term(S::load(x.add(i + k * l))));
            }
            i += 4 * l;
        }
        while i + l <= n {
            acc[0] = S::add(acc[0], term(S::load(x.add(i))));
            i += l;
        }
        if i < n {
            let t = term(S::load_first(x.add(i), n - i));
            acc[1] = S::add(acc[1], S::and(t, S::mask(0, n - i)));
        }
        S::reduce(S::add(S::add(acc[0], acc[1]), S::add(acc[2], acc[3])))
    }
}

/// `y = ((x - mean) * rstd) * gamma + beta` over one row (`gamma` 1 and `beta` 0 where
/// absent: `G`, `B` say which are given).
///
/// # Safety
/// The CPU supports `S`; `x`, `gamma`, `beta` (where given) readable and `y` writable for
/// `n` floats.
#[inline(always)]
unsafe fn affine_row<S: Simd, const G: bool, const B: bool>(
    x: *const f32,
    gamma: *const f32,
    beta: *const f32,
    y: *mut f32,
    n: usize,
    mean: f32,
    rstd: f32,
) {
    let l = S::L;
    // SAFETY: every access is below n (the tail through `load_first` / `store_first`).
    unsafe {
        let (m, s) = (S::splat(mean), S::splat(rstd));
        let one = |x: S::V, g: S::V, b: S::V| {
            let t = S::mul(S::sub(x, m), s);
            match (G, B) {
                (true, true) => S::fma(t, g, b),
                (true, false) => S::mul(t, g),
                (false, true) => S::add(t, b),
                (false, false) => t,
            }
        };
        let vec_at = |p: *const f32, on: bool, i: usize, tail: usize| {
            if !on {
                S::zero()
            } else if tail == 0 {
                S::load(p.add(i))
            } else {
                S::load_first(p.add(i), tail)
            }
        };
        let mut i = 0;
        while i + l <= n {
            let v = one(
                S::load(x.add(i)),
                vec_at(gamma, G, i, 0),
                vec_at(beta, B, i, 0),
            );
            S::store(y.add(i), v);
            i += l;
        }
        if i < n {
            let t = n - i;
            let v = one(
                S::load_first(x.add(i), t),
                vec_at(gamma, G, i, t),
                vec_at(beta, B, i, t),
            );
            S::store_first(y.add(i), v, t);
        }
    }
}

/// Normalises the `rows` rows of `d` floats at `x` into `y`, storing each row's mean and
/// `1 / sqrt(var + eps)` at `mean`, `rstd`.
///
/// # Safety
/// The CPU supports `S`; `x` readable and `y` writable for `rows * d` floats, `mean` and
/// `rstd` writable for `rows`, `gamma` / `beta` readable for `d` floats where not null;
/// `d >= 1`.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
pub(super) unsafe fn forward_rows<S: Simd>(
    x: *const f32,
    rows: usize,
    d: usize,
    gamma: *const f32,
    beta: *const f32,
    eps: f32,
    y: *mut f32,
    mean: *mut f32,
    rstd: *mut f32,
) {
    for r in 0..rows {
        // SAFETY: row r lies inside the caller's rows * d floats; mean and rstd hold rows.
        unsafe {
            let (xr, yr) = (x.add(r * d), y.add(r * d));
            let m = row_sum::<S, false>(xr, d, 0.0) / d as f32;
            let v = row_sum::<S, true>(xr, d, m) / d as f32;
            let s = 1.0 / (v + eps).sqrt();
            *mean.add(r) = m;
            *rstd.add(r) = s;
            match (gamma.is_null(), beta.is_null()) {
                (false, false) => affine_row::<S, true, true>(xr, gamma, beta, yr, d, m, s),
                (false, true) => affine_row::<S, true, false>(xr, gamma, beta, yr, d, m, s),
                (true, false) => affine_row::<S, false, true>(xr, gamma, beta, yr, d, m, s),
                (true, true) => affine_row::<S, false, false>(xr, gamma, beta, yr, d, m, s),
            }
        }
    }
}
