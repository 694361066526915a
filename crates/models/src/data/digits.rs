//! The UCI handwritten digits (Alpaydin & Kaynak, 1998; CC BY 4.0; see
//! `crates/models/data/README.md`), embedded so training demos and end-to-end tests run offline:
//! 1797 grayscale 8x8 images with values 0..=16 (scaled to [0, 1]) and labels 0..=9.

use super::Dataset;
use crate::error::Result;

static RAW: &[u8] = include_bytes!("../../data/digits.u8");

/// The seed of the standard train/test split.
pub const DIGITS_SPLIT_SEED: u64 = 20_260_128;

/// All 1797 digits as `[1, 8, 8]` images in [0, 1].
pub fn digits() -> Dataset {
    let n = RAW.len() / 65;
    let mut images = Vec::with_capacity(n * 64);
    let mut labels = Vec::with_capacity(n);
    for rec in RAW.chunks_exact(65) {
        images.extend(rec[..64].iter().map(|&p| p as f32 / 16.0));
        labels.push(rec[64] as usize);
    }
    Dataset {
        name: "digits".into(),
        images,
        labels,
        chw: [1, 8, 8],
        num_classes: 10,
    }
}

/// The standard split: 360 test images (20%) and 1437 training images, chosen with
/// [`DIGITS_SPLIT_SEED`].
pub fn digits_split() -> Result<(Dataset, Dataset)> {
    digits().split(360, DIGITS_SPLIT_SEED)
}
