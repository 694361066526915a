//! Fuzz target: a training checkpoint of a tiny `vit_digits` (see [`tiny`]) from arbitrary bytes: read, split and
//! validated as a whole against the model and an AdamW optimizer, then (when valid) applied.
#![no_main]
use libfuzzer_sys::fuzz_target;
use std::sync::Mutex;
use tessera_models::checkpoint::Checkpoint;
use tessera_models::io::safetensors;
use tessera_models::optim::AdamW;
use tessera_models::{create, Model, Overrides};

/// `vit_digits` shrunk so a valid checkpoint (the seed) is a few KiB.
fn tiny() -> Overrides {
    Overrides {
        embed_dim: Some(4),
        depth: Some(1),
        num_heads: Some(1),
        num_classes: Some(10),
        mlp_ratio: Some(1.0),
        ..Overrides::default()
    }
}

static MODEL: Mutex<Option<Box<dyn Model>>> = Mutex::new(None);

fuzz_target!(|data: &[u8]| {
    let Ok(file) = safetensors::read_from(std::io::Cursor::new(data), "fuzz.safetensors") else {
        return;
    };
    let Ok(ckpt) = Checkpoint::from_safetensors(file, "fuzz") else {
        return;
    };
    let mut guard = MODEL.lock().unwrap_or_else(|e| e.into_inner());
    let model = guard
        .get_or_insert_with(|| create("vit_digits", &tiny(), 0).unwrap());
    let mut opt = AdamW::new(0.9, 0.999, 1e-8, 0.0).unwrap();
    let _ = ckpt.apply(model.as_mut(), &mut opt, "adamw", 0);
});
