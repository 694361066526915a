//! The fuzzing corpus as regression tests: every file under `fuzz/corpus/<target>/` (the
//! seeds and the coverage-minimised inputs the fuzzer found) and `fuzz/regressions/<target>/`
//! (inputs that once crashed a target, minimised) runs through the same code as the cargo-fuzz
//! target of that name (`fuzz/fuzz_targets/`), without the fuzzer, in the default test suite.
//! Image inputs also go through `tessera run`'s own decoder (`preprocess::decode_rgb8`) and
//! evaluation transform. `write_seeds` (ignored) regenerates the named seeds.

use std::io::Cursor;
use std::path::{Path, PathBuf};
use tessera::models::checkpoint::Checkpoint;
use tessera::models::io::{json, npy, safetensors};
use tessera::models::optim::AdamW;
use tessera::models::train::{TrainConfig, Trainer};
use tessera::models::{create, preprocess, Overrides};

const TARGETS: &[&str] = &["safetensors", "checkpoint", "json", "npy", "cifar", "image"];

/// `vit_digits` as small as the checkpoint target builds it.
fn tiny() -> Overrides {
    Overrides {
        embed_dim: Some(4),
        depth: Some(1),
        num_heads: Some(1),
        num_classes: Some(10),
        mlp_ratio: Some(1.0),
        ..Overrides::default()
    }
}

/// What each fuzz target does with the input at `path` (`data`, its bytes); whether the input
/// was accepted (parsed, validated or decoded) rather than refused with an error.
fn run_target(target: &str, path: &Path, data: &[u8]) -> bool {
    match target {
        "safetensors" => {
            let Ok(file) = safetensors::read_from(Cursor::new(data), "fuzz.safetensors") else {
                return false;
            };
            for t in file.tensors.values() {
                assert_eq!(t.values.len(), t.shape.iter().product::<usize>());
            }
            true
        }
        "checkpoint" => {
            let Ok(file) = safetensors::read_from(Cursor::new(data), "fuzz.safetensors") else {
                return false;
            };
            let Ok(ckpt) = Checkpoint::from_safetensors(file, "fuzz") else {
                return false;
            };
            let mut model = create("vit_digits", &tiny(), 0).unwrap();
            let mut opt = AdamW::new(0.9, 0.999, 1e-8, 0.0).unwrap();
            ckpt.apply(model.as_mut(), &mut opt, "adamw", 0).is_ok()
        }
        "json" => std::str::from_utf8(data).is_ok_and(|text| json::parse(text).is_ok()),
        "npy" => {
            let _ = npy::read_from(Cursor::new(data), u64::MAX, "fuzz.npy");
            let Ok(a) = npy::read_from(Cursor::new(data), data.len() as u64, "fuzz.npy") else {
                return false;
            };
            assert_eq!(a.values.len(), a.shape.iter().product::<usize>());
            true
        }
        "cifar" => {
            let Ok((images, labels)) =
                tessera::models::data::cifar::parse_batch(data, Path::new("fuzz.bin"))
            else {
                return false;
            };
            assert_eq!(images.len(), labels.len() * 3072);
            true
        }
        "image" => {
            let fuzzed = decode_as_fuzz_target(data);
            // `tessera run`'s path: the decoder with its pixel budget, then the transform.
            let Ok((rgb, w, h)) = preprocess::decode_rgb8(path) else {
                return fuzzed;
            };
            assert_eq!(rgb.len(), w * h * 3);
            let t = preprocess::EvalTransform::for_arch("mobilenetv2_100", [3, 224, 224]).unwrap();
            assert_eq!(t.apply(&rgb, w, h).unwrap().len(), 3 * 224 * 224);
            true
        }
        other => panic!("unknown fuzz target {other}"),
    }
}

/// The `image` fuzz target: the `image` crate with a 64 MiB allocation limit.
fn decode_as_fuzz_target(data: &[u8]) -> bool {
    let Ok(mut reader) = image::ImageReader::new(Cursor::new(data)).with_guessed_format() else {
        return false;
    };
    let mut limits = image::Limits::default();
    limits.max_alloc = Some(64 << 20);
    reader.limits(limits);
    let Ok(img) = reader.decode() else {
        return false;
    };
    let rgb = img.to_rgb8();
    assert_eq!(
        rgb.as_raw().len(),
        rgb.width() as usize * rgb.height() as usize * 3
    );
    true
}

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz")
}

fn files(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|r| {
            r.flatten()
                .map(|e| e.path())
                .filter(|p| p.is_file())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

#[test]
fn corpus_and_regressions_run_clean() {
    let mut count = 0;
    for target in TARGETS {
        let seeds = files(&fuzz_dir().join("corpus").join(target));
        assert!(!seeds.is_empty(), "no seeds for fuzz target {target}");
        let crashes = files(&fuzz_dir().join("regressions").join(target));
        let mut accepted = 0;
        for f in seeds.iter().chain(&crashes) {
            let data = std::fs::read(f).unwrap();
            let r = std::panic::catch_unwind(|| run_target(target, f, &data));
            assert!(r.is_ok(), "{target}: {} panics", f.display());
            accepted += usize::from(r.unwrap_or(false));
            count += 1;
        }
        // The corpus reaches past the first check: some inputs are accepted, and (being
        // mutants) some refused.
        let n = seeds.len() + crashes.len();
        assert!(accepted > 0, "{target}: none of {n} inputs accepted");
        if n > 3 {
            assert!(accepted < n, "{target}: all {n} inputs accepted");
        }
    }
    assert!(count >= TARGETS.len());
}

/// Regenerates `fuzz/corpus/*` (small valid files of each format):
/// `cargo test --release --test reliability_fuzz_corpus -- --ignored write_seeds`.
#[test]
#[ignore]
fn write_seeds() {
    let dir = |t: &str| {
        let d = fuzz_dir().join("corpus").join(t);
        std::fs::create_dir_all(&d).unwrap();
        d
    };
    // safetensors: a few tensors, with metadata.
    let meta = [("format".to_string(), "pt".to_string())]
        .into_iter()
        .collect();
    safetensors::write(
        dir("safetensors").join("two_tensors"),
        &[
            safetensors::TensorRef {
                name: "a.weight",
                shape: &[2, 3],
                data: &[1.0, -2.0, 3.5, 0.0, 1e-3, 7.0],
            },
            safetensors::TensorRef {
                name: "b",
                shape: &[],
                data: &[0.25],
            },
        ],
        &meta,
    )
    .unwrap();
    // checkpoint: a tiny vit_digits after zero steps, and after one AdamW step.
    let mut model = create("vit_digits", &tiny(), 0).unwrap();
    let cfg = TrainConfig {
        batch: 4,
        epochs: 1,
        ..TrainConfig::default()
    };
    let mut t = Trainer::new(cfg, model.as_mut(), 4).unwrap();
    t.save_checkpoint(model.as_ref(), dir("checkpoint").join("fresh"))
        .unwrap();
    let (train, test) = tessera::models::data::digits_split().unwrap();
    let idx: Vec<usize> = (0..4).collect();
    t.run_epoch(
        model.as_mut(),
        &train.subset(&idx),
        &test.subset(&idx),
        &mut |_| {},
    )
    .unwrap();
    t.save_checkpoint(model.as_ref(), dir("checkpoint").join("one_step"))
        .unwrap();
    // json
    std::fs::write(
        dir("json").join("header"),
        br#"{"__metadata__":{"k":"v"},"w":{"dtype":"F32","shape":[2,1],"data_offsets":[0,8]},"n":[1,-2.5e-3,true,false,null,"\u00e9\n"]}"#,
    )
    .unwrap();
    // npy: f32 C order, and an i64 vector.
    npy::write_f32(
        dir("npy").join("f32_2x3"),
        &[2, 3],
        &[0.0, 1.0, 2.0, 3.0, 4.0, 5.0],
    )
    .unwrap();
    npy::write_i64(dir("npy").join("i64_3"), &[3], &[0, 9, 4]).unwrap();
    // cifar: two records.
    let mut rec = vec![3u8];
    rec.extend((0..3072).map(|i| (i % 251) as u8));
    let two: Vec<u8> = rec.iter().chain(rec.iter()).copied().collect();
    std::fs::write(dir("cifar").join("two_records"), two).unwrap();
}
