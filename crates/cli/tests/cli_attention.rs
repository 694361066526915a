//! End-to-end tests of `tessera attention`: the SVG it writes for vit_digits (random weights and
//! saved weights, `.npy` batches and the embedded digits), checked for being self-contained and
//! well-formed enough (one root, balanced groups, the expected number of panels), the rollout
//! panel against the library's own rollout, the embedded-PNG path of larger inputs, and the
//! error messages for bad arguments.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use tessera::core::{no_grad, Tensor};
use tessera::models::archs::vit::create_vit;
use tessera::models::attention_maps::{self, Heads, ROLLOUT_RESIDUAL};
use tessera::models::data::digits_split;
use tessera::models::io::npy;
use tessera::models::{weights, Overrides};

fn tessera(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_tessera"))
        .env_remove("TESSERA_ISA")
        .args(args)
        .output()
        .unwrap()
}

fn ok(args: &[&str]) -> Output {
    let out = tessera(args);
    assert!(
        out.status.success(),
        "tessera {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn fails(args: &[&str]) -> String {
    let out = tessera(args);
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(!out.status.success(), "tessera {args:?} succeeded: {err}");
    assert!(err.starts_with("tessera: error: attention"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    err
}

fn tmp(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("tessera-cli-attention-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(name)
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// Reads the SVG at `p` and checks it is one self-contained, balanced document; returns it.
fn read_svg(p: &Path) -> String {
    let svg = std::fs::read_to_string(p).unwrap();
    assert!(svg.starts_with("<svg xmlns=\"http://www.w3.org/2000/svg\""));
    assert!(svg.trim_end().ends_with("</svg>"));
    assert_eq!(svg.matches("<svg").count(), 1);
    // Groups open and close in pairs (`<g>` or `<g attr...>` against `</g>`).
    let opens = svg.matches("<g>").count() + svg.matches("<g ").count();
    assert_eq!(opens, svg.matches("</g>").count(), "unbalanced groups");
    // Self-contained: the only references are internal (`#img`, `url(#scale)`) or data URIs.
    for (i, _) in svg.match_indices("href=\"") {
        let target = &svg[i + 6..];
        assert!(
            target.starts_with('#') || target.starts_with("data:image/png;base64,"),
            "external reference: {}",
            &target[..target.len().min(40)]
        );
    }
    for (i, _) in svg.match_indices("url(") {
        assert!(svg[i + 4..].starts_with('#'), "external url()");
    }
    svg
}

fn panels(svg: &str) -> usize {
    svg.matches("<g class=\"panel\">").count()
}

#[test]
fn random_weights_give_every_layer_and_head_with_a_warning() {
    let out = tmp("random.svg");
    let o = ok(&[
        "attention",
        "vit_digits",
        "--input",
        "digits:0",
        "--rollout",
        "--out",
        s(&out),
        "--threads",
        "1",
    ]);
    assert!(String::from_utf8_lossy(&o.stderr).contains("warning: no --weights"));
    let svg = read_svg(&out);
    // input + rollout, then 4 layers x (4 heads + mean).
    assert_eq!(panels(&svg), 2 + 4 * 5);
    assert!(svg.contains("layer 3, head 3") && svg.contains("layer 0, mean"));
    assert!(svg.contains("rollout, mean (max ") && svg.contains("random weights"));
    assert!(svg.contains("(label "));
    assert!(svg.len() < 200_000, "{} bytes", svg.len());
    // Written atomically: no temporary file of it left beside it (other tests of this file
    // write into the same directory concurrently, so only this output's name counts).
    let leftovers: Vec<_> = std::fs::read_dir(out.parent().unwrap())
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            name.starts_with("random.svg") && name.contains(".tmp")
        })
        .collect();
    assert!(leftovers.is_empty());
}

#[test]
fn saved_weights_one_layer_one_head_and_the_library_rollout() {
    let model = create_vit("vit_digits", &Overrides::default(), 7).unwrap();
    let w = tmp("vit_digits.safetensors");
    weights::save(&model, &w, &BTreeMap::new()).unwrap();
    let (_, test) = digits_split().unwrap();
    let x = Tensor::from_vec(test.images[3 * 64..4 * 64].to_vec(), &[1, 1, 8, 8]).unwrap();
    let out = tmp("one.svg");
    let o = ok(&[
        "attention",
        "vit_digits",
        "--weights",
        s(&w),
        "--input",
        "digits:3",
        "--layer",
        "2",
        "--head",
        "1",
        "--rollout",
        "--out",
        s(&out),
    ]);
    assert!(!String::from_utf8_lossy(&o.stderr).contains("warning"));
    let svg = read_svg(&out);
    assert_eq!(panels(&svg), 3);
    let _g = no_grad();
    let (_, maps) = model.forward_with_attention(&x).unwrap();
    let grid = attention_maps::patch_grid(&model);
    let max = |t: Tensor| {
        let g = attention_maps::cls_to_patches(&t, grid).unwrap().to_vec();
        g.into_iter().fold(0.0f32, f32::max)
    };
    let layer = max(attention_maps::combine_heads(&maps[2], Heads::One(1)).unwrap());
    assert!(
        svg.contains(&format!("layer 2, head 1 (max {layer:.3})")),
        "{layer:.3} not in the titles"
    );
    let r = attention_maps::attention_rollout(&maps, Heads::One(1), ROLLOUT_RESIDUAL).unwrap();
    let rollout = max(r);
    assert!(
        svg.contains(&format!("rollout, head 1 (max {rollout:.3})")),
        "{rollout:.3} not in the titles"
    );
}

#[test]
fn npy_batches_pick_one_image_and_large_inputs_embed_a_png() {
    let p = tmp("batch.npy");
    let x = Tensor::rand(&[2, 1, 8, 8], 3).to_vec();
    npy::write_f32(&p, &[2, 1, 8, 8], &x).unwrap();
    let out = tmp("mean.svg");
    ok(&[
        "attention",
        "vit_digits",
        "--input",
        s(&p),
        "--index",
        "1",
        "--head",
        "mean",
        "--out",
        s(&out),
    ]);
    let svg = read_svg(&out);
    assert_eq!(panels(&svg), 1 + 4);
    assert!(svg.contains("batch.npy [1]"));

    // 64x64 RGB input, 4x4 patches of 16: the image is one embedded PNG, defined once.
    let p = tmp("rgb.npy");
    npy::write_f32(
        &p,
        &[1, 3, 64, 64],
        &Tensor::randn(&[1, 3, 64, 64], 5).to_vec(),
    )
    .unwrap();
    let out = tmp("big.svg");
    ok(&[
        "attention",
        "vit_tiny_patch16_224",
        "--img-size",
        "64",
        "--depth",
        "2",
        "--input",
        s(&p),
        "--out",
        s(&out),
        "--rollout",
    ]);
    let svg = read_svg(&out);
    assert_eq!(panels(&svg), 2 + 2 * 4);
    assert_eq!(svg.matches("data:image/png;base64,").count(), 1);
    assert_eq!(svg.matches("<use href=\"#img\"/>").count(), 10);
}

#[test]
fn bad_arguments_are_named() {
    let out = tmp("never.svg");
    let o = s(&out);
    let e = fails(&[
        "attention",
        "vit_digits",
        "--input",
        "digits:0",
        "--layer",
        "4",
        "--out",
        o,
    ]);
    assert!(
        e.contains("--layer 4 is out of range") && e.contains("0..=3"),
        "{e}"
    );
    let e = fails(&[
        "attention",
        "vit_digits",
        "--input",
        "digits:0",
        "--head",
        "4",
        "--out",
        o,
    ]);
    assert!(
        e.contains("--head 4 is out of range") && e.contains("4 heads (0..=3)"),
        "{e}"
    );
    let e = fails(&[
        "attention",
        "vit_digits",
        "--input",
        "digits:0",
        "--head",
        "x",
        "--out",
        o,
    ]);
    assert!(e.contains("--head \"x\""), "{e}");
    let e = fails(&[
        "attention",
        "mobilenetv2_100",
        "--input",
        "digits:0",
        "--out",
        o,
    ]);
    assert!(
        e.contains("not a Vision Transformer") && e.contains("vit_digits"),
        "{e}"
    );
    let e = fails(&["attention", "vit_huge", "--input", "digits:0", "--out", o]);
    assert!(e.contains("unknown architecture"), "{e}");
    let e = fails(&[
        "attention",
        "vit_digits",
        "--input",
        "digits:9999",
        "--out",
        o,
    ]);
    assert!(e.contains("test split has"), "{e}");
    let e = fails(&[
        "attention",
        "vit_digits",
        "--input",
        "digits:0",
        "--out",
        "a.png",
    ]);
    assert!(e.contains(".svg"), "{e}");
    let p = tmp("wide.npy");
    npy::write_f32(&p, &[1, 1, 16, 16], &[0.5; 256]).unwrap();
    let e = fails(&["attention", "vit_digits", "--input", s(&p), "--out", o]);
    assert!(
        e.contains("[1, 1, 16, 16]") && e.contains("[N, 1, 8, 8]"),
        "{e}"
    );
    let p = tmp("two.npy");
    npy::write_f32(&p, &[2, 1, 8, 8], &[0.5; 128]).unwrap();
    let e = fails(&[
        "attention",
        "vit_digits",
        "--input",
        s(&p),
        "--index",
        "2",
        "--out",
        o,
    ]);
    assert!(e.contains("--index 2") && e.contains("(0..=1)"), "{e}");
    let e = fails(&[
        "attention",
        "vit_digits",
        "--input",
        "digits:0",
        "--weights",
        "/nonexistent.safetensors",
        "--out",
        o,
    ]);
    assert!(e.contains("nonexistent.safetensors"), "{e}");
    assert!(!out.exists());
}
