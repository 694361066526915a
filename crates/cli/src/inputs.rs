//! The inputs of `tessera run` (and `attention`, `grads`): what `--input` names, expanded to a
//! list of sources, and each source read as a batch for a model.
//!
//! An `--input` value is a file (a `.npy` float array `[N, C, H, W]`, or a PNG / JPEG / WebP
//! image preprocessed as timm's evaluation transform by `tessera::models::preprocess`), a
//! directory (its image and `.npy` files, sorted by name, not recursive), `-` (one such value
//! per line on standard input), or `digits:I` (image I of the embedded digits test split).

use std::io::BufRead;
use std::path::{Path, PathBuf};
use tessera::core::Tensor;
use tessera::models::io::{npy, Values};
use tessera::models::preprocess::EvalTransform;
use tessera::models::zoo::Model;

/// Extensions read as images.
const IMAGE_EXTS: [&str; 4] = ["png", "jpg", "jpeg", "webp"];

/// One input: a file or an image of the embedded digits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    File(PathBuf),
    Digits(usize),
}

impl std::fmt::Display for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Source::File(p) => write!(f, "{}", p.display()),
            Source::Digits(i) => write!(f, "digits:{i}"),
        }
    }
}

fn has_ext(path: &Path, exts: &[&str]) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| exts.iter().any(|x| e.eq_ignore_ascii_case(x)))
}

/// Parses one value (not `-`) into sources; a directory expands to its image and `.npy` files.
fn expand_one(text: &str, out: &mut Vec<Source>) -> Result<(), String> {
    if let Some(index) = text.strip_prefix("digits:") {
        let i = index
            .parse()
            .map_err(|_| format!("--input {text}: expected digits:I with I a number"))?;
        out.push(Source::Digits(i));
        return Ok(());
    }
    let path = PathBuf::from(text);
    if path.is_dir() {
        let mut files: Vec<PathBuf> = std::fs::read_dir(&path)
            .map_err(|e| format!("{text}: cannot list the directory: {e}"))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.is_file() && (has_ext(p, &IMAGE_EXTS) || has_ext(p, &["npy"])))
            .collect();
        if files.is_empty() {
            return Err(format!(
                "{text}: the directory has no PNG, JPEG, WebP or .npy files"
            ));
        }
        files.sort();
        out.extend(files.into_iter().map(Source::File));
        return Ok(());
    }
    if !path.exists() {
        return Err(format!("{text}: no such file or directory"));
    }
    out.push(Source::File(path));
    Ok(())
}

/// Expands the `--input` values: files, directories, `digits:I`, and `-` (values read from
/// `stdin`, one per line, blank lines skipped).
pub fn expand(values: &[String], stdin: &mut dyn BufRead) -> Result<Vec<Source>, String> {
    let mut out = Vec::new();
    for v in values {
        if v == "-" {
            for line in stdin.lines() {
                let line =
                    line.map_err(|e| format!("--input -: cannot read standard input: {e}"))?;
                let line = line.trim();
                if !line.is_empty() {
                    expand_one(line, &mut out)?;
                }
            }
        } else {
            expand_one(v, &mut out)?;
        }
    }
    if out.is_empty() {
        return Err("--input: no inputs given (standard input was empty)".into());
    }
    Ok(out)
}

/// Whether `path` is to be read as a `.npy` array (by extension or by NumPy's magic string).
pub fn is_npy(path: &Path) -> bool {
    if has_ext(path, &["npy"]) {
        return true;
    }
    let mut magic = [0u8; 6];
    std::fs::File::open(path)
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut magic))
        .is_ok_and(|()| &magic == b"\x93NUMPY")
}

pub fn fmt_shape(s: &[usize]) -> String {
    let parts: Vec<String> = s.iter().map(|d| d.to_string()).collect();
    format!("[{}]", parts.join(", "))
}

/// Reads a float `.npy` `[N, C, H, W]` with `C` the model's input channels.
fn read_npy(path: &Path, model: &dyn Model) -> Result<Tensor, String> {
    let [c, h, w] = model.input_chw();
    let shown = path.display();
    let arr = npy::read(path).map_err(|e| e.to_string())?;
    let data = match arr.values {
        Values::F32(v) => v,
        Values::I64(_) => {
            return Err(format!(
                "{shown}: an integer or boolean array of shape {}; the input must be a \
                 floating-point array [N, {c}, {h}, {w}]",
                fmt_shape(&arr.shape)
            ))
        }
    };
    let s = &arr.shape;
    if s.len() != 4 || s[0] == 0 || s[1] != c {
        return Err(format!(
            "{shown}: the array has shape {} but {} expects [N, {c}, H, W] with N >= 1 \
             ([N, {c}, {h}, {w}] at its configured size)",
            fmt_shape(s),
            model.arch()
        ));
    }
    Tensor::from_vec(data, s).map_err(|e| format!("{shown}: {e}"))
}

/// Image `i` of the embedded digits test split as `[1, 1, 8, 8]`, and its label.
pub fn digits_image(i: usize) -> Result<(Tensor, usize), String> {
    let (_, test) = tessera::models::data::digits_split().map_err(|e| e.to_string())?;
    if i >= test.len() {
        return Err(format!(
            "--input digits:{i}: the digits test split has {} images (digits:0 ..= digits:{})",
            test.len(),
            test.len() - 1
        ));
    }
    let [c, h, w] = test.chw;
    let px = c * h * w;
    let x = Tensor::from_vec(test.images[i * px..(i + 1) * px].to_vec(), &[1, c, h, w])
        .map_err(|e| e.to_string())?;
    Ok((x, test.labels[i]))
}

/// Reads `source` as a batch for `model`: a `.npy` array as it is, an image preprocessed to
/// `[1, C, img, img]` for the model's architecture, a digits image as `[1, 1, 8, 8]`.
pub fn read(source: &Source, model: &dyn Model) -> Result<Tensor, String> {
    let path = match source {
        Source::Digits(i) => return digits_image(*i).map(|(x, _)| x),
        Source::File(p) => p,
    };
    if !path.exists() {
        return Err(format!("{}: no such file", path.display()));
    }
    if is_npy(path) {
        return read_npy(path, model);
    }
    let t = EvalTransform::for_model(model).map_err(|e| {
        format!(
            "{}: {e}; give a .npy array [N, C, H, W] instead",
            path.display()
        )
    })?;
    t.load_batch(&[path]).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir() -> PathBuf {
        let d = std::env::temp_dir().join(format!("tessera-cli-inputs-{}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn values_expand_to_sources() {
        let d = dir().join("imgs");
        std::fs::create_dir_all(&d).unwrap();
        for f in ["b.png", "a.JPG", "c.webp", "notes.txt"] {
            std::fs::write(d.join(f), b"x").unwrap();
        }
        let listed = dir().join("one.npy");
        std::fs::write(&listed, b"x").unwrap();
        let mut stdin = std::io::Cursor::new(format!("{}\n\ndigits:3\n", listed.display()));
        let got = expand(
            &[d.display().to_string(), "-".into(), "digits:7".into()],
            &mut stdin,
        )
        .unwrap();
        let want = vec![
            Source::File(d.join("a.JPG")),
            Source::File(d.join("b.png")),
            Source::File(d.join("c.webp")),
            Source::File(listed),
            Source::Digits(3),
            Source::Digits(7),
        ];
        assert_eq!(got, want);
        let empty = &mut std::io::Cursor::new("");
        assert!(expand(&["-".into()], empty)
            .unwrap_err()
            .contains("no inputs"));
        let e = expand(&["digits:x".into()], empty).unwrap_err();
        assert!(e.contains("digits:I"), "{e}");
        let e = expand(&["/nonexistent/q.png".into()], empty).unwrap_err();
        assert!(e.contains("q.png") && e.contains("no such"), "{e}");
    }

    #[test]
    fn digits_images_are_checked() {
        let (x, label) = digits_image(0).unwrap();
        assert_eq!(x.shape(), [1, 1, 8, 8]);
        assert!(label < 10);
        assert!(digits_image(100_000).unwrap_err().contains("360 images"));
    }
}
