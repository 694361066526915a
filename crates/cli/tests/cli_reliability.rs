//! The command line under hostile-but-ordinary input: saves that would replace a device node or
//! go to a missing directory fail before any work, absurd sizes and thread counts are errors
//! naming the flag, a one-image last batch trains, and nothing panics.

use std::process::{Command, Output};

fn tessera(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_tessera"))
        .env_remove("TESSERA_ISA")
        .args(args)
        .output()
        .unwrap()
}

/// Fails with a one-line error containing every needle, and no panic.
fn fails_with(args: &[&str], needles: &[&str]) {
    let out = tessera(args);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{args:?} succeeded");
    assert!(!err.contains("panicked"), "{args:?} panicked: {err}");
    for n in needles {
        assert!(err.contains(n), "{args:?}: {n:?} not in {err}");
    }
}

#[cfg(unix)]
#[test]
fn saves_never_replace_special_files_and_fail_before_training() {
    fails_with(
        &[
            "train",
            "vit_digits",
            "--epochs",
            "1",
            "--save",
            "/dev/null",
        ],
        &["character device", "refusing"],
    );
    let t0 = std::time::Instant::now();
    fails_with(
        &[
            "train",
            "vit_digits",
            "--epochs",
            "50",
            "--save",
            "/no/such/dir/c.safetensors",
        ],
        &["does not exist"],
    );
    // Before the first epoch: far quicker than 50 epochs.
    assert!(t0.elapsed().as_secs() < 30);
    assert!(std::fs::metadata("/dev/null").is_ok());
}

#[test]
fn absurd_sizes_are_errors_naming_the_flag() {
    fails_with(
        &["info", "vit_tiny_patch16_224", "--mlp-ratio", "1e30"],
        &["--mlp-ratio", "bytes"],
    );
    fails_with(
        &["info", "mobilenetv2_100", "--img-size", "100000"],
        &["--img-size 100000", "bytes"],
    );
    fails_with(
        &[
            "info",
            "vit_tiny_patch16_224",
            "--embed-dim",
            "1000000",
            "--num-heads",
            "1",
        ],
        &["--embed-dim 1000000"],
    );
    fails_with(
        &["info", "vit_tiny_patch16_224", "--depth", "1000000"],
        &["--depth 1000000"],
    );
    fails_with(
        &["info", "resnet50", "--num-classes", "1000000000000"],
        &["--num-classes 1000000000000"],
    );
    fails_with(
        &["info", "mobilenetv2_100", "--in-chans", "1000000000"],
        &["--in-chans 1000000000"],
    );
    fails_with(
        &[
            "info",
            "vit_tiny_patch16_224",
            "--img-size",
            "4294967296",
            "--patch-size",
            "1",
        ],
        &["overflows"],
    );
    fails_with(
        &["profile", "vit_digits", "--batch", "100000000"],
        &["--batch 100000000", "bytes"],
    );
    fails_with(
        &["train", "vit_digits", "--batch", "100000000"],
        &["--batch 100000000", "bytes"],
    );
}

#[test]
fn absurd_thread_counts_are_errors() {
    fails_with(
        &["train", "vit_digits", "--threads", "1000000000"],
        &["--threads 1000000000", "per logical core"],
    );
}

#[test]
fn num_classes_zero_for_run_names_the_flag() {
    fails_with(
        &[
            "run",
            "vit_digits",
            "--num-classes",
            "0",
            "--input",
            "x.npy",
        ],
        &["--num-classes 0"],
    );
}

#[test]
fn a_last_batch_of_one_image_trains() {
    // 1437 training digits in batches of 4 leave one image over.
    let out = tessera(&[
        "train",
        "mobilenetv2_digits",
        "--epochs",
        "1",
        "--batch",
        "4",
        "--json",
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
}
