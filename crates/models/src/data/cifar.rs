//! CIFAR-10 (Krizhevsky, 2009) in the official binary format: `data_batch_1.bin` ...
//! `data_batch_5.bin` and `test_batch.bin`, each 10000 records of 1 label byte (0..=9) and
//! 3072 pixel bytes (1024 red, 1024 green, 1024 blue, row-major 32x32). Pixels are scaled to
//! [0, 1]. A missing, short or malformed file gives an error naming the file and the record.
//! Files with fewer whole records than the official 10000 (subsets) are accepted.

use super::Dataset;
use crate::error::{ModelError, Result};
use crate::io::FileError;
use std::path::Path;

const RECORD: usize = 1 + 3072;
const PER_FILE: usize = 10_000;

fn read_file(path: &Path, images: &mut Vec<f32>, labels: &mut Vec<usize>) -> Result<()> {
    // Check the size before reading: the bytes, then 4 bytes per pixel once decoded.
    let len = std::fs::metadata(path)
        .map_err(|e| FileError::io(path, "cannot read", e))?
        .len();
    crate::limits::check(
        &format!("{} ({len} bytes, decoded to f32)", path.display()),
        len.checked_mul(5),
    )?;
    let bytes = std::fs::read(path).map_err(|e| FileError::io(path, "cannot read", e))?;
    let (im, lb) = parse_batch(&bytes, path)?;
    images.extend(im);
    labels.extend(lb);
    Ok(())
}

/// Decodes the records of one CIFAR-10 binary file's bytes (`path` names it in errors):
/// pixels scaled to [0, 1], and labels.
pub fn parse_batch(bytes: &[u8], path: &Path) -> Result<(Vec<f32>, Vec<usize>)> {
    // The official files hold 10000 records each; smaller files of whole records (subsets) are
    // accepted, a partial record is not.
    if bytes.is_empty() || !bytes.len().is_multiple_of(RECORD) {
        let whole = bytes.len() / RECORD;
        return Err(FileError::new(
            path,
            format!(
                "{} bytes is not a whole number of {RECORD}-byte records (the official files have {PER_FILE}): record {whole} is truncated",
                bytes.len()
            ),
        )
        .into());
    }
    let n = bytes.len() / RECORD;
    let (mut images, mut labels) = (Vec::with_capacity(n * (RECORD - 1)), Vec::with_capacity(n));
    for (i, rec) in bytes.chunks_exact(RECORD).enumerate() {
        if rec[0] > 9 {
            return Err(FileError::new(
                path,
                format!(
                    "record {i}: label {} is not a CIFAR-10 class (0..=9)",
                    rec[0]
                ),
            )
            .into());
        }
        labels.push(rec[0] as usize);
        images.extend(rec[1..].iter().map(|&p| p as f32 / 255.0));
    }
    Ok((images, labels))
}

/// Reads CIFAR-10 from `dir`: (train with 50000 images, test with 10000).
pub fn cifar10(dir: impl AsRef<Path>) -> Result<(Dataset, Dataset)> {
    let dir = dir.as_ref();
    if !dir.is_dir() {
        return Err(ModelError::File(FileError::new(dir, "not a directory (expected the CIFAR-10 binary files data_batch_1.bin .. data_batch_5.bin, test_batch.bin)")));
    }
    let mut train = Dataset {
        name: "cifar10".into(),
        images: Vec::new(),
        labels: Vec::new(),
        chw: [3, 32, 32],
        num_classes: 10,
    };
    let mut test = train.clone();
    for b in 1..=5 {
        read_file(
            &dir.join(format!("data_batch_{b}.bin")),
            &mut train.images,
            &mut train.labels,
        )?;
    }
    read_file(
        &dir.join("test_batch.bin"),
        &mut test.images,
        &mut test.labels,
    )?;
    Ok((train, test))
}
