//! Segmented operands (`MatRef::with_segments`): a GEMM over operands whose rows or columns
//! are cut into segments stored apart must give exactly the bits of the same GEMM over dense
//! copies (packing only moves values; every element's arithmetic is the same), on every ISA
//! path and thread count; C outside its segments is never written; bad geometry is an error.

use proptest::prelude::*;
use tessera_kernels::gemm::{gemm, Axis, Bias, Epilogue, GemmConfig, MatMut, MatRef, Segments};
use tessera_kernels::{Activation, Isa};

mod common;

/// How one matrix is stored: which axis is segmented (if any), the segment length, whether
/// each segment is row- or column-major, and the gap between segments.
#[derive(Debug, Clone, Copy)]
struct Storage {
    axis: Option<Axis>,
    len: usize,
    col_major: bool,
    gap: usize,
}

/// Strides, segments and the slice length of a `rows x cols` matrix stored as `st`.
fn geometry(rows: usize, cols: usize, st: Storage) -> (usize, usize, Option<Segments>, usize) {
    // The shape of one segment (the whole matrix when unsegmented).
    let (sr, sc) = match st.axis {
        Some(Axis::Cols) => (rows, st.len.min(cols.max(1))),
        Some(Axis::Rows) => (st.len.min(rows.max(1)), cols),
        None => (rows, cols),
    };
    let (rs, cs) = if st.col_major {
        (1, sr.max(1))
    } else {
        (sc.max(1), 1)
    };
    let footprint = sr * sc;
    let stride = footprint + st.gap;
    let segments = st.axis.map(|axis| Segments {
        axis,
        len: st.len,
        stride,
    });
    let count = match st.axis {
        Some(Axis::Cols) => cols.div_ceil(st.len),
        Some(Axis::Rows) => rows.div_ceil(st.len),
        None => 1,
    };
    (rs, cs, segments, count.max(1) * stride)
}

fn offset(i: usize, j: usize, rs: usize, cs: usize, seg: Option<Segments>) -> usize {
    match seg {
        None => i * rs + j * cs,
        Some(s) if s.axis == Axis::Cols => i * rs + (j / s.len) * s.stride + (j % s.len) * cs,
        Some(s) => (i / s.len) * s.stride + (i % s.len) * rs + j * cs,
    }
}

fn storage() -> impl Strategy<Value = Storage> {
    (
        prop_oneof![Just(None), Just(Some(Axis::Rows)), Just(Some(Axis::Cols))],
        prop_oneof![1usize..8, 8usize..40, Just(196usize)],
        any::<bool>(),
        0usize..5,
    )
        .prop_map(|(axis, len, col_major, gap)| Storage {
            axis,
            len,
            col_major,
            gap,
        })
}

fn values(len: usize, seed: u32) -> Vec<f32> {
    common::uniform(len, seed as u64, -0.5, 0.5)
}

#[derive(Debug, Clone)]
struct Case {
    m: usize,
    n: usize,
    k: usize,
    a: Storage,
    b: Storage,
    c: Storage,
    beta: f32,
    bias_rows: bool,
}

fn case() -> impl Strategy<Value = Case> {
    (
        0usize..150,
        0usize..150,
        0usize..300,
        storage(),
        storage(),
        storage(),
        prop_oneof![Just(0.0f32), Just(1.0f32), Just(0.5f32)],
        any::<bool>(),
    )
        .prop_map(|(m, n, k, a, b, c, beta, bias_rows)| Case {
            m,
            n,
            k,
            a,
            b,
            c,
            beta,
            bias_rows,
        })
}

fn view(
    data: &[f32],
    r: usize,
    c: usize,
    rs: usize,
    cs: usize,
    seg: Option<Segments>,
) -> MatRef<'_> {
    let v = MatRef::new(data, r, c, rs, cs);
    match seg {
        Some(s) => v.with_segments(s),
        None => v,
    }
}

/// Runs the case with segmented storage and with dense row-major copies; returns both C's
/// (the segmented one read back densely) and the segmented C's buffer.
fn run(case: &Case, isa: Isa, threads: usize) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let (m, n, k) = (case.m, case.n, case.k);
    let dense_a = values(m * k, 1);
    let dense_b = values(k * n, 2);
    let dense_c0 = values(m * n, 3);
    let place = |dense: &[f32], rows: usize, cols: usize, st: Storage, fill: f32| {
        let (rs, cs, seg, len) = geometry(rows, cols, st);
        let mut buf = vec![fill; len];
        for i in 0..rows {
            for j in 0..cols {
                buf[offset(i, j, rs, cs, seg)] = dense[i * cols + j];
            }
        }
        (buf, rs, cs, seg)
    };
    let (sa, ars, acs, aseg) = place(&dense_a, m, k, case.a, 0.0);
    let (sb, brs, bcs, bseg) = place(&dense_b, k, n, case.b, 0.0);
    let (mut sc, crs, ccs, cseg) = place(&dense_c0, m, n, case.c, f32::NAN);
    let bias = values(if case.bias_rows { m } else { n }, 4);
    let epi = Epilogue::new(
        if case.bias_rows {
            Bias::PerRow(&bias)
        } else {
            Bias::PerCol(&bias)
        },
        Activation::Relu6,
    );
    let cfg = GemmConfig::with_threads(threads).isa(isa);
    let mut cview = MatMut::new(&mut sc, m, n, crs, ccs);
    if let Some(s) = cseg {
        cview = cview.with_segments(s);
    }
    gemm(
        0.75,
        view(&sa, m, k, ars, acs, aseg),
        view(&sb, k, n, brs, bcs, bseg),
        case.beta,
        cview,
        epi,
        &cfg,
    )
    .unwrap();
    let mut dense_c = dense_c0.clone();
    gemm(
        0.75,
        MatRef::row_major(&dense_a, m, k),
        MatRef::row_major(&dense_b, k, n),
        case.beta,
        MatMut::row_major(&mut dense_c, m, n),
        epi,
        &cfg,
    )
    .unwrap();
    let read_back = (0..m * n)
        .map(|e| sc[offset(e / n.max(1), e % n.max(1), crs, ccs, cseg)])
        .collect();
    (dense_c, read_back, sc)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(96))]

    #[test]
    fn segmented_operands_give_the_dense_bits(case in case()) {
        for isa in Isa::available() {
            for threads in [1, 2] {
                let (dense, segmented, buf) = run(&case, isa, threads);
                let same = dense.iter().zip(&segmented).all(|(x, y)| x.to_bits() == y.to_bits());
                prop_assert!(same, "{isa} threads {threads}: {case:?}");
                // Only C's own elements were written: the gaps still hold NaN.
                let written = segmented.len();
                let nan = buf.iter().filter(|v| v.is_nan()).count();
                prop_assert_eq!(nan + written, buf.len(), "{} wrote outside C: {:?}", isa, case);
            }
        }
    }
}

#[test]
fn bad_segments_are_errors() {
    let a = vec![0.0f32; 64];
    let b = vec![0.0f32; 64];
    let mut c = vec![0.0f32; 64];
    let cfg = GemmConfig::default();
    let run = |a: MatRef<'_>, c: MatMut<'_>| {
        gemm(
            1.0,
            a,
            MatRef::row_major(&b, 4, 4),
            0.0,
            c,
            Epilogue::NONE,
            &cfg,
        )
        .unwrap_err()
        .to_string()
    };
    // Zero-length segments.
    let err = run(
        MatRef::row_major(&a, 4, 4).with_segments(Segments::cols(0, 4)),
        MatMut::row_major(&mut c, 4, 4),
    );
    assert!(err.contains("length 0"), "{err}");
    // Segments running past the slice: 4 rows x 4 columns in segments of 2 every 40 reach
    // offset 3 * 2 + 40 + 1 = 47.
    let err = run(
        MatRef::new(&a[..40], 4, 4, 2, 1).with_segments(Segments::cols(2, 40)),
        MatMut::row_major(&mut c, 4, 4),
    );
    assert!(err.contains("needs 48 elements"), "{err}");
    // C segments that overlap: each 4 x 2 segment spans 8 floats but they start 4 apart.
    let err = run(
        MatRef::row_major(&a, 4, 4),
        MatMut::new(&mut c, 4, 4, 2, 1).with_segments(Segments::cols(2, 4)),
    );
    assert!(err.contains("several elements"), "{err}");
}
