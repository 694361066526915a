//! End-to-end tests of `tessera train`: JSON output keys, a learning signal on the embedded
//! digits, checkpoint + resume, weights-only `--save`, fine-tuning on an image folder with a
//! re-initialised classifier, `--plot`, `tessera compare`, and clear errors.

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
        .args(["--checkpoint", ckpt.to_str().unwrap()])
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
        for k in [
            "train_loss",
            "train_acc",
            "test_loss",
            "test_acc",
            "images_per_s",
            "seconds",
        ] {
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
        .args(["train", "vit_digits", "--dataset", "folder:/nonexistent/x"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("not a directory"),
        "{err}"
    );
    let out = tessera()
        .args([
            "train",
            "vit_digits",
            "--weights",
            "/nonexistent.safetensors",
            "--epochs",
            "1",
        ])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("nonexistent.safetensors"),
        "{err}"
    );
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

/// Writes `per_class` 8x8 grey PNGs of each digit class in `classes` under `root/<class>/`,
/// taken from the digits test split (images a model trained on the digits has not seen).
fn digit_folder(root: &std::path::Path, classes: &[usize], per_class: usize) {
    let (_, test) = tessera::models::data::digits_split().unwrap();
    for &c in classes {
        let dir = root.join(format!("digit{c}"));
        std::fs::create_dir_all(&dir).unwrap();
        let idx: Vec<usize> = (0..test.len())
            .filter(|&i| test.labels[i] == c)
            .take(per_class)
            .collect();
        assert_eq!(idx.len(), per_class, "digit {c}");
        for (k, i) in idx.into_iter().enumerate() {
            let px: Vec<u8> = test
                .image(i)
                .iter()
                .map(|v| (v * 255.0).round() as u8)
                .collect();
            image::GrayImage::from_raw(8, 8, px)
                .unwrap()
                .save(dir.join(format!("{k}.png")))
                .unwrap();
        }
    }
}

#[test]
fn fine_tunes_from_saved_weights_on_an_image_folder() {
    let dir = std::env::temp_dir().join(format!("tessera-cli-finetune-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let base = dir.join("base.safetensors");
    // Pretrained weights: vit_digits on the ten digit classes, long enough to be a pretrained
    // model (about 94% test accuracy after 30 epochs; the ViT leaves its initial plateau only
    // after a few epochs, and 6 epochs leave it near 40%, features a fine-tune cannot build on).
    let out = tessera()
        .args([
            "train",
            "vit_digits",
            "--epochs",
            "30",
            "--threads",
            "2",
            "--json",
        ])
        .args(["--save", base.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let summary = json_lines(&out.stdout).pop().unwrap();
    let base_acc = summary["final_test_acc"].as_f64().unwrap();
    assert!(
        base_acc >= 0.85,
        "pretraining reached {base_acc}: {summary}"
    );
    let file = tessera::models::io::safetensors::read(&base).unwrap();
    assert!(file.tensors.keys().all(|k| !k.starts_with("__optim__")));
    assert_eq!(file.metadata.get("format").map(String::as_str), Some("pt"));
    // A three-class folder data set of PNGs the base model never saw.
    let data = dir.join("photos");
    digit_folder(&data, &[3, 5, 8], 30);
    let (ft, svg) = (dir.join("ft.safetensors"), dir.join("curves.svg"));
    let out = tessera()
        .args(["train", "vit_digits", "--weights", base.to_str().unwrap()])
        .args(["--dataset", &format!("folder:{}", data.display())])
        // The fine-tuning recipe's defaults: 10 epochs, batch 32, AdamW at lr 2e-4.
        .args(["--threads", "2"])
        .args([
            "--save",
            ft.to_str().unwrap(),
            "--plot",
            svg.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("classifier (head.bias, head.weight) is re-initialised: 10 classes"),
        "{stderr}"
    );
    assert!(
        stdout.contains("72 train / 18 test images, 3 classes), 10 epochs, batch 32, adamw"),
        "{stdout}"
    );
    assert!(stdout.contains("from pretrained weights"), "{stdout}");
    let acc: f64 = stdout
        .lines()
        .find_map(|l| l.strip_prefix("done: test accuracy "))
        .and_then(|l| l.split('%').next())
        .unwrap()
        .parse()
        .unwrap();
    assert!(acc >= 80.0, "fine-tuned 3-class accuracy {acc}%: {stdout}");
    let ft_file = tessera::models::io::safetensors::read(&ft).unwrap();
    assert_eq!(ft_file.tensors["head.weight"].shape, vec![3, 64]);
    assert_eq!(ft_file.tensors.len(), file.tensors.len());
    let text = std::fs::read_to_string(&svg).unwrap();
    assert!(
        text.starts_with("<svg") && text.matches("<polyline").count() == 4,
        "{text}"
    );
    // The fine-tuned weights classify an image of the folder with `tessera run`.
    let img = data.join("digit5").join("0.png");
    let out = tessera()
        .args([
            "run",
            "vit_digits",
            "--num-classes",
            "3",
            "--weights",
            ft.to_str().unwrap(),
        ])
        .args(["--input", img.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // --num-classes that contradicts the folder is refused.
    let out = tessera()
        .args(["train", "vit_digits", "--num-classes", "4"])
        .args(["--dataset", &format!("folder:{}", data.display())])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stderr).contains("--num-classes 4 but"));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn compare_charts_two_presets() {
    let dir = std::env::temp_dir().join(format!("tessera-cli-compare-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let svg = dir.join("cmp.svg");
    let out = tessera()
        .args([
            "compare",
            "vit_digits",
            "resnet_digits",
            "--epochs",
            "2",
            "--threads",
            "2",
            "--json",
        ])
        .args(["--plot", svg.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines = json_lines(&out.stdout);
    assert_eq!(lines.len(), 6, "2 epochs + a summary per architecture");
    assert_eq!(lines[2]["arch"], "vit_digits");
    assert!(lines[2]["final_test_acc"].as_f64().is_some());
    assert!(lines[1]["seconds"].as_f64().unwrap() > lines[0]["seconds"].as_f64().unwrap());
    let text = std::fs::read_to_string(&svg).unwrap();
    assert_eq!(
        text.matches("<polyline").count(),
        4,
        "two series in two panels"
    );
    assert!(text.contains("wall-clock seconds"));
    let out = tessera()
        .args(["compare", "vit_base_patch16_224"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    std::fs::remove_dir_all(&dir).unwrap();
}
