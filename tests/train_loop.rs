//! The training loop on the embedded digits with a small MLP: a clear learning signal, and a
//! resumed run that reaches bit-identical weights.

use tessera::core::{Rng, Tensor};
use tessera::models::data::{digits_split, Augment};
use tessera::models::layers::Linear;
use tessera::models::module::{child, named_tensors};
use tessera::models::train::{correct_topk, evaluate, OptKind, TrainConfig, Trainer};
use tessera::models::{Mode, Model, Module, TensorKind};

/// `fc1` 64 -> 48, ReLU, `fc2` 48 -> 10 on flattened 8x8 digits.
struct Mlp {
    fc1: Linear,
    fc2: Linear,
}

impl Mlp {
    fn new(seed: u64) -> Self {
        let mut rng = Rng::new(seed);
        Mlp {
            fc1: Linear::new(64, 48, true, &mut rng),
            fc2: Linear::new(48, 10, true, &mut rng),
        }
    }
}

impl Module for Mlp {
    fn forward(&self, x: &Tensor) -> tessera::models::Result<Tensor> {
        self.forward_stages(x, &mut |_, _| {})
    }
    fn visit(&self, prefix: &str, f: &mut dyn FnMut(&str, &Tensor, TensorKind)) {
        self.fc1.visit(&child(prefix, "fc1"), f);
        self.fc2.visit(&child(prefix, "fc2"), f);
    }
    fn visit_mut(&mut self, prefix: &str, f: &mut dyn FnMut(&str, &mut Tensor, TensorKind)) {
        self.fc1.visit_mut(&child(prefix, "fc1"), f);
        self.fc2.visit_mut(&child(prefix, "fc2"), f);
    }
    fn set_mode(&mut self, _mode: Mode) {}
}

impl Model for Mlp {
    fn arch(&self) -> &str {
        "test_mlp"
    }
    fn input_chw(&self) -> [usize; 3] {
        [1, 8, 8]
    }
    fn num_classes(&self) -> usize {
        10
    }
    fn forward_stages(
        &self,
        x: &Tensor,
        stage: &mut dyn FnMut(&str, &Tensor),
    ) -> tessera::models::Result<Tensor> {
        let h = self.fc1.forward(&x.flatten(1, 3)?)?.relu();
        stage("fc1", &h);
        let y = self.fc2.forward(&h)?;
        stage("fc2", &y);
        Ok(y)
    }
}

/// With crop augmentation, so the resume test also covers the per-batch augmentation seeds.
fn cfg_aug(epochs: usize) -> TrainConfig {
    TrainConfig {
        augment: Some(Augment {
            crop_padding: 1,
            hflip: false,
            ..Augment::default()
        }),
        ..cfg(epochs)
    }
}

fn cfg(epochs: usize) -> TrainConfig {
    TrainConfig {
        epochs,
        batch: 32,
        lr: 1e-2,
        opt: OptKind::AdamW,
        weight_decay: 0.01,
        warmup_epochs: 1,
        augment: None,
        seed: 7,
        ..TrainConfig::default()
    }
}

#[test]
fn mlp_learns_digits() {
    let (train, test) = digits_split().unwrap();
    let mut m = Mlp::new(1);
    let before = evaluate(&mut m, &test, 128).unwrap();
    let mut t = Trainer::new(cfg(6), &mut m, train.len()).unwrap();
    let mut steps = 0;
    let mut last = None;
    while !t.finished() {
        last = Some(
            t.run_epoch(&mut m, &train, &test, &mut |_| steps += 1)
                .unwrap(),
        );
    }
    let last = last.unwrap();
    assert_eq!(steps, 6 * 1437usize.div_ceil(32));
    assert!(before.top1 < 0.3, "untrained accuracy {}", before.top1);
    assert!(
        last.test_acc >= 0.9,
        "test accuracy after 6 epochs: {}",
        last.test_acc
    );
    assert!(last.test_top5 >= last.test_acc);
}

#[test]
fn resumed_run_is_bit_identical() {
    let (train, test) = digits_split().unwrap();
    let dir = std::env::temp_dir().join(format!("tessera-train-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let ckpt = dir.join("ckpt.safetensors");

    let mut a = Mlp::new(3);
    let mut ta = Trainer::new(cfg_aug(4), &mut a, train.len()).unwrap();
    while !ta.finished() {
        ta.run_epoch(&mut a, &train, &test, &mut |_| {}).unwrap();
    }

    let mut b = Mlp::new(3);
    let mut tb = Trainer::new(cfg_aug(4), &mut b, train.len()).unwrap();
    for _ in 0..2 {
        tb.run_epoch(&mut b, &train, &test, &mut |_| {}).unwrap();
    }
    tb.save_checkpoint(&b, &ckpt).unwrap();
    let mut c = Mlp::new(99);
    let mut tc = Trainer::resume(cfg_aug(4), &mut c, train.len(), &ckpt).unwrap();
    assert_eq!((tc.epoch, tc.step), (2, 2 * 45));
    while !tc.finished() {
        tc.run_epoch(&mut c, &train, &test, &mut |_| {}).unwrap();
    }
    for ((n, x, _), (_, y, _)) in named_tensors(&a).into_iter().zip(named_tensors(&c)) {
        assert!(
            x.to_vec()
                .iter()
                .zip(y.to_vec())
                .all(|(p, q)| p.to_bits() == q.to_bits()),
            "{n} differs after resume"
        );
    }
    // A checkpoint for another optimizer or seed is refused with a clear message.
    let other = TrainConfig {
        seed: 8,
        ..cfg_aug(4)
    };
    let err = Trainer::resume(other, &mut Mlp::new(3), train.len(), &ckpt)
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("--seed 7"), "{err}");
}

#[test]
fn topk_counts() {
    let logits = [0.1, 0.9, 0.0, 0.5, 0.2, 0.3];
    assert_eq!(correct_topk(&logits, 3, &[1, 2], 1), (1, 1));
    assert_eq!(correct_topk(&logits, 3, &[1, 2], 2), (1, 2));
    assert!(Trainer::new(TrainConfig { batch: 0, ..cfg(1) }, &mut Mlp::new(0), 10).is_err());
}
