//! End-to-end tests of `tessera info`, `tessera run` and `tessera bench ARCH|models`: the
//! documented JSON keys and parameter counts, inference on `.npy` and PNG / JPEG inputs,
//! `--output` round trips against the library's own forward pass with saved weights, and the
//! error messages for bad input. Small overrides (`--img-size 32`) keep them fast.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::{Command, Output};
use tessera::core::{no_grad, Tensor};
use tessera::models::io::{npy, Values};
use tessera::models::{weights, zoo, Overrides};

fn tessera(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_tessera"))
        .env_remove("TESSERA_ISA")
        .args(args)
        .output()
        .unwrap()
}

/// Runs and expects success; returns stdout.
fn ok(args: &[&str]) -> String {
    let out = tessera(args);
    assert!(
        out.status.success(),
        "tessera {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Runs and expects failure; returns stderr.
fn fails(args: &[&str]) -> String {
    let out = tessera(args);
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(!out.status.success(), "tessera {args:?} succeeded: {err}");
    assert!(err.starts_with("tessera: error: "), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    err
}

fn tmp(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("tessera-cli-models-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(name)
}

fn s(p: &std::path::Path) -> &str {
    p.to_str().unwrap()
}

fn read_f32(p: &std::path::Path) -> (Vec<usize>, Vec<f32>) {
    let a = npy::read(p).unwrap();
    match a.values {
        Values::F32(v) => (a.shape, v),
        Values::I64(_) => panic!("{} is not float", p.display()),
    }
}

/// timm's `sum(p.numel() for p in create_model(name).parameters())` (timm 1.0.31), as in
/// docs/models.md.
const DOCUMENTED_PARAMS: &[(&str, u64)] = &[
    ("vit_base_patch16_224", 86_567_656),
    ("vit_tiny_patch16_224", 5_717_416),
    ("mobilenetv2_100", 3_504_872),
    ("mobilenetv3_large_100", 5_483_032),
    ("mobilenetv3_small_100", 2_542_856),
    ("seresnet101", 49_326_872),
    ("resnet50", 25_557_032),
];

#[test]
fn info_json_reports_documented_parameter_counts() {
    for &(arch, params) in DOCUMENTED_PARAMS {
        let text = ok(&["info", arch, "--json"]);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 1, "{text}");
        let v: serde_json::Value = serde_json::from_str(lines[0]).unwrap();
        assert_eq!(v["arch"], arch);
        assert_eq!(v["params"].as_u64(), Some(params), "{arch}");
        let layers = v["layers"].as_array().unwrap();
        let p: u64 = layers.iter().map(|l| l["params"].as_u64().unwrap()).sum();
        let m: u64 = layers.iter().map(|l| l["macs"].as_u64().unwrap()).sum();
        assert_eq!(p, params, "{arch}: layer parameters do not add up");
        assert_eq!(
            Some(m),
            v["macs"].as_u64(),
            "{arch}: layer MACs do not add up"
        );
        assert!(m > 0, "{arch}");
        assert_eq!(v["output"], serde_json::json!([1, 1000]), "{arch}");
    }
}

#[test]
fn info_table_and_overrides() {
    let text = ok(&[
        "info",
        "vit_tiny_patch16_224",
        "--img-size",
        "32",
        "--num-classes",
        "7",
        "--depth",
        "2",
    ]);
    assert!(text.contains("input [1, 3, 32, 32], 7 classes"), "{text}");
    assert!(text.contains("blocks.1"), "{text}");
    assert!(!text.contains("blocks.2"), "{text}");
    let total = text.lines().find(|l| l.starts_with("total")).unwrap();
    assert!(total.contains("[1, 7]"), "{text}");
    // The same through the library.
    let o = Overrides {
        img_size: Some(32),
        num_classes: Some(7),
        depth: Some(2),
        ..Default::default()
    };
    let m = zoo::create("vit_tiny_patch16_224", &o, 0).unwrap();
    let n = tessera::models::module::parameter_count(m.as_ref());
    let digits: String = n
        .to_string()
        .as_bytes()
        .rchunks(3)
        .rev()
        .map(|c| std::str::from_utf8(c).unwrap())
        .collect::<Vec<_>>()
        .join(",");
    assert!(total.contains(&digits), "{total} vs {digits}");
}

#[test]
fn act_override_takes_the_kernels_names_and_lists_them_when_unknown() {
    // Any spelling of the one activation parser: the paper's `h-swish`, `gelu_erf`, a slope.
    for act in ["h-swish", "gelu_erf", "leaky_relu:0.2"] {
        ok(&["info", "mobilenetv3_small_050", "--act", act]);
    }
    let err = fails(&["info", "mobilenetv3_small_050", "--act", "mish"]);
    for part in [
        "\"mish\"",
        "hardswish",
        "swish",
        "gelu_tanh",
        "h_swish",
        "gelu_erf",
    ] {
        assert!(err.contains(part), "{err} lacks {part}");
    }
    // The architecture is named once.
    assert_eq!(err.matches("mobilenetv3_small_050").count(), 1, "{err}");
}

/// A small ViT with saved random weights: the CLI's logits must equal the library's compiled
/// plan (which `run` uses) bit for bit, and its eager forward within the plan's documented
/// 1e-5 relative bound.
#[test]
fn run_npy_with_weights_round_trips_through_output() {
    let o = Overrides {
        img_size: Some(32),
        num_classes: Some(10),
        ..Default::default()
    };
    let model = zoo::create("vit_tiny_patch16_224", &o, 42).unwrap();
    let w = tmp("vit.safetensors");
    weights::save(model.as_ref(), &w, &BTreeMap::new()).unwrap();
    let x = Tensor::randn(&[2, 3, 32, 32], 5);
    let xin = tmp("x.npy");
    npy::write_f32(&xin, &[2, 3, 32, 32], &x.to_vec()).unwrap();
    let eager = {
        let _g = no_grad();
        model.forward(&x).unwrap().to_vec()
    };
    let want = model
        .plan([2, 3, 32, 32])
        .unwrap()
        .run(&x.to_vec())
        .unwrap()
        .to_vec();
    let scale = eager.iter().fold(0f32, |m, v| m.max(v.abs()));
    for (p, e) in want.iter().zip(&eager) {
        assert!((p - e).abs() <= 1e-5 * scale, "plan {p} vs eager {e}");
    }
    let y = tmp("y.npy");
    let common = [
        "run",
        "vit_tiny_patch16_224",
        "--img-size",
        "32",
        "--num-classes",
        "10",
        "--weights",
        s(&w),
        "--input",
        s(&xin),
        "--threads",
        "1",
    ];
    let mut args = common.to_vec();
    args.extend(["--output", s(&y)]);
    assert_eq!(ok(&args), "");
    let (shape, got) = read_f32(&y);
    assert_eq!(shape, [2, 10]);
    assert_eq!(got, want, "the CLI's logits differ from the library's");

    // Top-k as JSON: the most probable class is the arg-max of the logits.
    let mut args = common.to_vec();
    args.extend(["--topk", "3", "--json"]);
    let text = ok(&args);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 2, "{text}");
    for (i, line) in lines.iter().enumerate() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        assert_eq!(v["index"], i);
        let top = v["topk"].as_array().unwrap();
        assert_eq!(top.len(), 3);
        let row = &want[i * 10..(i + 1) * 10];
        let argmax = (0..10).max_by(|&a, &b| row[a].total_cmp(&row[b])).unwrap();
        assert_eq!(top[0]["class"], argmax);
        let p: Vec<f64> = top.iter().map(|t| t["prob"].as_f64().unwrap()).collect();
        assert!(p[0] >= p[1] && p[1] >= p[2] && p.iter().sum::<f64>() <= 1.0 + 1e-9);
    }

    // Weights of a 10-class model do not load into the default 1000-class one.
    let err = fails(&[
        "run",
        "vit_tiny_patch16_224",
        "--img-size",
        "32",
        "--weights",
        s(&w),
        "--input",
        s(&xin),
    ]);
    assert!(
        err.contains("vit.safetensors") && err.contains("head.weight"),
        "{err}"
    );
}

#[test]
fn run_on_png_and_jpeg_images() {
    let img = image::RgbImage::from_fn(50, 40, |x, y| {
        image::Rgb([(x * 5) as u8, (y * 6) as u8, ((x + y) * 2) as u8])
    });
    let png = tmp("img.png");
    img.save(&png).unwrap();
    let jpg = tmp("img.jpg");
    img.save(&jpg).unwrap();
    for (path, arch) in [
        (&png, "mobilenetv3_small_100"),
        (&jpg, "vit_tiny_patch16_224"),
    ] {
        let text = ok(&[
            "run",
            arch,
            "--img-size",
            "32",
            "--random-weights",
            "--input",
            s(path),
            "--topk",
            "4",
            "--threads",
            "1",
        ]);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 5, "{text}");
        assert_eq!(lines[0], format!("{}:", path.display()), "{text}");
        // 1000 classes: ImageNet-1k names.
        let class: usize = lines[1].split_whitespace().nth(2).unwrap().parse().unwrap();
        assert!(lines[1].trim_start().starts_with("1. "), "{text}");
        assert!(
            lines[1].ends_with(tessera::models::labels::imagenet1k()[class]),
            "{text}"
        );
        let y = tmp(&format!("{arch}.npy"));
        ok(&[
            "run",
            arch,
            "--img-size",
            "32",
            "--random-weights",
            "--input",
            s(path),
            "--output",
            s(&y),
        ]);
        assert_eq!(read_f32(&y).0, [1, 1000]);
    }
    // A grey-scale model takes the image's luma.
    let y = tmp("grey.npy");
    ok(&[
        "run",
        "mobilenetv2_100",
        "--img-size",
        "32",
        "--in-chans",
        "1",
        "--num-classes",
        "3",
        "--random-weights",
        "--input",
        s(&png),
        "--output",
        s(&y),
    ]);
    let (shape, v) = read_f32(&y);
    assert_eq!(shape, [1, 3]);
    assert!(v.iter().all(|x| x.is_finite()));
}

#[test]
fn bad_inputs_are_clear_errors() {
    let run = |input: &str, extra: &[&str]| {
        let mut a = vec![
            "run",
            "mobilenetv2_100",
            "--img-size",
            "32",
            "--random-weights",
            "--input",
            input,
        ];
        a.extend_from_slice(extra);
        fails(&a)
    };
    // Missing file.
    let missing = tmp("nope.npy");
    let err = run(s(&missing), &[]);
    assert!(
        err.contains("nope.npy") && err.contains("no such file"),
        "{err}"
    );
    // Wrong channels: [1, 3, 32, 32] for a 1-channel model.
    let x3 = tmp("x3.npy");
    npy::write_f32(&x3, &[1, 3, 32, 32], &vec![0.0; 3 * 32 * 32]).unwrap();
    let err = run(s(&x3), &["--in-chans", "1"]);
    assert!(
        err.contains("x3.npy") && err.contains("[1, 3, 32, 32]") && err.contains("[N, 1, H, W]"),
        "{err}"
    );
    // Wrong rank.
    let x2 = tmp("x2.npy");
    npy::write_f32(&x2, &[3, 32], &vec![0.0; 96]).unwrap();
    let err = run(s(&x2), &[]);
    assert!(err.contains("x2.npy") && err.contains("[3, 32]"), "{err}");
    // A ViT needs its configured size: the error names the input and the expected shape.
    let err = fails(&[
        "run",
        "vit_tiny_patch16_224",
        "--img-size",
        "32",
        "--random-weights",
        "--input",
        s(&tmp_npy("x48.npy", &[1, 3, 48, 48])),
    ]);
    assert!(
        err.contains("x48.npy") && err.contains("[1, 3, 48, 48]") && err.contains("[N, 3, 32, 32]"),
        "{err}"
    );
    // Corrupt .npy.
    let bad = tmp("bad.npy");
    std::fs::write(&bad, b"\x93NUMPY\x01\x00\xff\xff{'descr'").unwrap();
    let err = run(s(&bad), &[]);
    assert!(err.contains("bad.npy"), "{err}");
    // Not an image either.
    let txt = tmp("notes.txt");
    std::fs::write(&txt, b"hello").unwrap();
    let err = run(s(&txt), &[]);
    assert!(
        err.contains("notes.txt") && err.contains("PNG, JPEG or WebP"),
        "{err}"
    );
    // Unknown architecture: the nearest known one is suggested.
    let err = fails(&["info", "mobilenetv3_larg_100", "--json"]);
    assert!(
        err.contains("mobilenetv3_larg_100")
            && err.contains("did you mean \"mobilenetv3_large_100\""),
        "{err}"
    );
    let err = fails(&["run", "vit_tiny_patch16", "--input", "digits:0"]);
    assert!(
        err.contains("did you mean \"vit_tiny_patch16_224\""),
        "{err}"
    );
    // Invalid override: 30 is not divisible by the patch size 16.
    let err = fails(&["info", "vit_tiny_patch16_224", "--img-size", "30"]);
    assert!(
        err.contains("invalid configuration") && err.contains("30"),
        "{err}"
    );
    // Bad flag values.
    let err = fails(&["run", "mobilenetv2_100", "--input", s(&x3), "--topk", "0"]);
    assert!(err.contains("--topk"), "{err}");
}

fn tmp_npy(name: &str, shape: &[usize]) -> PathBuf {
    let p = tmp(name);
    npy::write_f32(&p, shape, &vec![0.0; shape.iter().product()]).unwrap();
    p
}

#[test]
fn bench_arch_json_has_the_documented_keys() {
    let text = ok(&[
        "bench",
        "mobilenetv3_small_100",
        "--img-size",
        "32",
        "--batch",
        "2",
        "--iters",
        "2",
        "--threads",
        "1",
        "--json",
    ]);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 1, "{text}");
    let v: serde_json::Value = serde_json::from_str(lines[0]).unwrap();
    assert_eq!(v["arch"], "mobilenetv3_small_100");
    assert_eq!(v["batch"], 2);
    assert_eq!(v["threads"], 1);
    assert_eq!(v["iters"], 2);
    assert_eq!(v["input"], serde_json::json!([3, 32, 32]));
    let (med, p90) = (
        v["median_ms"].as_f64().unwrap(),
        v["p90_ms"].as_f64().unwrap(),
    );
    assert!(med > 0.0 && p90 >= med, "{text}");
}

#[test]
fn bench_targets_are_validated() {
    let err = fails(&["bench", "resnet9000"]);
    assert!(
        err.contains("resnet9000")
            && err.contains("gemm")
            && err.contains("dwconv")
            && err.contains("seresnet101"),
        "{err}"
    );
    let err = fails(&["bench", "gemm", "--img-size", "32"]);
    assert!(err.contains("models only"), "{err}");
    let err = fails(&["bench", "models", "--img-size", "32"]);
    assert!(err.contains("bench models"), "{err}");
    let err = fails(&["bench", "mobilenetv2_100", "--m", "4"]);
    assert!(err.contains("--m"), "{err}");
}
