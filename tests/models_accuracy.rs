//! Numerical accuracy against float64: for a small variant of each family (ViT, MobileNetV2,
//! MobileNetV3, SE-ResNet) tessera's float32 eval logits, training-mode logits and the
//! gradient of EVERY parameter must be at most 2x as far from the float64 truth as PyTorch's
//! own float32 result is, on every ISA path the host has (the loss is printed beside them).
//!
//! The truth is timm run in float64 on the same float16-representable weights and inputs, and
//! PyTorch float32's max |f32 - f64| per tensor is recorded beside it
//! (`scripts/fixtures_accuracy.py`, `tests/fixtures/accuracy/`; the median over PyTorch runs
//! at 1, 2 and 4 threads, since its reduction order and so its error change with the thread
//! count). Errors are max absolute
//! differences per tensor; the allowance is `2 * max(pytorch, 1e-6 * scale)`, `scale` the
//! largest |truth| among the gradients (for the gradients) or of the tensor itself (logits,
//! loss): some gradients are zero in exact arithmetic (the shift of a batch norm whose output
//! feeds only training-mode batch norms) and both engines return rounding noise there.
//!
//! Each test re-runs itself once per ISA in a child process with `TESSERA_ISA` set (the ISA
//! is chosen once per process). Full-size SE-ResNet-101 (eval at 224x224, gradients at
//! 2x3x64x64) is `#[ignore]`d: write its fixture with
//! `python3 scripts/fixtures_accuracy.py --only-full --full DIR` and run
//! `TESSERA_ACCURACY_FULL=DIR cargo test --release --test models_accuracy -- --ignored`.

use std::path::{Path, PathBuf};
use std::process::Command;
use tessera::core::{no_grad, Tensor};
use tessera::kernels::Isa;
use tessera::models::archs::resnet::{build_config, ResNetConfig};
use tessera::models::grads;
use tessera::models::io::safetensors::{self, SafeTensors};
use tessera::models::io::{npy, Values};
use tessera::models::{create, weights, Model, Overrides};

/// How many times PyTorch float32's error tessera may be.
const FACTOR: f64 = 2.0;
/// The floor of the allowance, relative to the scale of the tensor family.
const FLOOR: f64 = 1e-6;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/accuracy")
}

fn read_f32(p: &Path) -> Tensor {
    let a = npy::read(p).unwrap_or_else(|e| panic!("{e}"));
    match a.values {
        Values::F32(v) => Tensor::from_vec(v, &a.shape).unwrap(),
        Values::I64(_) => panic!("{}: expected float32", p.display()),
    }
}

fn read_labels(p: &Path) -> Vec<i64> {
    match npy::read(p).unwrap_or_else(|e| panic!("{e}")).values {
        Values::I64(v) => v,
        Values::F32(_) => panic!("{}: expected int64", p.display()),
    }
}

fn get<'a>(t: &'a SafeTensors, name: &str) -> &'a [f32] {
    t.tensors
        .get(name)
        .unwrap_or_else(|| panic!("the truth file has no {name:?}"))
        .as_f32()
        .expect("f32")
}

fn scalar(t: &SafeTensors, name: &str) -> f64 {
    get(t, name)[0] as f64
}

/// One compared tensor: its name, tessera's and PyTorch's max |x - truth|, the allowance's
/// scale.
struct Row {
    key: String,
    ours: f64,
    torch: f64,
    scale: f64,
    floor_scale: f64,
}

impl Row {
    fn allowed(&self) -> f64 {
        FACTOR * self.torch.max(FLOOR * self.floor_scale)
    }
    fn ratio(&self) -> f64 {
        self.ours / self.torch.max(FLOOR * self.floor_scale)
    }
}

/// max |ours - (hi + lo)| in f64 (the truth kept to ~48 bits).
fn err_hi_lo(ours: &[f32], hi: &[f32], lo: &[f32]) -> f64 {
    assert_eq!(ours.len(), hi.len());
    ours.iter()
        .zip(hi.iter().zip(lo))
        .map(|(&o, (&h, &l))| (o as f64 - (h as f64 + l as f64)).abs())
        .fold(0.0, f64::max)
}

fn max_abs(v: &[f32]) -> f64 {
    v.iter().fold(0f64, |m, &x| m.max((x as f64).abs()))
}

/// Compares a model's eval logits, training logits, loss and gradients with the truth; returns
/// the rows (printed) and the failures.
fn compare(
    case: &str,
    model: &mut dyn Model,
    dir: &Path,
    eval_input: Option<&str>,
) -> (Vec<Row>, Vec<String>) {
    weights::load(model, dir.join(format!("{case}.weights.safetensors"))).unwrap();
    let truth = safetensors::read(dir.join(format!("{case}.truth.safetensors"))).unwrap();
    let x = read_f32(&dir.join(format!("{case}.input.npy")));
    let labels = read_labels(&dir.join(format!("{case}.labels.npy")));
    let x_eval = eval_input.map(|f| read_f32(&dir.join(format!("{case}.{f}"))));
    let eval_logits = {
        let _g = no_grad();
        model
            .forward(x_eval.as_ref().unwrap_or(&x))
            .unwrap()
            .to_vec()
    };
    let g = grads::compute(model, &x, &labels).unwrap();
    let mut rows = Vec::new();
    for (key, ours) in [
        ("eval.logits", eval_logits),
        ("train.logits", g.logits.to_vec()),
        ("loss", vec![g.loss]),
    ] {
        let hi = get(&truth, key);
        let lo = get(&truth, &format!("{key}.lo"));
        let scale = max_abs(hi);
        rows.push(Row {
            key: key.into(),
            ours: err_hi_lo(&ours, hi, lo),
            torch: scalar(&truth, &format!("torch.{key}")),
            scale,
            floor_scale: scale,
        });
    }
    let gmax = g
        .grads
        .iter()
        .map(|(n, _)| max_abs(get(&truth, &format!("grad.{n}"))))
        .fold(0.0, f64::max);
    let n_truth = truth
        .tensors
        .keys()
        .filter(|k| k.starts_with("grad."))
        .count();
    assert_eq!(g.grads.len(), n_truth, "{case}: number of gradients");
    for (name, t) in &g.grads {
        let key = format!("grad.{name}");
        let hi = get(&truth, &key);
        let ours = t.to_vec();
        assert_eq!(ours.len(), hi.len(), "{case}: size of {key}");
        // The truth is stored rounded to f32: add its largest rounding error (conservative).
        let e = ours
            .iter()
            .zip(hi)
            .map(|(&o, &h)| (o as f64 - h as f64).abs())
            .fold(0.0, f64::max)
            + scalar(&truth, &format!("round.{key}"));
        rows.push(Row {
            torch: scalar(&truth, &format!("torch.{key}")),
            key,
            ours: e,
            scale: max_abs(hi),
            floor_scale: gmax,
        });
    }
    let failures = rows
        .iter()
        // The loss is reported, not asserted: one scalar, a projection of the training logits'
        // error (asserted), so one sample of noise against one sample of PyTorch's.
        .filter(|r| r.key != "loss" && (r.ours.is_nan() || r.ours > r.allowed()))
        .map(|r| {
            format!(
                "{case} {}: {:.3e} vs PyTorch f32 {:.3e} ({:.1}x)",
                r.key,
                r.ours,
                r.torch,
                r.ratio()
            )
        })
        .collect();
    (rows, failures)
}

fn report(case: &str, rows: &[Row]) {
    let isa = Isa::current().map(|i| i.name()).unwrap_or("?");
    for r in rows.iter().take(3) {
        println!(
            "{case} [{isa}] {}: tessera {:.2e}, PyTorch f32 {:.2e} (relative to max |truth|), \
             ratio {:.2}",
            r.key,
            r.ours / r.scale,
            r.torch / r.scale,
            r.ratio()
        );
    }
    let grads = &rows[3..];
    let worst = grads
        .iter()
        .max_by(|a, b| a.ratio().total_cmp(&b.ratio()))
        .expect("gradients");
    let over1 = grads.iter().filter(|r| r.ratio() > 1.0).count();
    println!(
        "{case} [{isa}] {} gradients: worst ratio {:.2} ({}: tessera {:.2e}, PyTorch f32 {:.2e}); \
         {over1} above PyTorch's error",
        grads.len(),
        worst.ratio(),
        worst.key,
        worst.ours,
        worst.torch
    );
}

/// Runs `body` in this process if `TESSERA_ISA` is set; otherwise re-runs test `name` once
/// per ISA the host has, each in a child process with `TESSERA_ISA` set, and fails if any did.
fn on_every_isa(name: &str, ignored: bool, body: impl FnOnce()) {
    if std::env::var_os("TESSERA_ISA").is_some() {
        body();
        return;
    }
    let exe = std::env::current_exe().expect("test executable");
    let mut failed = Vec::new();
    for isa in Isa::available() {
        let mut cmd = Command::new(&exe);
        cmd.args([name, "--exact", "--nocapture", "--test-threads=1"]);
        if ignored {
            cmd.arg("--ignored");
        }
        let out = cmd
            .env("TESSERA_ISA", isa.name())
            .output()
            .expect("run the test binary");
        print!("{}", String::from_utf8_lossy(&out.stdout));
        eprint!("{}", String::from_utf8_lossy(&out.stderr));
        if !out.status.success() {
            failed.push(isa.name());
        }
    }
    assert!(failed.is_empty(), "{name} failed on {failed:?}");
}

fn run_small(case: &str, mut model: Box<dyn Model>) {
    let (rows, failures) = compare(case, model.as_mut(), &root(), None);
    report(case, &rows);
    assert!(
        failures.is_empty(),
        "more than {FACTOR}x PyTorch f32's error against float64:\n{}",
        failures.join("\n")
    );
}

fn classes10() -> Overrides {
    Overrides {
        num_classes: Some(10),
        ..Default::default()
    }
}

#[test]
fn vit_within_2x_of_pytorch_f32() {
    on_every_isa("vit_within_2x_of_pytorch_f32", false, || {
        let o = Overrides {
            img_size: Some(32),
            patch_size: Some(8),
            embed_dim: Some(48),
            depth: Some(4),
            num_heads: Some(3),
            num_classes: Some(10),
            ..Default::default()
        };
        run_small("vit", create("vit_tiny_patch16_224", &o, 0).unwrap());
    });
}

#[test]
fn mobilenetv2_within_2x_of_pytorch_f32() {
    on_every_isa("mobilenetv2_within_2x_of_pytorch_f32", false, || {
        run_small(
            "mobilenetv2",
            create("mobilenetv2_035", &classes10(), 0).unwrap(),
        );
    });
}

#[test]
fn mobilenetv3_within_2x_of_pytorch_f32() {
    on_every_isa("mobilenetv3_within_2x_of_pytorch_f32", false, || {
        run_small(
            "mobilenetv3",
            create("mobilenetv3_small_050", &classes10(), 0).unwrap(),
        );
    });
}

#[test]
fn seresnet_within_2x_of_pytorch_f32() {
    on_every_isa("seresnet_within_2x_of_pytorch_f32", false, || {
        let cfg = ResNetConfig {
            layers: vec![2, 2, 2, 2],
            channels: vec![8, 16, 32, 64],
            se: true,
            num_classes: 10,
            ..ResNetConfig::for_arch("seresnet50").unwrap()
        };
        run_small(
            "seresnet",
            Box::new(build_config("seresnet_small", &cfg, 0).unwrap()),
        );
    });
}

/// Full-size SE-ResNet-101: eval logits at 1x3x224x224 and every gradient at 2x3x64x64.
#[test]
#[ignore = "needs TESSERA_ACCURACY_FULL (scripts/fixtures_accuracy.py --full DIR); minutes"]
fn seresnet101_full_size_within_2x_of_pytorch_f32() {
    let Some(dir) = std::env::var_os("TESSERA_ACCURACY_FULL") else {
        println!(
            "skipped: set TESSERA_ACCURACY_FULL to the directory written by \
             `python3 scripts/fixtures_accuracy.py --only-full --full DIR`"
        );
        return;
    };
    let dir = PathBuf::from(dir);
    if !dir.join("seresnet101.truth.safetensors").exists() {
        println!(
            "skipped: {} has no seresnet101.truth.safetensors (write it with \
             `python3 scripts/fixtures_accuracy.py --only-full --full DIR`)",
            dir.display()
        );
        return;
    }
    on_every_isa(
        "seresnet101_full_size_within_2x_of_pytorch_f32",
        true,
        || {
            let mut m = create("seresnet101", &Overrides::default(), 0).unwrap();
            let (rows, failures) = compare("seresnet101", m.as_mut(), &dir, Some("eval_input.npy"));
            report("seresnet101", &rows);
            assert!(
                failures.is_empty(),
                "more than {FACTOR}x PyTorch f32's error against float64:\n{}",
                failures.join("\n")
            );
        },
    );
}
