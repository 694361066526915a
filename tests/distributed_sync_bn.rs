//! Synchronised batch norm on one process is the fused batch norm op bit for bit: outputs,
//! input and parameter gradients, running statistics. Runs under `mpirun -np 1` or as a
//! singleton. (Two processes against one: `crates/cli/tests/distributed_train.rs`.)
#![cfg(feature = "distributed")]

use tessera::core::{RunningStats, Tensor};
use tessera::kernels::Activation;
use tessera::models::distributed::mpi;
use tessera::models::distributed::{DataParallel, DataParallelOptions};

#[test]
fn sync_batch_norm_on_one_process_is_batch_norm_bit_for_bit() {
    let universe = mpi::initialize().unwrap();
    let opts = DataParallelOptions {
        sync_batch_norm: true,
        ..Default::default()
    };
    let _dp = DataParallel::new(&universe.world(), opts).unwrap();
    for act in [Activation::Identity, Activation::Relu6] {
        let x0 = Tensor::randn(&[4, 3, 5, 5], 1)
            .mul_scalar(2.0)
            .add_scalar(0.5);
        let w0 = Tensor::randn(&[3], 2);
        let b0 = Tensor::randn(&[3], 3);
        let up = Tensor::randn(&[4, 3, 5, 5], 4);
        let run = |sync: bool| {
            let x = x0.detach().requires_grad_(true);
            let w = w0.detach().requires_grad_(true);
            let b = b0.detach().requires_grad_(true);
            let (mut m, mut v) = (Tensor::zeros(&[3]), Tensor::ones(&[3]));
            let r = RunningStats {
                mean: &mut m,
                var: &mut v,
                momentum: 0.1,
            };
            let y = if sync {
                tessera::models::distributed::sync_bn::forward(
                    &x,
                    Some(r),
                    Some(&w),
                    Some(&b),
                    1e-5,
                    act,
                )
                .unwrap()
                .unwrap()
            } else {
                x.batch_norm_act(Some(r), Some(&w), Some(&b), true, 1e-5, act)
                    .unwrap()
            };
            y.mul(&up).unwrap().sum_all().backward().unwrap();
            [
                y.to_vec(),
                x.grad().unwrap().to_vec(),
                w.grad().unwrap().to_vec(),
                b.grad().unwrap().to_vec(),
                m.to_vec(),
                v.to_vec(),
            ]
        };
        let (a, b) = (run(true), run(false));
        for (i, (p, q)) in a.iter().zip(&b).enumerate() {
            assert_eq!(p, q, "{act:?} part {i} (y, dx, dgamma, dbeta, mean, var)");
        }
    }
}
