//! Synchronised batch norm over 2 and 3 processes against one process on the whole batch,
//! for one training step of `mobilenetv2_digits` (batch norm + ReLU6 throughout): the logits of
//! every process's part and every running statistic are bit-identical to the one-process
//! values, and the summed parameter gradients agree to rounding (they are sums over images in
//! another association). The test starts `mpirun --oversubscribe -np N` on its own binary
//! (Open MPI's `mpirun` needed; as root, OMPI_ALLOW_RUN_AS_ROOT=1
//! OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 are set for the child).
#![cfg(feature = "distributed")]

use std::process::Command;
use tessera::models::distributed::mpi;
use tessera::models::distributed::{shard_batch, shard_range, DataParallel, DataParallelOptions};
use tessera::models::module::{set_requires_grad, Mode, Module, TensorKind};

/// Set in the processes `mpirun` starts.
const CHILD: &str = "TESSERA_SYNC_BN_RANKS_CHILD";

/// Named values in visiting order.
type Named = Vec<(String, Vec<f32>)>;

/// Every parameter's gradient and every buffer, in visiting order.
fn state(m: &dyn Module) -> (Named, Named) {
    let (mut grads, mut buffers) = (Vec::new(), Vec::new());
    m.visit("", &mut |k, t, kind| match kind {
        TensorKind::Parameter => grads.push((k.to_string(), t.grad().unwrap().to_vec())),
        _ => buffers.push((k.to_string(), t.to_vec())),
    });
    (grads, buffers)
}

fn child() {
    let universe = mpi::initialize().expect("MPI initialises");
    let world = universe.world();
    let (train, _) = tessera::models::data::digits_split().unwrap();
    let idx = &train.epoch_batches(72, Some(7))[0];
    let build = || {
        let mut m = tessera::models::create("mobilenetv2_digits", &Default::default(), 0).unwrap();
        m.set_mode(Mode::Train);
        set_requires_grad(m.as_mut(), true);
        m
    };
    // One process on the whole batch (before synchronisation is installed on this thread).
    let reference = build();
    let (x, y) = train.batch(idx, None, 1);
    let logits = reference.forward(&x).unwrap();
    logits.cross_entropy(&y, 0.0).unwrap().backward().unwrap();
    let (ref_grads, ref_buffers) = state(reference.as_ref());
    // This process's part, batch norm synchronised.
    let opts = DataParallelOptions {
        sync_batch_norm: true,
        ..Default::default()
    };
    let mut dp = DataParallel::new(&world, opts).unwrap();
    let mut model = build();
    let part = shard_range(idx.len(), dp.rank(), dp.size());
    let (xs, ys) = shard_batch(&train, idx, part.clone(), None, 1);
    let part_logits = model.forward(&xs).unwrap();
    let loss = part_logits.cross_entropy(&ys, 0.0).unwrap();
    dp.backward(model.as_mut(), &loss, ys.len(), idx.len())
        .unwrap();
    let classes = model.num_classes();
    assert_eq!(
        part_logits.to_vec(),
        logits.to_vec()[part.start * classes..part.end * classes],
        "rank {}: logits",
        dp.rank()
    );
    let (grads, buffers) = state(model.as_ref());
    assert_eq!(
        buffers,
        ref_buffers,
        "rank {}: running statistics",
        dp.rank()
    );
    // The whole gradient, relative (a few parameters' gradients are analytically zero, e.g.
    // the projections' batch norm biases, which feed another batch norm: rounding noise).
    let (mut d2, mut n2) = (0.0f64, 0.0f64);
    for ((k, g), (_, r)) in grads.iter().zip(&ref_grads) {
        assert_eq!(g.len(), r.len(), "{k}");
        for (a, b) in g.iter().zip(r) {
            d2 += ((a - b) as f64).powi(2);
            n2 += (*b as f64).powi(2);
        }
    }
    let e = (d2 / n2).sqrt();
    println!(
        "rank {} of {}: logits and running statistics bit-identical, gradient relative difference {e:.2e}",
        dp.rank(),
        dp.size()
    );
    assert!(e < 1e-5, "gradient differs by {e:e}");
}

#[test]
fn sync_batch_norm_over_processes_reproduces_one_process() {
    if std::env::var_os(CHILD).is_some() {
        return child();
    }
    let exe = std::env::current_exe().unwrap();
    for np in [2, 3] {
        let out = Command::new("mpirun")
            .args(["--oversubscribe", "-np", &np.to_string()])
            .arg(&exe)
            .args([
                "--exact",
                "sync_batch_norm_over_processes_reproduces_one_process",
                "--nocapture",
                "--test-threads",
                "1",
            ])
            .env(CHILD, "1")
            .env("OMPI_ALLOW_RUN_AS_ROOT", "1")
            .env("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1")
            .env("RAYON_NUM_THREADS", "1")
            .output()
            .expect("mpirun (Open MPI) on the PATH");
        let stdout = String::from_utf8_lossy(&out.stdout);
        eprintln!("{stdout}");
        assert!(
            out.status.success(),
            "mpirun -np {np} failed:\n{stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(stdout.matches("bit-identical").count(), np, "{stdout}");
    }
}
