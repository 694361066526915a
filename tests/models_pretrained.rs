//! Pretrained weights as users get them: a file laid out as timm's `model.safetensors` on the
//! Hugging Face hub (`state_dict` keys, float32, `{"format": "pt"}` metadata) builds a model
//! with `zoo::create_pretrained_with`, and timm's evaluation preprocessing of a PNG
//! (`tessera::models::preprocess`) gives timm's pixels and logits.
//!
//! Fixtures: `scripts/pretrained_data.py` (timm 1.0.31, torch 2.15, Pillow 13) wrote
//! `tests/fixtures/pretrained/`: a ViT (vit_tiny_patch16_224 with img_size 32, patch 8, width
//! 48, depth 2, 3 heads, 1000 classes) with random weights, a 45x31 test picture, and timm's
//! preprocessed input and logits for it.

use std::path::PathBuf;
use tessera::core::{no_grad, Tensor};
use tessera::models::io::safetensors;
use tessera::models::preprocess::{EvalTransform, Interpolation};
use tessera::models::zoo::{self, Overrides};
use tessera::models::{labels, ModelError};

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/pretrained")
        .join(name)
}

fn overrides() -> Overrides {
    Overrides {
        img_size: Some(32),
        patch_size: Some(8),
        embed_dim: Some(48),
        depth: Some(2),
        num_heads: Some(3),
        ..Overrides::default()
    }
}

fn io(name: &str) -> (Vec<usize>, Vec<f32>) {
    let f = safetensors::read(fixture("vit_hub_layout_io.safetensors")).unwrap();
    let t = &f.tensors[name];
    (t.shape.clone(), t.as_f32().unwrap().to_vec())
}

fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

#[test]
fn the_fixture_has_the_hub_layout() {
    let f = safetensors::read(fixture("vit_hub_layout.safetensors")).unwrap();
    assert_eq!(f.metadata.get("format").map(String::as_str), Some("pt"));
    assert!(f.tensors.contains_key("blocks.0.attn.qkv.weight"));
    assert_eq!(f.tensors["head.weight"].shape, [1000, 48]);
}

#[test]
fn timm_preprocessing_gives_timms_pixels() {
    let model = zoo::create_pretrained_with(
        "vit_tiny_patch16_224",
        &overrides(),
        fixture("vit_hub_layout.safetensors"),
    )
    .unwrap();
    let t = EvalTransform::for_model(model.as_ref()).unwrap();
    assert_eq!((t.size, t.crop_pct, t.mean), (32, 0.9, [0.5; 3]));
    let x = t.load(fixture("photo.png")).unwrap();
    let (shape, want) = io("input");
    assert_eq!(shape, [1, 3, 32, 32]);
    // Pillow's resampling is reproduced exactly: equal pixels, equal f32 after normalising.
    assert!(max_diff(&x, &want) <= 1e-6, "{}", max_diff(&x, &want));

    let bil = EvalTransform {
        size: 16,
        channels: 3,
        crop_pct: 0.875,
        interpolation: Interpolation::Bilinear,
        mean: [0.485, 0.456, 0.406],
        std: [0.229, 0.224, 0.225],
    };
    let x = bil.load(fixture("photo.png")).unwrap();
    let (_, want) = io("bilinear");
    assert!(max_diff(&x, &want) <= 1e-6, "{}", max_diff(&x, &want));
}

#[test]
fn hub_weights_give_timms_logits_and_class_names() {
    let model = zoo::create_pretrained_with(
        "vit_tiny_patch16_224",
        &overrides(),
        fixture("vit_hub_layout.safetensors"),
    )
    .unwrap();
    let t = EvalTransform::for_model(model.as_ref()).unwrap();
    let x = t.load_batch(&[fixture("photo.png")]).unwrap();
    let _g = no_grad();
    let y = model.forward(&x).unwrap().to_vec();
    let (_, want) = io("logits");
    let scale = want.iter().fold(0.0f32, |m, v| m.max(v.abs()));
    assert!(
        max_diff(&y, &want) <= 1e-5 * scale,
        "{} of {scale}",
        max_diff(&y, &want)
    );
    let best = (0..1000).max_by(|&a, &b| y[a].total_cmp(&y[b])).unwrap();
    let timm_best = (0..1000)
        .max_by(|&a, &b| want[a].total_cmp(&want[b]))
        .unwrap();
    assert_eq!(best, timm_best);
    assert!(!labels::imagenet1k()[best].is_empty());
    // The same model from the input fixture directly.
    let (shape, xs) = io("input");
    let y2 = model
        .forward(&Tensor::from_vec(xs, &shape).unwrap())
        .unwrap()
        .to_vec();
    assert!(max_diff(&y2, &want) <= 1e-5 * scale);
}

#[test]
fn a_mismatched_file_is_summarised() {
    // The hub file at the default (224, width 192) configuration: every shape differs.
    let Err(e) = zoo::create_pretrained(
        "vit_tiny_patch16_224",
        fixture("vit_hub_layout.safetensors"),
    ) else {
        panic!("a mismatched file loaded")
    };
    let ModelError::Weights { problems, .. } = &e else {
        panic!("{e}")
    };
    let text = e.to_string();
    assert!(problems.len() > 10);
    assert!(text.lines().count() <= 13, "{text}");
    assert!(text.contains("vit_hub_layout.safetensors"), "{text}");
    assert!(text.contains("more"), "{text}");
}

#[test]
fn a_missing_file_keeps_its_io_error() {
    let Err(e) = zoo::create_pretrained("vit_digits", fixture("absent.safetensors")) else {
        panic!("a missing file loaded")
    };
    let ModelError::File(f) = &e else {
        panic!("{e}")
    };
    assert_eq!(f.kind(), Some(std::io::ErrorKind::NotFound));
    assert!(std::error::Error::source(&e).is_some());
}
