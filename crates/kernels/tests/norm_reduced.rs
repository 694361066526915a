//! Batch norm over a batch split into parts (synchronised batch norm's kernels): with the
//! per-channel sums added over the parts, statistics and input gradients equal those of the
//! whole batch on one process bit for bit (consecutive images per part), and the parts'
//! `dgamma` / `dbeta` add up to the whole batch's.

use std::sync::{Barrier, Mutex};
use tessera_kernels::activation::Activation;
use tessera_kernels::norm;

/// A sum over `parts` threads: every thread adds its values, waits for the others, reads the
/// total (the threads add in part order, as MPI's sum over ranks of two parts does).
struct Sum {
    parts: usize,
    acc: Mutex<Vec<Vec<f64>>>,
    barrier: Barrier,
}

impl Sum {
    fn new(parts: usize) -> Sum {
        Sum {
            parts,
            acc: Mutex::new(vec![Vec::new(); parts]),
            barrier: Barrier::new(parts),
        }
    }

    fn reduce(&self, part: usize, v: &mut [f64]) {
        self.acc.lock().unwrap()[part] = v.to_vec();
        self.barrier.wait();
        {
            let acc = self.acc.lock().unwrap();
            for (i, o) in v.iter_mut().enumerate() {
                *o = (0..self.parts).map(|p| acc[p][i]).fold(0.0, |a, b| a + b);
            }
        }
        self.barrier.wait();
    }
}

fn data(len: usize, seed: u32) -> Vec<f32> {
    // Deterministic values of mixed magnitude and sign (no RNG crate here).
    (0..len)
        .map(|i| {
            let k = (i as u32)
                .wrapping_mul(2_654_435_761)
                .wrapping_add(seed.wrapping_mul(97));
            ((k >> 8) as f32 / (1u32 << 24) as f32 - 0.4) * (1.0 + (i % 7) as f32)
        })
        .collect()
}

#[test]
fn parts_reproduce_the_whole_batch() {
    let (n, c, hw) = (7, 5, 9);
    let x = data(n * c * hw, 1);
    let dy = data(n * c * hw, 2);
    let gamma = data(c, 3);
    let beta = data(c, 4);
    let eps = 1e-5;
    for act in [
        Activation::Identity,
        Activation::Relu6,
        Activation::HardSwish,
    ] {
        // One process, whole batch.
        let (mut mean, mut var) = (vec![0.0; c], vec![0.0; c]);
        norm::batch_norm_stats(&x, n, c, hw, &mut mean, &mut var).unwrap();
        let (mut dx, mut dg, mut db) = (vec![0.0; x.len()], vec![0.0; c], vec![0.0; c]);
        norm::batch_norm_act_backward(
            &x,
            &dy,
            n,
            c,
            hw,
            &mean,
            &var,
            Some(&gamma),
            Some(&beta),
            eps,
            true,
            act,
            &mut dx,
            Some(&mut dg),
            Some(&mut db),
        )
        .unwrap();
        for parts in [1usize, 2, 3] {
            let sum = Sum::new(parts);
            let results: Vec<_> = std::thread::scope(|s| {
                let handles: Vec<_> = (0..parts)
                    .map(|p| {
                        let (x, dy, sum) = (&x, &dy, &sum);
                        let (gamma, beta) = (&gamma, &beta);
                        s.spawn(move || {
                            let (a, b) = (n * p / parts, n * (p + 1) / parts);
                            let r = a * c * hw..b * c * hw;
                            let (xs, ds) = (&x[r.clone()], &dy[r]);
                            let (mut m, mut v) = (vec![0.0; c], vec![0.0; c]);
                            let count = norm::batch_norm_stats_reduced(
                                xs,
                                b - a,
                                c,
                                hw,
                                &mut m,
                                &mut v,
                                &mut |vals| sum.reduce(p, vals),
                            )
                            .unwrap();
                            let mut dxp = vec![0.0; xs.len()];
                            let (mut dgp, mut dbp) = (vec![0.0; c], vec![0.0; c]);
                            norm::batch_norm_act_backward_reduced(
                                xs,
                                ds,
                                b - a,
                                c,
                                hw,
                                count,
                                &m,
                                &v,
                                Some(gamma),
                                Some(beta),
                                eps,
                                act,
                                &mut dxp,
                                Some(&mut dgp),
                                Some(&mut dbp),
                                &mut |vals| sum.reduce(p, vals),
                            )
                            .unwrap();
                            (count, m, v, dxp, dgp, dbp)
                        })
                    })
                    .collect();
                handles.into_iter().map(|h| h.join().unwrap()).collect()
            });
            let mut all_dx = Vec::new();
            let (mut dg_sum, mut db_sum) = (vec![0.0f32; c], vec![0.0f32; c]);
            for (count, m, v, dxp, dgp, dbp) in results {
                assert_eq!(count, n * hw);
                assert_eq!(m, mean, "{act:?}, {parts} parts: mean");
                assert_eq!(v, var, "{act:?}, {parts} parts: variance");
                all_dx.extend(dxp);
                for ch in 0..c {
                    dg_sum[ch] += dgp[ch];
                    db_sum[ch] += dbp[ch];
                }
            }
            assert_eq!(all_dx, dx, "{act:?}, {parts} parts: dx");
            for ch in 0..c {
                let tol = 1e-5 * (1.0 + dg[ch].abs().max(db[ch].abs()));
                assert!((dg_sum[ch] - dg[ch]).abs() <= tol, "{act:?} dgamma {ch}");
                assert!((db_sum[ch] - db[ch]).abs() <= tol, "{act:?} dbeta {ch}");
            }
            if parts == 1 {
                assert_eq!((dg_sum.clone(), db_sum.clone()), (dg.clone(), db.clone()));
            }
        }
    }
}

#[test]
fn an_empty_batch_over_all_parts_is_an_error() {
    let (mut m, mut v) = (vec![0.0; 3], vec![0.0; 3]);
    let e = norm::batch_norm_stats_reduced(&[], 0, 3, 4, &mut m, &mut v, &mut |_| {})
        .unwrap_err()
        .to_string();
    assert!(e.contains("no values per channel"), "{e}");
}
