//! Deterministic test data shared by the kernel tests (`mod common;` in each test file): one
//! seeded xorshift64* stream (Vigna, "An experimental exploration of Marsaglia's xorshift
//! generators, scrambled", 2016), so every test draws its operands the same way and a seed
//! names a reproducible case.
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
