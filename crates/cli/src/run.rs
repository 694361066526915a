//! `tessera run ARCH --weights W.safetensors --input X [X ...] [--output Y.npy] [--topk K]
//! [--labels FILE] [--batch B] [--threads T] [--report-memory] [--json]`: inference in eval mode
//! with no graph recorded.
//!
//! Inputs ([`crate::inputs`]): `.npy` float arrays `[N, C, H, W]`, PNG / JPEG / WebP images
//! (timm's evaluation preprocessing of the architecture, `tessera::models::preprocess`),
//! directories, `-` (a list on standard input) and `digits:I`. Images are batched `--batch` at
//! a time; each file gets its own result block (one per row of a `.npy` array). With
//! `--output` the logits of every input, in order, are written as one float32 `.npy`
//! `[N, num_classes]`; otherwise the top-k classes and their softmax probabilities are printed,
//! named by the ImageNet-1k labels for 1000-class heads or by `--labels FILE`.
//!
//! Weights are required (timm's `model.safetensors` from the Hugging Face hub, or a
//! `tessera train --save` file) unless `--random-weights` asks for a randomly initialised
//! model. The model is built straight from the file (`zoo::create_pretrained_with`): no random
//! values are drawn and peak memory stays near one copy of the weights; `--report-memory`
//! prints the process's peak resident set (`VmHWM`) against the size of the weights.

use crate::inputs::{self, fmt_shape, Source};
use crate::overrides::{self, OverrideArgs};
use clap::Args;
use std::path::PathBuf;
use tessera::core::{no_grad, Tensor};
use tessera::models::io::npy;
use tessera::models::module::named_tensors;
use tessera::models::preprocess::pretrained_cfg;
use tessera::models::zoo::{self, Model};
use tessera::models::{labels, Mode};

/// Options of `tessera run`.
#[derive(Args)]
pub struct RunArgs {
    /// Architecture name, as in timm (`tessera list` shows them all).
    pub arch: String,
    #[command(flatten)]
    pub overrides: OverrideArgs,
    /// Weights: timm's `model.safetensors` from the Hugging Face hub (see the README), a timm
    /// `state_dict` saved with `safetensors.torch.save_file`, or a `tessera train --save` file.
    #[arg(long, value_name = "FILE")]
    pub weights: Option<PathBuf>,
    /// Run with random weights (drawn from --seed) instead of --weights: for timing and
    /// testing only, the predictions mean nothing.
    #[arg(long, conflicts_with = "weights")]
    pub random_weights: bool,
    /// Inputs: `.npy` arrays [N, C, H, W], PNG / JPEG / WebP images, directories of them,
    /// `digits:I` (embedded digits test image I), or `-` to read such names from stdin.
    #[arg(long, value_name = "INPUT", num_args = 1.., required = true)]
    pub input: Vec<String>,
    /// Write the logits [N, num_classes] of all inputs, in order, to this `.npy` file (float32)
    /// instead of printing.
    #[arg(long, value_name = "FILE")]
    pub output: Option<PathBuf>,
    /// Class names, one per line (line i names class i). Default: the ImageNet-1k names for
    /// 1000-class heads, class indices otherwise.
    #[arg(long, value_name = "FILE")]
    pub labels: Option<PathBuf>,
    /// Images per forward pass.
    #[arg(long, default_value_t = 8)]
    pub batch: usize,
    /// Worker threads (0 = one per core).
    #[arg(long, default_value_t = 0)]
    pub threads: usize,
    /// How many classes to print per image.
    #[arg(long, default_value_t = 5)]
    pub topk: usize,
    /// Seed of the random weights of --random-weights.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Print the peak resident memory (VmHWM) and its ratio to the weights' size on stderr.
    #[arg(long)]
    pub report_memory: bool,
    /// Print the top-k classes as one JSON object per image.
    #[arg(long)]
    pub json: bool,
}

/// The message of `run` without weights: where pretrained weights come from.
pub fn missing_weights_message(arch: &str) -> String {
    let get =
        match pretrained_cfg(arch).and_then(|c| Some((c.hf_hub_id.clone()?, c.weights_url()?))) {
            Some((id, url)) => format!(
                "pretrained timm weights for {arch} are on the Hugging Face hub as {id}:\n  \
             huggingface-cli download {id} model.safetensors --local-dir {arch}\n  \
             (or: curl -L -o {arch}/model.safetensors {url})\n  \
             tessera run {arch} --weights {arch}/model.safetensors --input IMAGE"
            ),
            None => format!(
                "timm has no pretrained weights for {arch}; train some with\n  \
             tessera train {arch} --save {arch}.safetensors\n  \
             tessera run {arch} --weights {arch}.safetensors --input ..."
            ),
        };
    format!(
        "run {arch}: no --weights given, and a model with random weights predicts nothing \
         useful.\n{get}\n(--random-weights runs it with random weights anyway, for timing or \
         testing)"
    )
}

/// Reads one input as a batch for `model` (see [`crate::inputs::read`]).
pub fn load_input(path: &std::path::Path, model: &dyn Model) -> Result<Tensor, String> {
    inputs::read(&Source::File(path.to_path_buf()), model)
}

/// Runs `model` on `x` in eval mode without recording a graph; errors name the input. Logits
/// that are not finite (NaN or infinite weights or inputs) are an error, not a prediction.
pub fn infer(model: &dyn Model, x: &Tensor, source: &str) -> Result<Tensor, String> {
    let _guard = no_grad();
    let y = model.forward(x).map_err(|e| {
        let [c, h, w] = model.input_chw();
        format!(
            "{source}: {} failed on input of shape {} (expected [N, {c}, {h}, {w}]): {e}",
            model.arch(),
            fmt_shape(x.shape())
        )
    })?;
    let n = x.shape()[0];
    if y.shape() != [n, model.num_classes()] {
        return Err(format!(
            "{source}: {} returned shape {} instead of [{n}, {}]",
            model.arch(),
            fmt_shape(y.shape()),
            model.num_classes()
        ));
    }
    Ok(y)
}

/// The `k` largest softmax probabilities of one row of logits: `(class, probability)`, most
/// probable first (ties by lower class index).
pub fn topk(logits: &[f32], k: usize) -> Vec<(usize, f64)> {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
    let exps: Vec<f64> = logits.iter().map(|&v| (v as f64 - max).exp()).collect();
    let sum: f64 = exps.iter().sum();
    let mut idx: Vec<usize> = (0..logits.len()).collect();
    idx.sort_by(|&a, &b| exps[b].total_cmp(&exps[a]).then(a.cmp(&b)));
    idx.into_iter()
        .take(k)
        .map(|i| (i, exps[i] / sum))
        .collect()
}

/// Peak resident set size of this process in bytes (`VmHWM`), if the kernel reports it.
pub fn peak_rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// Bytes of every parameter and buffer of `model` as f32.
pub fn weight_bytes(model: &dyn Model) -> u64 {
    named_tensors(model)
        .iter()
        .map(|(_, t, _)| t.numel() as u64 * 4)
        .sum()
}

/// The class names for `model`'s head: `--labels`, else ImageNet-1k's for 1000 classes.
fn class_names(args: &RunArgs, classes: usize) -> Result<Option<Vec<String>>, String> {
    match &args.labels {
        Some(p) => {
            let names = labels::read(p).map_err(|e| format!("run: --labels {e}"))?;
            if names.len() != classes {
                return Err(format!(
                    "run: --labels {}: {} names for a head of {classes} classes",
                    p.display(),
                    names.len()
                ));
            }
            Ok(Some(names))
        }
        None => Ok(labels::default_for(classes).map(|l| l.iter().map(|s| s.to_string()).collect())),
    }
}

/// One forward pass: the batch and the inputs it holds, in order.
struct Group {
    x: Tensor,
    /// Each input's name, and whether it is a `.npy` batch of several rows (one block per
    /// row, numbered) or a single image.
    members: Vec<(String, bool)>,
}

/// The inputs read and grouped into forward passes: up to `batch` single images per pass, a
/// `.npy` array of several rows as a pass of its own.
fn batches(sources: &[Source], model: &dyn Model, batch: usize) -> Result<Vec<Group>, String> {
    let mut groups = Vec::new();
    let mut pending: Vec<(Tensor, String)> = Vec::new();
    let flush = |pending: &mut Vec<(Tensor, String)>, groups: &mut Vec<Group>| {
        if pending.is_empty() {
            return Ok::<(), String>(());
        }
        let parts: Vec<Tensor> = pending.iter().map(|(t, _)| t.clone()).collect();
        let x = Tensor::cat(&parts, 0).map_err(|e| format!("run: {e}"))?;
        let members = pending.drain(..).map(|(_, s)| (s, false)).collect();
        groups.push(Group { x, members });
        Ok(())
    };
    for s in sources {
        let x = inputs::read(s, model)?;
        let name = s.to_string();
        if x.shape()[0] > 1 {
            flush(&mut pending, &mut groups)?;
            groups.push(Group {
                x,
                members: vec![(name, true)],
            });
            continue;
        }
        pending.push((x, name));
        if pending.len() == batch {
            flush(&mut pending, &mut groups)?;
        }
    }
    flush(&mut pending, &mut groups)?;
    Ok(groups)
}

/// Prints the top-k block of one input row.
fn print_block(
    args: &RunArgs,
    name: &str,
    row: Option<usize>,
    logits: &[f32],
    names: Option<&[String]>,
) {
    let best = topk(logits, args.topk);
    let label = |c: usize| names.and_then(|n| n.get(c)).map(|s| s.as_str());
    if args.json {
        let list: Vec<serde_json::Value> = best
            .iter()
            .map(|&(c, p)| serde_json::json!({ "class": c, "label": label(c), "prob": p }))
            .collect();
        let mut obj = serde_json::json!({ "input": name, "topk": list });
        if let Some(r) = row {
            obj["index"] = r.into();
        }
        outln!("{obj}");
        return;
    }
    match row {
        Some(r) => outln!("{name} [{r}]:"),
        None => outln!("{name}:"),
    }
    for (rank, &(c, p)) in best.iter().enumerate() {
        match label(c) {
            Some(l) => outln!("  {:>2}. {p:>6.4}  {c:>4} {l}", rank + 1),
            None => outln!("  {:>2}. {p:>6.4}  class {c}", rank + 1),
        }
    }
}

/// Builds the model of `tessera run`: from the weights file, or random with --random-weights.
fn build_model(args: &RunArgs) -> Result<Box<dyn Model>, String> {
    // Name problems first: a misspelt architecture is the likelier mistake.
    overrides::check_name("run", &args.arch)?;
    let mut model = match (&args.weights, args.random_weights) {
        (Some(w), _) => zoo::create_pretrained_with(&args.arch, &args.overrides.to_overrides(), w)
            .map_err(|e| format!("run {}: {e}", args.arch))?,
        (None, true) => overrides::build("run", &args.arch, &args.overrides, args.seed)?,
        (None, false) => return Err(missing_weights_message(&args.arch)),
    };
    model.set_mode(Mode::Eval);
    Ok(model)
}

/// Runs `tessera run`.
pub fn run(args: &RunArgs) -> Result<(), String> {
    if args.topk == 0 {
        return Err("run: --topk must be at least 1".into());
    }
    if args.batch == 0 {
        return Err("run: --batch must be at least 1".into());
    }
    let sources = inputs::expand(&args.input, &mut std::io::stdin().lock())
        .map_err(|e| format!("run: {e}"))?;
    crate::init_threads(args.threads)?;
    let model = build_model(args)?;
    let classes = model.num_classes();
    let names = class_names(args, classes)?;
    let groups = batches(&sources, model.as_ref(), args.batch)?;
    let mut all_logits = Vec::new();
    for Group { x, members } in &groups {
        let what = members
            .iter()
            .map(|(s, _)| s.as_str())
            .collect::<Vec<_>>()
            .join(", ");
        // The compiled plan for this batch's shape; the eager forward names input errors.
        let y = match <[usize; 4]>::try_from(x.shape())
            .ok()
            .and_then(|s| model.plan(s).ok())
        {
            Some(mut p) => p.run_tensor(x).map_err(|e| format!("{what}: {e}"))?,
            None => infer(model.as_ref(), x, &what)?,
        };
        let logits = y.to_vec();
        let mut rows = logits.chunks(classes);
        for (name, numbered) in members {
            let count = if *numbered { x.shape()[0] } else { 1 };
            for r in 0..count {
                let row = rows.next().unwrap_or(&[]);
                if row.iter().any(|v| !v.is_finite()) {
                    return Err(format!(
                        "{name}: the logits are not finite (NaN or infinite values in the \
                         input or the weights)"
                    ));
                }
                if args.output.is_none() {
                    print_block(args, name, numbered.then_some(r), row, names.as_deref());
                }
            }
        }
        if args.output.is_some() {
            all_logits.extend_from_slice(&logits);
        }
    }
    if let Some(out) = &args.output {
        let n = all_logits.len() / classes.max(1);
        npy::write_f32(out, &[n, classes], &all_logits).map_err(|e| e.to_string())?;
    }
    if args.report_memory {
        let wbytes = weight_bytes(model.as_ref());
        match peak_rss_bytes() {
            Some(peak) => eprintln!(
                "peak memory (VmHWM): {:.1} MiB = {:.2} x the weights ({:.1} MiB)",
                peak as f64 / 1048576.0,
                peak as f64 / wbytes.max(1) as f64,
                wbytes as f64 / 1048576.0
            ),
            None => eprintln!("peak memory: /proc/self/status is not available"),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::info::tests::Tiny;
    use std::collections::BTreeMap;
    use tessera::models::weights;

    fn tmp(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("tessera-cli-run-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        dir.join(name)
    }

    #[test]
    fn lean_load_matches_the_reference_loader() {
        let src = Tiny::new(3, 8, 5, 1);
        let p = tmp("tiny.safetensors");
        weights::save(&src, &p, &BTreeMap::new()).unwrap();
        let mut a = Tiny::new(3, 8, 5, 2);
        let mut b = Tiny::new(3, 8, 5, 3);
        weights::load(&mut a, &p).unwrap();
        weights::load_lean(&mut b, &p).unwrap();
        let x = Tensor::randn(&[2, 3, 8, 8], 4);
        let ya = infer(&a, &x, "x").unwrap().to_vec();
        let yb = infer(&b, &x, "x").unwrap().to_vec();
        let ys = infer(&src, &x, "x").unwrap().to_vec();
        assert_eq!(ya, ys);
        assert_eq!(yb, ys);
    }

    #[test]
    fn lean_load_lists_every_problem() {
        let p = tmp("wrong.safetensors");
        // A model with 4 classes does not fit a 5-class one.
        let other = Tiny::new(3, 8, 4, 1);
        weights::save(&other, &p, &BTreeMap::new()).unwrap();
        let err = weights::load_lean(&mut Tiny::new(3, 8, 5, 1), &p)
            .unwrap_err()
            .to_string();
        assert!(err.contains("wrong.safetensors"), "{err}");
        assert!(err.contains("\"head.weight\" has shape [4, 4]"), "{err}");
        assert!(err.contains("\"head.bias\" has shape [4]"), "{err}");
        let err = weights::load_lean(&mut Tiny::new(3, 8, 5, 1), tmp("absent.safetensors"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("absent.safetensors"), "{err}");
    }

    #[test]
    fn topk_orders_by_probability() {
        let t = topk(&[1.0, 3.0, 2.0, 3.0], 3);
        assert_eq!(t.iter().map(|p| p.0).collect::<Vec<_>>(), [1, 3, 2]);
        let z: f64 = [1.0f64, 3.0, 2.0, 3.0].iter().map(|v| v.exp()).sum();
        assert!((t[0].1 - 3.0f64.exp() / z).abs() < 1e-12);
        assert_eq!(topk(&[0.0, 0.0], 5).len(), 2);
    }

    #[test]
    fn npy_inputs_are_checked() {
        let m = Tiny::new(1, 8, 5, 1);
        let p = tmp("three.npy");
        npy::write_f32(&p, &[2, 3, 8, 8], &vec![0.0; 384]).unwrap();
        let err = load_input(&p, &m).unwrap_err();
        assert!(
            err.contains("three.npy")
                && err.contains("[2, 3, 8, 8]")
                && err.contains("[N, 1, H, W]"),
            "{err}"
        );
        let p = tmp("ints.npy");
        npy::write_i64(&p, &[1, 1, 8, 8], &[0; 64]).unwrap();
        let err = load_input(&p, &m).unwrap_err();
        assert!(err.contains("ints.npy") && err.contains("integer"), "{err}");
        let p = tmp("ok.npy");
        npy::write_f32(&p, &[2, 1, 8, 8], &vec![0.5; 128]).unwrap();
        assert_eq!(load_input(&p, &m).unwrap().shape(), [2, 1, 8, 8]);
    }

    #[test]
    fn the_missing_weights_message_says_where_to_get_them() {
        let m = missing_weights_message("mobilenetv3_large_100");
        assert!(
            m.contains(
                "huggingface-cli download timm/mobilenetv3_large_100.ra_in1k model.safetensors"
            ),
            "{m}"
        );
        assert!(m.contains("--random-weights"), "{m}");
        let m = missing_weights_message("vit_digits");
        assert!(m.contains("tessera train vit_digits --save"), "{m}");
    }

    #[test]
    fn peak_rss_is_reported_on_linux() {
        let peak = peak_rss_bytes().expect("VmHWM in /proc/self/status");
        assert!(peak > 1 << 20, "{peak}");
    }
}
