//! End-to-end tests of `tessera accuracy`: the table (one row per plan step, finite and small
//! errors, the logits line), the JSON rows of every family's digits preset, and clean errors
//! for bad input (no weights, unknown names, missing or mis-shaped inputs, NaN inputs).

use std::path::PathBuf;
use std::process::{Command, Output};
use tessera::models::io::npy;

fn tmp(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("tessera-cli-accuracy-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(name)
}

fn tessera(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_tessera"))
        .env_remove("TESSERA_ISA")
        .args(args)
        .output()
        .unwrap()
}

fn ok(args: &[&str]) -> String {
    let out = tessera(args);
    assert!(
        out.status.success(),
        "tessera {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn fails(args: &[&str]) -> String {
    let out = tessera(args);
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(!out.status.success(), "tessera {args:?} succeeded: {err}");
    assert!(err.starts_with("tessera: error: "), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    err
}

fn json_lines(s: &str) -> Vec<serde_json::Value> {
    s.lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

/// A table value: a number in scientific notation, `0` or `-`.
fn value(v: &str) -> Option<f64> {
    (v != "-").then(|| v.parse().unwrap_or_else(|e| panic!("{e}: {v:?}")))
}

#[test]
fn the_table_has_a_row_per_step_with_small_errors() {
    let args = [
        "accuracy",
        "seresnet_digits",
        "--random-weights",
        "--input",
        "digits:3",
        "digits:4",
        "--threads",
        "2",
    ];
    let out = ok(&args);
    let lines: Vec<&str> = out.lines().collect();
    assert!(
        lines[0].starts_with("seresnet_digits float32 plan against its float64 reference")
            && lines[0].contains("input [2, 1, 8, 8]"),
        "{out}"
    );
    let rows: Vec<Vec<&str>> = lines
        .iter()
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .filter(|w| w.first().is_some_and(|n| n.parse::<usize>().is_ok()))
        .collect();
    // The JSON output lists the same steps.
    let json = json_lines(&ok(&[&args[..], &["--json"]].concat()));
    assert_eq!(rows.len() + 1, json.len(), "{out}");
    for (i, w) in rows.iter().enumerate() {
        assert_eq!(w[0], (i + 1).to_string(), "{out}");
        assert_eq!(w[1], json[i]["kind"], "{out}");
        // rel, x in, alone, fold, fold net: the last five columns.
        let v: Vec<Option<f64>> = w[w.len() - 5..].iter().map(|s| value(s)).collect();
        let (rel, alone, fold_net) = (v[0].unwrap(), v[2].unwrap(), v[4].unwrap());
        for e in [rel, alone, fold_net] {
            assert!(
                e.is_finite() && (0.0..1e-5).contains(&e),
                "row {}: {out}",
                i + 1
            );
        }
        assert_eq!(
            v[1].is_none(),
            i == 0,
            "only the first step has exact inputs: {out}"
        );
        // A fold column only on convolutions that fold their batch norm: every depthwise one
        // (dense ones apply it as an epilogue scale, unless the residual join is fused).
        let conv = matches!(w[1], "conv" | "pointwise" | "depthwise");
        assert!(v[3].is_none() || conv, "{out}");
        if w[1] == "depthwise" {
            assert!(v[3].is_some(), "{out}");
        }
    }
    assert_eq!(rows[0][1], "depthwise");
    assert_eq!(rows.last().unwrap()[1], "linear");
    let logits = lines
        .iter()
        .find(|l| l.starts_with("logits: relative error "))
        .unwrap_or_else(|| panic!("{out}"));
    let rel: f64 = logits["logits: relative error ".len()..]
        .split(',')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert!(rel > 0.0 && rel < 1e-5, "{logits}");
    assert!(out.contains("by kind"), "{out}");
}

#[test]
fn json_rows_on_every_family() {
    for arch in [
        "vit_digits",
        "mobilenetv2_digits",
        "mobilenetv3_digits",
        "resnet_digits",
    ] {
        let lines = json_lines(&ok(&[
            "accuracy",
            arch,
            "--random-weights",
            "--batch",
            "2",
            "--seed",
            "3",
            "--json",
        ]));
        let (logits, steps) = lines.split_last().unwrap();
        assert_eq!(logits["steps"], steps.len(), "{arch}");
        let rel = logits["logits_rel"].as_f64().unwrap();
        assert!(rel > 0.0 && rel < 1e-4, "{arch}: {logits}");
        assert!(logits["logits_abs"].as_f64().unwrap() > 0.0, "{arch}");
        for (i, s) in steps.iter().enumerate() {
            assert_eq!(s["step"], i + 1, "{arch}");
            for k in ["rel", "abs", "scale", "rel_in", "alone", "fold_net"] {
                let v = s[k]
                    .as_f64()
                    .unwrap_or_else(|| panic!("{arch}: {k} in {s}"));
                assert!(v.is_finite() && v >= 0.0, "{arch}: {s}");
            }
            assert!(s["rel"].as_f64().unwrap() < 1e-4, "{arch}: {s}");
            assert!(s["shape"].is_array() && s["detail"].is_string(), "{s}");
        }
        assert_eq!(steps[0]["shape"][0], 2, "{arch}");
        let last = steps.last().unwrap();
        assert_eq!(last["shape"], serde_json::json!([2, 10]), "{arch}");
    }
}

#[test]
fn bad_input_is_a_clean_error() {
    let e = fails(&["accuracy", "resnet_digits"]);
    assert!(
        e.contains("--weights") && e.contains("--random-weights"),
        "{e}"
    );
    let e = fails(&["accuracy", "resnet_digitz", "--random-weights"]);
    assert!(e.contains("resnet_digits"), "{e}");
    let e = fails(&[
        "accuracy",
        "resnet_digits",
        "--weights",
        "/nonexistent/w.safetensors",
    ]);
    assert!(e.contains("w.safetensors"), "{e}");
    let e = fails(&[
        "accuracy",
        "resnet_digits",
        "--random-weights",
        "--input",
        "/nonexistent/x.npy",
    ]);
    assert!(e.contains("x.npy"), "{e}");
    let e = fails(&[
        "accuracy",
        "resnet_digits",
        "--random-weights",
        "--batch",
        "0",
    ]);
    assert!(e.contains("--batch"), "{e}");
    // Three channels for a one-channel network.
    let p = tmp("rgb.npy");
    npy::write_f32(&p, &[1, 3, 8, 8], &[0.5; 192]).unwrap();
    let e = fails(&[
        "accuracy",
        "resnet_digits",
        "--random-weights",
        "--input",
        p.to_str().unwrap(),
    ]);
    assert!(e.contains("rgb.npy") && e.contains("[N, 1, H, W]"), "{e}");
    // A ViT takes its configured size only.
    let p = tmp("big.npy");
    npy::write_f32(&p, &[1, 1, 16, 16], &[0.5; 256]).unwrap();
    let e = fails(&[
        "accuracy",
        "vit_digits",
        "--random-weights",
        "--input",
        p.to_str().unwrap(),
    ]);
    assert!(
        e.starts_with("tessera: error: accuracy vit_digits: "),
        "{e}"
    );
    let p = tmp("nan.npy");
    let mut v = vec![0.5f32; 64];
    v[5] = f32::NAN;
    npy::write_f32(&p, &[1, 1, 8, 8], &v).unwrap();
    let e = fails(&[
        "accuracy",
        "mobilenetv3_digits",
        "--random-weights",
        "--input",
        p.to_str().unwrap(),
    ]);
    assert!(e.contains("not finite"), "{e}");
}
