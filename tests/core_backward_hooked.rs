//! `Tensor::backward_hooked`: every leaf is reported exactly once, only when its gradient is
//! complete, in the same order on every run, and the gradients equal plain `backward`'s.

use tessera_core::{Result, Tensor};

/// A small two-layer network whose first weight is used twice (a shared leaf) and whose
/// second bias is consumed before the first weight's last use.
fn loss(x: &Tensor, w1: &Tensor, b1: &Tensor, w2: &Tensor, b2: &Tensor) -> Result<Tensor> {
    let h = x.linear(w1, Some(b1))?.relu();
    let h2 = h.linear(w1, None)?.relu(); // w1 again: its gradient has two contributions
    let y = h2.linear(w2, Some(b2))?;
    y.cross_entropy(&[0, 2, 1, 2], 0.0)
}

fn params() -> [Tensor; 4] {
    [
        Tensor::randn(&[6, 6], 1).requires_grad_(true),
        Tensor::randn(&[6], 2).requires_grad_(true),
        Tensor::randn(&[3, 6], 3).requires_grad_(true),
        Tensor::randn(&[3], 4).requires_grad_(true),
    ]
}

#[test]
fn hooked_backward_reports_each_complete_leaf_once() -> Result<()> {
    let x = Tensor::randn(&[4, 6], 0);
    let plain = params();
    loss(&x, &plain[0], &plain[1], &plain[2], &plain[3])?.backward()?;

    let hooked = params();
    let keys: Vec<usize> = hooked.iter().map(|p| p.grad_key().unwrap()).collect();
    let mut seen: Vec<(usize, Vec<f32>)> = Vec::new();
    let l = loss(&x, &hooked[0], &hooked[1], &hooked[2], &hooked[3])?;
    l.backward_hooked(&Tensor::ones(&[]), &mut |k| {
        let i = keys.iter().position(|&q| q == k).expect("a known leaf");
        // The gradient is already final when reported.
        seen.push((i, hooked[i].grad().expect("a gradient").to_vec()));
        Ok(())
    })?;
    let mut order: Vec<usize> = seen.iter().map(|(i, _)| *i).collect();
    order.sort_unstable();
    assert_eq!(order, vec![0, 1, 2, 3], "each leaf exactly once");
    for (i, at_report) in &seen {
        let want = plain[*i].grad().unwrap().to_vec();
        assert_eq!(
            at_report, &want,
            "leaf {i} reported before its gradient was complete"
        );
        assert_eq!(hooked[*i].grad().unwrap().to_vec(), want);
    }
    // The output layer's parameters are complete before the shared first weight.
    let pos = |p: usize| seen.iter().position(|(i, _)| *i == p).unwrap();
    assert!(pos(2) < pos(0) && pos(3) < pos(0));
    Ok(())
}

#[test]
fn hooked_backward_order_is_fixed_and_errors_stop_the_walk() -> Result<()> {
    let x = Tensor::randn(&[4, 6], 0);
    let run = || -> Result<Vec<usize>> {
        let p = params();
        let keys: Vec<usize> = p.iter().map(|t| t.grad_key().unwrap()).collect();
        let mut order = Vec::new();
        loss(&x, &p[0], &p[1], &p[2], &p[3])?.backward_hooked(&Tensor::ones(&[]), &mut |k| {
            order.push(keys.iter().position(|&q| q == k).unwrap());
            Ok(())
        })?;
        Ok(order)
    };
    assert_eq!(run()?, run()?);

    let p = params();
    let l = loss(&x, &p[0], &p[1], &p[2], &p[3])?;
    let err = l
        .backward_hooked(&Tensor::ones(&[]), &mut |_| {
            Err(tessera_core::TensorError::autograd("hook", "stop"))
        })
        .unwrap_err();
    assert!(err.to_string().contains("stop"), "{err}");
    // Not a leaf requiring grad: no key.
    assert_eq!(x.grad_key(), None);
    Ok(())
}
