//! Deterministic test data shared by the kernel tests (`mod common;` in each test file): one
//! seeded xorshift64* stream (Vigna, "An experimental exploration of Marsaglia's xorshift
//! generators, scrambled", 2016), so every test draws its operands the same way and a seed
//! names a reproducible case; and the helpers of the packed-convolution tests.
#![allow(dead_code)]

/// `len` values uniform in `[lo, hi)` (24 random bits each), from `seed`.
pub fn uniform(len: usize, seed: u64, lo: f32, hi: f32) -> Vec<f32> {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            s ^= s >> 12;
            s ^= s << 25;
            s ^= s >> 27;
            let u = (s.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 40) as f32 / (1u64 << 24) as f32;
            u * (hi - lo) + lo
        })
        .collect()
}

/// `len` values uniform in `[-1, 1)` from `seed`.
pub fn data(len: usize, seed: u64) -> Vec<f32> {
    uniform(len, seed, -1.0, 1.0)
}

/// A square dense convolution: `n` images of `c_in x hw x hw`, `c_out` filters `k x k`,
/// stride `st`, padding `k / 2`, one group.
pub fn square_conv(
    n: usize,
    c_in: usize,
    hw: usize,
    c_out: usize,
    k: usize,
    st: usize,
) -> tessera_kernels::conv::Conv2dShape {
    tessera_kernels::conv::Conv2dShape {
        n,
        c_in,
        h: hw,
        w: hw,
        c_out,
        kh: k,
        kw: k,
        stride: (st, st),
        padding: (k / 2, k / 2),
        dilation: (1, 1),
        groups: 1,
    }
}

/// The bit patterns of `v`, for exact comparisons that tell `-0.0` from `0.0` and NaNs apart.
pub fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|f| f.to_bits()).collect()
}

/// `act(conv(x, w) + b)` with packed weights, into a NaN-filled output.
pub fn run_packed(
    s: &tessera_kernels::conv::Conv2dShape,
    x: &[f32],
    w: &tessera_kernels::conv::PackedConvWeight,
    b: &[f32],
    act: tessera_kernels::Activation,
) -> Vec<f32> {
    let mut y = vec![f32::NAN; s.output_len()];
    tessera_kernels::conv::conv2d_forward_packed(s, x, w, Some(b), act, &mut y).unwrap();
    y
}
