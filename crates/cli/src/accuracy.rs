//! `tessera accuracy ARCH [--weights W.safetensors | --random-weights] [--input X ...]
//! [overrides] [--json]`: where the float32 inference loses its bits, step by step.
//!
//! The model is compiled as `tessera run` runs it (`Model::plan`: batch norm folded into the
//! convolution weights, epilogues fused) together with a float64 reference of every step on
//! the unfolded parameters (`Model::plan_reference`), and `Plan::accuracy` runs both, in the
//! manner of `tessera profile --plan` (one row per plan step). Each row gives the step's
//! relative error `max |y32 - y64| / max |y64|` on its output as it has accumulated through
//! the network, that error over the error of the step's inputs (its amplification), and the
//! step's error alone (fed the reference input rounded to f32); then the logits' relative and
//! absolute error. `--json` prints one object per step and one for the logits.
//!
//! The input is `--input` (as in `tessera run`: `.npy`, images, `digits:I`; several are
//! batched) or, without it, `--batch` standard-normal images drawn from `--seed`.

use crate::inputs::{self, fmt_shape};
use crate::overrides::{self, OverrideArgs};
use clap::Args;
use std::path::PathBuf;
use tessera::core::{no_grad, Tensor};
use tessera::models::plan::{Accuracy, StepError};
use tessera::models::zoo::{self, Model};
use tessera::models::Mode;

/// Options of `tessera accuracy`.
#[derive(Args)]
pub struct AccuracyArgs {
    /// Architecture name, as in timm (`tessera list` shows them all).
    pub arch: String,
    #[command(flatten)]
    pub overrides: OverrideArgs,
    /// Weights: timm's `model.safetensors`, a timm `state_dict` in safetensors, or a
    /// `tessera train --save` file.
    #[arg(long, value_name = "FILE")]
    pub weights: Option<PathBuf>,
    /// Use random weights (timm's initialisation, from --seed) instead of --weights.
    #[arg(long, conflicts_with = "weights")]
    pub random_weights: bool,
    /// Inputs, as in `tessera run` (`.npy` [N, C, H, W], images, directories, `digits:I`,
    /// `-`), batched together; default: --batch standard-normal images from --seed.
    #[arg(long, value_name = "INPUT", num_args = 1..)]
    pub input: Vec<String>,
    /// Images of the random input (without --input).
    #[arg(long, default_value_t = 1)]
    pub batch: usize,
    /// Seed of the random weights and the random input.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Worker threads (0 = one per core).
    #[arg(long, default_value_t = 0)]
    pub threads: usize,
    /// One JSON object per step, then one for the logits.
    #[arg(long)]
    pub json: bool,
}

fn build_model(args: &AccuracyArgs) -> Result<Box<dyn Model>, String> {
    overrides::check_name("accuracy", &args.arch)?;
    let mut model = match (&args.weights, args.random_weights) {
        (Some(w), _) => zoo::create_pretrained_with(&args.arch, &args.overrides.to_overrides(), w)
            .map_err(|e| format!("accuracy {}: {e}", args.arch))?,
        (None, true) => overrides::build("accuracy", &args.arch, &args.overrides, args.seed)?,
        (None, false) => {
            return Err(format!(
                "accuracy {}: give --weights FILE (timm's model.safetensors or a `tessera \
                 train --save` file) or --random-weights",
                args.arch
            ))
        }
    };
    model.set_mode(Mode::Eval);
    Ok(model)
}

/// The input batch: `--input` read and concatenated, or random images.
fn input(args: &AccuracyArgs, model: &dyn Model) -> Result<Tensor, String> {
    if args.input.is_empty() {
        let [c, h, w] = model.input_chw();
        return Ok(Tensor::randn(&[args.batch, c, h, w], args.seed));
    }
    let sources = inputs::expand(&args.input, &mut std::io::stdin().lock())
        .map_err(|e| format!("accuracy: {e}"))?;
    let parts = sources
        .iter()
        .map(|s| inputs::read(s, model))
        .collect::<Result<Vec<_>, _>>()?;
    if parts.len() == 1 {
        return Ok(parts.into_iter().next().expect("one input"));
    }
    Tensor::cat(&parts, 0).map_err(|e| {
        let shapes: Vec<String> = parts.iter().map(|p| fmt_shape(p.shape())).collect();
        format!(
            "accuracy: the inputs must have the same shape to be batched, got {}: {e}",
            shapes.join(", ")
        )
    })
}

/// Runs `tessera accuracy`.
pub fn run(args: &AccuracyArgs) -> Result<(), String> {
    if args.batch == 0 {
        return Err("accuracy: --batch must be at least 1".into());
    }
    crate::init_threads(args.threads)?;
    let model = build_model(args)?;
    let x = input(args, model.as_ref())?;
    let shape: [usize; 4] = x.shape().try_into().map_err(|_| {
        format!(
            "accuracy: the input has shape {}, expected [N, C, H, W]",
            fmt_shape(x.shape())
        )
    })?;
    let _guard = no_grad();
    let fail = |e: tessera::models::ModelError| format!("accuracy {}: {e}", args.arch);
    let mut plan = model.plan_reference(shape).map_err(fail)?;
    let acc = plan.accuracy(&x.to_vec()).map_err(fail)?;
    if acc.reference.iter().any(|v| !v.is_finite()) {
        return Err(format!(
            "accuracy {}: the float64 logits are not finite (NaN or infinite values in the \
             input or the weights)",
            args.arch
        ));
    }
    if args.json {
        print_json(&acc);
    } else {
        print_table(args, &acc, shape);
    }
    Ok(())
}

/// Three significant digits (`0` for an exact zero), or `-` for an absent value.
fn sci(v: Option<f64>) -> String {
    match v {
        None => "-".to_string(),
        Some(v) => {
            if v == 0.0 {
                "0".to_string()
            } else {
                format!("{v:.2e}")
            }
        }
    }
}

fn print_json(acc: &Accuracy) {
    for (i, s) in acc.steps.iter().enumerate() {
        let j = serde_json::json!({
            "step": i + 1, "kind": s.kind, "detail": s.detail, "shape": s.shape,
            "rel": s.rel, "abs": s.abs, "scale": s.scale, "rel_in": s.rel_in,
            "amplification": s.amplification(), "alone": s.local, "fold": s.fold,
            "fold_net": s.fold_net,
        });
        outln!("{j}");
    }
    let scale = acc.reference.iter().fold(0f64, |m, v| m.max(v.abs()));
    outln!(
        "{}",
        serde_json::json!({
            "logits_rel": acc.logits_rel(), "logits_abs": acc.logits_abs(),
            "logits_scale": scale, "steps": acc.steps.len(),
        })
    );
}

fn print_table(args: &AccuracyArgs, acc: &Accuracy, shape: [usize; 4]) {
    outln!(
        "{} float32 plan against its float64 reference (batch norm unfolded), input {}, \
         instruction set {}, {} threads",
        args.arch,
        fmt_shape(&shape),
        tessera::kernels::Isa::current().map_or("?", |i| i.name()),
        rayon::current_num_threads(),
    );
    outln!(
        "rel = max |y32 - y64| / max |y64| of the step's output; x in = rel / rel of its \
         inputs; alone = rel of the step fed the f64 input rounded to f32; fold = rel of the \
         step in f64 on the folded f32 weights; fold net = rel of the whole f64 network on the \
         folded weights up to here"
    );
    outln!(
        "{:>4}  {:<18} {:<36} {:<20} {:>9} {:>7} {:>9} {:>9} {:>9}",
        "#",
        "step",
        "detail",
        "output",
        "rel",
        "x in",
        "alone",
        "fold",
        "fold net"
    );
    for (i, s) in acc.steps.iter().enumerate() {
        outln!(
            "{:>4}  {:<18} {:<36} {:<20} {:>9} {:>7} {:>9} {:>9} {:>9}",
            i + 1,
            s.kind,
            s.detail,
            fmt_shape(&s.shape),
            sci(Some(s.rel)),
            s.amplification()
                .map_or_else(|| "-".to_string(), |a| format!("{a:.2}")),
            sci(Some(s.local)),
            sci(s.fold),
            sci(Some(s.fold_net))
        );
    }
    let scale = acc.reference.iter().fold(0f64, |m, v| m.max(v.abs()));
    outln!(
        "logits: relative error {:.2e}, max abs error {:.2e} (max |logit| {:.3e})",
        acc.logits_rel(),
        acc.logits_abs(),
        scale
    );
    print_kinds(&acc.steps);
}

/// Per step kind: how many, the largest and median error each adds alone (and its fold
/// part), the largest amplification.
fn print_kinds(steps: &[StepError]) {
    struct Kind<'a> {
        name: &'a str,
        alone: Vec<f64>,
        fold: Vec<f64>,
        amp: f64,
    }
    let mut kinds: Vec<Kind> = Vec::new();
    for s in steps {
        let i = match kinds.iter().position(|k| k.name == s.kind) {
            Some(i) => i,
            None => {
                kinds.push(Kind {
                    name: s.kind,
                    alone: Vec::new(),
                    fold: Vec::new(),
                    amp: 0.0,
                });
                kinds.len() - 1
            }
        };
        let k = &mut kinds[i];
        k.alone.push(s.local);
        k.fold.extend(s.fold);
        k.amp = k.amp.max(s.amplification().unwrap_or(0.0));
    }
    for k in &mut kinds {
        k.alone.sort_by(f64::total_cmp);
        k.fold.sort_by(f64::total_cmp);
    }
    let max = |v: &[f64]| v.last().copied().unwrap_or(0.0);
    kinds.sort_by(|a, b| max(&b.alone).total_cmp(&max(&a.alone)));
    outln!("by kind (error alone: max, median; of it the fold's median; largest x in):");
    for k in kinds {
        let fold = match k.fold.is_empty() {
            true => String::new(),
            false => format!("  fold median {}", sci(Some(k.fold[k.fold.len() / 2]))),
        };
        outln!(
            "  {:<15} {:>3} steps  alone max {}  median {}{fold}  x in max {:.2}",
            k.name,
            k.alone.len(),
            sci(Some(max(&k.alone))),
            sci(Some(k.alone[k.alone.len() / 2])),
            k.amp
        );
    }
}
