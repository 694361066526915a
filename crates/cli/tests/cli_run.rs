//! End-to-end tests of `tessera run` as a user meets it: weights required (with directions to
//! timm's hub files), a file in the hub's layout classified with ImageNet-1k names and timm's
//! answer, several inputs (files, a directory, a list on stdin, WebP, `digits:I`) with one
//! block each, `--labels`, images that would cost gigabytes (refused or cheap), non-finite
//! logits, and `tessera list`.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use tessera::models::io::safetensors;
use tessera::models::labels::imagenet1k;

fn tessera_with_stdin(args: &[&str], stdin: &str) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_tessera"))
        .env_remove("TESSERA_ISA")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

fn ok(args: &[&str]) -> String {
    let out = tessera_with_stdin(args, "");
    assert!(
        out.status.success(),
        "tessera {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn fails(args: &[&str]) -> String {
    let out = tessera_with_stdin(args, "");
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(!out.status.success(), "tessera {args:?} succeeded: {err}");
    assert!(err.starts_with("tessera: error: "), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    err
}

fn tmp(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("tessera-cli-run-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(name)
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/fixtures/pretrained")
        .join(name)
}

/// The hub-layout fixture's architecture flags (see `scripts/pretrained_data.py`).
const SMALL_VIT: [&str; 11] = [
    "vit_tiny_patch16_224",
    "--img-size",
    "32",
    "--patch-size",
    "8",
    "--embed-dim",
    "48",
    "--depth",
    "2",
    "--num-heads",
    "3",
];

#[test]
fn run_without_weights_says_how_to_get_them() {
    let err = fails(&["run", "mobilenetv3_large_100", "--input", "digits:0"]);
    assert!(
        err.contains(
            "huggingface-cli download timm/mobilenetv3_large_100.ra_in1k model.safetensors"
        ),
        "{err}"
    );
    assert!(err.contains("--random-weights"), "{err}");
    let err = fails(&["run", "vit_digits", "--input", "digits:0"]);
    assert!(err.contains("tessera train vit_digits --save"), "{err}");
}

#[test]
fn a_hub_file_classifies_with_class_names_as_timm() {
    let f = safetensors::read(fixture("vit_hub_layout_io.safetensors")).unwrap();
    let want = f.tensors["logits"].as_f32().unwrap().to_vec();
    let timm_best = (0..1000)
        .max_by(|&a, &b| want[a].total_cmp(&want[b]))
        .unwrap();
    let weights = fixture("vit_hub_layout.safetensors");
    let photo = fixture("photo.png");
    let mut args = vec!["run"];
    args.extend(SMALL_VIT);
    args.extend([
        "--weights",
        s(&weights),
        "--input",
        s(&photo),
        "--json",
        "--topk",
        "3",
    ]);
    let text = ok(&args);
    let v: serde_json::Value = serde_json::from_str(text.trim()).unwrap();
    assert_eq!(v["input"], s(&photo));
    assert_eq!(v["topk"][0]["class"], timm_best);
    assert_eq!(v["topk"][0]["label"], imagenet1k()[timm_best]);
}

#[test]
fn several_inputs_give_one_block_each() {
    let dir = tmp("imgs");
    std::fs::create_dir_all(&dir).unwrap();
    let img = image::RgbImage::from_fn(37, 29, |x, y| {
        image::Rgb([(x * 6) as u8, (y * 8) as u8, 90])
    });
    img.save(dir.join("a.png")).unwrap();
    img.save(dir.join("b.jpg")).unwrap();
    image::DynamicImage::ImageRgb8(img.clone())
        .save_with_format(dir.join("c.webp"), image::ImageFormat::WebP)
        .unwrap();
    let listed = tmp("listed.png");
    img.save(&listed).unwrap();
    let out = tessera_with_stdin(
        &[
            "run",
            "mobilenetv3_small_100",
            "--img-size",
            "32",
            "--random-weights",
            "--batch",
            "2",
            "--topk",
            "2",
            "--input",
            s(&dir),
            "-",
            "--threads",
            "1",
        ],
        &format!("{}\n", listed.display()),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let heads: Vec<&str> = text.lines().filter(|l| !l.starts_with(' ')).collect();
    let want: Vec<String> = ["a.png", "b.jpg", "c.webp"]
        .iter()
        .map(|f| format!("{}:", dir.join(f).display()))
        .chain([format!("{}:", listed.display())])
        .collect();
    assert_eq!(heads, want, "{text}");
    assert_eq!(text.lines().count(), 4 * 3, "{text}");
    // The same image gives the same answer whichever batch it was in.
    let blocks: Vec<Vec<&str>> = text
        .lines()
        .collect::<Vec<_>>()
        .chunks(3)
        .map(|c| c[1..].to_vec())
        .collect();
    assert_eq!(blocks[0], blocks[3], "{text}");
    // Batched logits equal one-at-a-time logits.
    let y_all = tmp("all.npy");
    let y_one = tmp("one.npy");
    let common = [
        "run",
        "mobilenetv3_small_100",
        "--img-size",
        "32",
        "--random-weights",
    ];
    let mut a = common.to_vec();
    a.extend(["--input", s(&dir), "--output", s(&y_all), "--batch", "3"]);
    ok(&a);
    let mut b = common.to_vec();
    let c_webp = dir.join("c.webp");
    b.extend(["--input", s(&c_webp), "--output", s(&y_one)]);
    ok(&b);
    let all = tessera::models::io::npy::read(&y_all).unwrap();
    let one = tessera::models::io::npy::read(&y_one).unwrap();
    assert_eq!(all.shape, [3, 1000]);
    let (tessera::models::io::Values::F32(all), tessera::models::io::Values::F32(one)) =
        (all.values, one.values)
    else {
        panic!("not float")
    };
    let diff = all[2000..]
        .iter()
        .zip(&one)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0f32, f32::max);
    assert!(diff <= 1e-5, "{diff}");
}

#[test]
fn digits_inputs_and_labels_files() {
    let labels = tmp("digits.txt");
    std::fs::write(
        &labels,
        (0..10).map(|i| format!("digit {i}\n")).collect::<String>(),
    )
    .unwrap();
    let text = ok(&[
        "run",
        "vit_digits",
        "--random-weights",
        "--input",
        "digits:0",
        "digits:5",
        "--labels",
        s(&labels),
        "--topk",
        "1",
    ]);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 4, "{text}");
    assert_eq!((lines[0], lines[2]), ("digits:0:", "digits:5:"), "{text}");
    assert!(lines[1].contains(" digit "), "{text}");
    let short = tmp("three.txt");
    std::fs::write(&short, "a\nb\nc\n").unwrap();
    let err = fails(&[
        "run",
        "vit_digits",
        "--random-weights",
        "--input",
        "digits:0",
        "--labels",
        s(&short),
    ]);
    assert!(
        err.contains("three.txt") && err.contains("3 names") && err.contains("10 classes"),
        "{err}"
    );
    let err = fails(&[
        "run",
        "vit_digits",
        "--random-weights",
        "--input",
        "digits:99999",
    ]);
    assert!(err.contains("digits:99999"), "{err}");
}

/// A PNG made of a signature, an IHDR chunk claiming `w x h` 8-bit grey, one IDAT chunk and
/// IEND (each chunk with its CRC), so huge dimensions cost no disk space.
fn png_header_only(w: u32, h: u32, idat: &[u8]) -> Vec<u8> {
    fn crc32(bytes: &[u8]) -> u32 {
        let mut c = 0xffff_ffffu32;
        for &b in bytes {
            c ^= b as u32;
            for _ in 0..8 {
                c = if c & 1 != 0 {
                    0xedb8_8320 ^ (c >> 1)
                } else {
                    c >> 1
                };
            }
        }
        !c
    }
    let mut out = b"\x89PNG\r\n\x1a\n".to_vec();
    let mut chunk = |kind: &[u8], data: &[u8]| {
        out.extend((data.len() as u32).to_be_bytes());
        let mut body = kind.to_vec();
        body.extend_from_slice(data);
        out.extend(&body);
        out.extend(crc32(&body).to_be_bytes());
    };
    let mut ihdr = Vec::new();
    ihdr.extend(w.to_be_bytes());
    ihdr.extend(h.to_be_bytes());
    ihdr.extend([8, 0, 0, 0, 0]);
    chunk(b"IHDR", &ihdr);
    chunk(b"IDAT", idat);
    chunk(b"IEND", &[]);
    out
}

#[test]
fn huge_images_are_refused_or_cheap() {
    // 20000 x 20000 would decode to 400 MB: refused from the header.
    let big = tmp("big.png");
    std::fs::write(&big, png_header_only(20_000, 20_000, &[])).unwrap();
    let err = fails(&[
        "run",
        "mobilenetv2_100",
        "--random-weights",
        "--input",
        s(&big),
    ]);
    assert!(
        err.contains("big.png") && err.contains("20000x20000"),
        "{err}"
    );
    // 1 x 20000: resizing the short side to 256 would make 256 x 5.1 M pixels; only the crop
    // is computed.
    let tall = tmp("tall.png");
    image::GrayImage::from_fn(1, 20_000, |_, y| image::Luma([(y % 251) as u8]))
        .save(&tall)
        .unwrap();
    let out = tessera_with_stdin(
        &[
            "run",
            "mobilenetv2_100",
            "--random-weights",
            "--input",
            s(&tall),
            "--report-memory",
        ],
        "",
    );
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(out.status.success(), "{err}");
    let mib: f64 = err
        .split("VmHWM): ")
        .nth(1)
        .and_then(|r| r.split(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("{err}"));
    assert!(mib < 500.0, "peak {mib} MiB: {err}");
}

#[test]
fn non_finite_logits_are_an_error() {
    use tessera::models::{weights, zoo, Overrides};
    let mut m = zoo::create("vit_digits", &Overrides::default(), 0).unwrap();
    m.visit_mut("", &mut |name, t, _| {
        if name == "head.bias" {
            *t = tessera::core::Tensor::full(t.shape(), f32::NAN);
        }
    });
    let w = tmp("nan.safetensors");
    weights::save(m.as_ref(), &w, &Default::default()).unwrap();
    let err = fails(&[
        "run",
        "vit_digits",
        "--weights",
        s(&w),
        "--input",
        "digits:0",
    ]);
    assert!(
        err.contains("digits:0") && err.contains("not finite"),
        "{err}"
    );
}

#[test]
fn list_shows_every_architecture() {
    let text = ok(&["list"]);
    for name in tessera::models::zoo::names() {
        assert!(
            text.lines().any(|l| l.starts_with(name)),
            "{name} missing:\n{text}"
        );
    }
    assert!(
        text.contains("timm/mobilenetv3_large_100.ra_in1k"),
        "{text}"
    );
    let json = ok(&["list", "--json"]);
    let first: serde_json::Value = serde_json::from_str(json.lines().next().unwrap()).unwrap();
    assert!(first["params"].as_u64().unwrap() > 0 && first["macs"].as_u64().unwrap() > 0);
    for cmd in ["info", "train"] {
        assert!(
            ok(&[cmd, "--help"]).contains("tessera list"),
            "{cmd} --help"
        );
    }
}
