//! Fused inference ops: `linear_act` and `conv2d_act` run the activation in the kernel epilogue
//! when no graph is recorded, and equal the unfused composition; with a graph they fall back to
//! the composition so gradients are exact.

use tessera::core::ops::conv::Conv2dParams;
use tessera::core::{no_grad, Tensor};
use tessera::kernels::Activation;

fn close(a: &[f32], b: &[f32]) {
    assert_eq!(a.len(), b.len());
    for (x, y) in a.iter().zip(b) {
        assert!((x - y).abs() <= 1e-6 * (1.0 + x.abs()), "{x} vs {y}");
    }
}

#[test]
fn fused_equals_composition_at_inference() {
    let x = Tensor::randn(&[5, 7, 16], 1);
    let w = Tensor::randn(&[24, 16], 2);
    let b = Tensor::randn(&[24], 3);
    let img = Tensor::randn(&[2, 6, 9, 9], 4);
    let cw = Tensor::randn(&[8, 3, 3, 3], 5);
    let cb = Tensor::randn(&[8], 6);
    let p = Conv2dParams::new(2, 1).groups(2);
    for &act in Activation::ALL {
        let fused = x.linear_act(&w, Some(&b), act).unwrap();
        assert_eq!(fused.shape(), &[5, 7, 24]);
        close(
            &fused.to_vec(),
            &x.linear(&w, Some(&b)).unwrap().activate(act).to_vec(),
        );
        let fused = img.conv2d_act(&cw, Some(&cb), p, act).unwrap();
        close(
            &fused.to_vec(),
            &img.conv2d(&cw, Some(&cb), p)
                .unwrap()
                .activate(act)
                .to_vec(),
        );
    }
}

#[test]
fn fused_ops_record_exact_gradients() {
    let x = Tensor::randn(&[3, 4], 1).requires_grad_(true);
    let w = Tensor::randn(&[5, 4], 2).requires_grad_(true);
    let y = x.linear_act(&w, None, Activation::HardSwish).unwrap();
    assert!(y.requires_grad());
    y.sum_all().backward().unwrap();
    let gx = x.grad().unwrap().to_vec();
    let x2 = x.detach().requires_grad_(true);
    x2.linear(&w.detach(), None)
        .unwrap()
        .hardswish()
        .sum_all()
        .backward()
        .unwrap();
    assert_eq!(gx, x2.grad().unwrap().to_vec());
    // Under no_grad nothing is recorded even for inputs that require grad.
    let _g = no_grad();
    let y = x.linear_act(&w, None, Activation::Relu).unwrap();
    assert!(!y.requires_grad());
}
