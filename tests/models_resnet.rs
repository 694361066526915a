//! ResNet / SE-ResNet (He et al., CVPR 2016; Hu et al., CVPR 2018) against timm 1.0.31:
//! state_dict keys and shapes and exact parameter counts of the four full-size architectures,
//! eval-mode logits of small variants at <= 1e-4 relative error (fixtures written by
//! `scripts/fixtures_resnet.py`), overrides and their errors, timm's initialisation.
//!
//! The ignored test `full_size_checkpoints_match_timm` loads full-size random-weight timm state
//! dicts (not committed): `python3 scripts/fixtures_resnet.py --full /tmp/resnet_full`, then
//! `TESSERA_RESNET_FULL=/tmp/resnet_full cargo test --release --test models_resnet -- --ignored`.

use proptest::prelude::*;
use std::path::{Path, PathBuf};
use tessera::core::{no_grad, Tensor};
use tessera::models::archs::resnet::{build_config, ResNetConfig, Stem};
use tessera::models::io::{npy, Values};
use tessera::models::module::{named_tensors, parameter_count};
use tessera::models::{create, weights, Model, ModelError, Overrides, TensorKind};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/models")
        .join(name)
}

fn read_npy(path: &Path) -> Tensor {
    let a = npy::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    match a.values {
        Values::F32(v) => Tensor::from_vec(v, &a.shape).unwrap(),
        Values::I64(_) => panic!("{}: expected f32", path.display()),
    }
}

/// max |a - b| / max |b|.
fn rel_err(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    let scale = b.iter().fold(0f32, |m, v| m.max(v.abs()));
    let diff = a.iter().zip(b).fold(0f32, |m, (x, y)| m.max((x - y).abs()));
    diff / scale
}

/// Loads `<case>.safetensors` into `model` and compares its logits on `<case>.input.npy`.
fn check_parity(model: &mut dyn Model, dir: &Path, case: &str) {
    weights::load(model, dir.join(format!("{case}.safetensors"))).unwrap();
    let x = read_npy(&dir.join(format!("{case}.input.npy")));
    let want = read_npy(&dir.join(format!("{case}.logits.npy")));
    let _g = no_grad();
    let got = model.forward(&x).unwrap();
    assert_eq!(got.shape(), want.shape(), "{case}: logits shape");
    let err = rel_err(&got.to_vec(), &want.to_vec());
    assert!(err <= 1e-4, "{case}: relative error {err:e} > 1e-4");
}

/// timm's `ResNet(Bottleneck, layers, channels=(4, 8, 16, 32), num_classes=10, ...)`.
fn small_config(layers: &[usize], se: bool, in_chans: usize) -> ResNetConfig {
    ResNetConfig {
        layers: layers.to_vec(),
        channels: vec![4, 8, 16, 32],
        se,
        in_chans,
        num_classes: 10,
        ..ResNetConfig::for_arch("resnet50").unwrap()
    }
}

#[test]
fn small_resnet_matches_timm() {
    let mut m = build_config("resnet_small", &small_config(&[2, 1, 1, 1], false, 3), 0).unwrap();
    check_parity(&mut m, &fixture(""), "resnet_small");
}

#[test]
fn small_seresnet_matches_timm() {
    let mut m = build_config("seresnet_small", &small_config(&[1, 2, 1, 1], true, 2), 0).unwrap();
    check_parity(&mut m, &fixture(""), "seresnet_small");
}

#[test]
fn seresnet_digits_preset_matches_patched_timm() {
    let mut m = create("seresnet_digits", &Overrides::default(), 0).unwrap();
    assert_eq!(m.input_chw(), [1, 8, 8]);
    check_parity(m.as_mut(), &fixture(""), "seresnet_digits");
}

/// Keys and shapes of the full-size timm models (`<arch>.keys.txt`) and exact parameter counts.
#[test]
fn full_size_names_shapes_and_parameter_counts_equal_timm() {
    let expected_counts = [
        ("resnet50", 25_557_032),
        ("resnet101", 44_549_160),
        ("seresnet50", 28_088_024),
        ("seresnet101", 49_326_872),
    ];
    for (arch, count) in expected_counts {
        let m = create(arch, &Overrides::default(), 0).unwrap();
        assert_eq!(parameter_count(m.as_ref()), count, "{arch} parameter count");
        let text = std::fs::read_to_string(fixture(&format!("{arch}.keys.txt"))).unwrap();
        let mut lines = text.lines();
        lines.next(); // header
        let timm_count: usize = lines
            .next()
            .and_then(|l| l.strip_prefix("# params "))
            .and_then(|s| s.parse().ok())
            .unwrap();
        assert_eq!(timm_count, count, "{arch}: keys file count");
        let want: Vec<(String, Vec<usize>)> = lines
            .filter_map(|l| {
                let (k, s) = l.split_once(' ')?;
                if k.ends_with("num_batches_tracked") {
                    return None;
                }
                Some((
                    k.to_string(),
                    s.split(',').map(|d| d.parse().unwrap()).collect(),
                ))
            })
            .collect();
        let got: Vec<(String, Vec<usize>)> = named_tensors(m.as_ref())
            .into_iter()
            .map(|(n, t, _)| (n, t.shape().to_vec()))
            .collect();
        assert_eq!(got.len(), want.len(), "{arch}: number of tensors");
        for (g, w) in got.iter().zip(&want) {
            assert_eq!(g, w, "{arch}: tensor name/shape in state_dict order");
        }
        assert_eq!(m.num_classes(), 1000);
        assert_eq!(m.input_chw(), [3, 224, 224]);
    }
}

#[test]
fn overrides_apply_and_any_input_size_runs() {
    let o = Overrides {
        in_chans: Some(3),
        num_classes: Some(5),
        img_size: Some(32),
        ..Default::default()
    };
    let m = create("resnet_digits", &o, 1).unwrap();
    assert_eq!(m.input_chw(), [3, 32, 32]);
    assert_eq!(m.num_classes(), 5);
    let y = m.forward(&Tensor::randn(&[2, 3, 13, 21], 2)).unwrap();
    assert_eq!(y.shape(), &[2, 5]);
    // num_classes 0: no classifier, the pooled features (as timm).
    let o = Overrides {
        num_classes: Some(0),
        ..Default::default()
    };
    let m = create("seresnet_digits", &o, 1).unwrap();
    assert!(named_tensors(m.as_ref())
        .iter()
        .all(|(n, _, _)| !n.starts_with("fc.")));
    let y = m.forward(&Tensor::randn(&[1, 1, 8, 8], 2)).unwrap();
    assert_eq!(y.shape(), &[1, 512]);
    // timm's act_layer: changes the block activations, not the parameters.
    let o = Overrides {
        act: Some("swish".into()),
        ..Default::default()
    };
    let a = create("resnet_digits", &o, 3).unwrap();
    let b = create("resnet_digits", &Overrides::default(), 3).unwrap();
    assert_eq!(parameter_count(a.as_ref()), parameter_count(b.as_ref()));
}

fn config_error(arch: &str, o: Overrides) -> String {
    match create(arch, &o, 0) {
        Err(ModelError::Config(m)) => m,
        Err(e) => panic!("{arch}: expected a config error, got {e}"),
        Ok(_) => panic!("{arch}: expected a config error, got a model"),
    }
}

#[test]
fn invalid_overrides_are_config_errors() {
    let e = config_error(
        "resnet50",
        Overrides {
            img_size: Some(0),
            ..Default::default()
        },
    );
    assert!(e.contains("resnet50") && e.contains("img_size"), "{e}");
    let e = config_error(
        "seresnet101",
        Overrides {
            in_chans: Some(0),
            ..Default::default()
        },
    );
    assert!(e.contains("seresnet101") && e.contains("in_chans"), "{e}");
    let e = config_error(
        "resnet101",
        Overrides {
            patch_size: Some(16),
            ..Default::default()
        },
    );
    assert!(e.contains("patch_size"), "{e}");
    let e = config_error(
        "resnet_digits",
        Overrides {
            act: Some("nope".into()),
            ..Default::default()
        },
    );
    assert!(e.contains("nope"), "{e}");
    // Configurations timm would reject or that tessera does not support.
    let bad = [
        ResNetConfig {
            layers: vec![1, 1],
            ..ResNetConfig::for_arch("resnet_digits").unwrap()
        },
        ResNetConfig {
            layers: vec![1, 0, 1, 1],
            ..ResNetConfig::for_arch("resnet_digits").unwrap()
        },
        ResNetConfig {
            layers: vec![1; 5],
            channels: vec![8; 5],
            ..ResNetConfig::for_arch("resnet_digits").unwrap()
        },
    ];
    for cfg in bad {
        assert!(
            matches!(build_config("x", &cfg, 0), Err(ModelError::Config(_))),
            "{cfg:?}"
        );
    }
    assert!(ResNetConfig::for_arch("resnet18").is_err());
}

#[test]
fn wrong_input_and_wrong_weights_are_errors() {
    let mut m = create("resnet_digits", &Overrides::default(), 0).unwrap();
    let e = m.forward(&Tensor::randn(&[1, 3, 8, 8], 0)).unwrap_err();
    assert!(e.to_string().contains("[n, 1, h, w]"), "{e}");
    assert!(m.forward(&Tensor::randn(&[3, 8, 8], 0)).is_err());
    // SE weights into a plain ResNet: every se.* key is reported as unexpected.
    match weights::load(m.as_mut(), fixture("seresnet_digits.safetensors")) {
        Err(ModelError::Weights { problems, .. }) => {
            assert_eq!(
                problems.iter().filter(|p| p.contains(".se.fc")).count(),
                16,
                "{problems:?}"
            );
        }
        other => panic!("expected a weights error, got {:?}", other.err()),
    }
}

#[test]
fn initialised_as_timm() {
    let m = create("seresnet_digits", &Overrides::default(), 7).unwrap();
    let mut seen_bn3 = 0;
    for (name, t, kind) in named_tensors(m.as_ref()) {
        let v = t.to_vec();
        if name.ends_with("bn3.weight") {
            // zero_init_last (timm's default).
            assert!(v.iter().all(|&x| x == 0.0), "{name}");
            seen_bn3 += 1;
        } else if name.contains("bn") && name.ends_with(".weight") || name.ends_with("running_var")
        {
            assert!(v.iter().all(|&x| x == 1.0), "{name}");
        } else if name.ends_with("running_mean") || name.contains("bn") && name.ends_with(".bias") {
            assert!(v.iter().all(|&x| x == 0.0), "{name}");
        } else if t.rank() == 4 && v.len() >= 4096 {
            // kaiming_normal_(fan_out, relu): std sqrt(2 / (out * kh * kw)).
            let s = t.shape();
            let want = (2.0 / (s[0] * s[2] * s[3]) as f64).sqrt();
            let n = v.len() as f64;
            let mean = v.iter().map(|&x| x as f64).sum::<f64>() / n;
            let std = (v.iter().map(|&x| (x as f64 - mean).powi(2)).sum::<f64>() / n).sqrt();
            assert!(
                (std / want - 1.0).abs() < 0.1,
                "{name}: std {std} vs {want}"
            );
        } else if name == "fc.weight" {
            let bound = 1.0 / (512f32).sqrt();
            assert!(v.iter().all(|x| x.abs() <= bound), "{name}");
        }
        assert_eq!(
            kind == TensorKind::Buffer,
            name.contains("running"),
            "{name}"
        );
    }
    assert_eq!(seen_bn3, 4);
    let cfg = ResNetConfig::for_arch("seresnet_digits").unwrap();
    assert_eq!(cfg.stem, Stem::Small);
}

#[test]
fn forward_stages_reports_timm_prefixes() {
    let m = create("resnet_digits", &Overrides::default(), 0).unwrap();
    let mut names = Vec::new();
    let x = Tensor::randn(&[2, 1, 8, 8], 0);
    let y = m
        .forward_stages(&x, &mut |n, t| {
            names.push((n.to_string(), t.shape().to_vec()))
        })
        .unwrap();
    assert_eq!(y.to_vec(), m.forward(&x).unwrap().to_vec());
    let want: Vec<(String, Vec<usize>)> = [
        ("conv1", vec![2, 64, 8, 8]),
        ("layer1.0", vec![2, 64, 8, 8]),
        ("layer2.0", vec![2, 128, 4, 4]),
        ("layer3.0", vec![2, 256, 2, 2]),
        ("layer4.0", vec![2, 512, 1, 1]),
        ("global_pool", vec![2, 512]),
        ("fc", vec![2, 10]),
    ]
    .into_iter()
    .map(|(n, s)| (n.to_string(), s))
    .collect();
    assert_eq!(names, want);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(12))]

    /// Any height and width runs (as in timm), gives finite logits and a batch of two images
    /// gives each image's own logits.
    #[test]
    fn any_image_size_runs(h in 1usize..48, w in 1usize..48, seed in 0u64..1000) {
        let d = create("seresnet_digits", &Overrides::default(), seed).unwrap();
        let x = Tensor::randn(&[2, 1, h, w], seed);
        let _g = no_grad();
        let y = d.forward(&x).unwrap();
        prop_assert_eq!(y.shape(), &[2, 10]);
        let v = y.to_vec();
        prop_assert!(v.iter().all(|x| x.is_finite()));
        let x0 = x.narrow(0, 0, 1).unwrap();
        let y0 = d.forward(&x0).unwrap().to_vec();
        prop_assert!(rel_err(&y0, &v[..10]) <= 1e-5);
    }
}

/// Full-size random-weight timm state dicts (see the file header; not committed).
#[test]
#[ignore]
fn full_size_checkpoints_match_timm() {
    let dir = PathBuf::from(
        std::env::var("TESSERA_RESNET_FULL").expect("set TESSERA_RESNET_FULL to the --full dir"),
    );
    for arch in ["resnet50", "resnet101", "seresnet50", "seresnet101"] {
        let mut m = create(arch, &Overrides::default(), 0).unwrap();
        check_parity(m.as_mut(), &dir, arch);
        println!("{arch}: matches timm");
    }
}
