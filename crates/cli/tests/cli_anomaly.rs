//! `tessera train --detect-anomaly` stops at the first op that makes NaN or infinity and names
//! it with its module (layer), forward and backward, for weights poisoned at a known place;
//! without the flag the same run only finds a non-finite loss.

use std::path::{Path, PathBuf};
use std::process::Command;
use tessera::core::Tensor;
use tessera::models::finetune::save_weights;
use tessera::models::{create, Model, Overrides};

/// `vit_digits` with `edit` applied to each named parameter, saved under `dir` as `name`.
fn weights(dir: &Path, name: &str, edit: &dyn Fn(&str, &Tensor) -> Option<Tensor>) -> PathBuf {
    let mut m: Box<dyn Model> = create("vit_digits", &Overrides::default(), 0).unwrap();
    m.visit_mut("", &mut |n, t, _| {
        if let Some(v) = edit(n, t) {
            *t = v;
        }
    });
    let path = dir.join(name);
    save_weights(m.as_ref(), &path).unwrap();
    path
}

/// `train vit_digits --weights <w>` for one epoch (plus `extra`): fails, and its stderr.
fn train_fails(w: &Path, extra: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_tessera"))
        .env_remove("TESSERA_ISA")
        .args(["train", "vit_digits", "--epochs", "1", "--threads", "1"])
        .args(["--weights", w.to_str().unwrap()])
        .args(extra)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(!out.status.success(), "{extra:?} succeeded: {err}");
    assert!(!err.contains("panicked"), "{err}");
    err
}

#[test]
fn detect_anomaly_names_the_op_and_module_forward_and_backward() {
    let dir = std::env::temp_dir().join(format!("tessera-cli-anomaly-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();

    // Forward: a NaN in the qkv projection of block 1.
    let nan_qkv = weights(&dir, "nan_qkv.safetensors", &|n, t| {
        (n == "blocks.1.attn.qkv.weight").then(|| Tensor::full(t.shape(), f32::NAN))
    });
    let err = train_fails(&nan_qkv, &["--detect-anomaly"]);
    assert!(
        err.contains(
            "anomaly: epoch 1 step 1: forward: op linear in module blocks.1.attn.qkv \
             (stage blocks.1) of vit_digits is the first to produce non-finite values"
        ),
        "{err}"
    );
    let err = train_fails(&nan_qkv, &[]);
    assert!(err.contains("the loss became NaN"), "{err}");

    // Backward only: block 0's MLP computes exactly zero (fc1 maps everything to -100, and
    // gelu(-100) = 0), so fc2 weights near f32::MAX are harmless forward but overflow in fc2's
    // backward; a head scaled by 1,000 makes the gradient reaching it large.
    let overflow = weights(&dir, "overflow.safetensors", &|n, t| match n {
        "blocks.0.mlp.fc1.weight" => Some(Tensor::zeros(t.shape())),
        "blocks.0.mlp.fc1.bias" => Some(Tensor::full(t.shape(), -100.0)),
        "blocks.0.mlp.fc2.weight" => {
            let max = t.data().iter().fold(0.0f32, |a, v| a.max(v.abs()));
            Some(t.mul_scalar(1.0 / max).mul_scalar(0.5 * f32::MAX))
        }
        "head.weight" => Some(t.mul_scalar(1e3)),
        _ => None,
    });
    let err = train_fails(&overflow, &["--detect-anomaly"]);
    assert!(
        err.contains(
            "anomaly: epoch 1 step 1: backward: linear.backward of op linear in module \
             blocks.0.mlp.fc2 (stage blocks.0) of vit_digits is the first to return non-finite \
             gradients"
        ),
        "{err}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
