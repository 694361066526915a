//! `tessera cpu` and the tuning cache from the command line: the caches and blocks are reported,
//! a tuning cache written for this CPU is used, and a corrupt, truncated or foreign one is
//! reported and ignored (the analytical blocks apply).

use std::path::PathBuf;
use std::process::{Command, Output};

fn tessera(args: &[&str], cache: &PathBuf) -> Output {
    Command::new(env!("CARGO_BIN_EXE_tessera"))
        .args(args)
        .env("TESSERA_TUNE_CACHE", cache)
        .env_remove("TESSERA_TUNE")
        .output()
        .expect("tessera runs")
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("tessera-cli-cpu-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir.join("tune.txt")
}

fn cpu_json(cache: &PathBuf) -> (serde_json::Value, String) {
    let out = tessera(&["cpu", "--json"], cache);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("one JSON object");
    (v, String::from_utf8_lossy(&out.stderr).into_owned())
}

#[test]
fn cpu_reports_caches_and_blocks_for_every_isa() {
    let cache = scratch("report");
    let (v, _) = cpu_json(&cache);
    let l1 = &v["caches"]["l1d"];
    assert!(l1["bytes"].as_u64().unwrap() >= 4096);
    assert!(v["cpu"]["vendor"].is_string());
    let gemm = v["gemm"].as_array().unwrap();
    let available = v["available"].as_array().unwrap();
    assert_eq!(gemm.len(), available.len());
    for g in gemm {
        let (mr, kc, mc) = (
            g["mr"].as_u64().unwrap(),
            g["kc"].as_u64().unwrap(),
            g["mc"].as_u64().unwrap(),
        );
        assert!(kc >= 64 && mc % mr == 0, "{g}");
        assert_eq!(g["origin"], "analytical model", "no cache file yet: {g}");
    }
    // The ISAs with the implicit-GEMM convolution: AVX-512 exactly when this CPU has it.
    let implicit = v["conv_implicit"].as_array().unwrap();
    let has_avx512 = available.iter().any(|i| i == "avx512");
    assert_eq!(implicit.len(), usize::from(has_avx512), "{implicit:?}");
}

#[test]
fn a_cache_for_this_cpu_is_used_and_a_bad_one_ignored() {
    let cache = scratch("use");
    let (v, _) = cpu_json(&cache);
    let vendor = v["cpu"]["vendor"].as_str().unwrap();
    let brand = v["cpu"]["brand"].as_str().unwrap();
    let key = format!(
        "{vendor}|{brand}|family {} model {} stepping {}",
        v["cpu"]["family"], v["cpu"]["model"], v["cpu"]["stepping"]
    );
    let tuning = tessera::kernels::gemm::Tuning::with_blocks(
        &tessera::kernels::gemm::table::candidates(tessera::kernels::Isa::Scalar)[0],
        128,
        64,
    )
    .and_then(|t| t.with_deep_kc(256))
    .unwrap();
    let good = tessera::kernels::gemm::tune_cache::format(&key, &[tuning]);
    std::fs::write(&cache, &good).unwrap();
    let (v, err) = cpu_json(&cache);
    let scalar = v["gemm"]
        .as_array()
        .unwrap()
        .iter()
        .find(|g| g["isa"] == "scalar")
        .unwrap()
        .clone();
    assert_eq!(
        (
            scalar["kc"].as_u64(),
            scalar["mc"].as_u64(),
            scalar["deep_kc"].as_u64()
        ),
        (Some(128), Some(64), Some(256))
    );
    assert!(
        scalar["origin"].as_str().unwrap().contains("tessera tune"),
        "{scalar}"
    );
    assert!(err.is_empty(), "{err}");

    let foreign = tessera::kernels::gemm::tune_cache::format(
        "Other|CPU|family 0 model 0 stepping 0",
        &[tuning],
    );
    for (what, text) in [
        ("truncated", good[..good.len() / 2].to_string()),
        ("edited", good.replace("kc 128", "kc 192")),
        ("foreign", foreign),
        ("binary", "\u{0}\u{1}\u{2}".to_string()),
    ] {
        std::fs::write(&cache, &text).unwrap();
        let (v, err) = cpu_json(&cache);
        assert!(err.contains("ignoring the tuning cache"), "{what}: {err}");
        for g in v["gemm"].as_array().unwrap() {
            assert_eq!(g["origin"], "analytical model", "{what}: {g}");
        }
    }
}

#[test]
fn tune_rejects_a_bad_time_budget() {
    let cache = scratch("budget");
    let out = tessera(&["tune", "--seconds", "0"], &cache);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--seconds"));
    assert!(!cache.exists(), "nothing written");
}
