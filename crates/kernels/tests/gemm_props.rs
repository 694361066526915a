//! Property tests of the GEMM: every ISA path the host has against the f64 reference, over
//! random shapes (each dim 0..300), layouts (row-major, column-major, padded leading
//! dimensions, general strides), alpha and beta, and every epilogue; plus bit-identity across
//! thread counts and the beta = 0 / alpha = 0 contracts.

use proptest::prelude::*;
use tessera_kernels::gemm::reference::{error_bound, gemm_reference};
use tessera_kernels::gemm::table::candidates;
use tessera_kernels::gemm::{gemm, Bias, Epilogue, GemmConfig, MatMut, MatRef, Scale, Tuning};
use tessera_kernels::{Activation, Isa};

mod common;

/// How a `rows x cols` matrix is stored.
#[derive(Debug, Clone, Copy)]
enum Layout {
    RowMajor,
    ColMajor,
    /// Row-major with `pad` extra floats at the end of each row.
    RowPadded(usize),
    /// Column-major with `pad` extra floats at the end of each column.
    ColPadded(usize),
    /// Row-major with every element `step` floats apart (no unit stride at all).
    Strided(usize),
}

impl Layout {
    fn strides(self, rows: usize, cols: usize) -> (usize, usize) {
        match self {
            Layout::RowMajor => (cols, 1),
            Layout::ColMajor => (1, rows),
            Layout::RowPadded(p) => (cols + p, 1),
            Layout::ColPadded(p) => (1, rows + p),
            Layout::Strided(s) => (cols * s, s),
        }
    }

    fn len(self, rows: usize, cols: usize) -> usize {
        let (rs, cs) = self.strides(rows, cols);
        if rows == 0 || cols == 0 {
            0
        } else {
            (rows - 1) * rs + (cols - 1) * cs + 1
        }
    }
}

fn layout() -> impl Strategy<Value = Layout> {
    prop_oneof![
        Just(Layout::RowMajor),
        Just(Layout::ColMajor),
        (1usize..9).prop_map(Layout::RowPadded),
        (1usize..9).prop_map(Layout::ColPadded),
        (2usize..4).prop_map(Layout::Strided),
    ]
}

fn dim() -> impl Strategy<Value = usize> {
    // Edges (0, 1, around the tile sizes) as often as general sizes.
    prop_oneof![
        prop::sample::select(vec![
            0usize, 1, 2, 3, 4, 5, 6, 7, 8, 11, 12, 13, 15, 16, 17, 31, 32, 33
        ]),
        0usize..300,
    ]
}

fn fill(len: usize, seed: u64) -> Vec<f32> {
    common::data(len, seed)
}

#[derive(Debug, Clone)]
struct Case {
    m: usize,
    n: usize,
    k: usize,
    la: Layout,
    lb: Layout,
    lc: Layout,
    alpha: f32,
    beta: f32,
    bias: u8,
    /// 0: no scale, 1: per row, 2: per column.
    scale: u8,
    act: usize,
    seed: u64,
}

fn case() -> impl Strategy<Value = Case> {
    (
        (dim(), dim(), dim()),
        (layout(), layout(), layout()),
        prop::sample::select(vec![1.0f32, -1.0, 0.5, 2.0, 0.0]),
        prop::sample::select(vec![0.0f32, 1.0, -0.5, 2.0]),
        (0u8..3, 0u8..3),
        0..Activation::ALL.len(),
        any::<u64>(),
    )
        .prop_map(
            |((m, n, k), (la, lb, lc), alpha, beta, (bias, scale), act, seed)| Case {
                m,
                n,
                k,
                la,
                lb,
                lc,
                alpha,
                beta,
                bias,
                scale,
                act,
                seed,
            },
        )
}

/// The operands of a case: A, B, C before the call, per-row bias, per-column bias.
type Operands = (Vec<f32>, Vec<f32>, Vec<f32>, Vec<f32>, Vec<f32>);

fn operands(case: &Case) -> Operands {
    let Case {
        m,
        n,
        k,
        la,
        lb,
        lc,
        ..
    } = *case;
    (
        fill(la.len(m, k), case.seed),
        fill(lb.len(k, n), case.seed ^ 1),
        fill(lc.len(m, n), case.seed ^ 2),
        fill(m, case.seed ^ 3),
        fill(n, case.seed ^ 4),
    )
}

/// Per-row and per-column scales of a case, in [0.5, 1.5] (a batch norm's usual range).
fn scales(case: &Case) -> (Vec<f32>, Vec<f32>) {
    let pos = |v: Vec<f32>| {
        v.into_iter()
            .map(|x| 1.0 + 0.5 * x.clamp(-1.0, 1.0))
            .collect()
    };
    (
        pos(fill(case.m, case.seed ^ 5)),
        pos(fill(case.n, case.seed ^ 6)),
    )
}

fn scale_of<'a>(case: &Case, row: &'a [f32], col: &'a [f32]) -> Scale<'a> {
    match case.scale {
        0 => Scale::None,
        1 => Scale::PerRow(row),
        _ => Scale::PerCol(col),
    }
}

fn bias_of<'a>(case: &Case, row: &'a [f32], col: &'a [f32]) -> Bias<'a> {
    match case.bias {
        0 => Bias::None,
        1 => Bias::PerRow(row),
        _ => Bias::PerCol(col),
    }
}

/// Runs `case` on `isa` with `threads` and returns C (its whole buffer).
fn run(case: &Case, isa: Isa, threads: usize) -> Result<Vec<f32>, TestCaseError> {
    run_with(case, isa, None, threads)
}

/// [`run`] with a specific microkernel and blocking (`None`: the ISA's selection).
fn run_with(
    case: &Case,
    isa: Isa,
    tuning: Option<Tuning>,
    threads: usize,
) -> Result<Vec<f32>, TestCaseError> {
    let Case {
        m,
        n,
        k,
        la,
        lb,
        lc,
        alpha,
        beta,
        ..
    } = *case;
    let (a, b, mut c, row_bias, col_bias) = operands(case);
    let (row_scale, col_scale) = scales(case);
    let (sa, sb, sc) = (la.strides(m, k), lb.strides(k, n), lc.strides(m, n));
    gemm(
        alpha,
        MatRef::new(&a, m, k, sa.0, sa.1),
        MatRef::new(&b, k, n, sb.0, sb.1),
        beta,
        MatMut::new(&mut c, m, n, sc.0, sc.1),
        Epilogue::new(
            bias_of(case, &row_bias, &col_bias),
            Activation::ALL[case.act],
        )
        .with_scale(scale_of(case, &row_scale, &col_scale)),
        &GemmConfig {
            isa: Some(isa),
            threads,
            tuning,
        },
    )
    .map_err(|e| TestCaseError::fail(e.to_string()))?;
    Ok(c)
}

/// Runs `case` on `isa` with `threads` and returns C; checks it against the reference.
fn check(case: &Case, isa: Isa, threads: usize) -> Result<Vec<f32>, TestCaseError> {
    check_with(case, isa, None, threads)
}

/// Every microkernel candidate of `isa`, each with its analytical blocking and with small
/// blocks (KC 16, MC 2 MR) that make every test shape cross depth and row blocks.
fn tunings(isa: Isa) -> Vec<Tuning> {
    candidates(isa)
        .iter()
        .flat_map(|k| {
            [
                Some(Tuning::analytical(k)),
                Tuning::with_blocks(k, 16, 2 * k.mr),
            ]
        })
        .flatten()
        .collect()
}

/// [`check`] with a specific microkernel and blocking.
fn check_with(
    case: &Case,
    isa: Isa,
    tuning: Option<Tuning>,
    threads: usize,
) -> Result<Vec<f32>, TestCaseError> {
    let Case {
        m,
        n,
        k,
        la,
        lb,
        lc,
        alpha,
        beta,
        ..
    } = *case;
    let (a, b, c0, row_bias, col_bias) = operands(case);
    let bias = bias_of(case, &row_bias, &col_bias);
    let (row_scale, col_scale) = scales(case);
    let scale = scale_of(case, &row_scale, &col_scale);
    let epi = Epilogue::new(bias, Activation::ALL[case.act]).with_scale(scale);
    let (sa, sb, sc) = (la.strides(m, k), lb.strides(k, n), lc.strides(m, n));
    let got = run_with(case, isa, tuning, threads)?;

    let mut want = c0.clone();
    gemm_reference(m, n, k, alpha, &a, sa, &b, sb, beta, &mut want, sc, epi);
    let bound = error_bound(m, n, k, alpha, &a, sa, &b, sb, beta, &c0, sc, scale, bias);
    for i in 0..m {
        for j in 0..n {
            let idx = i * sc.0 + j * sc.1;
            let (g, w) = (got[idx], want[idx]);
            // The bound covers the GEMM's rounding; the activation's own vector approximation
            // (documented in docs/kernels/activations.md) adds at most a few ulps of the result.
            let tol = bound[i * n + j] * 1.25 + 8.0 * f32::EPSILON * w.abs();
            prop_assert!(
                (g - w).abs() <= tol,
                "{isa} threads={threads} C[{i},{j}] = {g}, reference {w}, |diff| {} > tol {tol} ({case:?})",
                (g - w).abs()
            );
        }
    }
    // Elements of C's buffer outside the view are untouched.
    let mut inside = vec![false; got.len()];
    for i in 0..m {
        for j in 0..n {
            inside[i * sc.0 + j * sc.1] = true;
        }
    }
    for (idx, (&g, &c)) in got.iter().zip(&c0).enumerate() {
        if !inside[idx] {
            prop_assert_eq!(
                g.to_bits(),
                c.to_bits(),
                "padding element {} of C was written",
                idx
            );
        }
    }
    Ok(got)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

    #[test]
    fn every_isa_matches_reference(case in case()) {
        for isa in Isa::available() {
            check(&case, isa, 1)?;
        }
    }

    #[test]
    fn every_kernel_candidate_and_blocking_matches_reference(case in case()) {
        for isa in Isa::available() {
            for t in tunings(isa) {
                check_with(&case, isa, Some(t), 1)?;
                // Threads split C on this kernel's tiles: still bit-identical.
                let one = run_with(&case, isa, Some(t), 1)?;
                let two = run_with(&case, isa, Some(t), 2)?;
                prop_assert!(one.iter().zip(&two).all(|(a, b)| a.to_bits() == b.to_bits()),
                    "{isa} {}: 1 and 2 threads differ", t.kernel.name);
            }
        }
    }

}

proptest! {
    // Each case runs 4 thread counts on every ISA; fewer, larger cases.
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    #[test]
    fn bit_identical_for_any_thread_count(
        m in 40usize..400, n in 40usize..400, k in 1usize..600, la in layout(), lb in layout(), seed in any::<u64>(),
        bias in 0u8..3, scale in 0u8..3,
    ) {
        let case = Case { m, n, k, la, lb, lc: Layout::RowMajor, alpha: 1.0, beta: 0.5, bias, scale, act: 1, seed };
        for isa in Isa::available() {
            let one = check(&case, isa, 1)?;
            for threads in [2, 3, 4] {
                let many = run(&case, isa, threads)?;
                prop_assert!(one.iter().zip(&many).all(|(x, y)| x.to_bits() == y.to_bits()),
                    "{isa}: 1 thread and {threads} threads differ for {case:?}");
            }
        }
    }
}

#[test]
fn beta_zero_never_reads_c() {
    for isa in Isa::available() {
        for &(m, n, k) in &[(1, 1, 1), (7, 9, 3), (64, 80, 300), (13, 17, 0)] {
            let a = fill(m * k, 1);
            let b = fill(k * n, 2);
            let mut c = vec![f32::NAN; m * n];
            let cfg = GemmConfig {
                isa: Some(isa),
                threads: 2,
                tuning: None,
            };
            gemm(
                1.0,
                MatRef::row_major(&a, m, k),
                MatRef::row_major(&b, k, n),
                0.0,
                MatMut::row_major(&mut c, m, n),
                Epilogue::NONE,
                &cfg,
            )
            .unwrap();
            assert!(
                c.iter().all(|x| x.is_finite()),
                "{isa} {m}x{n}x{k}: NaN leaked from C with beta = 0"
            );
        }
    }
}

#[test]
fn alpha_zero_never_reads_a_or_b() {
    for isa in Isa::available() {
        let (m, n, k) = (9, 20, 5);
        let a = vec![f32::NAN; m * k];
        let b = vec![f32::INFINITY; k * n];
        let mut c = vec![2.0f32; m * n];
        let bias: Vec<f32> = (0..n).map(|j| j as f32).collect();
        let cfg = GemmConfig {
            isa: Some(isa),
            threads: 1,
            tuning: None,
        };
        let epi = Epilogue::new(Bias::PerCol(&bias), Activation::Relu6);
        gemm(
            0.0,
            MatRef::row_major(&a, m, k),
            MatRef::row_major(&b, k, n),
            0.5,
            MatMut::row_major(&mut c, m, n),
            epi,
            &cfg,
        )
        .unwrap();
        for i in 0..m {
            for j in 0..n {
                assert_eq!(c[i * n + j], (1.0 + j as f32).min(6.0), "{isa} C[{i},{j}]");
            }
        }
    }
}

#[test]
fn transposed_operands_are_views() {
    // A^T * B^T computed from the stored A and B without copies equals the reference.
    let (m, n, k) = (37, 45, 29);
    let a_store = fill(k * m, 7); // A^T stored row-major: k x m
    let b_store = fill(n * k, 8); // B^T stored row-major: n x k
    for isa in Isa::available() {
        let mut c = vec![0.0f32; m * n];
        let a = MatRef::row_major(&a_store, k, m).t();
        let b = MatRef::row_major(&b_store, n, k).t();
        gemm(
            1.0,
            a,
            b,
            0.0,
            MatMut::row_major(&mut c, m, n),
            Epilogue::NONE,
            &GemmConfig {
                isa: Some(isa),
                threads: 1,
                tuning: None,
            },
        )
        .unwrap();
        let mut want = vec![0.0f32; m * n];
        gemm_reference(
            m,
            n,
            k,
            1.0,
            &a_store,
            (1, m),
            &b_store,
            (1, k),
            0.0,
            &mut want,
            (n, 1),
            Epilogue::NONE,
        );
        for (g, w) in c.iter().zip(&want) {
            assert!((g - w).abs() <= 1e-4 * (1.0 + w.abs()), "{isa}: {g} vs {w}");
        }
    }
}

#[test]
fn unsupported_isa_is_a_clear_error() {
    for isa in Isa::ALL {
        let a = [1.0f32; 4];
        let mut c = [0.0f32; 4];
        let r = gemm(
            1.0,
            MatRef::row_major(&a, 2, 2),
            MatRef::row_major(&a, 2, 2),
            0.0,
            MatMut::row_major(&mut c, 2, 2),
            Epilogue::NONE,
            &GemmConfig {
                isa: Some(isa),
                threads: 1,
                tuning: None,
            },
        );
        if isa.is_supported() {
            assert!(r.is_ok());
            assert_eq!(c, [2.0; 4]);
        } else {
            let msg = r.unwrap_err().to_string();
            assert!(
                msg.contains(isa.name()) && msg.contains("does not support"),
                "{msg}"
            );
        }
    }
}

#[test]
fn shared_b_packing_over_several_column_blocks() {
    // M split across threads (more row tiles than column tiles) with B (140 K floats) above
    // the size every task packs for itself: with 4 and 8 tasks (under 96 rows each) every B
    // block is packed by all of them together; with 2 and 3, B fitting in L2 on most hosts,
    // each task packs its own. Three KC blocks of depth (the last partial), a bias and an
    // activation, B row- and column-major. Checked against the reference and for
    // bit-identity across thread counts.
    for (i, lb) in [Layout::RowMajor, Layout::ColMajor].into_iter().enumerate() {
        let case = Case {
            m: 290,
            n: 200,
            k: 700,
            la: Layout::RowMajor,
            lb,
            lc: Layout::RowMajor,
            alpha: 0.5,
            beta: 1.0,
            bias: 1,
            scale: 1,
            act: 2,
            seed: 77 + i as u64,
        };
        for isa in Isa::available() {
            let one = check(&case, isa, 1).unwrap();
            for threads in [2, 3, 4, 8] {
                let many = check(&case, isa, threads).unwrap();
                assert!(
                    one.iter()
                        .zip(&many)
                        .all(|(a, b)| a.to_bits() == b.to_bits()),
                    "{isa}: 1 and {threads} threads differ"
                );
            }
        }
    }
}
