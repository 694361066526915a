//! Image-folder data sets, laid out as torchvision's `ImageFolder` expects: one sub-folder per
//! class under a root, class names sorted, images with the extensions `png`, `jpg`, `jpeg` and
//! `webp` (any case). A root holding `train/` and `val/` (each with the same class folders) is
//! split that way; any other root is split by a seeded, per-class (stratified) hold-out.
//!
//! Scanning only lists files; [`ImageFolder::load`] decodes them through a caller-given
//! function (path -> `[c, h, w]` values), so this module needs no image codec: the `tessera`
//! program passes timm's evaluation preprocessing (resize, centre crop, normalise). Every image
//! is decoded once and kept in memory as f32; the size is checked against
//! [`MAX_DATASET_BYTES`] before anything is allocated.

use super::{permutation, Dataset};
use crate::error::{ModelError, Result};
use crate::io::FileError;
use rayon::prelude::*;
use std::path::{Path, PathBuf};

/// File extensions (lower case) that count as images.
pub const IMAGE_EXTENSIONS: &[&str] = &["png", "jpg", "jpeg", "webp"];

/// Largest decoded data set [`ImageFolder::load`] accepts: 8 GiB of f32 pixels.
pub const MAX_DATASET_BYTES: u64 = 8 << 30;

/// The images of a folder data set: class names and `(file, class index)` pairs, not decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageFolder {
    /// A name for messages (the root directory).
    pub name: String,
    /// Class names (the sub-folder names), sorted; a label is an index into this list.
    pub classes: Vec<String>,
    /// Every image file with its label, by class, then by file name.
    pub files: Vec<(PathBuf, usize)>,
}

fn is_image(path: &Path) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| IMAGE_EXTENSIONS.contains(&e.to_ascii_lowercase().as_str()))
}

fn sorted_entries(dir: &Path) -> Result<Vec<PathBuf>> {
    let rd =
        std::fs::read_dir(dir).map_err(|e| FileError::new(dir, format!("cannot list: {e}")))?;
    let mut v = Vec::new();
    for entry in rd {
        let entry = entry.map_err(|e| FileError::new(dir, format!("cannot list: {e}")))?;
        v.push(entry.path());
    }
    v.sort();
    Ok(v)
}

impl ImageFolder {
    /// Lists `root`: every sub-folder is a class (hidden ones, starting with `.`, are skipped),
    /// every image file directly inside it a sample. Errors name the folder: not a directory,
    /// no class folders, a class without images.
    pub fn scan(root: impl AsRef<Path>) -> Result<ImageFolder> {
        let root = root.as_ref();
        if !root.is_dir() {
            return Err(FileError::new(
                root,
                "not a directory (expected one sub-folder of images per class)",
            )
            .into());
        }
        let mut classes = Vec::new();
        let mut files = Vec::new();
        for dir in sorted_entries(root)? {
            let name = match dir.file_name().and_then(|n| n.to_str()) {
                Some(n) if !n.starts_with('.') && dir.is_dir() => n.to_string(),
                _ => continue,
            };
            let label = classes.len();
            let images: Vec<PathBuf> = sorted_entries(&dir)?
                .into_iter()
                .filter(|p| p.is_file() && is_image(p))
                .collect();
            if images.is_empty() {
                return Err(FileError::new(
                    &dir,
                    format!(
                        "class folder {name:?} has no images ({})",
                        IMAGE_EXTENSIONS.join(", ")
                    ),
                )
                .into());
            }
            files.extend(images.into_iter().map(|p| (p, label)));
            classes.push(name);
        }
        if classes.is_empty() {
            return Err(FileError::new(
                root,
                "no class sub-folders (expected ROOT/<class>/<image>.png|jpg|webp)",
            )
            .into());
        }
        Ok(ImageFolder {
            name: root.display().to_string(),
            classes,
            files,
        })
    }

    /// Number of images.
    pub fn len(&self) -> usize {
        self.files.len()
    }

    /// Whether there are no images.
    pub fn is_empty(&self) -> bool {
        self.files.is_empty()
    }

    /// Splits into (train, held-out): in every class with at least two images,
    /// `round(n * fraction)` images (at least one, at most `n - 1`) chosen by a permutation
    /// seeded from `seed` and the class index go to the held-out part.
    pub fn split(&self, fraction: f64, seed: u64) -> Result<(ImageFolder, ImageFolder)> {
        if !(fraction > 0.0 && fraction < 1.0) {
            return Err(ModelError::config(format!(
                "the held-out fraction must be in (0, 1), got {fraction}"
            )));
        }
        let mut train = ImageFolder {
            files: Vec::new(),
            ..self.clone()
        };
        let mut held = train.clone();
        for label in 0..self.classes.len() {
            let of_class: Vec<&(PathBuf, usize)> =
                self.files.iter().filter(|(_, l)| *l == label).collect();
            let n = of_class.len();
            let k = if n < 2 {
                0
            } else {
                ((n as f64 * fraction).round() as usize).clamp(1, n - 1)
            };
            let order = permutation(n, seed ^ (label as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15));
            let mut chosen = vec![false; n];
            for &i in &order[..k] {
                chosen[i] = true;
            }
            for (i, f) in of_class.into_iter().enumerate() {
                if chosen[i] {
                    held.files.push(f.clone())
                } else {
                    train.files.push(f.clone())
                }
            }
        }
        if held.files.is_empty() {
            return Err(ModelError::config(format!(
                "{}: no class has two images, so nothing can be held out for evaluation",
                self.name
            )));
        }
        Ok((train, held))
    }

    /// Decodes every image with `decode` (path -> `c * h * w` values for `chw`), in parallel,
    /// into a [`Dataset`]. Errors: the decoded set would exceed [`MAX_DATASET_BYTES`] (checked
    /// first), a file fails to decode (the message names it), or a decoder returns the wrong
    /// number of values.
    pub fn load(
        &self,
        chw: [usize; 3],
        decode: &(dyn Fn(&Path) -> std::result::Result<Vec<f32>, String> + Sync),
    ) -> Result<Dataset> {
        let per = chw.iter().try_fold(1usize, |a, &d| a.checked_mul(d));
        let bytes = per
            .and_then(|p| p.checked_mul(self.len()))
            .and_then(|v| v.checked_mul(4))
            .map(|b| b as u64);
        match bytes {
            Some(b) if b <= MAX_DATASET_BYTES => {}
            _ => {
                return Err(ModelError::config(format!(
                    "{}: {} images of {chw:?} would take more than {} GiB decoded (the limit); use fewer images or a smaller --img-size",
                    self.name,
                    self.len(),
                    MAX_DATASET_BYTES >> 30
                )))
            }
        }
        let per = per.unwrap_or(0);
        let decoded: Vec<Vec<f32>> = self
            .files
            .par_iter()
            .map(|(path, _)| {
                let v = decode(path).map_err(|m| ModelError::File(FileError::new(path, m)))?;
                if v.len() != per {
                    return Err(ModelError::File(FileError::new(
                        path,
                        format!("decoded to {} values, expected {per} for {chw:?}", v.len()),
                    )));
                }
                Ok(v)
            })
            .collect::<Result<_>>()?;
        let mut images = Vec::with_capacity(per * self.len());
        for v in decoded {
            images.extend_from_slice(&v);
        }
        Ok(Dataset {
            name: self.name.clone(),
            images,
            labels: self.files.iter().map(|(_, l)| *l).collect(),
            chw,
            num_classes: self.classes.len(),
        })
    }
}

/// The (train, evaluation) parts of the folder data set at `root`: `root/train` and `root/val`
/// when both exist (their class lists must agree), else [`ImageFolder::split`] of `root/train`
/// (if it exists) or `root` with `val_fraction` and `seed`.
pub fn image_folder_splits(
    root: impl AsRef<Path>,
    val_fraction: f64,
    seed: u64,
) -> Result<(ImageFolder, ImageFolder)> {
    let root = root.as_ref();
    let (t, v) = (root.join("train"), root.join("val"));
    if t.is_dir() && v.is_dir() {
        let train = ImageFolder::scan(&t)?;
        let val = ImageFolder::scan(&v)?;
        if train.classes != val.classes {
            return Err(FileError::new(
                root,
                format!(
                    "train/ and val/ have different class folders: {:?} vs {:?}",
                    train.classes, val.classes
                ),
            )
            .into());
        }
        return Ok((train, val));
    }
    // `root/train` alone: hold out part of it.
    let whole = if t.is_dir() { t } else { root.to_path_buf() };
    ImageFolder::scan(&whole)?.split(val_fraction, seed)
}
