//! End-to-end tests of `tessera grads`: the file written for the small ViT fixture matches
//! timm's loss, logits and every gradient (`scripts/fixtures_grads.py`) at <= 1e-3 relative
//! error with the same names, the `--json` and text summaries, and bad labels (dtype, range,
//! count) failing with a clear message, no panic and no output file.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use tessera::models::io::npy;
use tessera::models::io::safetensors::{self, SafeTensors};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures")
}

fn tmp(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("tessera-cli-grads-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(name)
}

fn s(p: &Path) -> String {
    p.to_str().unwrap().to_string()
}

/// `tessera grads` on the small ViT of the fixtures with `labels` and `out`, plus `extra`.
fn grads(labels: &Path, out: &Path, extra: &[&str]) -> Output {
    let f = fixtures();
    let mut args: Vec<String> = [
        "grads",
        "vit_tiny_patch16_224",
        "--img-size",
        "32",
        "--patch-size",
        "8",
        "--embed-dim",
        "48",
        "--depth",
        "2",
        "--num-heads",
        "3",
        "--num-classes",
        "10",
        "--threads",
        "1",
    ]
    .iter()
    .map(|a| a.to_string())
    .collect();
    args.extend([
        "--weights".into(),
        s(&f.join("models/vit_small_variant.safetensors")),
        "--input".into(),
        s(&f.join("grads/vit.input.npy")),
        "--labels".into(),
        s(labels),
        "--out".into(),
        s(out),
    ]);
    args.extend(extra.iter().map(|a| a.to_string()));
    Command::new(env!("CARGO_BIN_EXE_tessera"))
        .env_remove("TESSERA_ISA")
        .args(&args)
        .output()
        .unwrap()
}

fn stdout_ok(out: &Output) -> String {
    assert!(
        out.status.success(),
        "tessera grads failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout.clone()).unwrap()
}

/// Expects failure with a one-line error, no panic, and no file at `out`; returns stderr.
fn failure(out: &Output, file: &Path) -> String {
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(!out.status.success(), "succeeded: {err}");
    assert!(err.starts_with("tessera: error: "), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    assert!(
        !file.exists(),
        "{} written despite the error",
        file.display()
    );
    err
}

fn tensor<'a>(f: &'a SafeTensors, name: &str) -> (&'a [usize], &'a [f32]) {
    let t = f
        .tensors
        .get(name)
        .unwrap_or_else(|| panic!("no tensor {name:?}"));
    (&t.shape, t.as_f32().unwrap())
}

/// max |a - b| / max |b|.
fn rel_err(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    let scale = b.iter().fold(0f32, |m, v| m.max(v.abs()));
    let diff = a.iter().zip(b).fold(0f32, |m, (x, y)| m.max((x - y).abs()));
    diff / scale
}

#[test]
fn vit_gradients_file_matches_timm() {
    let labels = fixtures().join("grads/vit.labels.npy");
    let out = tmp("vit.grads.safetensors");
    let text = stdout_ok(&grads(&labels, &out, &["--json"]));
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 1, "{text}");
    let v: serde_json::Value = serde_json::from_str(lines[0]).unwrap();
    assert_eq!(v["arch"], "vit_tiny_patch16_224");
    assert_eq!(v["out"], s(&out));

    let got = safetensors::read(&out).unwrap();
    let want = safetensors::read(fixtures().join("grads/vit.grads.safetensors")).unwrap();
    let names = |f: &SafeTensors| f.tensors.keys().cloned().collect::<Vec<_>>();
    assert_eq!(names(&got), names(&want), "tensor names");
    assert_eq!(v["tensors"].as_u64(), Some(want.tensors.len() as u64));
    assert_eq!(got.metadata["tessera.arch"], "vit_tiny_patch16_224");
    let (shape, loss) = tensor(&got, "loss");
    assert!(shape.is_empty(), "loss shape {shape:?}");
    assert!((v["loss"].as_f64().unwrap() as f32 - loss[0]).abs() <= 1e-6 * loss[0].abs());
    let mut worst = (0f32, String::new());
    for name in want.tensors.keys() {
        let (ws, w) = tensor(&want, name);
        let (gs, g) = tensor(&got, name);
        assert_eq!(gs, ws, "{name}: shape");
        let e = rel_err(g, w);
        assert!(e <= 1e-3, "{name}: relative error {e:e}");
        if e >= worst.0 {
            worst = (e, name.clone());
        }
    }
    println!(
        "tessera grads vit: worst relative error {:.2e} ({})",
        worst.0, worst.1
    );

    // The text summary names the loss, the count and the file.
    let out2 = tmp("vit-text.grads.safetensors");
    let text = stdout_ok(&grads(&labels, &out2, &[]));
    assert!(
        text.contains("vit_tiny_patch16_224: loss ")
            && text.contains("wrote 34 tensors (loss, logits, 32 gradients)")
            && text.contains(&s(&out2)),
        "{text}"
    );
}

#[test]
fn bad_labels_fail_clearly() {
    let out = tmp("never.safetensors");
    let float = tmp("float_labels.npy");
    npy::write_f32(&float, &[4], &[0.0, 1.0, 2.0, 3.0]).unwrap();
    let e = failure(&grads(&float, &out, &[]), &out);
    assert!(
        e.contains("float_labels.npy") && e.contains("int64") && e.contains("float32 (<f4)"),
        "{e}"
    );

    let range = tmp("range_labels.npy");
    npy::write_i64(&range, &[4], &[0, 1, 10, 3]).unwrap();
    let e = failure(&grads(&range, &out, &[]), &out);
    assert!(
        e.contains("label 10 (index 2)") && e.contains("num_classes 10"),
        "{e}"
    );

    let negative = tmp("negative_labels.npy");
    npy::write_i64(&negative, &[4], &[0, -1, 2, 3]).unwrap();
    let e = failure(&grads(&negative, &out, &[]), &out);
    assert!(e.contains("label -1 (index 1)"), "{e}");

    let count = tmp("count_labels.npy");
    npy::write_i64(&count, &[3], &[0, 1, 2]).unwrap();
    let e = failure(&grads(&count, &out, &[]), &out);
    assert!(
        e.contains("3 labels for a batch of 4") && e.contains("count_labels.npy"),
        "{e}"
    );

    let e = failure(&grads(&tmp("absent_labels.npy"), &out, &[]), &out);
    assert!(
        e.contains("absent_labels.npy") && e.contains("no such file"),
        "{e}"
    );
}
