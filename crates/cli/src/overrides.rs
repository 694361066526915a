//! The architecture overrides shared by `tessera info`, `run` and `bench`: timm's
//! `create_model` keyword arguments (`img_size`, `in_chans`, `num_classes`, ViT's `patch_size`,
//! `embed_dim`, `depth`, `num_heads`, `mlp_ratio`) plus the activation swap of the hard-swish
//! study, as one `clap::Args` struct flattened into each sub-command.
//!
//! Which combinations are valid is decided by the architecture itself
//! (`tessera_models::zoo::create` returns a `ModelError::Config` naming the problem).

use clap::Args;
use tessera::models::zoo::{self, Model, Overrides};

/// timm construction overrides (`None` keeps the architecture's default).
#[derive(Args, Debug, Clone, Default)]
pub struct OverrideArgs {
    /// Input resolution (square), as timm's `img_size`.
    #[arg(long, value_name = "PIXELS")]
    pub img_size: Option<usize>,
    /// Input channels, as timm's `in_chans`.
    #[arg(long, value_name = "C")]
    pub in_chans: Option<usize>,
    /// Output classes, as timm's `num_classes`.
    #[arg(long, value_name = "N")]
    pub num_classes: Option<usize>,
    /// ViT: patch size.
    #[arg(long, value_name = "PIXELS")]
    pub patch_size: Option<usize>,
    /// ViT: embedding width.
    #[arg(long, value_name = "D")]
    pub embed_dim: Option<usize>,
    /// ViT: number of transformer blocks.
    #[arg(long, value_name = "N")]
    pub depth: Option<usize>,
    /// ViT: attention heads per block.
    #[arg(long, value_name = "N")]
    pub num_heads: Option<usize>,
    /// ViT: MLP hidden width as a multiple of the embedding width.
    #[arg(long, value_name = "RATIO")]
    pub mlp_ratio: Option<f32>,
    /// Replace the architecture's main activation (relu, relu6, hardswish, swish, gelu, ...).
    #[arg(long, value_name = "NAME")]
    pub act: Option<String>,
}

impl OverrideArgs {
    /// The models crate's [`Overrides`].
    pub fn to_overrides(&self) -> Overrides {
        Overrides {
            img_size: self.img_size,
            in_chans: self.in_chans,
            num_classes: self.num_classes,
            patch_size: self.patch_size,
            embed_dim: self.embed_dim,
            depth: self.depth,
            num_heads: self.num_heads,
            mlp_ratio: self.mlp_ratio,
            act: self.act.clone(),
        }
    }

    /// Whether any override is set.
    pub fn any(&self) -> bool {
        self.to_overrides() != Overrides::default()
    }
}

/// Builds `arch` with the overrides (random weights from `seed`), with errors that name the
/// command and, for unknown names, suggest the nearest known one.
pub fn build(cmd: &str, arch: &str, o: &OverrideArgs, seed: u64) -> Result<Box<dyn Model>, String> {
    check_name(cmd, arch)?;
    zoo::create(arch, &o.to_overrides(), seed).map_err(|e| {
        let msg = e.to_string();
        // Configuration errors name the architecture already: say it once.
        if msg.contains(&format!("{arch}: ")) {
            format!("{cmd}: {msg}")
        } else {
            format!("{cmd} {arch}: {msg}")
        }
    })
}

/// Errors for a name the zoo does not know, suggesting the nearest known one.
pub fn check_name(cmd: &str, arch: &str) -> Result<(), String> {
    if zoo::names().contains(&arch) {
        Ok(())
    } else {
        Err(format!("{cmd}: {}", zoo::unknown_message(arch)))
    }
}

/// The known architecture names, comma-separated (or a note when none is built in).
pub fn known_names() -> String {
    let names = zoo::names();
    if names.is_empty() {
        "(none in this build)".to_string()
    } else {
        names.join(", ")
    }
}
