//! Extract a ViT's attention maps: the class token's attention over the patch grid for every
//! layer (mean over heads), and attention rollout (Abnar & Zuidema, 2020), printed as grids.
//!
//! ```sh
//! tessera train vit_digits --save vit_digits.safetensors
//! cargo run --release --example attention_maps -- vit_digits.safetensors 0
//! ```
//!
//! Without a weights file the ViT is randomly initialised (the maps are then near uniform).

use tessera::core::Tensor;
use tessera::models::archs::vit::create_vit;
use tessera::models::attention_maps::{
    attention_rollout, cls_to_patches, combine_heads, patch_grid, Heads, ROLLOUT_RESIDUAL,
};
use tessera::models::data::digits_split;
use tessera::models::{weights, Mode, Module, Overrides};

fn print_grid(title: &str, m: &Tensor, grid: [usize; 2]) -> Result<(), Box<dyn std::error::Error>> {
    let g = cls_to_patches(m, grid)?.to_vec();
    println!("{title}");
    for row in g.chunks(grid[1]) {
        let cells: Vec<String> = row.iter().map(|v| format!("{v:.3}")).collect();
        println!("  {}", cells.join(" "));
    }
    Ok(())
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut vit = create_vit("vit_digits", &Overrides::default(), 0)?;
    if let Some(w) = args.first() {
        weights::load(&mut vit, w)?;
    }
    vit.set_mode(Mode::Eval);
    let index: usize = args.get(1).map_or(Ok(0), |s| s.parse())?;
    let (_, test) = digits_split()?;
    let [c, h, w] = test.chw;
    let x = Tensor::from_vec(test.image(index).to_vec(), &[1, c, h, w])?;
    let (logits, maps) = vit.forward_with_attention(&x)?;
    println!(
        "digit {} (label {}), logits {:?}",
        index,
        test.labels[index],
        logits.to_vec()
    );
    let grid = patch_grid(&vit);
    for (layer, m) in maps.iter().enumerate() {
        print_grid(
            &format!("layer {layer}, mean of heads"),
            &combine_heads(m, Heads::Mean)?,
            grid,
        )?;
    }
    let rollout = attention_rollout(&maps, Heads::Mean, ROLLOUT_RESIDUAL)?;
    print_grid("rollout", &rollout, grid)
}
