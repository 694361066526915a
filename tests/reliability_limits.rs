//! Limits before allocation: extreme configurations are errors that name the flag and the
//! bytes, checked from the configuration alone; the activation estimates behind them are upper
//! bounds of what the ops really produce (measured with the profiler), and not so loose that
//! they refuse sensible work.

use tessera::core::{no_grad, profile, Tensor};
use tessera::models::limits::{self, model_footprint, parse_bytes};
use tessera::models::{create, zoo, Mode, ModelError, Overrides};

fn o() -> Overrides {
    Overrides::default()
}

#[test]
fn byte_counts_parse() {
    assert_eq!(parse_bytes("1000"), Some(1000));
    assert_eq!(parse_bytes("8G"), Some(8 << 30));
    assert_eq!(parse_bytes("512MiB"), Some(512 << 20));
    assert_eq!(parse_bytes(" 3 kb "), Some(3 << 10));
    assert_eq!(parse_bytes("none"), Some(u64::MAX));
    assert_eq!(parse_bytes("99999999999T"), None);
    assert_eq!(parse_bytes("lots"), None);
    assert_eq!(parse_bytes("-1"), None);
    assert_eq!(parse_bytes("1.5G"), None);
}

/// Every configuration of the list is refused before anything is allocated (the test
/// would abort or take minutes otherwise), with the flag and the bytes in the message.
#[test]
fn extreme_configurations_are_errors_naming_the_flag() {
    let cases: Vec<(&str, Overrides, &str)> = vec![
        (
            "vit_tiny_patch16_224",
            Overrides {
                mlp_ratio: Some(1e30),
                ..o()
            },
            "--mlp-ratio 1000000000000000000000000000000",
        ),
        (
            "vit_tiny_patch16_224",
            Overrides {
                img_size: Some(100_000),
                patch_size: Some(16),
                ..o()
            },
            "--img-size 100000",
        ),
        (
            "mobilenetv2_100",
            Overrides {
                img_size: Some(100_000),
                ..o()
            },
            "--img-size 100000",
        ),
        (
            "vit_tiny_patch16_224",
            Overrides {
                embed_dim: Some(1_000_000),
                num_heads: Some(1),
                ..o()
            },
            "--embed-dim 1000000",
        ),
        (
            "vit_tiny_patch16_224",
            Overrides {
                depth: Some(1_000_000),
                ..o()
            },
            "--depth 1000000",
        ),
        (
            "resnet50",
            Overrides {
                num_classes: Some(1_000_000_000_000),
                ..o()
            },
            "--num-classes 1000000000000",
        ),
        (
            "mobilenetv3_large_100",
            Overrides {
                in_chans: Some(1_000_000_000),
                ..o()
            },
            "--in-chans 1000000000",
        ),
        (
            "vit_tiny_patch16_224",
            Overrides {
                img_size: Some(4_294_967_296),
                patch_size: Some(1),
                ..o()
            },
            "overflows",
        ),
    ];
    for (arch, ov, needle) in cases {
        match create(arch, &ov, 0) {
            Err(ModelError::Limit(m)) => {
                assert!(m.contains(needle), "{arch} {ov:?}: {m}");
                assert!(m.contains("bytes"), "{m}");
            }
            Err(e) => panic!("{arch} {ov:?}: expected a limit error, got {e}"),
            Ok(_) => panic!("{arch} {ov:?}: built"),
        }
    }
}

/// A footprint whose arithmetic overflows in the activations (a 10^8-pixel side: the
/// parameters of a CNN do not depend on it) is not blamed on the parameters, and the
/// parameters are named when they alone are over.
#[test]
fn the_part_over_the_budget_is_named() {
    let message = |r: Result<(), ModelError>| r.unwrap_err().to_string();
    let huge_image = Overrides {
        img_size: Some(100_000_000),
        ..o()
    };
    let m = message(limits::check_model("mobilenetv2_100", &huge_image));
    assert!(
        m.contains("its parameters and one image's forward pass"),
        "{m}"
    );
    assert!(!m.contains("its parameter storage"), "{m}");
    let deep = Overrides {
        depth: Some(1_000_000),
        ..o()
    };
    let m = message(limits::check_model("vit_tiny_patch16_224", &deep));
    assert!(m.contains("its parameter storage needs"), "{m}");
    assert!(limits::check_batch("vit_digits", &o(), 1, false, "--batch 1").is_ok());
    let m = message(limits::check_batch(
        "vit_tiny_patch16_224",
        &deep,
        1,
        false,
        "--batch 1",
    ));
    assert!(m.contains("(1 image)"), "{m}");
}

#[test]
fn batches_are_checked_with_the_flag_named() {
    let e = limits::check_batch("vit_digits", &o(), 100_000_000, true, "--batch 100000000")
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("--batch 100000000") && e.contains("bytes"),
        "{e}"
    );
    limits::check_batch("vit_digits", &o(), 64, true, "--batch 64").unwrap();
    limits::check_batch("mobilenetv2_100", &o(), 64, false, "the input").unwrap();
    limits::check_batch("vit_base_patch16_224", &o(), 8, true, "--batch 8").unwrap();
}

/// The default presets all pass (the estimate must not refuse what runs).
#[test]
fn every_preset_fits_the_default_budget() {
    for arch in zoo::names() {
        limits::check_model(arch, &o()).unwrap_or_else(|e| panic!("{arch}: {e}"));
    }
}

/// Sum and largest of the forward ops' output bytes per image of `arch` in `mode` (two
/// images: training-mode batch norm needs more than one value per channel).
fn measured(arch: &str, mode: Mode) -> (u64, u64) {
    let mut m = create(arch, &o(), 0).unwrap();
    m.set_mode(mode);
    let [c, h, w] = m.input_chw();
    let x = Tensor::randn(&[2, c, h, w], 3);
    let (_, p) = profile::record(|| {
        let _g = (mode == Mode::Eval).then(no_grad);
        m.forward(&x).unwrap()
    });
    let fwd = p
        .records
        .iter()
        .filter(|r| r.phase == profile::Phase::Forward);
    let sum = fwd.clone().map(|r| r.bytes_written).sum::<u64>() / 2;
    let max = fwd.map(|r| r.bytes_written).max().unwrap_or(0) / 2;
    (sum, max)
}

/// The per-image activation estimates bound the measured op outputs of every preset that runs
/// quickly here, within a factor (16) that keeps the budget useful: one
/// ratio per family covers its largest preset.
#[test]
fn activation_estimates_bound_what_the_ops_produce() {
    for arch in [
        "vit_digits",
        "vit_cifar",
        "vit_tiny_patch16_224",
        "mobilenetv2_100",
        "mobilenetv2_140",
        "mobilenetv2_digits",
        "mobilenetv3_large_100",
        "mobilenetv3_small_050",
        "mobilenetv3_digits",
        "resnet50",
        "seresnet101",
        "resnet_digits",
        "seresnet_digits",
    ] {
        let fp = model_footprint(arch, &o()).unwrap().unwrap();
        let (train_sum, _) = measured(arch, Mode::Train);
        let (_, infer_max) = measured(arch, Mode::Eval);
        eprintln!(
            "{arch}: train forward outputs {train_sum} B (estimate {}), largest eval output {infer_max} B (estimate {})",
            fp.train_bytes_per_image, fp.infer_bytes_per_image
        );
        if std::env::var("TESSERA_LIMITS_REPORT").is_ok() {
            continue;
        }
        assert!(
            fp.train_bytes_per_image >= train_sum,
            "{arch}: training estimate {} < measured {train_sum}",
            fp.train_bytes_per_image
        );
        assert!(
            fp.train_bytes_per_image <= 16 * train_sum,
            "{arch}: training estimate {} > 16x measured {train_sum}",
            fp.train_bytes_per_image
        );
        assert!(
            fp.infer_bytes_per_image >= 2 * infer_max,
            "{arch}: inference estimate {} < 2x the largest output {infer_max}",
            fp.infer_bytes_per_image
        );
    }
}
