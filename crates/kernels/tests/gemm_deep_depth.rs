//! Products whose C outgrows L2 run with the tuning's deep depth block
//! (`Tuning::blocking_for`): the result must match the reference on every ISA and kernel
//! candidate, be bit-identical for any thread count, and differ from the shallow blocking only
//! in the rounding of the depth blocks' partial sums; products whose C fits in L2, and
//! products with a pre-packed operand, keep the shallow blocks.

use tessera_kernels::gemm::blocking::derive_deep_kc;
use tessera_kernels::gemm::reference::{error_bound, gemm_reference};
use tessera_kernels::gemm::table::candidates;
use tessera_kernels::gemm::{
    gemm_ex, Bias, Epilogue, GemmConfig, MatMut, MatRef, Operand, Scale, Tuning,
};
use tessera_kernels::host::Host;
use tessera_kernels::Isa;

mod common;

/// Rows for a C of `n` columns just larger than this host's L2.
fn rows_past_l2(n: usize) -> usize {
    Host::get().caches.l2.size / (4 * n) + 13
}

fn run(a: &[f32], b: &[f32], (m, n, k): (usize, usize, usize), cfg: &GemmConfig) -> Vec<f32> {
    let mut c = vec![f32::NAN; m * n];
    let (av, bv) = (MatRef::row_major(a, m, k), MatRef::row_major(b, k, n));
    let cv = MatMut::row_major(&mut c, m, n);
    gemm_ex(
        1.0,
        Operand::View(av),
        Operand::View(bv),
        0.0,
        cv,
        Epilogue::NONE,
        cfg,
    )
    .unwrap();
    c
}

#[test]
fn deep_blocks_apply_only_to_products_whose_c_outgrows_l2() {
    let kernel = &candidates(Isa::Scalar)[0];
    let t = Tuning::with_blocks(kernel, 64, 8 * kernel.mr)
        .and_then(|t| t.with_deep_kc(128))
        .unwrap();
    let n = 520;
    let big = t.blocking_for(rows_past_l2(n), n, false);
    assert_eq!(big.kc, 128);
    // MC and NC halve with the doubled depth: the A and B blocks keep their bytes.
    assert_eq!(big.mc, 4 * kernel.mr);
    assert!(big.nc <= t.blocking.nc / 2 && big.nc.is_multiple_of(kernel.nr));
    assert_eq!(t.blocking_for(rows_past_l2(n), n, true), t.blocking);
    assert_eq!(t.blocking_for(64, n, false), t.blocking);
    // A deep block shallower than KC is refused.
    assert!(t.with_deep_kc(32).is_none());
}

/// Without a tuning, the deep depth block is the model's (`blocking::derive_deep_kc`): on
/// every ISA and kernel, at least KC, and the one the analytical tuning in force carries.
#[test]
fn the_untuned_deep_block_is_the_models() {
    let caches = &Host::get().caches;
    for isa in Isa::available() {
        for kernel in candidates(isa) {
            let t = Tuning::analytical(kernel);
            let want = derive_deep_kc(t.blocking.kc, kernel.nr, caches);
            assert_eq!(t.deep_kc, want, "{}", kernel.name);
            assert!(t.deep_kc >= t.blocking.kc && t.deep_kc <= 512.max(t.blocking.kc));
            let explicit = Tuning::with_blocks(kernel, 64, kernel.mr).unwrap();
            assert_eq!(explicit.deep_kc, derive_deep_kc(64, kernel.nr, caches));
        }
    }
}

#[test]
fn deep_blocks_match_the_reference_at_any_thread_count() {
    let n = 520;
    let (m, k) = (rows_past_l2(n), 300);
    let a = common::data(m * k, 1);
    let b = common::data(k * n, 2);
    let mut want = vec![0.0f32; m * n];
    let (ra, rb, rc) = ((k, 1), (n, 1), (n, 1));
    gemm_reference(
        m,
        n,
        k,
        1.0,
        &a,
        ra,
        &b,
        rb,
        0.0,
        &mut want,
        rc,
        Epilogue::NONE,
    );
    let bound = error_bound(
        m,
        n,
        k,
        1.0,
        &a,
        ra,
        &b,
        rb,
        0.0,
        &want,
        rc,
        Scale::None,
        Bias::None,
    );
    for isa in Isa::available() {
        for kernel in candidates(isa) {
            // Depth 300 runs as 64-deep blocks shallow and as 128 + 128 + 44 deep.
            let shallow = Tuning::with_blocks(kernel, 64, 2 * kernel.mr)
                .and_then(|t| t.with_deep_kc(64))
                .unwrap();
            let deep = shallow.with_deep_kc(128).unwrap();
            let cfg = |threads, tuning| GemmConfig {
                isa: Some(isa),
                threads,
                tuning: Some(tuning),
            };
            let one = run(&a, &b, (m, n, k), &cfg(1, deep));
            for (i, ((&got, &w), &e)) in one.iter().zip(&want).zip(&bound).enumerate() {
                assert!(
                    (got - w).abs() <= e,
                    "{isa} {} element {i}: {got} against {w}",
                    kernel.name
                );
            }
            for threads in [2, 3] {
                let many = run(&a, &b, (m, n, k), &cfg(threads, deep));
                assert!(
                    one.iter()
                        .zip(&many)
                        .all(|(x, y)| x.to_bits() == y.to_bits()),
                    "{isa} {} threads {threads}",
                    kernel.name
                );
            }
            // The deep blocks really ran: the partial sums round at other depths.
            let other = run(&a, &b, (m, n, k), &cfg(1, shallow));
            assert!(
                one.iter()
                    .zip(&other)
                    .any(|(x, y)| x.to_bits() != y.to_bits()),
                "{isa} {}: deep and shallow blocks gave identical bits",
                kernel.name
            );
        }
    }
}
