//! `tessera attention ARCH [overrides] --weights W --input X [--index I] [--layer L|all]
//! [--head H|mean|all] [--rollout] --out FILE.svg`: where a Vision Transformer looks.
//!
//! One forward in eval mode (no graph) with the attention probabilities kept
//! ([`VisionTransformer::forward_with_attention`]); for each selected layer and head, the class
//! token's attention to the patch tokens ([`attention_maps::cls_to_patches`]) is drawn as a heat
//! map over the input, and `--rollout` adds attention rollout (Abnar & Zuidema, 2020;
//! [`attention_maps::attention_rollout`] with the paper's `0.5 A + 0.5 I`). The figure is one
//! self-contained SVG ([`svg`]), written atomically (temporary file in the same directory, then
//! rename).
//!
//! Layout: the first row shows the input and, with `--rollout`, the rollout panel; then one row
//! per selected layer, with one column per selected head (`--head all`: every head and the
//! mean; `mean`; or one head `H`); with a single panel per layer, the layers run along rows of
//! up to six instead. Rollout combines the heads as `--head` says (the mean for
//! `all` and `mean`, head `H` in every layer for a number). Colours share one scale across
//! panels unless `--per-panel-scale` is given; each title carries its panel's maximum.
//!
//! Weights: `--weights` is optional so the tool can be tried on a fresh checkout; without it the
//! maps are those of timm's random initialisation, which a warning on stderr says.
//!
//! [`VisionTransformer::forward_with_attention`]: tessera::models::archs::vit::VisionTransformer::forward_with_attention

pub mod svg;

use crate::overrides::OverrideArgs;
use clap::Args;
use std::path::{Path, PathBuf};
use svg::{Figure, Grey, Panel};
use tessera::core::{no_grad, Tensor};
use tessera::models::archs::vit::{self, VisionTransformer};
use tessera::models::attention_maps::{self, Heads, ROLLOUT_RESIDUAL};
use tessera::models::zoo;

/// Options of `tessera attention`.
#[derive(Args)]
pub struct AttentionArgs {
    /// A Vision Transformer: vit_digits, vit_cifar, vit_{tiny,small,base}_patch16_224.
    pub arch: String,
    #[command(flatten)]
    pub overrides: OverrideArgs,
    /// Weights (timm state dict or a `tessera train --save` checkpoint); random weights from
    /// --seed if omitted (with a warning).
    #[arg(long, value_name = "FILE")]
    pub weights: Option<PathBuf>,
    /// Input: a `.npy` float array [N, C, H, W], a PNG / JPEG image, or `digits:I` (image I of
    /// the embedded digits test split, pixels in [0, 1] as `tessera train` feeds them).
    #[arg(long, value_name = "FILE")]
    pub input: PathBuf,
    /// Which image of a `.npy` batch to show.
    #[arg(long, default_value_t = 0)]
    pub index: usize,
    /// Layer to show (0-based) or `all`.
    #[arg(long, default_value = "all")]
    pub layer: String,
    /// Head to show (0-based), `mean` (the mean over heads) or `all` (every head and the mean).
    #[arg(long, default_value = "all")]
    pub head: String,
    /// Add attention rollout (Abnar & Zuidema, 2020) over all layers.
    #[arg(long)]
    pub rollout: bool,
    /// The SVG file to write.
    #[arg(long, value_name = "FILE.svg")]
    pub out: PathBuf,
    /// Scale each panel's colours to its own maximum instead of one scale shared by all panels
    /// (the default, which lets layers and heads be compared).
    #[arg(long)]
    pub per_panel_scale: bool,
    /// Seed of the random weights used when --weights is not given.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Worker threads (0 = one per core).
    #[arg(long, default_value_t = 0)]
    pub threads: usize,
}

/// Panels per row when each layer has a single panel.
const LAYERS_PER_ROW: usize = 6;

/// The head columns of the figure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum HeadChoice {
    All,
    Mean,
    One(usize),
}

/// Parses `all` or a 0-based index below `count`; errors name the valid range.
fn parse_index(what: &str, text: &str, count: usize, arch: &str) -> Result<Option<usize>, String> {
    if text == "all" {
        return Ok(None);
    }
    let i: usize = text.parse().map_err(|_| {
        format!(
            "attention: --{what} {text:?}: expected a number or `all`{}",
            if what == "head" { " or `mean`" } else { "" }
        )
    })?;
    if i >= count {
        return Err(format!(
            "attention: --{what} {i} is out of range: {arch} has {count} {what}s (0..={})",
            count - 1
        ));
    }
    Ok(Some(i))
}

fn parse_head(text: &str, heads: usize, arch: &str) -> Result<HeadChoice, String> {
    if text == "mean" {
        return Ok(HeadChoice::Mean);
    }
    Ok(match parse_index("head", text, heads, arch)? {
        None => HeadChoice::All,
        Some(i) => HeadChoice::One(i),
    })
}

/// Builds the ViT `arch`, with an error that lists the ViTs for any other name.
fn build(args: &AttentionArgs) -> Result<VisionTransformer, String> {
    let arch = args.arch.as_str();
    if !vit::NAMES.contains(&arch) {
        let what = if zoo::names().contains(&arch) {
            format!("{arch} is not a Vision Transformer")
        } else {
            format!("unknown architecture {arch:?}")
        };
        return Err(format!(
            "attention: {what}; attention maps need a ViT: {}",
            vit::NAMES.join(", ")
        ));
    }
    vit::create_vit(arch, &args.overrides.to_overrides(), args.seed)
        .map_err(|e| format!("attention {arch}: {e}"))
}

/// Writes `text` to `path` through the models crate's safe replacement
/// (`tessera::models::io::atomic`).
pub fn write_atomic(path: &Path, text: &str) -> Result<(), String> {
    tessera::models::io::atomic::write_bytes(path, text.as_bytes())
        .map_err(|e| format!("attention: cannot write --out: {e}"))
}

/// The input batch and, for `digits:I`, the image's label.
fn load(input: &Path, model: &VisionTransformer) -> Result<(Tensor, Option<usize>), String> {
    let text = input.to_string_lossy();
    let Some(index) = text.strip_prefix("digits:") else {
        return Ok((crate::run::load_input(input, model)?, None));
    };
    let (_, test) = tessera::models::data::digits_split().map_err(|e| e.to_string())?;
    let i: usize = index
        .parse()
        .map_err(|_| format!("attention: --input {text}: expected digits:I with I a number"))?;
    if i >= test.len() {
        return Err(format!(
            "attention: --input {text}: the digits test split has {} images (0..={})",
            test.len(),
            test.len() - 1
        ));
    }
    let [c, h, w] = test.chw;
    let px = c * h * w;
    let x = Tensor::from_vec(test.images[i * px..(i + 1) * px].to_vec(), &[1, c, h, w])
        .map_err(|e| e.to_string())?;
    Ok((x, Some(test.labels[i])))
}

/// The class token's attention of `m` (`[1, L, L]`) over the patch grid, as a flat vector.
fn cls_grid(m: &Tensor, grid: [usize; 2]) -> Result<Vec<f32>, String> {
    attention_maps::cls_to_patches(m, grid)
        .map(|t| t.to_vec())
        .map_err(|e| format!("attention: {e}"))
}

/// Runs `tessera attention`.
pub fn run(args: &AttentionArgs) -> Result<(), String> {
    crate::init_threads(args.threads)?;
    let mut model = build(args)?;
    let arch = args.arch.clone();
    let cfg = *model.config();
    let (depth, heads) = (cfg.depth, cfg.num_heads);
    let layers: Vec<usize> = match parse_index("layer", &args.layer, depth, &arch)? {
        None => (0..depth).collect(),
        Some(l) => vec![l],
    };
    let head = parse_head(&args.head, heads, &arch)?;
    if args
        .out
        .extension()
        .is_none_or(|e| !e.eq_ignore_ascii_case("svg"))
    {
        return Err(format!(
            "attention: --out {}: the figure is an SVG; give a file name ending in .svg",
            args.out.display()
        ));
    }
    let (x, label) = load(&args.input, &model)?;
    let s = x.shape().to_vec();
    let want = [cfg.in_chans, cfg.img_size, cfg.img_size];
    if s[1..] != want {
        return Err(format!(
            "attention: {}: input of shape {s:?} does not fit {arch}, which takes [N, {}, {}, {}] \
             (use --img-size / --in-chans to change the model)",
            args.input.display(),
            want[0],
            want[1],
            want[2]
        ));
    }
    if args.index >= s[0] {
        return Err(format!(
            "attention: --index {} is out of range: {} holds {} image(s) (0..={})",
            args.index,
            args.input.display(),
            s[0],
            s[0] - 1
        ));
    }
    let x = x
        .narrow(0, args.index, 1)
        .map_err(|e| e.to_string())?
        .contiguous();
    match &args.weights {
        Some(w) => tessera::models::weights::load_lean(&mut model, w)
            .map_err(|e| format!("attention {arch}: {e}"))?,
        None => eprintln!(
            "tessera: warning: no --weights: showing the attention of random weights (seed {})",
            args.seed
        ),
    }
    let _guard = no_grad();
    let (logits, maps) = model
        .forward_with_attention(&x)
        .map_err(|e| format!("attention {arch}: forward failed: {e}"))?;
    let grid = attention_maps::patch_grid(&model);
    let heads_for_rollout = match head {
        HeadChoice::One(h) => Heads::One(h),
        _ => Heads::Mean,
    };

    let mut caption = format!(
        "{arch} on {}{}",
        args.input.display(),
        if s[0] > 1 {
            format!(" [{}]", args.index)
        } else {
            String::new()
        }
    );
    if let Some(l) = label {
        caption.push_str(&format!(" (label {l})"));
    }
    if cfg.num_classes > 0 {
        if let Some(&(c, p)) = crate::run::topk(&logits.to_vec(), 1).first() {
            caption.push_str(&format!(": predicted class {c} (p = {p:.3})"));
        }
    }
    if args.weights.is_none() {
        caption.push_str(" - random weights");
    }
    let mut first_row = vec![Panel {
        title: "input".into(),
        heat: None,
    }];
    if args.rollout {
        let r = attention_maps::attention_rollout(&maps, heads_for_rollout, ROLLOUT_RESIDUAL)
            .map_err(|e| format!("attention: {e}"))?;
        let heat = cls_grid(&r, grid)?;
        let max = heat.iter().copied().fold(0.0f32, f32::max);
        let which = match heads_for_rollout {
            Heads::Mean => "mean".to_string(),
            Heads::One(h) => format!("head {h}"),
        };
        first_row.push(Panel {
            title: format!("rollout, {which} (max {max:.3})"),
            heat: Some(heat),
        });
    }
    let mut rows = vec![first_row];
    for &l in &layers {
        let m = &maps[l];
        let cols: Vec<Heads> = match head {
            HeadChoice::All => (0..heads).map(Heads::One).chain([Heads::Mean]).collect(),
            HeadChoice::Mean => vec![Heads::Mean],
            HeadChoice::One(h) => vec![Heads::One(h)],
        };
        let mut row = Vec::with_capacity(cols.len());
        for hsel in cols {
            let a =
                attention_maps::combine_heads(m, hsel).map_err(|e| format!("attention: {e}"))?;
            let heat = cls_grid(&a, grid)?;
            let max = heat.iter().copied().fold(0.0f32, f32::max);
            let h = match hsel {
                Heads::Mean => "mean".to_string(),
                Heads::One(h) => format!("head {h}"),
            };
            row.push(Panel {
                title: format!("layer {l}, {h} (max {max:.3})"),
                heat: Some(heat),
            });
        }
        rows.push(row);
    }
    // One panel per layer (`--head mean` or one head): lay the layers out along rows of up to
    // six panels instead of one tall column.
    if rows.len() > 2 && rows[1..].iter().all(|r| r.len() == 1) {
        let layer_panels: Vec<Panel> = rows.drain(1..).flatten().collect();
        let mut it = layer_panels.into_iter().peekable();
        while it.peek().is_some() {
            rows.push(it.by_ref().take(LAYERS_PER_ROW).collect());
        }
    }
    let image = Grey::from_chw(&x.to_vec(), cfg.in_chans, cfg.img_size, cfg.img_size);
    let figure = Figure {
        caption,
        image,
        grid,
        rows,
        shared_scale: !args.per_panel_scale,
    };
    let text = svg::render(&figure)?;
    write_atomic(&args.out, &text)?;
    outln!(
        "wrote {} ({} panels, {} bytes)",
        args.out.display(),
        svg::panel_count(&figure),
        text.len()
    );
    Ok(())
}
