//! Weight and array file formats: safetensors and .npy, against files written by the official
//! Python packages (`scripts/io_fixtures.py`), round trips, and every kind of corruption.

use proptest::prelude::*;
use std::collections::BTreeMap;
use std::io::Cursor;
use tessera::models::io::safetensors::{self, Dtype, TensorRef};
use tessera::models::io::{npy, Values};

fn fixture(name: &str) -> String {
    format!("{}/tests/fixtures/io/{name}", env!("CARGO_MANIFEST_DIR"))
}

fn tmp(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("tessera-io-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(name)
}

fn expected_a() -> Vec<f32> {
    (0..24).map(|i| i as f32 * 0.5 - 3.0).collect()
}

#[test]
fn npy_files_written_by_numpy() {
    for name in [
        "f4_c.npy",
        "f8_fortran.npy",
        "f4_big_endian.npy",
        "f2.npy",
        "f4_v2.npy",
    ] {
        let a = npy::read(fixture(name)).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(a.shape, [2, 3, 4], "{name}");
        assert_eq!(a.values, Values::F32(expected_a()), "{name}");
    }
    let labels = npy::read(fixture("i8_labels.npy")).unwrap();
    assert_eq!(labels.shape, [8]);
    assert_eq!(labels.values, Values::I64(vec![3, 1, 4, 1, 5, 9, 2, 6]));
    assert_eq!(
        npy::read(fixture("u1.npy")).unwrap().values,
        Values::I64(vec![0, 255, 7, 8])
    );
    assert_eq!(
        npy::read(fixture("bool.npy")).unwrap().values,
        Values::I64(vec![1, 0, 1])
    );
    let s = npy::read(fixture("scalar.npy")).unwrap();
    assert!(s.shape.is_empty());
    assert_eq!(s.values, Values::F32(vec![2.5]));
}

#[test]
fn npy_rejects_unsupported_and_corrupt_files() {
    let e = npy::read(fixture("c8_complex.npy")).unwrap_err();
    assert!(
        e.to_string().contains("c8_complex.npy") && e.msg.contains("unsupported dtype"),
        "{e}"
    );
    let good = std::fs::read(fixture("f4_c.npy")).unwrap();
    for cut in [0, 5, 9, 40, good.len() - 1] {
        let e = npy::read_from(Cursor::new(&good[..cut]), cut as u64, "cut.npy").unwrap_err();
        assert!(e.to_string().starts_with("cut.npy: "), "{e}");
    }
    let mut bad = good.clone();
    bad[0] = b'x';
    assert!(
        npy::read_from(Cursor::new(&bad), bad.len() as u64, "bad.npy")
            .unwrap_err()
            .msg
            .contains("magic")
    );
    let e = npy::read(tmp("does-not-exist.npy")).unwrap_err();
    assert!(e.msg.contains("cannot open"));
}

/// A version 1.0 `.npy` header (padded as numpy pads it) followed by `data`.
fn npy_with_header(dict: &str, data: &[u8]) -> Vec<u8> {
    let mut h = dict.to_string();
    while !(10 + h.len() + 1).is_multiple_of(64) {
        h.push(' ');
    }
    h.push('\n');
    let mut out = b"\x93NUMPY\x01\x00".to_vec();
    out.extend_from_slice(&(h.len() as u16).to_le_bytes());
    out.extend_from_slice(h.as_bytes());
    out.extend_from_slice(data);
    out
}

#[test]
fn npy_headers_that_claim_more_than_there_is_are_errors_without_allocating_it() {
    // From a source of unknown length (a pipe), a shape above the memory budget is refused
    // before anything is allocated (the fuzzer found a header asking for 212 GB) ...
    let huge = npy_with_header(
        "{'descr': '<f4', 'fortran_order': False, 'shape': (100000, 100000, 100), }",
        &[0; 16],
    );
    let e = npy::read_from(Cursor::new(&huge), u64::MAX, "pipe.npy").unwrap_err();
    assert!(e.msg.contains("memory budget"), "{e}");
    // ... and one within it is read as it arrives: 4 bytes of a 400 MB claim is "truncated".
    let big = npy_with_header(
        "{'descr': '<f4', 'fortran_order': False, 'shape': (100000000,), }",
        &[0; 4],
    );
    let e = npy::read_from(Cursor::new(&big), u64::MAX, "pipe.npy").unwrap_err();
    assert!(
        e.msg.contains("truncated") && e.msg.contains("has 4"),
        "{e}"
    );
    // Only the last entry of a shape tuple may be empty.
    for shape in ["(5, ,9)", "(,)", "(,5)"] {
        let bad = npy_with_header(
            &format!("{{'descr': '<f4', 'fortran_order': False, 'shape': {shape}, }}"),
            &[0; 180],
        );
        let e = npy::read_from(Cursor::new(&bad), bad.len() as u64, "bad.npy").unwrap_err();
        assert!(e.msg.contains("empty dimension"), "{shape}: {e}");
    }
    let ok = npy_with_header(
        "{'descr': '<f4', 'fortran_order': False, 'shape': (1,), }",
        &[0; 4],
    );
    assert_eq!(
        npy::read_from(Cursor::new(&ok), ok.len() as u64, "ok.npy")
            .unwrap()
            .shape,
        vec![1]
    );
}

#[test]
fn npy_round_trip() {
    let p = tmp("rt.npy");
    let data: Vec<f32> = (0..30).map(|i| i as f32 / 7.0).collect();
    npy::write_f32(&p, &[5, 6], &data).unwrap();
    let a = npy::read(&p).unwrap();
    assert_eq!((a.shape, a.values), (vec![5, 6], Values::F32(data)));
    let p = tmp("rt_i.npy");
    npy::write_i64(&p, &[3], &[-1, 0, 1 << 40]).unwrap();
    assert_eq!(
        npy::read(&p).unwrap().values,
        Values::I64(vec![-1, 0, 1 << 40])
    );
    assert!(npy::write_f32(tmp("bad.npy"), &[2, 2], &[1.0]).is_err());
}

#[test]
fn safetensors_written_by_torch() {
    let st = safetensors::read(fixture("torch.safetensors")).unwrap();
    let want: Vec<f32> = (0..12).map(|i| i as f32 / 4.0 - 1.0).collect();
    for name in ["blocks.0.attn.qkv.weight", "half", "bf"] {
        let t = &st.tensors[name];
        assert_eq!(t.shape, [3, 4]);
        assert_eq!(t.as_f32().unwrap(), &want[..], "{name}");
    }
    assert_eq!(st.tensors["half"].dtype, Dtype::F16);
    assert_eq!(st.tensors["bf"].dtype, Dtype::BF16);
    let nbt = &st.tensors["bn.num_batches_tracked"];
    assert_eq!((nbt.dtype, nbt.shape.len()), (Dtype::I64, 0));
    assert_eq!(nbt.values, Values::I64(vec![7]));
    assert_eq!(st.tensors["empty"].shape, [0, 3]);
    assert_eq!(st.metadata["format"], "pt");
}

fn sample_file() -> Vec<u8> {
    let p = tmp("sample.safetensors");
    let w: Vec<f32> = (0..6).map(|i| i as f32).collect();
    let b = [0.5f32, -0.5];
    let meta = BTreeMap::from([("format".to_string(), "pt".to_string())]);
    safetensors::write(
        &p,
        &[
            TensorRef {
                name: "fc.weight",
                shape: &[2, 3],
                data: &w,
            },
            TensorRef {
                name: "fc.bias",
                shape: &[2],
                data: &b,
            },
        ],
        &meta,
    )
    .unwrap();
    std::fs::read(&p).unwrap()
}

#[test]
fn safetensors_round_trip() {
    let bytes = sample_file();
    let st = safetensors::read_from(Cursor::new(&bytes), "sample.safetensors").unwrap();
    assert_eq!(
        st.tensors["fc.weight"].as_f32().unwrap(),
        &[0.0, 1.0, 2.0, 3.0, 4.0, 5.0]
    );
    assert_eq!(st.tensors["fc.bias"].shape, [2]);
    assert_eq!(st.metadata["format"], "pt");
    // Header is padded to 8 bytes.
    assert_eq!(u64::from_le_bytes(bytes[..8].try_into().unwrap()) % 8, 0);
}

fn corrupt(bytes: &[u8]) -> String {
    safetensors::read_from(Cursor::new(bytes), "w.safetensors")
        .unwrap_err()
        .to_string()
}

fn with_header(header: &str, data: &[u8]) -> Vec<u8> {
    let mut v = (header.len() as u64).to_le_bytes().to_vec();
    v.extend_from_slice(header.as_bytes());
    v.extend_from_slice(data);
    v
}

#[test]
fn safetensors_corruption_is_named() {
    let good = sample_file();
    assert!(corrupt(&good[..5]).contains("too short"));
    let mut huge = good.clone();
    huge[..8].copy_from_slice(&u64::MAX.to_le_bytes());
    assert!(corrupt(&huge).contains("exceeds"));
    let mut past = good.clone();
    past[..8].copy_from_slice(&(good.len() as u64).to_le_bytes());
    assert!(corrupt(&past).contains("past the end"));
    assert!(
        corrupt(&good[..good.len() - 4]).contains("past the end of the"),
        "{}",
        corrupt(&good[..good.len() - 4])
    );
    assert!(corrupt(&with_header("{not json", &[])).contains("not valid JSON"));
    assert!(corrupt(&with_header("[1]", &[])).contains("not a JSON object"));
    let e = corrupt(&with_header(
        r#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}"#,
        &[0; 8],
    ));
    assert!(e.contains("overlaps"), "{e}");
    let e = corrupt(&with_header(
        r#"{"a":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}"#,
        &[0; 8],
    ));
    assert!(e.contains("gap"), "{e}");
    let e = corrupt(&with_header(
        r#"{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}"#,
        &[0; 8],
    ));
    assert!(e.contains("trailing"), "{e}");
    let e = corrupt(&with_header(
        r#"{"a":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}}"#,
        &[0; 8],
    ));
    assert!(e.contains("needs 12 bytes"), "{e}");
    let e = corrupt(&with_header(
        r#"{"a":{"dtype":"Q7","shape":[1],"data_offsets":[0,4]}}"#,
        &[0; 4],
    ));
    assert!(e.contains("unknown dtype"), "{e}");
    let e = corrupt(&with_header(
        r#"{"a":{"dtype":"F32","shape":[4611686018427387904,8],"data_offsets":[0,4]}}"#,
        &[0; 4],
    ));
    assert!(e.contains("overflow"), "{e}");
    assert!(e.starts_with("w.safetensors: "));
}

#[test]
fn safetensors_write_is_atomic_and_validated() {
    // Its own directory, so other tests' files do not count as leftovers.
    let dir = tmp("atomic");
    std::fs::create_dir_all(&dir).unwrap();
    let p = dir.join("keep.safetensors");
    let one = [1.0f32];
    safetensors::write(
        &p,
        &[TensorRef {
            name: "x",
            shape: &[1],
            data: &one,
        }],
        &BTreeMap::new(),
    )
    .unwrap();
    let before = std::fs::read(&p).unwrap();
    // A failing write (shape mismatch) leaves the previous file intact and no temporary behind.
    let e = safetensors::write(
        &p,
        &[TensorRef {
            name: "x",
            shape: &[2],
            data: &one,
        }],
        &BTreeMap::new(),
    )
    .unwrap_err();
    assert!(e.msg.contains("2 elements"), "{e}");
    assert_eq!(std::fs::read(&p).unwrap(), before);
    let dup = safetensors::write(
        &p,
        &[
            TensorRef {
                name: "x",
                shape: &[1],
                data: &one,
            },
            TensorRef {
                name: "x",
                shape: &[1],
                data: &one,
            },
        ],
        &BTreeMap::new(),
    );
    assert!(dup.unwrap_err().msg.contains("twice"));
    // Only this file's temporaries count: other tests write into the same directory meanwhile.
    let own = p.file_name().unwrap().to_string_lossy().into_owned();
    let leftovers = std::fs::read_dir(p.parent().unwrap())
        .unwrap()
        .filter(|e| {
            let name = e
                .as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .into_owned();
            name.starts_with(&own) && name.contains(".tmp")
        })
        .count();
    assert_eq!(leftovers, 0);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    /// Any corruption of a valid file gives Ok or a named error, never a panic.
    #[test]
    fn safetensors_never_panics(flips in prop::collection::vec((any::<usize>(), any::<u8>()), 1..6), cut in any::<usize>()) {
        let mut bytes = sample_file();
        for (pos, val) in flips {
            let i = pos % bytes.len();
            bytes[i] = val;
        }
        let cut = cut % (bytes.len() + 1);
        if let Err(e) = safetensors::read_from(Cursor::new(&bytes[..cut]), "fuzz.safetensors") {
            prop_assert!(e.to_string().starts_with("fuzz.safetensors: "));
        }
    }

    #[test]
    fn npy_never_panics(flips in prop::collection::vec((any::<usize>(), any::<u8>()), 1..6), cut in any::<usize>()) {
        let mut bytes = std::fs::read(fixture("f8_fortran.npy")).unwrap();
        for (pos, val) in flips {
            let i = pos % bytes.len();
            bytes[i] = val;
        }
        let cut = cut % (bytes.len() + 1);
        let _ = npy::read_from(Cursor::new(&bytes[..cut]), cut as u64, "fuzz.npy");
    }
}
