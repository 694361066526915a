//! Train a small ViT on the embedded handwritten digits (offline) with its recipe, report the
//! test accuracy, and save the weights (safetensors, timm `state_dict` names).
//!
//! ```sh
//! cargo run --release --example train_digits -- vit_digits vit_digits.safetensors [EPOCHS]
//! ```
//!
//! The same run from the command line: `tessera train vit_digits --save vit_digits.safetensors`.

use std::collections::BTreeMap;
use tessera::models::data::digits_split;
use tessera::models::recipes::recipe;
use tessera::models::train::Trainer;
use tessera::models::{weights, zoo, Overrides};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let arch = args.first().map_or("vit_digits", String::as_str);
    let out = args.get(1).map_or("vit_digits.safetensors", String::as_str);
    let (train, test) = digits_split()?;
    let mut cfg = recipe(arch, "digits");
    if let Some(epochs) = args.get(2) {
        cfg.epochs = epochs.parse()?;
    }
    let mut model = zoo::create(arch, &Overrides::default(), cfg.seed)?;
    let mut trainer = Trainer::new(cfg, model.as_mut(), train.len())?;
    while !trainer.finished() {
        let s = trainer.run_epoch(model.as_mut(), &train, &test, &mut |_| {})?;
        println!(
            "epoch {:>3}: loss {:.4}, train {:.1}%, test {:.1}%",
            s.epoch,
            s.train_loss,
            100.0 * s.train_acc,
            100.0 * s.test_acc
        );
    }
    weights::save(model.as_ref(), out, &BTreeMap::new())?;
    println!("saved {out}");
    Ok(())
}
