//! Planned inference under concurrency: the plan keeps the rayon pool awake while it runs
//! (`tessera::models::plan::awake`), so these check that it neither deadlocks nor changes a
//! bit when plans run on pools of 1 to 4 threads, from several OS threads at once sharing one
//! pool, and from inside the pool's own parallel iterators (one plan per task).

use rayon::prelude::*;
use tessera::core::Tensor;
use tessera::models::plan::Plan;
use tessera::models::{create, Overrides};

fn small() -> Overrides {
    Overrides {
        img_size: Some(48),
        ..Overrides::default()
    }
}

fn pool(threads: usize) -> rayon::ThreadPool {
    rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .unwrap()
}

fn plan_and_input(arch: &str, seed: u64) -> (Plan, Vec<f32>) {
    let m = create(arch, &small(), 0).unwrap();
    let [c, h, w] = m.input_chw();
    let x = Tensor::randn(&[1, c, h, w], seed).to_vec();
    (m.plan([1, c, h, w]).unwrap(), x)
}

#[test]
fn a_plan_gives_the_same_bits_on_every_pool_size() {
    for arch in ["mobilenetv2_100", "seresnet50", "vit_digits"] {
        let (mut plan, x) = plan_and_input(arch, 3);
        let want = pool(1).install(|| plan.run(&x).unwrap().to_vec());
        for threads in [2, 3, 4] {
            let got = pool(threads).install(|| plan.run(&x).unwrap().to_vec());
            assert_eq!(got, want, "{arch} on {threads} threads");
        }
    }
}

#[test]
fn plans_run_concurrently_from_os_threads_and_from_pool_tasks() {
    let arch = "mobilenetv2_100";
    let inputs: Vec<Vec<f32>> = (0..4).map(|i| plan_and_input(arch, 10 + i).1).collect();
    let want: Vec<Vec<f32>> = {
        let (mut plan, _) = plan_and_input(arch, 0);
        let p1 = pool(1);
        inputs
            .iter()
            .map(|x| p1.install(|| plan.run(x).unwrap().to_vec()))
            .collect()
    };
    let shared = pool(2);
    // Four OS threads, each with its own plan, all entering the same two-thread pool.
    std::thread::scope(|s| {
        for (x, w) in inputs.iter().zip(&want) {
            let shared = &shared;
            s.spawn(move || {
                let (mut plan, _) = plan_and_input(arch, 0);
                for _ in 0..5 {
                    let y = shared.install(|| plan.run(x).unwrap().to_vec());
                    assert_eq!(&y, w);
                }
            });
        }
    });
    // One plan per task of a parallel iterator inside the pool.
    let got: Vec<Vec<f32>> = shared.install(|| {
        inputs
            .par_iter()
            .map(|x| {
                let (mut plan, _) = plan_and_input(arch, 0);
                plan.run(x).unwrap().to_vec()
            })
            .collect()
    });
    assert_eq!(got, want);
}
