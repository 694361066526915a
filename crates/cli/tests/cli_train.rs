//! End-to-end tests of `tessera train`: JSON output keys, a learning signal on the embedded
//! digits, checkpoint + resume, and clear errors.

use std::process::Command;

fn tessera() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_tessera"));
    cmd.env_remove("TESSERA_ISA");
    cmd
}

fn json_lines(out: &[u8]) -> Vec<serde_json::Value> {
    String::from_utf8_lossy(out)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l}: {e}")))
        .collect()
}

#[test]
fn trains_saves_and_resumes() {
    let dir = std::env::temp_dir().join(format!("tessera-cli-train-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let ckpt = dir.join("rn.ckpt");
    // A small, fast network: the ResNet digits preset, 4 epochs of AdamW.
    let common = [
        "train",
        "resnet_digits",
        "--epochs",
        "4",
        "--seed",
        "3",
        "--threads",
        "2",
        "--json",
    ];
    let out = tessera()
        .args(common)
        .args(["--save", ckpt.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines = json_lines(&out.stdout);
    assert_eq!(lines.len(), 5, "4 epochs + summary");
    for (i, l) in lines[..4].iter().enumerate() {
        assert_eq!(l["epoch"].as_u64(), Some(i as u64 + 1));
        for k in ["train_loss", "train_acc", "test_acc", "images_per_s"] {
            assert!(l[k].as_f64().is_some(), "missing {k} in {l}");
        }
    }
    let final_acc = lines[4]["final_test_acc"].as_f64().unwrap();
    // No --opt / --lr: the ResNet recipe (AdamW, lr 2e-3, weight decay 0.05).
    assert_eq!(lines[4]["opt"].as_str(), Some("adamw"), "{}", lines[4]);
    assert_eq!(lines[4]["epochs"].as_u64(), Some(4));
    assert!((lines[4]["lr"].as_f64().unwrap() - 2e-3).abs() < 1e-9);
    assert!(
        final_acc >= 0.8,
        "a clear learning signal after 4 epochs: {final_acc}"
    );

    // Resuming a finished run does nothing; resuming with another seed is refused.
    let out = tessera()
        .args(common)
        .args(["--resume", ckpt.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = tessera()
        .args([
            "train",
            "resnet_digits",
            "--epochs",
            "4",
            "--seed",
            "4",
            "--resume",
            ckpt.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--seed 3"));
}

#[test]
fn bad_arguments_are_clear_errors() {
    let out = tessera()
        .args(["train", "vit_base_patch16_224", "--epochs", "1"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("[3, 224, 224]") && err.contains("[1, 8, 8]"),
        "{err}"
    );
    let out = tessera()
        .args(["train", "vit_digits", "--dataset", "mnist"])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown dataset"));
    let out = tessera()
        .args([
            "train",
            "vit_digits",
            "--dataset",
            "cifar10",
            "--data",
            "/nonexistent",
        ])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stderr).contains("not a directory"));
    let out = tessera()
        .args(["train", "vit_digits", "--opt", "lamb"])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown optimizer"));
}

#[test]
fn bench_train_step_reports_time_and_memory() {
    let out = tessera()
        .args([
            "bench",
            "vit_digits",
            "--train",
            "--batch",
            "4",
            "--iters",
            "2",
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
    let lines = json_lines(&out.stdout);
    assert_eq!(lines.len(), 1);
    let l = &lines[0];
    assert_eq!(
        (
            l["arch"].as_str(),
            l["batch"].as_u64(),
            l["threads"].as_u64()
        ),
        (Some("vit_digits"), Some(4), Some(1))
    );
    assert!(l["train_step_ms"].as_f64().unwrap() > 0.0);
    assert!(l["peak_rss_mb"].as_f64().unwrap() > 1.0);
    // --train is a model option: kernel targets refuse it.
    let out = tessera()
        .args(["bench", "gemm", "--train"])
        .output()
        .unwrap();
    assert!(!out.status.success());
}
