//! Data for training and evaluation: an in-memory image classification [`Dataset`], the
//! embedded digits set (offline default), a CIFAR-10 reader for the official binary format,
//! image-folder data sets (one sub-folder per class), normalisation, seeded augmentation and
//! shuffled batches.

mod augment;
pub mod cifar;
mod digits;
mod folder;

pub use augment::{Augment, ResizedCrop};
pub use cifar::cifar10;
pub use digits::{digits, digits_split, DIGITS_SPLIT_SEED};
pub use folder::{image_folder_splits, ImageFolder, IMAGE_EXTENSIONS, MAX_DATASET_BYTES};

use crate::error::{ModelError, Result};
use tessera_core::{Rng, Tensor};

/// Images `[n, c, h, w]` (f32, row-major) with class labels.
#[derive(Debug, Clone, PartialEq)]
pub struct Dataset {
    /// A name for messages (`digits`, `cifar10`, a folder).
    pub name: String,
    /// `n * c * h * w` values, image after image.
    pub images: Vec<f32>,
    /// Class index of every image.
    pub labels: Vec<usize>,
    /// `[c, h, w]` of every image.
    pub chw: [usize; 3],
    /// Number of classes (labels are below it).
    pub num_classes: usize,
}

impl Dataset {
    /// Number of images.
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    /// Whether there are no images.
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// Values per image.
    pub fn image_len(&self) -> usize {
        self.chw.iter().product()
    }

    /// Image `i`.
    pub fn image(&self, i: usize) -> &[f32] {
        let l = self.image_len();
        &self.images[i * l..(i + 1) * l]
    }

    /// The images at `idx`, in that order, as a new data set.
    pub fn subset(&self, idx: &[usize]) -> Dataset {
        let mut images = Vec::with_capacity(idx.len() * self.image_len());
        for &i in idx {
            images.extend_from_slice(self.image(i));
        }
        Dataset {
            name: self.name.clone(),
            images,
            labels: idx.iter().map(|&i| self.labels[i]).collect(),
            chw: self.chw,
            num_classes: self.num_classes,
        }
    }

    /// Splits into (train, test) with `test_len` images in the test part, chosen by a seeded
    /// shuffle (the same seed always gives the same split).
    pub fn split(&self, test_len: usize, seed: u64) -> Result<(Dataset, Dataset)> {
        if test_len > self.len() {
            return Err(ModelError::config(format!(
                "cannot take {test_len} test images from {} images",
                self.len()
            )));
        }
        let order = permutation(self.len(), seed);
        let (test, train) = order.split_at(test_len);
        Ok((self.subset(train), self.subset(test)))
    }

    /// Per-channel mean and standard deviation (population) over all images.
    pub fn channel_stats(&self) -> (Vec<f32>, Vec<f32>) {
        let [c, h, w] = self.chw;
        let mut sum = vec![0.0f64; c];
        let mut sq = vec![0.0f64; c];
        for img in self.images.chunks_exact(c * h * w) {
            for (ch, plane) in img.chunks_exact(h * w).enumerate() {
                for &v in plane {
                    sum[ch] += v as f64;
                    sq[ch] += (v as f64) * (v as f64);
                }
            }
        }
        let count = (self.len() * h * w).max(1) as f64;
        let mean: Vec<f32> = sum.iter().map(|s| (s / count) as f32).collect();
        let std = sq
            .iter()
            .zip(&sum)
            .map(|(q, s)| ((q / count - (s / count).powi(2)).max(0.0).sqrt()) as f32)
            .collect();
        (mean, std)
    }

    /// `x = (x - mean[c]) / std[c]` for every channel `c`.
    pub fn normalize(&mut self, mean: &[f32], std: &[f32]) -> Result<()> {
        let [c, h, w] = self.chw;
        if mean.len() != c || std.len() != c || std.iter().any(|s| *s <= 0.0 || !s.is_finite()) {
            return Err(ModelError::config(format!("normalize: need {c} means and {c} positive standard deviations, got {mean:?} / {std:?}")));
        }
        for img in self.images.chunks_exact_mut(c * h * w) {
            for (ch, plane) in img.chunks_exact_mut(h * w).enumerate() {
                let inv = 1.0 / std[ch];
                for v in plane {
                    *v = (*v - mean[ch]) * inv;
                }
            }
        }
        Ok(())
    }

    /// The images at `idx` as one `[idx.len(), c, h, w]` tensor, with their labels; `augment`
    /// (if any) is applied to each image with a generator seeded from `seed`.
    pub fn batch(
        &self,
        idx: &[usize],
        augment: Option<&Augment>,
        seed: u64,
    ) -> (Tensor, Vec<usize>) {
        let l = self.image_len();
        let mut data = Vec::with_capacity(idx.len() * l);
        let mut rng = Rng::new(seed);
        for &i in idx {
            match augment {
                Some(a) => a.apply(self.image(i), self.chw, &mut rng, &mut data),
                None => data.extend_from_slice(self.image(i)),
            }
        }
        let [c, h, w] = self.chw;
        // The length is n * c * h * w by construction.
        let t = Tensor::from_vec(data, &[idx.len(), c, h, w])
            .unwrap_or_else(|_| Tensor::zeros(&[0, c, h, w]));
        (t, idx.iter().map(|&i| self.labels[i]).collect())
    }

    /// The batches of one epoch: indices shuffled with `seed` (or in order when `None`), cut
    /// into batches of `batch_size` (the last may be smaller).
    pub fn epoch_batches(&self, batch_size: usize, shuffle_seed: Option<u64>) -> Vec<Vec<usize>> {
        let order = match shuffle_seed {
            Some(s) => permutation(self.len(), s),
            None => (0..self.len()).collect(),
        };
        order
            .chunks(batch_size.max(1))
            .map(|c| c.to_vec())
            .collect()
    }
}

/// A seeded Fisher-Yates permutation of `0..n`.
pub fn permutation(n: usize, seed: u64) -> Vec<usize> {
    let mut rng = Rng::new(seed);
    let mut v: Vec<usize> = (0..n).collect();
    for i in (1..n).rev() {
        let j = rng.below(i + 1);
        v.swap(i, j);
    }
    v
}
