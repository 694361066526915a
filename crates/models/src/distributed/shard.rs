//! Which images of a global batch each process computes: contiguous, near-equal parts in rank
//! order, so the union over the ranks is the global batch in its order for any number of
//! processes (the global batch and the shuffled order depend only on the seed).

use crate::data::{Augment, Dataset};
use std::ops::Range;
use tessera_core::{Rng, Tensor};

/// Rank `rank`'s part of a batch of `n` images over `size` processes: `n * rank / size ..
/// n * (rank + 1) / size` (the parts differ by at most one image).
pub fn shard_range(n: usize, rank: usize, size: usize) -> Range<usize> {
    let size = size.max(1);
    (n * rank / size)..(n * (rank + 1) / size)
}

/// The images `idx[part]` of a global batch `idx` as `[part.len(), c, h, w]`, with their labels,
/// augmented exactly as [`Dataset::batch`] augments the whole batch with `seed`: the generator
/// is advanced past the draws of the images before `part`, so every image gets the crop and
/// flip it gets in a one-process run.
pub fn shard_batch(
    data: &Dataset,
    idx: &[usize],
    part: Range<usize>,
    augment: Option<&Augment>,
    seed: u64,
) -> (Tensor, Vec<usize>) {
    let part = part.start.min(idx.len())..part.end.min(idx.len()).max(part.start.min(idx.len()));
    let Some(a) = augment else {
        return data.batch(&idx[part], None, seed);
    };
    let mut rng = Rng::new(seed);
    // Replays the draws of the images before this part (into a scratch image).
    let mut scratch = Vec::with_capacity(data.image_len());
    for &i in &idx[..part.start] {
        scratch.clear();
        a.apply(data.image(i), data.chw, &mut rng, &mut scratch);
    }
    let mut values = Vec::with_capacity(part.len() * data.image_len());
    for &i in &idx[part.clone()] {
        a.apply(data.image(i), data.chw, &mut rng, &mut values);
    }
    let [c, h, w] = data.chw;
    // The length is part.len() * c * h * w by construction.
    let x = Tensor::from_vec(values, &[part.len(), c, h, w])
        .unwrap_or_else(|_| Tensor::zeros(&[0, c, h, w]));
    (x, idx[part].iter().map(|&i| data.labels[i]).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parts_cover_the_batch_in_order() {
        for n in 0..40 {
            for size in 1..6 {
                let mut next = 0;
                for r in 0..size {
                    let p = shard_range(n, r, size);
                    assert_eq!(p.start, next);
                    assert!(p.len() <= n.div_ceil(size) && p.len() >= n / size);
                    next = p.end;
                }
                assert_eq!(next, n);
            }
        }
    }

    #[test]
    fn augmented_parts_equal_the_whole_batch() {
        let n = 9;
        let data = Dataset {
            name: "t".into(),
            images: (0..n * 2 * 5 * 5).map(|v| v as f32).collect(),
            labels: (0..n).map(|i| i % 3).collect(),
            chw: [2, 5, 5],
            num_classes: 3,
        };
        let a = Augment {
            crop_padding: 2,
            hflip: true,
            resized_crop: None,
        };
        let idx = [4, 1, 7, 0, 8, 2, 6];
        let (whole, labels) = data.batch(&idx, Some(&a), 42);
        for size in 1..4 {
            let mut xs = Vec::new();
            let mut ys = Vec::new();
            for r in 0..size {
                let (x, y) =
                    shard_batch(&data, &idx, shard_range(idx.len(), r, size), Some(&a), 42);
                xs.extend(x.to_vec());
                ys.extend(y);
            }
            assert_eq!(xs, whole.to_vec(), "{size} parts");
            assert_eq!(ys, labels);
        }
    }
}
