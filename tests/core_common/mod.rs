//! Shared proptest strategies for the core property tests: shapes with size-1 and broadcast
//! dims, non-contiguous views of a base leaf, and value sets that keep away from kinks.
#![allow(dead_code)]

use proptest::prelude::*;
use tessera::core::{gradcheck, GradcheckOptions, Result, Tensor};

/// How the op's input is derived from the gradcheck leaf.
#[derive(Debug, Clone)]
pub enum View {
    /// The leaf itself.
    Contig,
    /// The last two dims of a leaf with them swapped, transposed back (non-contiguous).
    Transposed,
    /// Rows 1.. of a leaf with two extra rows in dim 0 (non-zero offset).
    Narrowed,
    /// A leaf with size 1 in this dim, expanded (stride 0).
    Expanded(usize),
}

/// One op input: a leaf and the view applied to it.
#[derive(Debug, Clone)]
pub struct Arg {
    pub base: Vec<usize>,
    pub data: Vec<f32>,
    pub view: View,
}

impl Arg {
    pub fn leaf(&self) -> Tensor {
        Tensor::from_vec(self.data.clone(), &self.base)
            .unwrap()
            .requires_grad_(true)
    }

    pub fn apply(&self, t: &Tensor) -> Result<Tensor> {
        match &self.view {
            View::Contig => Ok(t.clone()),
            View::Transposed => {
                let r = t.rank();
                t.transpose(r - 2, r - 1)
            }
            View::Narrowed => t.narrow(0, 1, t.shape()[0] - 2),
            View::Expanded(d) => {
                let mut s = t.shape().to_vec();
                s[*d] = 3;
                t.expand(&s)
            }
        }
    }

    /// The shape the op sees.
    pub fn shape(&self) -> Vec<usize> {
        let mut s = self.base.clone();
        match &self.view {
            View::Contig => {}
            View::Transposed => {
                let r = s.len();
                s.swap(r - 2, r - 1);
            }
            View::Narrowed => s[0] -= 2,
            View::Expanded(d) => s[*d] = 3,
        }
        s
    }
}

/// Which values an input takes.
#[derive(Debug, Clone)]
pub enum Vals {
    /// Uniform in `[lo, hi]`, pushed at least 0.05 away from each kink.
    Range(f32, f32, Vec<f32>),
    /// Pairwise distinct values (0.05 apart): for max, where ties are kinks.
    Distinct,
    /// Multiples of 0.1 plus this offset in [-2, 2]: two inputs with offsets 0 and 0.05 never
    /// come within 0.05 of each other (maximum/minimum).
    Grid(f32),
}

impl Vals {
    pub fn smooth() -> Vals {
        Vals::Range(-2.0, 2.0, vec![])
    }
    pub fn positive() -> Vals {
        Vals::Range(0.5, 2.0, vec![])
    }
    pub fn kinks(lo: f32, hi: f32, k: &[f32]) -> Vals {
        Vals::Range(lo, hi, k.to_vec())
    }

    fn strategy(&self, n: usize) -> BoxedStrategy<Vec<f32>> {
        match self.clone() {
            Vals::Range(lo, hi, kinks) => prop::collection::vec(lo..=hi, n)
                .prop_map(move |mut v| {
                    for x in &mut v {
                        for &k in &kinks {
                            if (*x - k).abs() < 0.05 {
                                *x = if *x >= k { k + 0.05 } else { k - 0.05 };
                            }
                        }
                    }
                    v
                })
                .boxed(),
            Vals::Distinct => Just((0..n).collect::<Vec<usize>>())
                .prop_shuffle()
                .prop_map(|p| p.iter().map(|&i| i as f32 * 0.05 - 1.0).collect())
                .boxed(),
            Vals::Grid(off) => prop::collection::vec(-20i32..=20, n)
                .prop_map(move |v| v.iter().map(|&i| i as f32 * 0.1 + off).collect())
                .boxed(),
        }
    }
}

/// Shapes of rank `lo..=hi` with dims in 1..=4.
pub fn shape(lo: usize, hi: usize) -> BoxedStrategy<Vec<usize>> {
    prop::collection::vec(1usize..=4, lo..=hi).boxed()
}

/// An input of `shape` under a random view (no expand when values must be distinct).
pub fn arg(shape: Vec<usize>, vals: Vals) -> BoxedStrategy<Arg> {
    let r = shape.len();
    let mut views = vec![View::Contig];
    if r >= 1 {
        views.push(View::Narrowed);
    }
    if r >= 2 {
        views.push(View::Transposed);
    }
    if !matches!(vals, Vals::Distinct) {
        for (d, &size) in shape.iter().enumerate() {
            if size == 3 {
                views.push(View::Expanded(d));
            }
        }
    }
    prop::sample::select(views)
        .prop_flat_map(move |view| {
            let mut base = shape.clone();
            match &view {
                View::Contig => {}
                View::Transposed => base.swap(r - 2, r - 1),
                View::Narrowed => base[0] += 2,
                View::Expanded(d) => base[*d] = 1,
            }
            let n = base.iter().product();
            let b2 = base.clone();
            let v2 = view.clone();
            vals.strategy(n).prop_map(move |data| Arg {
                base: b2.clone(),
                data,
                view: v2.clone(),
            })
        })
        .boxed()
}

/// Two shapes that broadcast: an output shape with some dims of each operand set to 1 and
/// some leading dims dropped.
pub fn broadcast_pair() -> BoxedStrategy<(Vec<usize>, Vec<usize>)> {
    (shape(1, 3), any::<u8>(), any::<u8>(), 0usize..2, 0usize..2)
        .prop_map(|(s, ma, mb, da, db)| {
            let thin = |m: u8, drop: usize| {
                let v: Vec<usize> = s
                    .iter()
                    .enumerate()
                    .map(|(i, &d)| if m >> i & 1 == 1 { 1 } else { d })
                    .collect();
                v[drop.min(v.len() - 1)..].to_vec()
            };
            (thin(ma, da), thin(mb & !ma, db))
        })
        .boxed()
}

/// Runs gradcheck with the documented default tolerances.
pub fn check(args: &[Arg], f: impl Fn(&[Tensor]) -> Result<Tensor>) {
    let leaves: Vec<Tensor> = args.iter().map(|a| a.leaf()).collect();
    let report = gradcheck(
        |ts| {
            let views = ts
                .iter()
                .zip(args)
                .map(|(t, a)| a.apply(t))
                .collect::<Result<Vec<_>>>()?;
            f(&views)
        },
        &leaves,
        &GradcheckOptions::default(),
    );
    match report {
        Ok(r) => assert!(r.checked > 0),
        Err(e) => panic!("{e}\nargs: {args:?}"),
    }
}
