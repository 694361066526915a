//! End-to-end tests of the `tessera` program's GEMM benchmark and ISA handling.

use std::process::Command;

fn tessera() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_tessera"));
    cmd.env_remove("TESSERA_ISA");
    cmd
}

#[test]
fn bench_gemm_json_has_the_documented_keys() {
    let out = tessera()
        .args([
            "bench",
            "gemm",
            "--m",
            "64",
            "--n",
            "48",
            "--k",
            "32",
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
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 1, "{text}");
    let v: serde_json::Value = serde_json::from_str(lines[0]).unwrap();
    assert_eq!(v["op"], "gemm");
    assert_eq!(
        (v["m"].as_u64(), v["n"].as_u64(), v["k"].as_u64()),
        (Some(64), Some(48), Some(32))
    );
    assert_eq!(v["threads"].as_u64(), Some(1));
    assert!(v["tessera_gflops"].as_f64().unwrap() > 0.0);
    assert!(v["matrixmultiply_gflops"].as_f64().unwrap() > 0.0);
    assert!(v["tessera_packed_b_gflops"].as_f64().unwrap() > 0.0);
    let peak = v["fma_peak_interleaved_gflops"].as_f64().unwrap();
    let pct = v["tessera_pct_of_interleaved_peak"].as_f64().unwrap();
    assert!(peak > 0.0 && pct > 0.0, "{v}");
    let want = 100.0 * v["tessera_gflops"].as_f64().unwrap() / peak;
    assert!((pct - want).abs() <= 0.01 * want + 0.01, "{v}");
}

#[test]
fn bench_gemm_table_prints_ratio() {
    let out = tessera()
        .args([
            "bench",
            "gemm",
            "--m",
            "33",
            "--n",
            "17",
            "--k",
            "5",
            "--threads",
            "2",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        text.contains("33x17x5") && text.contains("ratio") && text.contains("2 thread(s)"),
        "{text}"
    );
}

#[test]
fn partial_sizes_are_rejected() {
    let out = tessera()
        .args(["bench", "gemm", "--m", "64"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--m, --n and --k"), "{err}");
}

#[test]
fn empty_sizes_are_rejected() {
    let out = tessera()
        .args(["bench", "gemm", "--m", "0", "--n", "5", "--k", "5"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("must each be at least 1"), "{err}");
    assert!(out.stdout.is_empty(), "no table for an empty product");
}

/// Sizes whose buffers exceed the memory budget (or overflow 64 bits) are an error before
/// anything is allocated, not an allocation failure that aborts the process.
#[test]
fn oversized_products_are_rejected_before_allocating() {
    for size in ["100000", "100000000", "18446744073709551615"] {
        let out = tessera()
            .args(["bench", "gemm", "--m", size, "--n", size, "--k", size])
            .env("TESSERA_MEMORY_LIMIT", "8G")
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(1), "--m/--n/--k {size}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("memory budget"), "{size}: {err}");
        assert!(out.stdout.is_empty(), "{size}: nothing measured");
    }
}

#[test]
fn unknown_bench_target_is_rejected() {
    let out = tessera().args(["bench", "nosuchthing"]).output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown target"));
}

#[test]
fn forcing_each_isa() {
    for isa in tessera::kernels::Isa::ALL {
        let out = tessera()
            .env("TESSERA_ISA", isa.name())
            .args(["cpu", "--json"])
            .output()
            .unwrap();
        if isa.is_supported() {
            assert!(
                out.status.success(),
                "{isa}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
            assert_eq!(v["isa"], isa.name());
        } else {
            assert!(
                !out.status.success(),
                "{isa} is not supported here but was accepted"
            );
            let err = String::from_utf8_lossy(&out.stderr);
            assert!(
                err.contains("does not support") && err.contains(isa.name()),
                "{err}"
            );
        }
    }
    let out = tessera()
        .env("TESSERA_ISA", "sse9")
        .args(["cpu"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown instruction set"));
}

#[test]
fn forced_scalar_path_runs_the_benchmark() {
    let out = tessera()
        .env("TESSERA_ISA", "scalar")
        .args([
            "bench",
            "gemm",
            "--m",
            "20",
            "--n",
            "20",
            "--k",
            "20",
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
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["isa"], "scalar");
}
