//! `tessera run ARCH [overrides] [--weights W.safetensors] --input X [--output Y.npy]
//! [--threads T] [--topk K] [--report-memory]`: inference in eval mode with no graph recorded.
//!
//! The input is a `.npy` float array `[N, C, H, W]` (any header NumPy writes for float dtypes;
//! integer arrays are rejected) or a PNG / JPEG image preprocessed as timm's evaluation
//! transform ([`crate::image_input`]). With `--output` the logits `[N, num_classes]` are written
//! as a float32 `.npy`; otherwise the top-k classes and their softmax probabilities are printed
//! per image.
//!
//! Weights are loaded with peak memory close to one copy of them: the random initial tensors
//! are released before the file is read, and the tensors the safetensors reader allocates are
//! moved into the model instead of being copied ([`weights::load_lean`](tessera::models::weights::load_lean)). `--report-memory`
//! prints the process's peak resident set (`VmHWM` of `/proc/self/status`) against the size of
//! the weights.

use crate::image_input;
use crate::overrides::{self, OverrideArgs};
use clap::Args;
use std::path::{Path, PathBuf};
use tessera::core::{no_grad, Tensor};
use tessera::models::io::{npy, Values};
use tessera::models::module::named_tensors;
use tessera::models::zoo::Model;
use tessera::models::Mode;

/// Options of `tessera run`.
#[derive(Args)]
pub struct RunArgs {
    /// Architecture name, as in timm (`vit_base_patch16_224`, `mobilenetv2_100`, ...).
    pub arch: String,
    #[command(flatten)]
    pub overrides: OverrideArgs,
    /// Weights to load: a timm `state_dict` saved with `safetensors.torch.save_file`
    /// (random weights from --seed if omitted).
    #[arg(long, value_name = "FILE")]
    pub weights: Option<PathBuf>,
    /// Input: a `.npy` float array [N, C, H, W], or a PNG / JPEG image.
    #[arg(long, value_name = "FILE")]
    pub input: PathBuf,
    /// Write the logits [N, num_classes] to this `.npy` file (float32) instead of printing.
    #[arg(long, value_name = "FILE")]
    pub output: Option<PathBuf>,
    /// Worker threads (0 = one per core).
    #[arg(long, default_value_t = 0)]
    pub threads: usize,
    /// How many classes to print per image.
    #[arg(long, default_value_t = 5)]
    pub topk: usize,
    /// Seed of the random weights used when --weights is not given.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Print the peak resident memory (VmHWM) and its ratio to the weights' size on stderr.
    #[arg(long)]
    pub report_memory: bool,
    /// Print the top-k classes as one JSON object per image.
    #[arg(long)]
    pub json: bool,
}

/// Whether `path` is to be read as a `.npy` array (by extension or by NumPy's magic string).
fn is_npy(path: &Path) -> bool {
    if path
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("npy"))
    {
        return true;
    }
    let mut magic = [0u8; 6];
    std::fs::File::open(path)
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut magic))
        .is_ok_and(|()| &magic == b"\x93NUMPY")
}

fn fmt_shape(s: &[usize]) -> String {
    let parts: Vec<String> = s.iter().map(|d| d.to_string()).collect();
    format!("[{}]", parts.join(", "))
}

/// Reads the input batch for `model` from `path`: a float `.npy` `[N, C, H, W]` with `C` the
/// model's input channels, or an image preprocessed for `arch` to `[1, C, img, img]`.
pub fn load_input(path: &Path, model: &dyn Model) -> Result<Tensor, String> {
    let [c, h, w] = model.input_chw();
    let shown = path.display();
    if !path.exists() {
        return Err(format!("{shown}: no such file"));
    }
    if is_npy(path) {
        let arr = npy::read(path).map_err(|e| e.to_string())?;
        let data = match arr.values {
            Values::F32(v) => v,
            Values::I64(_) => {
                return Err(format!(
                    "{shown}: an integer or boolean array of shape {}; the input must be a \
                     floating-point array [N, {c}, {h}, {w}]",
                    fmt_shape(&arr.shape)
                ))
            }
        };
        let s = &arr.shape;
        if s.len() != 4 || s[0] == 0 || s[1] != c {
            return Err(format!(
                "{shown}: the array has shape {} but {} expects [N, {c}, H, W] with N >= 1 \
                 ([N, {c}, {h}, {w}] at its configured size)",
                fmt_shape(s),
                model.arch()
            ));
        }
        return Tensor::from_vec(data, s).map_err(|e| format!("{shown}: {e}"));
    }
    if h != w {
        return Err(format!(
            "{shown}: image inputs need a square model input, {} expects {h}x{w}",
            model.arch()
        ));
    }
    let cfg = image_input::data_config(model.arch());
    let data = image_input::load(path, c, h, &cfg)?;
    Tensor::from_vec(data, &[1, c, h, h]).map_err(|e| format!("{shown}: {e}"))
}

/// Runs `model` on `x` in eval mode without recording a graph; errors name the input.
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

/// Runs `tessera run`.
pub fn run(args: &RunArgs) -> Result<(), String> {
    if args.topk == 0 {
        return Err("run: --topk must be at least 1".into());
    }
    crate::init_threads(args.threads)?;
    let mut model = overrides::build("run", &args.arch, &args.overrides, args.seed)?;
    model.set_mode(Mode::Eval);
    let wbytes = weight_bytes(model.as_ref());
    // Read the input before the weights so a bad input fails fast.
    let x = load_input(&args.input, model.as_ref())?;
    if let Some(w) = &args.weights {
        tessera::models::weights::load_lean(model.as_mut(), w)
            .map_err(|e| format!("run {}: {e}", args.arch))?;
    }
    let source = args.input.display().to_string();
    let y = infer(model.as_ref(), &x, &source)?;
    let [n, classes] = [y.shape()[0], y.shape()[1]];
    let logits = y.to_vec();
    let bad = logits.iter().filter(|v| !v.is_finite()).count();
    if bad > 0 {
        eprintln!(
            "tessera: warning: {bad} of the {} output values are NaN or infinite (non-finite weights or input?); the probabilities below are meaningless",
            logits.len()
        );
    }
    if let Some(out) = &args.output {
        npy::write_f32(out, &[n, classes], &logits).map_err(|e| e.to_string())?;
    } else {
        for (i, row) in logits.chunks(classes).enumerate() {
            let best = topk(row, args.topk);
            if args.json {
                let list: Vec<serde_json::Value> = best
                    .iter()
                    .map(|&(c, p)| serde_json::json!({ "class": c, "prob": p }))
                    .collect();
                outln!(
                    "{}",
                    serde_json::json!({ "input": source, "index": i, "topk": list })
                );
            } else {
                outln!("{source} [{i}]:");
                for (rank, (c, p)) in best.iter().enumerate() {
                    outln!("  {:>2}. class {c:>5}  p = {p:.4}", rank + 1);
                }
            }
        }
    }
    if args.report_memory {
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
        tessera::models::weights::load_lean(&mut b, &p).unwrap();
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
        // A model with 4 classes does not fit a 5-class one; `extra` is not part of it.
        let other = Tiny::new(3, 8, 4, 1);
        weights::save(&other, &p, &BTreeMap::new()).unwrap();
        let err = tessera::models::weights::load_lean(&mut Tiny::new(3, 8, 5, 1), &p)
            .unwrap_err()
            .to_string();
        assert!(err.contains("wrong.safetensors"), "{err}");
        assert!(err.contains("\"head.weight\" has shape [4, 4]"), "{err}");
        assert!(err.contains("\"head.bias\" has shape [4]"), "{err}");
        let err = tessera::models::weights::load_lean(
            &mut Tiny::new(3, 8, 5, 1),
            tmp("absent.safetensors"),
        )
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
    fn peak_rss_is_reported_on_linux() {
        let peak = peak_rss_bytes().expect("VmHWM in /proc/self/status");
        assert!(peak > 1 << 20, "{peak}");
    }
}
