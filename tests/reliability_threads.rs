//! Threads: one loaded model shared by 8 threads gives every output bit-identical to the
//! single-threaded result; training from one seed reaches bit-identical weights after several
//! steps whatever the size of the thread pool (1, 2 or 4 workers).
//!
//! Sharing is sound by construction: `Module: Send + Sync`, a `Tensor` is an `Arc` over
//! immutable storage plus a layout, `forward` takes `&self`, and the lazily built inference
//! caches (folded batch norm, packed weights) sit behind a `Mutex` / `OnceLock`; the compiler
//! checks the `Sync` bound at the `std::thread::scope` below.

use tessera::core::{no_grad, Tensor};
use tessera::models::data::digits_split;
use tessera::models::module::named_tensors;
use tessera::models::train::{TrainConfig, Trainer};
use tessera::models::{create, weights, Mode, Model, Overrides};

fn loaded(arch: &str) -> Box<dyn Model> {
    let dir = std::env::temp_dir().join(format!("tessera-threads-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let p = dir.join(format!("{arch}.safetensors"));
    let src = create(arch, &Overrides::default(), 7).unwrap();
    weights::save(src.as_ref(), &p, &Default::default()).unwrap();
    let mut m = create(arch, &Overrides::default(), 0).unwrap();
    weights::load(m.as_mut(), &p).unwrap();
    m.set_mode(Mode::Eval);
    m
}

fn bits(t: &Tensor) -> Vec<u32> {
    t.to_vec().iter().map(|v| v.to_bits()).collect()
}

#[test]
fn one_model_shared_by_eight_threads_is_bit_identical() {
    const THREADS: usize = 8;
    const PER_THREAD: usize = 200;
    for arch in ["vit_digits", "mobilenetv2_digits"] {
        let model = loaded(arch);
        let [c, h, w] = model.input_chw();
        let input = |i: usize| Tensor::randn(&[1 + i % 3, c, h, w], i as u64);
        let reference: Vec<Vec<u32>> = {
            let _g = no_grad();
            (0..THREADS * PER_THREAD)
                .map(|i| bits(&model.forward(&input(i)).unwrap()))
                .collect()
        };
        let model = model.as_ref();
        std::thread::scope(|s| {
            for t in 0..THREADS {
                let reference = &reference;
                s.spawn(move || {
                    let _g = no_grad();
                    for k in 0..PER_THREAD {
                        // Interleaved: each thread runs a different slice of the inputs.
                        let i = k * THREADS + t;
                        let y = model.forward(&input(i)).unwrap();
                        assert!(
                            bits(&y) == reference[i],
                            "{arch}: input {i} differs on thread {t}"
                        );
                    }
                });
            }
        });
    }
}

/// Weights after `steps` training steps of `arch` on a rayon pool of `threads` workers.
fn train_bits(arch: &str, threads: usize, steps: usize) -> Vec<u32> {
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .unwrap();
    pool.install(|| {
        let (train, test) = digits_split().unwrap();
        let batch = 16;
        let train = train.subset(&(0..batch * steps).collect::<Vec<_>>());
        let test = test.subset(&[0, 1]);
        let mut model = create(arch, &Overrides::default(), 11).unwrap();
        let cfg = TrainConfig {
            epochs: 1,
            batch,
            lr: 1e-3,
            warmup_epochs: 0,
            seed: 5,
            ..TrainConfig::default()
        };
        let mut t = Trainer::new(cfg, model.as_mut(), train.len()).unwrap();
        t.run_epoch(model.as_mut(), &train, &test, &mut |_| {})
            .unwrap();
        assert_eq!(t.step, steps);
        named_tensors(model.as_ref())
            .iter()
            .flat_map(|(_, t, _)| bits(t))
            .collect()
    })
}

#[test]
fn training_is_bit_identical_for_1_2_and_4_threads() {
    for arch in ["vit_digits", "mobilenetv3_digits"] {
        let one = train_bits(arch, 1, 4);
        for threads in [2, 4] {
            assert!(
                train_bits(arch, threads, 4) == one,
                "{arch}: weights after 4 steps differ between 1 and {threads} threads"
            );
        }
    }
}
