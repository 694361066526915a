//! The fuzzing corpus as regression tests: every file under `fuzz/corpus/<target>/` (the
//! seeds) and `fuzz/regressions/<target>/` (inputs that once crashed a target, minimised) runs
//! through the same code as the cargo-fuzz target of that name (`fuzz/fuzz_targets/`), without
//! the fuzzer, in the default test suite. `write_seeds` (ignored) regenerates the seeds.

use std::io::Cursor;
use std::path::{Path, PathBuf};
use tessera::models::checkpoint::Checkpoint;
use tessera::models::io::{json, npy, safetensors};
use tessera::models::optim::AdamW;
use tessera::models::train::{TrainConfig, Trainer};
use tessera::models::{create, Overrides};

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

/// What each fuzz target does with one input (minus image decoding, which lives in the CLI's
/// dependencies: its inputs are checked to exist and be non-empty only).
fn run_target(target: &str, data: &[u8]) {
    match target {
        "safetensors" => {
            if let Ok(file) = safetensors::read_from(Cursor::new(data), "fuzz.safetensors") {
                for t in file.tensors.values() {
                    assert_eq!(t.values.len(), t.shape.iter().product::<usize>());
                }
            }
        }
        "checkpoint" => {
            let Ok(file) = safetensors::read_from(Cursor::new(data), "fuzz.safetensors") else {
                return;
            };
            let Ok(ckpt) = Checkpoint::from_safetensors(file, "fuzz") else {
                return;
            };
            let mut model = create("vit_digits", &tiny(), 0).unwrap();
            let mut opt = AdamW::new(0.9, 0.999, 1e-8, 0.0).unwrap();
            let _ = ckpt.apply(model.as_mut(), &mut opt, "adamw", 0);
        }
        "json" => {
            if let Ok(text) = std::str::from_utf8(data) {
                let _ = json::parse(text);
            }
        }
        "npy" => {
            if let Ok(a) = npy::read_from(Cursor::new(data), data.len() as u64, "fuzz.npy") {
                assert_eq!(a.values.len(), a.shape.iter().product::<usize>());
            }
            let _ = npy::read_from(Cursor::new(data), u64::MAX, "fuzz.npy");
        }
        "cifar" => {
            if let Ok((images, labels)) =
                tessera::models::data::cifar::parse_batch(data, Path::new("fuzz.bin"))
            {
                assert_eq!(images.len(), labels.len() * 3072);
            }
        }
        "image" => assert!(!data.is_empty()),
        other => panic!("unknown fuzz target {other}"),
    }
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
        for f in seeds.iter().chain(&crashes) {
            let data = std::fs::read(f).unwrap();
            let r = std::panic::catch_unwind(|| run_target(target, &data));
            assert!(r.is_ok(), "{target}: {} panics", f.display());
            count += 1;
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
