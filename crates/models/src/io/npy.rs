//! NumPy `.npy` arrays (format versions 1.0, 2.0 and 3.0, as specified in
//! `numpy.lib.format`): a magic string, a version, a header length, then a Python dict literal
//! `{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }` and the raw data.
//!
//! Reading accepts every header the format allows for numeric dtypes: little-, big- and
//! native-endian (`<`, `>`, `|`, `=`) floats of 2, 4 and 8 bytes (converted to f32), signed and
//! unsigned integers of 1 to 8 bytes and booleans (converted to i64), C or Fortran order
//! (Fortran data is transposed to C order). Anything else (complex, structured, object arrays)
//! is rejected with the descr named. Writing produces version 1.0 C-order little-endian files,
//! atomically.

use super::atomic::write_atomically;
use super::safetensors::f16_to_f32;
use super::{FileError, Values};
use std::io::{Read, Write};
use std::path::Path;

/// An array read from a `.npy` file, in C (row-major) order.
#[derive(Debug, Clone, PartialEq)]
pub struct NpyArray {
    /// Dimensions, C order.
    pub shape: Vec<usize>,
    /// The values.
    pub values: Values,
}

const MAGIC: &[u8] = b"\x93NUMPY";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Float,
    Int,
    Uint,
    Bool,
}

/// Reads a `.npy` file.
pub fn read(path: impl AsRef<Path>) -> Result<NpyArray, FileError> {
    let path = path.as_ref();
    let file = std::fs::File::open(path).map_err(|e| FileError::io(path, "cannot open", e))?;
    let len = file.metadata().map(|m| m.len()).unwrap_or(u64::MAX);
    read_from(std::io::BufReader::new(file), len, path)
}

/// Reads `.npy` data of `len` bytes from `src`; `path` only names it in errors.
pub fn read_from<R: Read>(
    mut src: R,
    len: u64,
    path: impl AsRef<Path>,
) -> Result<NpyArray, FileError> {
    let path = path.as_ref();
    let err = |msg: String| FileError::new(path, msg);
    let mut pre = [0u8; 8];
    src.read_exact(&mut pre)
        .map_err(|_| err("truncated: too short for the .npy magic and version".into()))?;
    if &pre[..6] != MAGIC {
        return Err(err("not a .npy file (bad magic string)".into()));
    }
    let (major, minor) = (pre[6], pre[7]);
    let header_len = match major {
        1 => {
            let mut b = [0u8; 2];
            src.read_exact(&mut b)
                .map_err(|_| err("truncated header length".into()))?;
            u16::from_le_bytes(b) as u64
        }
        2 | 3 => {
            let mut b = [0u8; 4];
            src.read_exact(&mut b)
                .map_err(|_| err("truncated header length".into()))?;
            u32::from_le_bytes(b) as u64
        }
        _ => {
            return Err(err(format!(
                "unsupported .npy format version {major}.{minor}"
            )))
        }
    };
    let prefix = if major == 1 { 10 } else { 12 };
    if header_len > len.saturating_sub(prefix) || header_len > 1 << 24 {
        return Err(err(format!(
            "header length {header_len} runs past the end of the file"
        )));
    }
    let mut header = vec![0u8; header_len as usize];
    src.read_exact(&mut header)
        .map_err(|_| err("truncated header".into()))?;
    let text = if major == 3 {
        String::from_utf8(header).map_err(|_| err("header is not UTF-8".into()))?
    } else {
        // Versions 1 and 2 are latin-1; the keys and values we accept are ASCII.
        header.iter().map(|&b| b as char).collect()
    };
    let (descr, fortran, shape) =
        parse_header(&text).map_err(|m| err(format!("bad header {:?}: {m}", text.trim_end())))?;
    let (big_endian, kind, size) = parse_descr(&descr).map_err(err)?;
    let numel = shape
        .iter()
        .try_fold(1usize, |a, &d| a.checked_mul(d))
        .ok_or_else(|| err(format!("shape {shape:?} overflows")))?;
    let bytes = numel
        .checked_mul(size)
        .ok_or_else(|| err(format!("shape {shape:?} overflows")))?;
    let available = len.saturating_sub(prefix + header_len);
    if (bytes as u64) > available {
        return Err(err(format!("truncated: shape {shape:?} of {descr} needs {bytes} data bytes but the file has {available}")));
    }
    // The data bytes and the decoded f32 values must fit the memory budget before anything
    // is allocated; and the data is read as it arrives, never allocated ahead from the header,
    // so a source of unknown length (a pipe) that ends early costs only what it held.
    let need = (bytes as u64).checked_add((numel as u64).saturating_mul(4));
    crate::limits::check(&format!("its shape {shape:?} of {descr}"), need)
        .map_err(|e| err(e.to_string()))?;
    let mut data = Vec::with_capacity(bytes.min(1 << 20));
    let got = (&mut src)
        .take(bytes as u64)
        .read_to_end(&mut data)
        .map_err(|e| err(format!("read error: {e}")))?;
    if got != bytes {
        return Err(err(format!(
            "truncated: shape {shape:?} of {descr} needs {bytes} data bytes, the file has {got}"
        )));
    }
    let mut values = decode(&data, kind, size, big_endian);
    if fortran && shape.len() > 1 {
        values = to_c_order(values, &shape);
    }
    Ok(NpyArray { shape, values })
}

/// Parses the header dict: (descr, fortran_order, shape).
fn parse_header(text: &str) -> Result<(String, bool, Vec<usize>), String> {
    let t = text.trim_end_matches(['\n', ' ', '\0']).trim();
    let inner = t
        .strip_prefix('{')
        .and_then(|s| s.strip_suffix('}'))
        .ok_or("not a dict")?;
    let (mut descr, mut fortran, mut shape) = (None, None, None);
    let mut rest = inner.trim();
    while !rest.is_empty() {
        let quote = rest.chars().next().ok_or("empty")?;
        if quote != '\'' && quote != '"' {
            return Err("expected a quoted key".into());
        }
        let end = rest[1..].find(quote).ok_or("unterminated key")? + 1;
        let key = &rest[1..end];
        rest = rest[end + 1..]
            .trim_start()
            .strip_prefix(':')
            .ok_or("expected ':'")?
            .trim_start();
        match key {
            "descr" => {
                let q = rest.chars().next().ok_or("missing descr")?;
                if q != '\'' && q != '"' {
                    return Err(
                        "descr must be a string (structured dtypes are not supported)".into(),
                    );
                }
                let e = rest[1..].find(q).ok_or("unterminated descr")? + 1;
                descr = Some(rest[1..e].to_string());
                rest = &rest[e + 1..];
            }
            "fortran_order" => {
                if let Some(r) = rest.strip_prefix("True") {
                    fortran = Some(true);
                    rest = r;
                } else if let Some(r) = rest.strip_prefix("False") {
                    fortran = Some(false);
                    rest = r;
                } else {
                    return Err("fortran_order must be True or False".into());
                }
            }
            "shape" => {
                let r = rest.strip_prefix('(').ok_or("shape must be a tuple")?;
                let close = r.find(')').ok_or("unterminated shape")?;
                let mut dims = Vec::new();
                let parts: Vec<&str> = r[..close].split(',').collect();
                for (i, part) in parts.iter().enumerate() {
                    let p = part.trim().trim_end_matches('L');
                    if p.is_empty() && i + 1 < parts.len() {
                        // Only the last part may be empty: `()`, `(5,)`.
                        return Err("empty dimension in the shape".into());
                    }
                    if !p.is_empty() {
                        dims.push(
                            p.parse::<usize>()
                                .map_err(|_| format!("bad dimension {p:?}"))?,
                        );
                    }
                }
                shape = Some(dims);
                rest = &r[close + 1..];
            }
            other => return Err(format!("unknown key {other:?}")),
        }
        rest = rest.trim_start();
        rest = rest.strip_prefix(',').unwrap_or(rest).trim_start();
    }
    Ok((
        descr.ok_or("missing 'descr'")?,
        fortran.ok_or("missing 'fortran_order'")?,
        shape.ok_or("missing 'shape'")?,
    ))
}

/// (big endian, kind, element size) of a descr such as `<f4`.
fn parse_descr(descr: &str) -> Result<(bool, Kind, usize), String> {
    let unsupported = || {
        format!("unsupported dtype {descr:?}: expected a float (f2, f4, f8), integer (i1..i8, u1..u8) or bool (b1)")
    };
    // Byte order: '<' little, '>' big, '=' native, '|' not applicable (one-byte types).
    let native_big = cfg!(target_endian = "big");
    let (big, rest) = match descr.chars().next().ok_or_else(unsupported)? {
        '<' | '|' => (false, &descr[1..]),
        '>' => (true, &descr[1..]),
        '=' => (native_big, &descr[1..]),
        _ => (native_big, descr),
    };
    let (kind, size) = match rest {
        "f2" | "e" => (Kind::Float, 2),
        "f4" | "f" => (Kind::Float, 4),
        "f8" | "d" => (Kind::Float, 8),
        "i1" | "b" => (Kind::Int, 1),
        "i2" | "h" => (Kind::Int, 2),
        "i4" | "i" => (Kind::Int, 4),
        "i8" | "q" | "l" => (Kind::Int, 8),
        "u1" | "B" => (Kind::Uint, 1),
        "u2" | "H" => (Kind::Uint, 2),
        "u4" | "I" => (Kind::Uint, 4),
        "u8" | "Q" | "L" => (Kind::Uint, 8),
        "b1" | "?" => (Kind::Bool, 1),
        _ => return Err(unsupported()),
    };
    Ok((big, kind, size))
}

fn decode(data: &[u8], kind: Kind, size: usize, big: bool) -> Values {
    let word = |c: &[u8]| -> u64 {
        let mut b = [0u8; 8];
        if big {
            for (i, &x) in c.iter().rev().enumerate() {
                b[i] = x;
            }
        } else {
            b[..c.len()].copy_from_slice(c);
        }
        u64::from_le_bytes(b)
    };
    let it = data.chunks_exact(size).map(word);
    match kind {
        Kind::Float => Values::F32(
            it.map(|w| match size {
                2 => f16_to_f32(w as u16),
                4 => f32::from_bits(w as u32),
                _ => f64::from_bits(w) as f32,
            })
            .collect(),
        ),
        Kind::Int => Values::I64(
            it.map(|w| ((w << (64 - 8 * size)) as i64) >> (64 - 8 * size))
                .collect(),
        ),
        Kind::Uint => Values::I64(it.map(|w| w as i64).collect()),
        Kind::Bool => Values::I64(it.map(|w| (w != 0) as i64).collect()),
    }
}

/// Reorders Fortran-order (column-major) values to C order.
fn to_c_order(values: Values, shape: &[usize]) -> Values {
    fn permute<T: Copy>(v: &[T], shape: &[usize]) -> Vec<T> {
        let nd = shape.len();
        // Fortran strides: stride[0] = 1, stride[d] = stride[d-1] * shape[d-1].
        let mut fstride = vec![1usize; nd];
        for d in 1..nd {
            fstride[d] = fstride[d - 1] * shape[d - 1];
        }
        let mut idx = vec![0usize; nd];
        let mut out = Vec::with_capacity(v.len());
        for _ in 0..v.len() {
            out.push(v[idx.iter().zip(&fstride).map(|(i, s)| i * s).sum::<usize>()]);
            for d in (0..nd).rev() {
                idx[d] += 1;
                if idx[d] < shape[d] {
                    break;
                }
                idx[d] = 0;
            }
        }
        out
    }
    match values {
        Values::F32(v) => Values::F32(permute(&v, shape)),
        Values::I64(v) => Values::I64(permute(&v, shape)),
    }
}

fn header_for(descr: &str, shape: &[usize]) -> Vec<u8> {
    let dims = match shape.len() {
        1 => format!("({},)", shape[0]),
        _ => format!(
            "({})",
            shape
                .iter()
                .map(|d| d.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ),
    };
    let mut h = format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': {dims}, }}");
    // Pad so magic + version + length + header is a multiple of 64, ending in '\n'.
    while (10 + h.len() + 1) % 64 != 0 {
        h.push(' ');
    }
    h.push('\n');
    let mut out = Vec::with_capacity(10 + h.len());
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&[1, 0]);
    out.extend_from_slice(&(h.len() as u16).to_le_bytes());
    out.extend_from_slice(h.as_bytes());
    out
}

fn check_len(path: &Path, shape: &[usize], len: usize) -> Result<(), FileError> {
    let numel: usize = shape.iter().product();
    if numel != len {
        return Err(FileError::new(
            path,
            format!("shape {shape:?} has {numel} elements but {len} values were given"),
        ));
    }
    Ok(())
}

/// Writes a C-order little-endian float32 array, atomically.
pub fn write_f32(path: impl AsRef<Path>, shape: &[usize], data: &[f32]) -> Result<(), FileError> {
    let path = path.as_ref();
    check_len(path, shape, data.len())?;
    write_atomically(path, |w| {
        w.write_all(&header_for("<f4", shape))?;
        for chunk in data.chunks(1 << 14) {
            let bytes: Vec<u8> = chunk.iter().flat_map(|v| v.to_le_bytes()).collect();
            w.write_all(&bytes)?;
        }
        Ok(())
    })
}

/// Writes a C-order little-endian int64 array, atomically.
pub fn write_i64(path: impl AsRef<Path>, shape: &[usize], data: &[i64]) -> Result<(), FileError> {
    let path = path.as_ref();
    check_len(path, shape, data.len())?;
    write_atomically(path, |w| {
        w.write_all(&header_for("<i8", shape))?;
        let bytes: Vec<u8> = data.iter().flat_map(|v| v.to_le_bytes()).collect();
        w.write_all(&bytes)
    })
}
