//! Property tests of `tessera_models::attention_maps` (attention rollout, Abnar & Zuidema 2020):
//! on random row-stochastic attention, rollout rows are distributions, a full residual weight
//! gives the identity, one layer gives `(1 - a) A + a I`, rollout equals an f64 product of the
//! augmented layers computed here, and the class-token grid is row 0 without its own column.

use proptest::prelude::*;
use tessera::core::Tensor;
use tessera::models::attention_maps::{attention_rollout, cls_to_patches, combine_heads, Heads};

fn cfg() -> ProptestConfig {
    ProptestConfig {
        cases: 64,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

/// `layers` maps `[n, h, L, L]` of softmax rows from seeded logits (scaled to be peaky or flat).
fn maps(layers: usize, n: usize, h: usize, l: usize, seed: u64, temp: f32) -> Vec<Tensor> {
    (0..layers)
        .map(|i| {
            Tensor::randn(&[n, h, l, l], seed + i as u64)
                .mul_scalar(temp)
                .softmax(3)
                .unwrap()
        })
        .collect()
}

/// The augmented layer in f64, `[n][L][L]`, heads combined as `heads`.
fn augmented(m: &Tensor, heads: Heads, a: f64) -> Vec<Vec<f64>> {
    let s = m.shape().to_vec();
    let (n, h, l) = (s[0], s[1], s[2]);
    let v = m.contiguous().to_vec();
    (0..n)
        .map(|b| {
            let mut out = vec![0.0f64; l * l];
            for (ij, o) in out.iter_mut().enumerate() {
                let at = |hh: usize| v[(b * h + hh) * l * l + ij] as f64;
                let p = match heads {
                    Heads::Mean => (0..h).map(at).sum::<f64>() / h as f64,
                    Heads::One(k) => at(k),
                };
                *o = (1.0 - a) * p + if ij % (l + 1) == 0 { a } else { 0.0 };
            }
            for row in out.chunks_mut(l) {
                let s: f64 = row.iter().sum();
                row.iter_mut().for_each(|x| *x /= s);
            }
            out
        })
        .collect()
}

fn matmul(a: &[f64], b: &[f64], l: usize) -> Vec<f64> {
    let mut c = vec![0.0; l * l];
    for i in 0..l {
        for k in 0..l {
            for j in 0..l {
                c[i * l + j] += a[i * l + k] * b[k * l + j];
            }
        }
    }
    c
}

proptest! {
    #![proptest_config(cfg())]

    #[test]
    fn rollout_matches_an_f64_product_and_rows_are_distributions(
        layers in 1usize..5, n in 1usize..3, h in 1usize..4, l in 1usize..9,
        seed in 0u64..1000, temp in prop::sample::select(vec![0.1f32, 1.0, 8.0]),
        a in prop::sample::select(vec![0.0f32, 0.25, 0.5, 0.9]),
        head_pick in 0usize..4, use_mean in any::<bool>(),
    ) {
        let ms = maps(layers, n, h, l, seed, temp);
        let heads = if use_mean { Heads::Mean } else { Heads::One(head_pick % h) };
        let r = attention_rollout(&ms, heads, a).unwrap();
        prop_assert_eq!(r.shape(), &[n, l, l]);
        let got = r.to_vec();
        let aug: Vec<Vec<Vec<f64>>> = ms.iter().map(|m| augmented(m, heads, a as f64)).collect();
        for b in 0..n {
            let mut want = aug[0][b].clone();
            for layer in &aug[1..] {
                want = matmul(&layer[b], &want, l);
            }
            for (g, w) in got[b * l * l..(b + 1) * l * l].iter().zip(&want) {
                prop_assert!((*g as f64 - w).abs() <= 2e-6, "{} vs {}", g, w);
            }
            for row in got[b * l * l..(b + 1) * l * l].chunks(l) {
                prop_assert!(row.iter().all(|&p| p >= 0.0));
                let s: f32 = row.iter().sum();
                prop_assert!((s - 1.0).abs() <= 1e-5, "row sums to {}", s);
            }
        }
    }

    #[test]
    fn full_residual_is_identity_and_one_layer_is_the_augmented_map(
        n in 1usize..3, h in 1usize..4, l in 1usize..9, seed in 0u64..1000,
    ) {
        let ms = maps(3, n, h, l, seed, 1.0);
        let eye = attention_rollout(&ms, Heads::Mean, 1.0).unwrap().to_vec();
        for (k, v) in eye.iter().enumerate() {
            prop_assert_eq!(*v, if k % (l * l) % (l + 1) == 0 { 1.0 } else { 0.0 });
        }
        let one = attention_rollout(&ms[..1], Heads::Mean, 0.5).unwrap().to_vec();
        let mean = combine_heads(&ms[0], Heads::Mean).unwrap().to_vec();
        for (k, (o, m)) in one.iter().zip(&mean).enumerate() {
            let want = 0.5 * m + if k % (l * l) % (l + 1) == 0 { 0.5 } else { 0.0 };
            prop_assert!((o - want).abs() <= 1e-6, "{} vs {}", o, want);
        }
    }

    #[test]
    fn the_class_token_grid_is_row_zero_without_its_own_column(
        n in 1usize..3, gh in 1usize..5, gw in 1usize..5, seed in 0u64..1000,
    ) {
        let l = 1 + gh * gw;
        let m = Tensor::randn(&[n, l, l], seed);
        let g = cls_to_patches(&m, [gh, gw]).unwrap();
        prop_assert_eq!(g.shape(), &[n, gh, gw]);
        let (v, gv) = (m.to_vec(), g.to_vec());
        for b in 0..n {
            for r in 0..gh {
                for c in 0..gw {
                    prop_assert_eq!(gv[(b * gh + r) * gw + c], v[b * l * l + 1 + r * gw + c]);
                }
            }
        }
    }
}
