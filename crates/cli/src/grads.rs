//! `tessera grads ARCH [overrides] [--weights W.safetensors] --input X.npy --labels L.npy
//! --out G.safetensors [--threads T] [--json]`: one forward and backward in training mode
//! (batch statistics in batch norm, no dropout) with the mean cross-entropy, for gradient parity
//! with PyTorch (`scripts/fixtures_grads.py` writes the same file from timm).
//!
//! The input is read as by `tessera run` (a float `.npy` `[N, C, H, W]`, or an image as one
//! batch of 1). The labels are an int64 (or int32) `.npy` of shape `[N]` with values in
//! `0..num_classes`; other dtypes and shapes are rejected with the file and its dtype named.
//!
//! The output is a safetensors file (F32, written atomically: temporary file, then rename) with
//! `loss` (shape `[]`, as torch's `loss.reshape([])`), `logits` `[N, num_classes]` and the
//! gradient of every parameter under its timm name (`blocks.0.attn.qkv.weight`); the metadata
//! records `tessera.arch`. Printed: one summary line, or with `--json` one object with `arch`,
//! `loss`, `tensors` (the number written) and `out`.

use crate::overrides::{self, OverrideArgs};
use crate::run::load_input;
use clap::Args;
use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use tessera::models::grads;
use tessera::models::io::safetensors::{self, TensorRef};
use tessera::models::io::{npy, Values};

/// Options of `tessera grads`.
#[derive(Args)]
pub struct GradsArgs {
    /// Architecture name, as in timm (`vit_tiny_patch16_224`, `mobilenetv2_035`, ...).
    pub arch: String,
    #[command(flatten)]
    pub overrides: OverrideArgs,
    /// Weights to load: a timm `state_dict` saved with `safetensors.torch.save_file`
    /// (random weights from --seed if omitted).
    #[arg(long, value_name = "FILE")]
    pub weights: Option<PathBuf>,
    /// Input batch: a `.npy` float array [N, C, H, W] (or a PNG / JPEG image, N = 1).
    #[arg(long, value_name = "FILE")]
    pub input: PathBuf,
    /// Labels: an int64 (or int32) `.npy` array of shape [N], values in 0..num_classes.
    #[arg(long, value_name = "FILE")]
    pub labels: PathBuf,
    /// Output safetensors file: `loss`, `logits` and every parameter's gradient.
    #[arg(long, value_name = "FILE")]
    pub out: PathBuf,
    /// Worker threads (0 = one per core).
    #[arg(long, default_value_t = 0)]
    pub threads: usize,
    /// Seed of the random weights used when --weights is not given.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// One JSON object (arch, loss, tensors, out) instead of a summary line.
    #[arg(long)]
    pub json: bool,
}

/// The `descr` of a `.npy` header (`<i8`), or `None` if it cannot be found (the reader then
/// reports what is wrong with the file).
fn npy_descr(path: &Path) -> Option<String> {
    let mut head = Vec::new();
    std::fs::File::open(path)
        .ok()?
        .take(4096)
        .read_to_end(&mut head)
        .ok()?;
    let text: String = head.iter().map(|&b| b as char).collect();
    let rest = &text[text.find("'descr'").or_else(|| text.find("\"descr\""))? + 7..];
    let rest = rest.trim_start().strip_prefix(':')?.trim_start();
    let quote = rest.chars().next().filter(|c| *c == '\'' || *c == '"')?;
    let end = rest[1..].find(quote)?;
    Some(rest[1..1 + end].to_string())
}

/// NumPy's name of a `.npy` descr (`<f4` -> `float32`), for error messages.
fn dtype_name(descr: &str) -> String {
    let code = descr.trim_start_matches(['<', '>', '=', '|']);
    let name = match code {
        "f2" | "e" => "float16",
        "f4" | "f" => "float32",
        "f8" | "d" => "float64",
        "i1" | "b" => "int8",
        "i2" | "h" => "int16",
        "i4" | "i" => "int32",
        "i8" | "q" | "l" => "int64",
        "u1" | "B" => "uint8",
        "u2" | "H" => "uint16",
        "u4" | "I" => "uint32",
        "u8" | "Q" | "L" => "uint64",
        "b1" | "?" => "bool",
        _ => return descr.to_string(),
    };
    format!("{name} ({descr})")
}

/// Reads the labels: an int64 or int32 `.npy` of shape `[N]`.
pub fn load_labels(path: &Path) -> Result<Vec<i64>, String> {
    let shown = path.display();
    if !path.exists() {
        return Err(format!("{shown}: no such file"));
    }
    let arr = npy::read(path).map_err(|e| e.to_string())?;
    let descr = npy_descr(path).unwrap_or_default();
    let code = descr.trim_start_matches(['<', '>', '=', '|']);
    let integer = matches!(code, "i8" | "q" | "l" | "i4" | "i");
    let values = match arr.values {
        Values::I64(v) if integer => v,
        _ => {
            return Err(format!(
                "{shown}: labels must be an int64 (or int32) array of shape [N], \
                 got dtype {} of shape {:?}",
                dtype_name(&descr),
                arr.shape
            ))
        }
    };
    if arr.shape.len() != 1 {
        return Err(format!(
            "{shown}: labels must have shape [N] (one class index per image), got shape {:?}",
            arr.shape
        ));
    }
    Ok(values)
}

/// Runs `tessera grads`.
pub fn run(args: &GradsArgs) -> Result<(), String> {
    crate::init_threads(args.threads)?;
    let mut model = overrides::build("grads", &args.arch, &args.overrides, args.seed)?;
    // Read the inputs before the weights so bad input fails fast.
    let x = load_input(&args.input, model.as_ref())?;
    let labels = load_labels(&args.labels)?;
    if let Some(w) = &args.weights {
        tessera::models::weights::load_lean(model.as_mut(), w)
            .map_err(|e| format!("grads {}: {e}", args.arch))?;
    }
    let g = grads::compute(model.as_mut(), &x, &labels).map_err(|e| {
        format!(
            "{e} (input {}, labels {})",
            args.input.display(),
            args.labels.display()
        )
    })?;
    let mut owned: Vec<(String, Vec<usize>, Vec<f32>)> = Vec::with_capacity(g.grads.len() + 2);
    owned.push(("loss".into(), vec![], vec![g.loss]));
    owned.push((
        "logits".into(),
        g.logits.shape().to_vec(),
        g.logits.to_vec(),
    ));
    for (name, t) in &g.grads {
        owned.push((name.clone(), t.shape().to_vec(), t.to_vec()));
    }
    let refs: Vec<TensorRef<'_>> = owned
        .iter()
        .map(|(n, s, d)| TensorRef {
            name: n,
            shape: s,
            data: d,
        })
        .collect();
    let mut meta = BTreeMap::new();
    meta.insert("tessera.arch".to_string(), args.arch.clone());
    safetensors::write(&args.out, &refs, &meta).map_err(|e| e.to_string())?;
    let out = args.out.display().to_string();
    if args.json {
        outln!(
            "{}",
            serde_json::json!({
                "arch": args.arch,
                "loss": g.loss,
                "tensors": owned.len(),
                "out": out,
            })
        );
    } else {
        outln!(
            "{}: loss {:.6}, wrote {} tensors (loss, logits, {} gradients) to {out}",
            args.arch,
            g.loss,
            owned.len(),
            g.grads.len()
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tmp(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("tessera-cli-grads-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        dir.join(name)
    }

    #[test]
    fn labels_are_int64_vectors() {
        let p = tmp("ok.npy");
        npy::write_i64(&p, &[3], &[0, 9, 4]).unwrap();
        assert_eq!(load_labels(&p).unwrap(), [0, 9, 4]);

        let p = tmp("float.npy");
        npy::write_f32(&p, &[3], &[0.0, 1.0, 2.0]).unwrap();
        let e = load_labels(&p).unwrap_err();
        assert!(
            e.contains("float.npy") && e.contains("float32 (<f4)"),
            "{e}"
        );

        let p = tmp("matrix.npy");
        npy::write_i64(&p, &[2, 2], &[0, 1, 2, 3]).unwrap();
        let e = load_labels(&p).unwrap_err();
        assert!(e.contains("matrix.npy") && e.contains("[2, 2]"), "{e}");

        let e = load_labels(&tmp("absent.npy")).unwrap_err();
        assert!(
            e.contains("absent.npy") && e.contains("no such file"),
            "{e}"
        );
    }

    #[test]
    fn int32_labels_are_accepted_and_bytes_rejected() {
        // Hand-made headers: int32 and uint8 (NumPy's layout, version 1.0).
        fn write(path: &Path, descr: &str, data: &[u8], n: usize) {
            let mut h =
                format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': ({n},), }}");
            while (10 + h.len() + 1) % 64 != 0 {
                h.push(' ');
            }
            h.push('\n');
            let mut bytes = b"\x93NUMPY\x01\x00".to_vec();
            bytes.extend_from_slice(&(h.len() as u16).to_le_bytes());
            bytes.extend_from_slice(h.as_bytes());
            bytes.extend_from_slice(data);
            std::fs::write(path, bytes).unwrap();
        }
        let p = tmp("i32.npy");
        let data: Vec<u8> = [7i32, 0, 3].iter().flat_map(|v| v.to_le_bytes()).collect();
        write(&p, "<i4", &data, 3);
        assert_eq!(load_labels(&p).unwrap(), [7, 0, 3]);
        let p = tmp("u8.npy");
        write(&p, "|u1", &[1, 2], 2);
        let e = load_labels(&p).unwrap_err();
        assert!(e.contains("u8.npy") && e.contains("uint8 (|u1)"), "{e}");
    }
}
