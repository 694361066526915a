//! Checkpoints are validated as a whole before any of them is used: corrupt optimizer state
//! (short, long, integer-typed or unknown tensors, a non-integer step count) is an error that
//! names the problem, never a panic, a silent reset or a state carried into the next save; a
//! failed resume leaves the model's weights untouched.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use tessera::models::checkpoint::Checkpoint;
use tessera::models::data::{digits_split, Dataset};
use tessera::models::io::safetensors;
use tessera::models::module::named_tensors;
use tessera::models::optim::{AdamW, Optimizer, OptimizerState, Sgd};
use tessera::models::train::{OptKind, TrainConfig, Trainer};
use tessera::models::{create, ModelError, Overrides};

fn scratch(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!(
        "tessera-reliability-ckpt-{}-{name}",
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn cfg(opt: OptKind) -> TrainConfig {
    TrainConfig {
        epochs: 2,
        batch: 8,
        lr: 1e-3,
        opt,
        warmup_epochs: 0,
        seed: 3,
        ..TrainConfig::default()
    }
}

fn small_data() -> (Dataset, Dataset) {
    let (train, test) = digits_split().unwrap();
    (
        train.subset(&(0..16).collect::<Vec<_>>()),
        test.subset(&(0..8).collect::<Vec<_>>()),
    )
}

/// A vit_digits checkpoint after one epoch of two steps.
fn checkpoint(dir: &Path, opt: OptKind) -> PathBuf {
    let (train, test) = small_data();
    let mut model = create("vit_digits", &Overrides::default(), 3).unwrap();
    let mut t = Trainer::new(cfg(opt), model.as_mut(), train.len()).unwrap();
    t.run_epoch(model.as_mut(), &train, &test, &mut |_| {})
        .unwrap();
    let p = dir.join(format!("{}.safetensors", opt.name()));
    t.save_checkpoint(model.as_ref(), &p).unwrap();
    p
}

/// One tensor of a hand-made safetensors file.
struct Raw {
    name: String,
    dtype: &'static str,
    shape: Vec<usize>,
    bytes: Vec<u8>,
}

/// Rewrites checkpoint `src` to `dst` after `edit` changes its tensors (any dtype) and
/// metadata.
fn rewrite(
    src: &Path,
    dst: &Path,
    edit: impl FnOnce(&mut Vec<Raw>, &mut BTreeMap<String, String>),
) {
    let file = safetensors::read(src).unwrap();
    let mut raws: Vec<Raw> = file
        .tensors
        .iter()
        .map(|(n, t)| Raw {
            name: n.clone(),
            dtype: "F32",
            shape: t.shape.clone(),
            bytes: t
                .as_f32()
                .unwrap()
                .iter()
                .flat_map(|v| v.to_le_bytes())
                .collect(),
        })
        .collect();
    let mut meta = file.metadata.clone();
    edit(&mut raws, &mut meta);
    let mut header = String::from("{\"__metadata__\":{");
    let m: Vec<String> = meta.iter().map(|(k, v)| format!("{k:?}:{v:?}")).collect();
    header.push_str(&m.join(","));
    header.push('}');
    let mut offset = 0;
    for r in &raws {
        header.push_str(&format!(
            ",{:?}:{{\"dtype\":\"{}\",\"shape\":{:?},\"data_offsets\":[{},{}]}}",
            r.name,
            r.dtype,
            r.shape,
            offset,
            offset + r.bytes.len()
        ));
        offset += r.bytes.len();
    }
    header.push('}');
    let mut out = (header.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(header.as_bytes());
    for r in &raws {
        out.extend_from_slice(&r.bytes);
    }
    std::fs::write(dst, out).unwrap();
}

fn f32_bytes(n: usize) -> Vec<u8> {
    (0..n)
        .flat_map(|i| (i as f32 * 1e-3).to_le_bytes())
        .collect()
}

/// Resumes `path` into a fresh model; returns the error and checks the weights did not move.
fn resume_error(path: &Path, opt: OptKind) -> String {
    let mut model = create("vit_digits", &Overrides::default(), 99).unwrap();
    let before: Vec<Vec<f32>> = named_tensors(model.as_ref())
        .iter()
        .map(|(_, t, _)| t.to_vec())
        .collect();
    let err = match Trainer::resume(cfg(opt), model.as_mut(), 16, path) {
        Ok(_) => panic!("{} resumed although it is corrupt", path.display()),
        Err(e) => e,
    };
    let after: Vec<Vec<f32>> = named_tensors(model.as_ref())
        .iter()
        .map(|(_, t, _)| t.to_vec())
        .collect();
    assert!(before == after, "a failed resume changed the weights");
    err.to_string()
}

const HEAD_SQ: &str = "__optim__.adamw.exp_avg_sq.head.weight";
const HEAD_AVG: &str = "__optim__.adamw.exp_avg.head.weight";

fn find<'a>(raws: &'a mut [Raw], name: &str) -> &'a mut Raw {
    raws.iter_mut().find(|r| r.name == name).unwrap()
}

#[test]
fn a_valid_checkpoint_resumes_and_trains_on() {
    let d = scratch("valid");
    let p = checkpoint(&d, OptKind::AdamW);
    let (train, test) = small_data();
    let mut model = create("vit_digits", &Overrides::default(), 99).unwrap();
    let mut t = Trainer::resume(cfg(OptKind::AdamW), model.as_mut(), train.len(), &p).unwrap();
    assert_eq!((t.epoch, t.step), (1, 2));
    t.run_epoch(model.as_mut(), &train, &test, &mut |_| {})
        .unwrap();
    assert_eq!(t.step, 4);
    let p2 = d.join("sgd.safetensors");
    let _ = checkpoint(&d, OptKind::Sgd);
    let mut model = create("vit_digits", &Overrides::default(), 99).unwrap();
    Trainer::resume(cfg(OptKind::Sgd), model.as_mut(), 16, &p2).unwrap();
}

#[test]
fn a_short_second_moment_is_an_error_not_a_panic() {
    let d = scratch("short");
    let p = checkpoint(&d, OptKind::AdamW);
    let bad = d.join("bad.safetensors");
    rewrite(&p, &bad, |raws, _| {
        let r = find(raws, HEAD_SQ);
        r.shape = vec![3];
        r.bytes = f32_bytes(3);
    });
    let e = resume_error(&bad, OptKind::AdamW);
    assert!(
        e.contains("adamw.exp_avg_sq.head.weight") && e.contains("has 3 values"),
        "{e}"
    );
}

#[test]
fn wrong_lengths_wrong_dtypes_and_unknown_keys_are_all_reported() {
    let d = scratch("many");
    let p = checkpoint(&d, OptKind::AdamW);
    let bad = d.join("bad.safetensors");
    rewrite(&p, &bad, |raws, meta| {
        // An over-long second moment.
        let r = find(raws, "__optim__.adamw.exp_avg_sq.norm.weight");
        let n = r.shape[0] * 2;
        r.shape = vec![n];
        r.bytes = f32_bytes(n);
        // A wrong-length first moment.
        let r = find(raws, HEAD_AVG);
        r.shape = vec![5];
        r.bytes = f32_bytes(5);
        // An optimizer tensor stored as I64.
        let r = find(raws, "__optim__.adamw.exp_avg.head.bias");
        r.dtype = "I64";
        r.bytes = vec![0; r.shape[0] * 8];
        // An unknown optimizer key and one for no parameter.
        raws.push(Raw {
            name: "__optim__.adamw.velocity.head.bias".into(),
            dtype: "F32",
            shape: vec![10],
            bytes: f32_bytes(10),
        });
        raws.push(Raw {
            name: "__optim__.adamw.exp_avg.no.such.param".into(),
            dtype: "F32",
            shape: vec![1],
            bytes: f32_bytes(1),
        });
        meta.insert("__optim__.adamw.lr".into(), "1e-3".into());
    });
    let e = resume_error(&bad, OptKind::AdamW);
    for needle in [
        "exp_avg_sq.norm.weight\" has 128 values but parameter \"norm.weight\" has 64",
        "exp_avg.head.weight\" has 5 values",
        "exp_avg.head.bias\" has dtype I64",
        "unknown AdamW optimizer tensor \"adamw.velocity.head.bias\"",
        "belongs to no parameter",
        "unknown AdamW optimizer scalar \"adamw.lr\"",
    ] {
        assert!(e.contains(needle), "missing {needle:?} in:\n{e}");
    }
}

#[test]
fn step_counts_must_be_finite_integers_that_agree() {
    let d = scratch("step");
    let p = checkpoint(&d, OptKind::AdamW);
    for (v, needle) in [
        ("NaN", "not a finite non-negative integer"),
        ("inf", "not a finite non-negative integer"),
        ("-1", "not a finite non-negative integer"),
        ("1.5", "not a finite non-negative integer"),
        ("seven", "not a number"),
        ("7", "is 7 but the checkpoint completed 2 steps"),
    ] {
        let bad = d.join("bad.safetensors");
        rewrite(&p, &bad, |_, meta| {
            meta.insert("__optim__.adamw.step".into(), v.into());
        });
        let e = resume_error(&bad, OptKind::AdamW);
        assert!(e.contains(needle), "step {v}: {e}");
    }
    let bad = d.join("bad.safetensors");
    rewrite(&p, &bad, |_, meta| {
        meta.insert("tessera.step".into(), "2.5".into());
    });
    let e = resume_error(&bad, OptKind::AdamW);
    assert!(e.contains("not a non-negative integer"), "{e}");
}

#[test]
fn model_problems_and_optimizer_problems_come_together() {
    let d = scratch("together");
    let p = checkpoint(&d, OptKind::Sgd);
    let bad = d.join("bad.safetensors");
    rewrite(&p, &bad, |raws, _| {
        raws.retain(|r| r.name != "head.bias");
        let r = raws
            .iter_mut()
            .find(|r| r.name.starts_with("__optim__.sgd.momentum_buffer.blocks.0"))
            .unwrap();
        r.shape = vec![1];
        r.bytes = f32_bytes(1);
    });
    let e = resume_error(&bad, OptKind::Sgd);
    assert!(e.contains("missing tensor \"head.bias\""), "{e}");
    assert!(e.contains("momentum_buffer.blocks.0"), "{e}");
    // Another optimizer's checkpoint.
    let e = resume_error(&p, OptKind::AdamW);
    assert!(e.contains("--opt sgd"), "{e}");
}

#[test]
fn checkpoint_api_validates_without_applying() {
    let d = scratch("api");
    let p = checkpoint(&d, OptKind::AdamW);
    let ckpt = Checkpoint::read(&p).unwrap();
    let model = create("vit_digits", &Overrides::default(), 1).unwrap();
    let opt = AdamW::new(0.9, 0.999, 1e-8, 0.05).unwrap();
    ckpt.validate(model.as_ref(), &opt, "adamw", 3).unwrap();
    let other = create(
        "vit_digits",
        &Overrides {
            num_classes: Some(5),
            ..Overrides::default()
        },
        1,
    )
    .unwrap();
    match ckpt.validate(other.as_ref(), &opt, "adamw", 3) {
        Err(ModelError::Weights { problems, .. }) => {
            assert!(problems.iter().any(|p| p.contains("head.weight")))
        }
        other => panic!("{other:?}"),
    }
}

/// The optimizers check a state given to them directly, too: no panic on the next step, no
/// silent reset of a mismatched moment.
#[test]
fn optimizers_reject_bad_states_given_directly() {
    let mut model = create("vit_digits", &Overrides::default(), 1).unwrap();
    let mut adamw = AdamW::new(0.9, 0.999, 1e-8, 0.0).unwrap();
    let mut state = OptimizerState::default();
    state.scalars.insert("adamw.step".into(), f64::NAN);
    assert!(adamw.load_state(&state).is_err());
    state.scalars.insert("adamw.step".into(), 1.0);
    state
        .tensors
        .insert("adamw.exp_avg.head.bias".into(), vec![0.0; 10]);
    state
        .tensors
        .insert("adamw.exp_avg_sq.head.bias".into(), vec![0.0; 3]);
    adamw.load_state(&state).unwrap();
    // One forward and backward so head.bias has a gradient.
    tessera::models::module::set_requires_grad(model.as_mut(), true);
    let x = tessera::core::Tensor::zeros(&[2, 1, 8, 8]);
    let loss = model
        .forward(&x)
        .unwrap()
        .cross_entropy(&[1, 2], 0.0)
        .unwrap();
    loss.backward().unwrap();
    let before = named_tensors(model.as_ref())
        .iter()
        .map(|(_, t, _)| t.to_vec())
        .collect::<Vec<_>>();
    let e = adamw
        .step(model.as_mut(), 1e-3, 1.0)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("exp_avg_sq of \"head.bias\" has 3 values"),
        "{e}"
    );
    let after = named_tensors(model.as_ref())
        .iter()
        .map(|(_, t, _)| t.to_vec())
        .collect::<Vec<_>>();
    assert!(before == after, "a refused step changed the weights");
    assert_eq!(adamw.steps(), 1);

    let mut sgd = Sgd::new(0.9, true, 0.0).unwrap();
    let mut s = OptimizerState::default();
    s.scalars.insert("sgd".into(), 1.0);
    s.tensors
        .insert("sgd.momentum_buffer.head.bias".into(), vec![0.0; 4]);
    sgd.load_state(&s).unwrap();
    let e = sgd.step(model.as_mut(), 1e-3, 1.0).unwrap_err().to_string();
    assert!(
        e.contains("momentum buffer of \"head.bias\" has 4 values"),
        "{e}"
    );
    s.tensors.insert("momentum.x".into(), vec![]);
    assert!(sgd.load_state(&s).is_err());
}
