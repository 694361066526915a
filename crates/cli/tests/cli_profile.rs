//! End-to-end tests of `tessera profile` and `tessera peak`: the JSON keys, the totals object
//! last, FLOPs equal to `tessera info`'s MACs x 2, a training step's phases, and the errors
//! for bad input. Tiny presets (`*_digits`) keep them fast; `TESSERA_PEAK_CACHE` points the
//! cache at a temporary file so the user's cache is never touched.

use std::path::PathBuf;
use std::process::{Command, Output};

fn cache() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("tessera-cli-profile-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir.join("peak.json")
}

fn tessera(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_tessera"))
        .env_remove("TESSERA_ISA")
        .env("TESSERA_PEAK_CACHE", cache())
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

#[test]
fn profile_json_ops_then_totals_matching_info() {
    let lines = json_lines(&ok(&[
        "profile",
        "mobilenetv3_digits",
        "--json",
        "--threads",
        "1",
    ]));
    let (totals, ops) = lines.split_last().unwrap();
    assert_eq!(totals["totals"], true);
    assert!(!ops.is_empty());
    for op in ops {
        for k in [
            "layer",
            "op",
            "flops",
            "bytes",
            "us",
            "inputs",
            "output",
            "intensity",
            "bound",
        ] {
            assert!(op.get(k).is_some(), "{k} missing in {op}");
        }
        assert!(op.get("totals").is_none());
        assert_eq!(op["phase"], "forward");
    }
    assert!(ops
        .iter()
        .any(|o| o["op"].as_str().unwrap().starts_with("conv2d_dw")));
    let sum: u64 = ops.iter().map(|o| o["flops"].as_u64().unwrap()).sum();
    assert_eq!(totals["flops"].as_u64().unwrap(), sum);
    let info: serde_json::Value =
        serde_json::from_str(ok(&["info", "mobilenetv3_digits", "--json"]).trim()).unwrap();
    let macs = info["macs"].as_u64().unwrap();
    assert_eq!(totals["forward_macs_x2"].as_u64().unwrap(), 2 * macs);
    assert_eq!(totals["info_macs_x2"].as_u64().unwrap(), 2 * macs);
    assert!(totals["peak_gflops"].as_f64().unwrap() > 0.0);
    assert!(totals["bandwidth_gbs"].as_f64().unwrap() > 0.0);
    assert_eq!(totals["top"].as_array().unwrap().len(), 10);
}

#[test]
fn profile_train_records_backward_and_update() {
    let out = ok(&[
        "profile",
        "vit_digits",
        "--train",
        "--batch",
        "2",
        "--json",
        "--repeat",
        "2",
    ]);
    let lines = json_lines(&out);
    let (totals, ops) = lines.split_last().unwrap();
    let phases = |p: &str| ops.iter().filter(|o| o["phase"] == p).count();
    assert!(phases("forward") > 0 && phases("backward") > 0);
    assert_eq!(phases("update"), 1);
    let last = ops.last().unwrap();
    assert_eq!(
        (last["op"].as_str(), last["layer"].as_str()),
        (Some("sgd.step"), Some("optimizer"))
    );
    assert!(totals["backward"]["flops"].as_u64().unwrap() > 0);
    assert_eq!(totals["repeat"], 2);
    // Text form: the header names the limits, the table groups layers, top 10 at the end.
    let text = ok(&["profile", "vit_digits", "--depth", "1"]);
    assert!(
        text.contains("FMA peak") && text.contains("ridge"),
        "{text}"
    );
    assert!(
        text.contains("-- blocks.0: ") && text.contains("top 10 ops by time"),
        "{text}"
    );
    assert!(
        text.contains("as `tessera info` counts them: equal"),
        "{text}"
    );
}

#[test]
fn profile_errors() {
    let e = fails(&["profile", "no_such_net"]);
    assert!(e.contains("unknown architecture"), "{e}");
    let e = fails(&["profile", "vit_digits", "--batch", "0"]);
    assert!(e.contains("--batch"), "{e}");
    let e = fails(&["profile", "mobilenetv2_digits", "--train"]);
    assert!(e.contains("--batch 2"), "{e}");
}

#[test]
fn peak_json_is_cached() {
    let path = std::env::temp_dir().join(format!("tessera-peak-{}.json", std::process::id()));
    let out = Command::new(env!("CARGO_BIN_EXE_tessera"))
        .env("TESSERA_PEAK_CACHE", &path)
        .args(["peak", "--threads", "1", "--json"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let j: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    for k in [
        "fma_gflops",
        "read_gbs",
        "triad_gbs",
        "ridge_flop_per_byte",
        "cpu",
        "cpu_id",
        "isa",
        "quick",
    ] {
        assert!(j.get(k).is_some(), "{k} missing in {j}");
    }
    assert_eq!(j["threads"], 1);
    assert!(j["fma_gflops"].as_f64().unwrap() > 0.0);
    let cached: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    assert_eq!(cached["entries"].as_array().unwrap().len(), 1);
    assert_eq!(j["quick"], false);
    // `tessera profile` on that cache names `tessera peak` as the source of its limits.
    let profile = |cache: &std::path::Path| {
        let out = Command::new(env!("CARGO_BIN_EXE_tessera"))
            .env("TESSERA_PEAK_CACHE", cache)
            .args([
                "profile",
                "vit_digits",
                "--depth",
                "1",
                "--threads",
                "1",
                "--json",
            ])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let text = String::from_utf8(out.stdout).unwrap();
        let totals: serde_json::Value = serde_json::from_str(text.lines().last().unwrap()).unwrap();
        totals
    };
    let t = profile(&path);
    let note = t["limits"].as_str().unwrap();
    assert!(
        note.starts_with("measured by `tessera peak --threads 1`"),
        "{note}"
    );
    assert_eq!(t["limits_quick"], false);
    // With no entry, profile measures quickly, says so, and caches the entry as quick; a
    // second profile still says it is a quick measurement, not `tessera peak`'s.
    let fresh = path.with_extension("fresh.json");
    let _ = std::fs::remove_file(&fresh);
    let t = profile(&fresh);
    assert!(
        t["limits"]
            .as_str()
            .unwrap()
            .starts_with("no cached entry: a quick measurement"),
        "{t}"
    );
    let t = profile(&fresh);
    let note = t["limits"].as_str().unwrap();
    assert!(
        note.starts_with("a quick measurement by `tessera profile`"),
        "{note}"
    );
    assert!(!note.contains("measured by `tessera peak"), "{note}");
    assert_eq!(t["limits_quick"], true);
    let _ = std::fs::remove_file(&path);
    let _ = std::fs::remove_file(&fresh);
}

#[test]
fn profile_plan_times_every_step_of_the_compiled_plan() {
    let out = ok(&[
        "profile",
        "mobilenetv2_100",
        "--plan",
        "--img-size",
        "64",
        "--threads",
        "2",
        "--json",
    ]);
    let lines = json_lines(&out);
    let (steps, total) = lines.split_at(lines.len() - 1);
    // MobileNetV2: stem conv, 17 depthwise, 34 pointwise (expand, project; the first block
    // has no expansion), head 1x1, pool, classifier.
    assert_eq!(steps.len(), 54, "{out}");
    let count = |k: &str| steps.iter().filter(|s| s["kind"] == k).count();
    assert_eq!(count("depthwise"), 17);
    assert_eq!(count("conv"), 1);
    assert_eq!(count("linear"), 1);
    for (i, s) in steps.iter().enumerate() {
        assert_eq!(s["step"].as_u64(), Some(i as u64 + 1));
        assert!(s["ms"].as_f64().is_some_and(|t| t >= 0.0), "{s}");
        assert!(!s["detail"].as_str().unwrap_or("").is_empty(), "{s}");
    }
    let sum: f64 = steps.iter().map(|s| s["ms"].as_f64().unwrap()).sum();
    let t = total[0]["total_ms"].as_f64().unwrap();
    assert!((sum - t).abs() <= 1e-3 * steps.len() as f64, "{sum} vs {t}");
    let err = fails(&["profile", "mobilenetv2_100", "--plan", "--train"]);
    assert!(err.contains("--plan"), "{err}");
}
