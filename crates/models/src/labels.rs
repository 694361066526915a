//! Class names for classifier outputs: the 1000 ImageNet-1k classes embedded (index order of
//! every ImageNet-1k classifier in timm), or one name per line from a file for other heads.
//!
//! The ImageNet-1k list (`crates/models/data/imagenet1k_labels.txt`) is the WordNet lemmas of
//! the ILSVRC-2012 synsets in timm's `imagenet_synsets.txt` order (timm, Apache-2.0; lemmas
//! from WordNet 3.0, Princeton University license); `scripts/pretrained_data.py` writes it.

use crate::error::{ModelError, Result};
use crate::io::FileError;
use std::path::Path;
use std::sync::OnceLock;

const IMAGENET1K: &str = include_str!("../data/imagenet1k_labels.txt");

/// The 1000 ImageNet-1k class names, index `i` naming output `i` (`"tench, Tinca tinca"`...).
pub fn imagenet1k() -> &'static [&'static str] {
    static LABELS: OnceLock<Vec<&'static str>> = OnceLock::new();
    LABELS.get_or_init(|| IMAGENET1K.lines().collect())
}

/// The first (most common) name of a label: `"tabby, tabby cat"` -> `"tabby"`.
pub fn short_name(label: &str) -> &str {
    label.split(',').next().unwrap_or(label).trim()
}

/// The class names for a head with `num_classes` outputs: ImageNet-1k's for 1000 classes,
/// `None` otherwise.
pub fn default_for(num_classes: usize) -> Option<&'static [&'static str]> {
    (num_classes == 1000).then(imagenet1k)
}

/// Reads class names from a text file, one per line (blank lines kept as empty names, so
/// line `i` always names class `i`; a trailing newline adds no class). Errors name the file.
pub fn read(path: impl AsRef<Path>) -> Result<Vec<String>> {
    let path = path.as_ref();
    let text = std::fs::read_to_string(path)
        .map_err(|e| ModelError::File(FileError::io(path, "cannot read the labels", e)))?;
    let names: Vec<String> = text
        .strip_suffix('\n')
        .unwrap_or(&text)
        .split('\n')
        .map(|l| l.trim_end_matches('\r').to_string())
        .collect();
    if text.is_empty() {
        return Err(ModelError::File(FileError::new(
            path,
            "the labels file is empty (one class name per line expected)",
        )));
    }
    Ok(names)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn imagenet_has_1000_names_in_index_order() {
        let l = imagenet1k();
        assert_eq!(l.len(), 1000);
        assert_eq!(l[0], "tench, Tinca tinca");
        assert_eq!(short_name(l[281]), "tabby");
        assert_eq!(l[999], "toilet tissue, toilet paper, bathroom tissue");
        assert!(l.iter().all(|s| !s.is_empty()));
        assert!(default_for(10).is_none());
    }

    #[test]
    fn files_are_read_line_by_line() {
        let dir = std::env::temp_dir().join(format!("tessera-labels-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("l.txt");
        std::fs::write(&p, "cat\r\ndog\n\nbird\n").unwrap();
        assert_eq!(read(&p).unwrap(), ["cat", "dog", "", "bird"]);
        let e = read(dir.join("none.txt")).unwrap_err();
        let ModelError::File(f) = &e else {
            panic!("{e}")
        };
        assert_eq!(f.kind(), Some(std::io::ErrorKind::NotFound));
        assert!(std::error::Error::source(f).is_some());
        assert!(e.to_string().contains("none.txt"), "{e}");
    }
}
