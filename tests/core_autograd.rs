//! Autograd engine behaviour: recording only when needed, accumulation, retain/free, deep
//! graphs, detach, and errors instead of panics.

use tessera::core::{no_grad, Tensor, TensorError};

#[test]
fn no_graph_without_grad() {
    let x = Tensor::randn(&[3, 4], 1);
    let w = Tensor::randn(&[4, 2], 2).requires_grad_(true);
    // Inputs that need no grad: nothing recorded.
    let y = x.relu().sum_all();
    assert!(!y.requires_grad() && y.op_name().is_none());
    // Under no_grad nothing is recorded even with a grad-requiring input.
    {
        let _g = no_grad();
        let z = x.matmul(&w).unwrap().sigmoid();
        assert!(!z.requires_grad() && z.op_name().is_none());
    }
    let z = x.matmul(&w).unwrap();
    assert_eq!(z.op_name(), Some("matmul"));
}

#[test]
fn backward_twice_accumulates_and_freed_graph_errors() {
    let x = Tensor::from_vec(vec![1.0, 2.0], &[2])
        .unwrap()
        .requires_grad_(true);
    let y = x.mul(&x).unwrap().sum_all();
    y.backward_opts(&Tensor::scalar(1.0), true).unwrap();
    y.backward().unwrap();
    assert_eq!(x.grad().unwrap().to_vec(), vec![4.0, 8.0]);
    // The graph is freed now: a third call is an error, not a panic.
    let e = y.backward().unwrap_err();
    assert!(matches!(e, TensorError::Autograd { .. }), "{e}");
    // A fresh graph accumulates on top.
    x.mul(&x).unwrap().sum_all().backward().unwrap();
    assert_eq!(x.grad().unwrap().to_vec(), vec![6.0, 12.0]);
    x.zero_grad();
    assert!(x.grad().is_none());
}

#[test]
fn diamond_graph_sums_both_paths() {
    let x = Tensor::scalar(3.0).requires_grad_(true);
    let a = x.mul_scalar(2.0);
    let b = x.exp();
    let y = a.mul(&b).unwrap(); // 2x e^x -> 2e^x(1+x)
    y.backward().unwrap();
    let want = 2.0 * 3f32.exp() * 4.0;
    assert!((x.grad().unwrap().item().unwrap() - want).abs() < 1e-3 * want);
}

#[test]
fn deep_graph_does_not_overflow() {
    let x = Tensor::scalar(1.0).requires_grad_(true);
    let mut y = x.clone();
    for _ in 0..100_000 {
        y = y.add_scalar(1e-6);
    }
    y.backward().unwrap();
    assert_eq!(x.grad().unwrap().item().unwrap(), 1.0);
}

#[test]
fn detach_stops_gradient() {
    let x = Tensor::scalar(2.0).requires_grad_(true);
    let y = x.mul(&x.detach()).unwrap();
    y.backward().unwrap();
    assert_eq!(x.grad().unwrap().item().unwrap(), 2.0);
}

#[test]
fn backward_errors() {
    let x = Tensor::ones(&[2]);
    assert!(x.backward().is_err()); // needs no grad
    let y = Tensor::ones(&[2]).requires_grad_(true).mul_scalar(2.0);
    assert!(y.backward().is_err()); // not a scalar
    assert!(y.backward_with(&Tensor::ones(&[3])).is_err());
    y.backward_with(&Tensor::ones(&[2])).unwrap();
}

#[test]
fn non_contiguous_inputs_match_contiguous() {
    let base = Tensor::randn(&[4, 5, 6], 3);
    let v = base.permute(&[2, 0, 1]).unwrap().narrow(1, 1, 2).unwrap();
    let c = v.contiguous();
    assert!(!v.is_contiguous());
    let other = Tensor::randn(&[6, 1, 5], 4);
    let pairs = [
        (v.exp().to_vec(), c.exp().to_vec()),
        (v.gelu().to_vec(), c.gelu().to_vec()),
        (
            v.add(&other).unwrap().to_vec(),
            c.add(&other).unwrap().to_vec(),
        ),
        (
            v.sum(&[0, 2], true).unwrap().to_vec(),
            c.sum(&[0, 2], true).unwrap().to_vec(),
        ),
        (
            v.max(&[1], false).unwrap().to_vec(),
            c.max(&[1], false).unwrap().to_vec(),
        ),
        (
            v.matmul(&other.transpose(1, 2).unwrap()).unwrap().to_vec(),
            c.matmul(&other.transpose(1, 2).unwrap().contiguous())
                .unwrap()
                .to_vec(),
        ),
    ];
    for (a, b) in pairs {
        assert_eq!(a, b);
    }
}

#[test]
fn bad_input_is_an_error_not_a_panic() {
    let x = Tensor::zeros(&[2, 3]);
    assert!(x.sum(&[2], false).is_err());
    assert!(x.sum(&[1, 1], false).is_err());
    assert!(x.reshape(&[4]).is_err());
    assert!(x.permute(&[0, 0]).is_err());
    assert!(x.narrow(1, 2, 2).is_err());
    assert!(x.expand(&[3, 3]).is_err());
    assert!(x.transpose(0, 2).is_err());
    assert!(x.unsqueeze(3).is_err());
    assert!(x.clamp(1.0, 0.0).is_err());
    assert!(x.index_select(0, &[2]).is_err());
    assert!(Tensor::cat(&[], 0).is_err());
    assert!(Tensor::cat(&[x.clone(), Tensor::zeros(&[3, 3])], 1).is_err());
    assert!(x.matmul(&Tensor::zeros(&[3])).is_err());
    assert!(x.var(&[0], false, 2).is_err());
    assert!(x.item().is_err());
    assert!(Tensor::arange(0.0, 1.0, 0.0).is_err());
    let e = x
        .matmul(&Tensor::zeros(&[2, 2, 4, 5]))
        .unwrap_err()
        .to_string();
    assert!(e.contains("matmul") && e.contains("[2, 3]"), "{e}");
}

/// The worked example of `docs/autograd.md`: one step of a 2-layer MLP.
#[test]
fn mlp_step_from_docs() {
    let x = Tensor::randn(&[4, 3], 0);
    let y = [1usize, 0, 1, 1];
    let w1 = Tensor::randn(&[8, 3], 1).requires_grad_(true);
    let b1 = Tensor::zeros(&[8]).requires_grad_(true);
    let w2 = Tensor::randn(&[2, 8], 2).requires_grad_(true);
    let b2 = Tensor::zeros(&[2]).requires_grad_(true);
    let loss = |w1: &Tensor, b1: &Tensor, w2: &Tensor, b2: &Tensor| {
        let h = x.linear(w1, Some(b1)).unwrap();
        assert_eq!(h.op_name(), Some("linear"));
        let a = h.relu();
        let logits = a.linear(w2, Some(b2)).unwrap();
        logits.cross_entropy(&y, 0.0).unwrap()
    };
    let l0 = loss(&w1, &b1, &w2, &b2);
    assert_eq!(l0.op_name(), Some("cross_entropy"));
    l0.backward().unwrap();
    let shapes: Vec<Vec<usize>> = [&w1, &b1, &w2, &b2]
        .iter()
        .map(|p| p.grad().unwrap().shape().to_vec())
        .collect();
    assert_eq!(shapes, vec![vec![8, 3], vec![8], vec![2, 8], vec![2]]);
    let step = |p: &Tensor| {
        let _g = no_grad();
        p.sub(&p.grad().unwrap().mul_scalar(0.1))
            .unwrap()
            .requires_grad_(true)
    };
    let l1 = loss(&step(&w1), &step(&b1), &step(&w2), &step(&b2));
    assert!(l1.item().unwrap() < l0.item().unwrap());
}

#[test]
fn display_of_a_view() {
    let x = Tensor::arange(0.0, 6.0, 1.0)
        .unwrap()
        .reshape(&[2, 3])
        .unwrap()
        .t()
        .unwrap();
    assert_eq!(
        x.to_string(),
        "tensor([[0.0, 3.0],\n        [1.0, 4.0],\n        [2.0, 5.0]], shape=[3, 2], strides=[1, 3])"
    );
    let y = Tensor::ones(&[2]).requires_grad_(true).mul_scalar(2.0);
    assert!(y.to_string().ends_with("grad_fn=mul_scalar)"), "{y}");
}

/// With only one operand requiring grad, a binary op saves less but must give the same
/// gradient as when both do.
#[test]
fn one_sided_gradients_match() {
    use tessera::core::Conv2dParams;
    type Bin = fn(&Tensor, &Tensor) -> Tensor;
    let ops: [(&str, Bin, Vec<usize>, Vec<usize>); 5] = [
        ("mul", |a, b| a.mul(b).unwrap(), vec![2, 3], vec![3]),
        ("div", |a, b| a.div(b).unwrap(), vec![2, 3], vec![2, 1]),
        (
            "matmul",
            |a, b| a.matmul(b).unwrap(),
            vec![2, 3, 4],
            vec![4, 5],
        ),
        (
            "linear",
            |a, b| a.linear(b, None).unwrap(),
            vec![3, 4],
            vec![5, 4],
        ),
        (
            "conv2d",
            |a, b| a.conv2d(b, None, Conv2dParams::new(1, 1)).unwrap(),
            vec![1, 2, 5, 5],
            vec![3, 2, 3, 3],
        ),
    ];
    for (name, f, sa, sb) in ops {
        let a0 = Tensor::rand_uniform(&sa, 0.5, 1.5, 1);
        let b0 = Tensor::rand_uniform(&sb, 0.5, 1.5, 2);
        let grads = |ga: bool, gb: bool| {
            let (a, b) = (a0.clone().requires_grad_(ga), b0.clone().requires_grad_(gb));
            f(&a, &b).sum_all().backward().unwrap();
            (a.grad().map(|g| g.to_vec()), b.grad().map(|g| g.to_vec()))
        };
        let (both_a, both_b) = grads(true, true);
        assert_eq!(grads(true, false).0, both_a, "{name}: da");
        assert_eq!(grads(false, true).1, both_b, "{name}: db");
    }
}
