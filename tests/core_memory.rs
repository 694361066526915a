//! Memory stays flat over 10,000 training steps of a small network: the number of live graph
//! nodes and live storages is counted (not timed) after every step. This file holds a single
//! test so the process-wide counters see no other test's tensors.

use tessera::core::{live_nodes, live_storages, no_grad, Tensor};

struct Mlp {
    w1: Tensor,
    b1: Tensor,
    g: Tensor,
    w2: Tensor,
    b2: Tensor,
}

impl Mlp {
    fn params(&self) -> [&Tensor; 5] {
        [&self.w1, &self.b1, &self.g, &self.w2, &self.b2]
    }

    fn loss(&self, x: &Tensor, y: &[usize]) -> Tensor {
        let h = x.linear(&self.w1, Some(&self.b1)).unwrap().gelu();
        let h = h.layer_norm(&[32], Some(&self.g), None, 1e-5).unwrap();
        let logits = h
            .matmul(&self.w2.t().unwrap())
            .unwrap()
            .add(&self.b2)
            .unwrap();
        logits.cross_entropy(y, 0.1).unwrap()
    }

    fn sgd(&mut self, lr: f32) {
        let _g = no_grad();
        let step = |p: &Tensor| {
            let g = p.grad().expect("every parameter gets a gradient");
            p.sub(&g.mul_scalar(lr)).unwrap().requires_grad_(true)
        };
        *self = Mlp {
            w1: step(&self.w1),
            b1: step(&self.b1),
            g: step(&self.g),
            w2: step(&self.w2),
            b2: step(&self.b2),
        };
    }
}

#[test]
fn memory_is_flat_over_10000_steps() {
    let mut net = Mlp {
        w1: Tensor::randn(&[32, 16], 1)
            .mul_scalar(0.25)
            .requires_grad_(true),
        b1: Tensor::zeros(&[32]).requires_grad_(true),
        g: Tensor::ones(&[32]).requires_grad_(true),
        w2: Tensor::randn(&[4, 32], 2)
            .mul_scalar(0.2)
            .requires_grad_(true),
        b2: Tensor::zeros(&[4]).requires_grad_(true),
    };
    let x = Tensor::randn(&[8, 16], 3);
    let y: Vec<usize> = (0..8).map(|i| i % 4).collect();
    let mut baseline = None;
    let mut first_loss = 0.0;
    let mut last_loss = 0.0;
    for step in 0..10_000 {
        let loss = net.loss(&x, &y);
        assert!(live_nodes() > 0, "the graph is recorded");
        loss.backward().unwrap();
        let l = loss.item().unwrap();
        if step == 0 {
            first_loss = l;
        }
        last_loss = l;
        drop(loss);
        assert_eq!(live_nodes(), 0, "step {step}: graph nodes outlive the step");
        net.sgd(0.05);
        let counts = live_storages();
        match baseline {
            None => baseline = Some(counts),
            Some(b) => assert_eq!(counts, b, "step {step}: live storages grew"),
        }
    }
    assert!(net.params().iter().all(|p| p.requires_grad()));
    assert!(last_loss < first_loss, "{first_loss} -> {last_loss}");
}
