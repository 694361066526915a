//! The row-at-a-time max pooling with argmax (`max_pool2d_forward`) against the
//! window-by-window reference (`max_pool2d_forward_scalar`), bit for bit, on data with ties,
//! NaNs, infinities and signed zeros, over random geometries (padding, stride, ceil_mode).

use proptest::prelude::*;
use tessera_kernels::pool::{self, Pool2dShape};

/// Values drawn from a small set with many ties, NaNs, +-inf and +-0.
fn data(len: usize, seed: u64, specials: bool) -> Vec<f32> {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            s ^= s >> 12;
            s ^= s << 25;
            s ^= s >> 27;
            let r = s.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 40;
            match (specials, r % 23) {
                (true, 0) => f32::NAN,
                (true, 1) => f32::from_bits(0x7fc0_1234), // a NaN with a payload
                (true, 2) => f32::INFINITY,
                (true, 3) => f32::NEG_INFINITY,
                (true, 4) => -0.0,
                (true, 5) => 0.0,
                _ => ((r % 9) as f32 - 4.0) / 2.0,
            }
        })
        .collect()
}

fn any_pool() -> impl Strategy<Value = Pool2dShape> {
    (
        1usize..3,
        1usize..4,
        1usize..14,
        1usize..14,
        1usize..5,
        1usize..5,
        1usize..4,
        1usize..4,
        0usize..3,
        0usize..3,
        any::<bool>(),
    )
        .prop_filter_map(
            "valid",
            |(n, c, h, w, kh, kw, sh, sw, ph, pw, ceil_mode)| {
                let s = Pool2dShape {
                    n,
                    c,
                    h,
                    w,
                    kh,
                    kw,
                    stride: (sh, sw),
                    padding: (ph, pw),
                    ceil_mode,
                };
                s.validate().ok().map(|_| s)
            },
        )
}

fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|f| f.to_bits()).collect()
}

fn check(s: &Pool2dShape, x: &[f32]) {
    let mut y = vec![f32::NAN; s.output_len()];
    let mut a = vec![u32::MAX; s.output_len()];
    pool::max_pool2d_forward(s, x, &mut y, &mut a).unwrap();
    let mut yr = vec![1.0; s.output_len()];
    let mut ar = vec![7u32; s.output_len()];
    pool::max_pool2d_forward_scalar(s, x, &mut yr, &mut ar).unwrap();
    assert_eq!(a, ar, "{s}: argmax differs");
    assert_eq!(bits(&y), bits(&yr), "{s}: values differ");
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]
    #[test]
    fn rows_match_the_window_reference(s in any_pool(), seed in 0u64..10_000, specials: bool) {
        let x = data(s.input_len(), seed, specials);
        check(&s, &x);
    }
}

#[test]
fn resnet_stem_shape_matches_and_ignores_the_thread_count() {
    // The ResNet stem pooling (3x3, stride 2, padding 1) on a plane large enough to run in
    // parallel, with 1 and 2 threads.
    let s = Pool2dShape {
        n: 2,
        c: 8,
        h: 57,
        w: 58,
        kh: 3,
        kw: 3,
        stride: (2, 2),
        padding: (1, 1),
        ceil_mode: false,
    };
    let x = data(s.input_len(), 3, true);
    check(&s, &x);
    let run = |threads: usize| {
        let tp = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap();
        tp.install(|| {
            let (mut y, mut a) = (vec![0.0; s.output_len()], vec![0u32; s.output_len()]);
            pool::max_pool2d_forward(&s, &x, &mut y, &mut a).unwrap();
            (bits(&y), a)
        })
    };
    assert_eq!(run(1), run(2));
}

#[test]
fn all_padding_taps_keep_the_first_inside_index() {
    // Every value -inf: nothing wins, the index stays at the window's first inside element.
    let s = Pool2dShape {
        n: 1,
        c: 1,
        h: 4,
        w: 5,
        kh: 3,
        kw: 3,
        stride: (2, 2),
        padding: (1, 1),
        ceil_mode: true,
    };
    let x = vec![f32::NEG_INFINITY; s.input_len()];
    check(&s, &x);
}
