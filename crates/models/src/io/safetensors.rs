//! Reading and writing the safetensors format (Hugging Face, `safetensors` 0.4 specification):
//! an 8-byte little-endian header length N, N bytes of JSON mapping each tensor name to
//! `{"dtype", "shape", "data_offsets": [begin, end]}` (plus an optional `__metadata__` map of
//! strings), then the little-endian byte buffer the offsets index.
//!
//! This is a careful reader of our own (no dependency in the engine crates): every length and
//! offset is checked before anything is read, the byte buffer must be indexed exactly (no
//! overlaps, no holes, as the reference implementation requires), and a truncated or corrupt file
//! gives an error naming the file and what is wrong, never a panic or an out-of-bounds read.
//! Tensors are read one at a time straight into their final buffers, so loading needs no second
//! copy of the file in memory. Writing goes through [`super::atomic`]: a temporary file in the
//! target's directory, then a rename, so an interrupted save never destroys the previous file.

use super::json::{self, Json};
use super::{FileError, Values};
use std::collections::BTreeMap;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::Path;

/// Element types of the safetensors specification.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dtype {
    /// Boolean (one byte).
    Bool,
    /// Unsigned 8-bit integer.
    U8,
    /// Signed 8-bit integer.
    I8,
    /// 8-bit float, 5 exponent bits, 2 mantissa bits.
    F8E5M2,
    /// 8-bit float, 4 exponent bits, 3 mantissa bits.
    F8E4M3,
    /// Signed 16-bit integer.
    I16,
    /// Unsigned 16-bit integer.
    U16,
    /// IEEE half precision.
    F16,
    /// bfloat16.
    BF16,
    /// Signed 32-bit integer.
    I32,
    /// Unsigned 32-bit integer.
    U32,
    /// IEEE single precision.
    F32,
    /// IEEE double precision.
    F64,
    /// Signed 64-bit integer.
    I64,
    /// Unsigned 64-bit integer.
    U64,
}

impl Dtype {
    fn parse(s: &str) -> Option<Dtype> {
        Some(match s {
            "BOOL" => Dtype::Bool,
            "U8" => Dtype::U8,
            "I8" => Dtype::I8,
            "F8_E5M2" => Dtype::F8E5M2,
            "F8_E4M3" => Dtype::F8E4M3,
            "I16" => Dtype::I16,
            "U16" => Dtype::U16,
            "F16" => Dtype::F16,
            "BF16" => Dtype::BF16,
            "I32" => Dtype::I32,
            "U32" => Dtype::U32,
            "F32" => Dtype::F32,
            "F64" => Dtype::F64,
            "I64" => Dtype::I64,
            "U64" => Dtype::U64,
            _ => return None,
        })
    }

    /// The specification's name (`F32`).
    pub fn name(self) -> &'static str {
        match self {
            Dtype::Bool => "BOOL",
            Dtype::U8 => "U8",
            Dtype::I8 => "I8",
            Dtype::F8E5M2 => "F8_E5M2",
            Dtype::F8E4M3 => "F8_E4M3",
            Dtype::I16 => "I16",
            Dtype::U16 => "U16",
            Dtype::F16 => "F16",
            Dtype::BF16 => "BF16",
            Dtype::I32 => "I32",
            Dtype::U32 => "U32",
            Dtype::F32 => "F32",
            Dtype::F64 => "F64",
            Dtype::I64 => "I64",
            Dtype::U64 => "U64",
        }
    }

    /// Bytes per element.
    pub fn size(self) -> usize {
        match self {
            Dtype::Bool | Dtype::U8 | Dtype::I8 | Dtype::F8E5M2 | Dtype::F8E4M3 => 1,
            Dtype::I16 | Dtype::U16 | Dtype::F16 | Dtype::BF16 => 2,
            Dtype::I32 | Dtype::U32 | Dtype::F32 => 4,
            Dtype::F64 | Dtype::I64 | Dtype::U64 => 8,
        }
    }
}

/// One tensor of a file.
#[derive(Debug, Clone, PartialEq)]
pub struct Tensor {
    /// The dtype stored in the file.
    pub dtype: Dtype,
    /// Dimensions, C order.
    pub shape: Vec<usize>,
    /// The values (floats as f32, integers as i64).
    pub values: Values,
}

impl Tensor {
    /// The f32 values, if the stored dtype is a floating-point one.
    pub fn as_f32(&self) -> Option<&[f32]> {
        match &self.values {
            Values::F32(v) => Some(v),
            Values::I64(_) => None,
        }
    }
}

/// A whole file: tensors by name (sorted), and the `__metadata__` strings.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SafeTensors {
    /// Tensors by name.
    pub tensors: BTreeMap<String, Tensor>,
    /// The `__metadata__` strings.
    pub metadata: BTreeMap<String, String>,
}

/// The reference implementation's limit on the header size.
const MAX_HEADER: u64 = 100_000_000;

struct Entry {
    name: String,
    dtype: Dtype,
    shape: Vec<usize>,
    begin: u64,
    end: u64,
}

/// Reads a safetensors file.
pub fn read(path: impl AsRef<Path>) -> Result<SafeTensors, FileError> {
    let path = path.as_ref();
    let file = std::fs::File::open(path).map_err(|e| FileError::io(path, "cannot open", e))?;
    read_from(std::io::BufReader::with_capacity(1 << 16, file), path)
}

/// Reads safetensors data from any seekable source; `path` only names it in errors.
pub fn read_from<R: Read + Seek>(
    mut src: R,
    path: impl AsRef<Path>,
) -> Result<SafeTensors, FileError> {
    let path = path.as_ref();
    let err = |msg: String| FileError::new(path, msg);
    let file_len = src
        .seek(SeekFrom::End(0))
        .map_err(|e| err(format!("cannot seek: {e}")))?;
    src.seek(SeekFrom::Start(0))
        .map_err(|e| err(format!("cannot seek: {e}")))?;
    if file_len < 8 {
        return Err(err(format!(
            "truncated: {file_len} bytes, too short for the 8-byte header length"
        )));
    }
    let mut len_bytes = [0u8; 8];
    src.read_exact(&mut len_bytes)
        .map_err(|e| err(format!("cannot read the header length: {e}")))?;
    let header_len = u64::from_le_bytes(len_bytes);
    if header_len > MAX_HEADER {
        return Err(err(format!("header length {header_len} exceeds the format's limit of {MAX_HEADER} bytes (corrupt or not a safetensors file)")));
    }
    if header_len > file_len - 8 {
        return Err(err(format!("header length {header_len} runs past the end of the {file_len}-byte file (truncated or not a safetensors file)")));
    }
    let mut header = vec![0u8; header_len as usize];
    src.read_exact(&mut header)
        .map_err(|e| err(format!("cannot read the header: {e}")))?;
    let text =
        std::str::from_utf8(&header).map_err(|e| err(format!("header is not UTF-8: {e}")))?;
    let json = json::parse(text).map_err(|e| err(format!("header is not valid JSON: {e}")))?;
    let obj = json
        .as_object()
        .ok_or_else(|| err("header is not a JSON object".into()))?;

    let data_len = file_len - 8 - header_len;
    let mut metadata = BTreeMap::new();
    let mut entries = Vec::new();
    for (name, v) in obj {
        if name == "__metadata__" {
            let m = v
                .as_object()
                .ok_or_else(|| err("__metadata__ is not an object".into()))?;
            for (k, v) in m {
                let s = v
                    .as_str()
                    .ok_or_else(|| err(format!("__metadata__ value of {k:?} is not a string")))?;
                metadata.insert(k.clone(), s.to_string());
            }
            continue;
        }
        entries.push(parse_entry(name, v).map_err(|m| err(format!("tensor {name:?}: {m}")))?);
    }

    // The offsets must tile [0, data_len) exactly.
    entries.sort_by_key(|e| (e.begin, e.end));
    let mut cursor = 0u64;
    for e in &entries {
        if e.end > data_len {
            return Err(err(format!("tensor {:?}: data_offsets [{}, {}] run past the end of the {data_len}-byte data section (truncated file?)", e.name, e.begin, e.end)));
        }
        if e.begin != cursor {
            let what = if e.begin < cursor {
                "overlaps the previous tensor"
            } else {
                "leaves a gap after the previous tensor"
            };
            return Err(err(format!(
                "tensor {:?}: data_offsets [{}, {}] {what}",
                e.name, e.begin, e.end
            )));
        }
        cursor = e.end;
    }
    if cursor != data_len {
        return Err(err(format!(
            "{} trailing bytes after the last tensor's data",
            data_len - cursor
        )));
    }

    let mut tensors = BTreeMap::new();
    let data_start = 8 + header_len;
    src.seek(SeekFrom::Start(data_start))
        .map_err(|e| err(format!("cannot seek: {e}")))?;
    for e in entries {
        let values = read_values(&mut src, e.dtype, (e.end - e.begin) as usize)
            .map_err(|m| err(format!("tensor {:?}: {m}", e.name)))?;
        tensors.insert(
            e.name,
            Tensor {
                dtype: e.dtype,
                shape: e.shape,
                values,
            },
        );
    }
    Ok(SafeTensors { tensors, metadata })
}

fn parse_entry(name: &str, v: &Json) -> Result<Entry, String> {
    let o = v.as_object().ok_or("entry is not an object")?;
    for key in o.keys() {
        if !matches!(key.as_str(), "dtype" | "shape" | "data_offsets") {
            return Err(format!("unknown field {key:?}"));
        }
    }
    let dtype_name = o
        .get("dtype")
        .and_then(Json::as_str)
        .ok_or("missing or non-string \"dtype\"")?;
    let dtype = Dtype::parse(dtype_name).ok_or_else(|| format!("unknown dtype {dtype_name:?}"))?;
    let shape_json = o
        .get("shape")
        .and_then(Json::as_array)
        .ok_or("missing or non-array \"shape\"")?;
    let mut shape = Vec::with_capacity(shape_json.len());
    for d in shape_json {
        let d = d
            .as_u64()
            .ok_or("shape entries must be non-negative integers")?;
        shape.push(usize::try_from(d).map_err(|_| "shape entry too large")?);
    }
    let offs = o
        .get("data_offsets")
        .and_then(Json::as_array)
        .ok_or("missing or non-array \"data_offsets\"")?;
    let [begin, end] = offs else {
        return Err("data_offsets must have two entries".into());
    };
    let (begin, end) = (
        begin.as_u64().ok_or("bad data_offsets")?,
        end.as_u64().ok_or("bad data_offsets")?,
    );
    if end < begin {
        return Err(format!(
            "data_offsets [{begin}, {end}] end before they begin"
        ));
    }
    let numel = shape
        .iter()
        .try_fold(1u64, |acc, &d| acc.checked_mul(d as u64))
        .ok_or("shape overflows")?;
    let bytes = numel
        .checked_mul(dtype.size() as u64)
        .ok_or("shape overflows")?;
    if bytes != end - begin {
        return Err(format!(
            "shape {shape:?} of {} needs {bytes} bytes but data_offsets [{begin}, {end}] hold {}",
            dtype.name(),
            end - begin
        ));
    }
    Ok(Entry {
        name: name.to_string(),
        dtype,
        shape,
        begin,
        end,
    })
}

/// Reads `bytes` bytes of `dtype` values, converting in 64 KiB chunks.
fn read_values<R: Read>(src: &mut R, dtype: Dtype, bytes: usize) -> Result<Values, String> {
    let size = dtype.size();
    let numel = bytes / size;
    let mut chunk = vec![0u8; (1 << 16) / 8 * 8];
    let mut f = Vec::new();
    let mut i = Vec::new();
    match dtype {
        Dtype::F32 | Dtype::F16 | Dtype::BF16 | Dtype::F64 => f.reserve_exact(numel),
        Dtype::F8E5M2 | Dtype::F8E4M3 => {
            return Err(format!("{} tensors are not supported", dtype.name()))
        }
        _ => i.reserve_exact(numel),
    }
    let mut left = bytes;
    while left > 0 {
        let n = left.min(chunk.len());
        src.read_exact(&mut chunk[..n])
            .map_err(|e| format!("cannot read data: {e}"))?;
        for c in chunk[..n].chunks_exact(size) {
            match dtype {
                Dtype::F32 => f.push(f32::from_le_bytes([c[0], c[1], c[2], c[3]])),
                Dtype::F64 => f.push(f64::from_le_bytes(c.try_into().unwrap_or([0; 8])) as f32),
                Dtype::F16 => f.push(f16_to_f32(u16::from_le_bytes([c[0], c[1]]))),
                Dtype::BF16 => f.push(f32::from_bits(
                    (u16::from_le_bytes([c[0], c[1]]) as u32) << 16,
                )),
                Dtype::Bool | Dtype::U8 => i.push(c[0] as i64),
                Dtype::I8 => i.push(c[0] as i8 as i64),
                Dtype::I16 => i.push(i16::from_le_bytes([c[0], c[1]]) as i64),
                Dtype::U16 => i.push(u16::from_le_bytes([c[0], c[1]]) as i64),
                Dtype::I32 => i.push(i32::from_le_bytes([c[0], c[1], c[2], c[3]]) as i64),
                Dtype::U32 => i.push(u32::from_le_bytes([c[0], c[1], c[2], c[3]]) as i64),
                Dtype::I64 => i.push(i64::from_le_bytes(c.try_into().unwrap_or([0; 8]))),
                Dtype::U64 => i.push(u64::from_le_bytes(c.try_into().unwrap_or([0; 8])) as i64),
                Dtype::F8E5M2 | Dtype::F8E4M3 => {}
            }
        }
        left -= n;
    }
    Ok(match dtype {
        Dtype::F32 | Dtype::F16 | Dtype::BF16 | Dtype::F64 => Values::F32(f),
        _ => Values::I64(i),
    })
}

/// IEEE 754 binary16 to binary32 (exact).
pub fn f16_to_f32(h: u16) -> f32 {
    let sign = ((h >> 15) as u32) << 31;
    let exp = ((h >> 10) & 0x1F) as u32;
    let frac = (h & 0x3FF) as u32;
    let bits = match (exp, frac) {
        (0, 0) => sign,
        (0, _) => {
            // Subnormal: value = frac * 2^-24, exactly representable in f32.
            let v = frac as f32 * (1.0 / (1u32 << 24) as f32);
            return if sign != 0 { -v } else { v };
        }
        (0x1F, 0) => sign | 0x7F80_0000,
        (0x1F, _) => sign | 0x7FC0_0000 | (frac << 13),
        _ => sign | ((exp + 127 - 15) << 23) | (frac << 13),
    };
    f32::from_bits(bits)
}

/// One tensor to write: name, shape, f32 values (row-major).
pub struct TensorRef<'a> {
    /// Tensor name.
    pub name: &'a str,
    /// Dimensions, C order.
    pub shape: &'a [usize],
    /// The values, `shape.iter().product()` of them.
    pub data: &'a [f32],
}

/// Writes f32 tensors (and metadata) to `path` atomically: the data goes to a temporary file
/// beside it, is flushed to disk, then renamed over `path`.
pub fn write(
    path: impl AsRef<Path>,
    tensors: &[TensorRef<'_>],
    metadata: &BTreeMap<String, String>,
) -> Result<(), FileError> {
    let path = path.as_ref();
    let err = |msg: String| FileError::new(path, msg);
    let mut sorted: Vec<&TensorRef<'_>> = tensors.iter().collect();
    sorted.sort_by(|a, b| a.name.cmp(b.name));
    let mut header = String::from("{");
    if !metadata.is_empty() {
        let items: Vec<String> = metadata
            .iter()
            .map(|(k, v)| format!("{}:{}", json::quote(k), json::quote(v)))
            .collect();
        header.push_str(&format!("\"__metadata__\":{{{}}}", items.join(",")));
    }
    let mut offset = 0usize;
    for (idx, t) in sorted.iter().enumerate() {
        if t.name == "__metadata__" {
            return Err(err("a tensor may not be named __metadata__".into()));
        }
        if idx > 0 && sorted[idx - 1].name == t.name {
            return Err(err(format!("tensor {:?} given twice", t.name)));
        }
        let numel: usize = t.shape.iter().product();
        if numel != t.data.len() {
            return Err(err(format!(
                "tensor {:?}: shape {:?} has {numel} elements but {} values were given",
                t.name,
                t.shape,
                t.data.len()
            )));
        }
        if idx > 0 || !metadata.is_empty() {
            header.push(',');
        }
        let dims: Vec<String> = t.shape.iter().map(|d| d.to_string()).collect();
        header.push_str(&format!(
            "{}:{{\"dtype\":\"F32\",\"shape\":[{}],\"data_offsets\":[{},{}]}}",
            json::quote(t.name),
            dims.join(","),
            offset,
            offset + 4 * numel
        ));
        offset += 4 * numel;
    }
    header.push('}');
    // Pad the header with spaces to a multiple of 8 so the data section is aligned.
    while header.len() % 8 != 0 {
        header.push(' ');
    }
    write_atomically(path, |w| {
        w.write_all(&(header.len() as u64).to_le_bytes())?;
        w.write_all(header.as_bytes())?;
        let mut buf = Vec::with_capacity(1 << 16);
        for t in &sorted {
            for chunk in t.data.chunks(1 << 14) {
                buf.clear();
                for v in chunk {
                    buf.extend_from_slice(&v.to_le_bytes());
                }
                w.write_all(&buf)?;
            }
        }
        Ok(())
    })
}

/// Kept under its old path; see [`super::atomic`].
pub use super::atomic::write_atomically;
