//! Planned inference against the eager forward: every architecture family (and each block
//! variant: inverted residual with and without SE, depthwise-separable with SE, ResNet with the
//! residual fused into `conv3`, SE-ResNet with it fused into the SE step, ViT), at batch 1 and
//! batch 3, with random batch-norm statistics so the fold is exercised. The plan must match
//! the eager logits within 1e-5 relative (max |plan - eager| / max |eager|).

use tessera::core::{no_grad, Rng, Tensor};
use tessera::models::{create, Mode, Model, Overrides, TensorKind};

/// Random batch-norm statistics and affine parameters (timm's init makes the fold trivial
/// and zeroes ResNet's last batch norm).
fn randomize_norms(m: &mut dyn Model, seed: u64) {
    let mut rng = Rng::new(seed);
    m.visit_mut("", &mut |name, t, _kind: TensorKind| {
        let bn = name.contains("bn") || name.contains("downsample.1");
        let n = t.numel();
        let vals: Option<Vec<f32>> = if name.ends_with("running_var") {
            Some((0..n).map(|_| 0.5 + rng.uniform()).collect())
        } else if name.ends_with("running_mean") || (bn && name.ends_with(".bias")) {
            Some((0..n).map(|_| rng.uniform() * 0.4 - 0.2).collect())
        } else if bn && name.ends_with(".weight") {
            Some((0..n).map(|_| 0.5 + rng.uniform()).collect())
        } else {
            None
        };
        if let Some(v) = vals {
            *t = Tensor::from_vec(v, t.shape()).unwrap();
        }
    });
    m.set_mode(Mode::Eval);
}

fn rel_err(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    let diff = a
        .iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max);
    let scale = b.iter().map(|y| y.abs()).fold(0.0, f32::max);
    diff / scale
}

fn check(arch: &str, o: &Overrides, batches: &[usize]) {
    let mut m = create(arch, o, 7).unwrap();
    randomize_norms(m.as_mut(), 11);
    let [c, h, w] = m.input_chw();
    for &n in batches {
        let x = Tensor::randn(&[n, c, h, w], 3);
        let eager = {
            let _g = no_grad();
            m.forward(&x).unwrap().to_vec()
        };
        let mut plan = m.plan([n, c, h, w]).unwrap();
        let y = plan.run(&x.to_vec()).unwrap().to_vec();
        assert!(y.iter().all(|v| v.is_finite()), "{arch} batch {n}");
        let e = rel_err(&y, &eager);
        assert!(e <= 1e-5, "{arch} batch {n}: plan vs eager rel err {e:e}");
        // A second run reuses the arena: same result.
        let again = plan.run(&x.to_vec()).unwrap().to_vec();
        assert_eq!(y, again, "{arch}: a warm run differs from the first");
        assert_eq!(plan.output_shape(), &[n, m.num_classes()]);
    }
}

fn small(img: usize) -> Overrides {
    Overrides {
        img_size: Some(img),
        num_classes: Some(10),
        ..Overrides::default()
    }
}

#[test]
fn mobilenetv2_plan_matches_eager() {
    check("mobilenetv2_050", &small(64), &[1, 3]);
    check("mobilenetv2_digits", &Overrides::default(), &[1, 3]);
}

#[test]
fn mobilenetv3_plan_matches_eager() {
    check("mobilenetv3_large_100", &small(64), &[1, 3]);
    // The small variant's first block is depthwise-separable with SE.
    check("mobilenetv3_small_100", &small(64), &[1, 2]);
    check("mobilenetv3_digits", &Overrides::default(), &[1, 3]);
}

#[test]
fn resnet_plan_matches_eager() {
    check("resnet50", &small(32), &[1, 2]);
    check("resnet_digits", &Overrides::default(), &[1, 3]);
}

#[test]
fn seresnet_plan_matches_eager() {
    check("seresnet50", &small(32), &[1, 2]);
    check("seresnet_digits", &Overrides::default(), &[1, 3]);
    // 112 pixels: 28-, 14- and 7-pixel rows, which the implicit-GEMM convolution takes on
    // AVX-512 (strided 3x3 and 1x1 included).
    check("seresnet50", &small(112), &[1, 2]);
}

#[test]
fn vit_plan_matches_eager() {
    check("vit_digits", &Overrides::default(), &[1, 3]);
    let tiny = Overrides {
        img_size: Some(64),
        depth: Some(3),
        num_classes: Some(10),
        ..Overrides::default()
    };
    check("vit_tiny_patch16_224", &tiny, &[1, 2]);
}

#[test]
fn every_activation_override_plans_as_it_runs() {
    // The `act` override takes any of the kernels' activations (leaky ReLU with its slope
    // too); the plan's fused epilogues must compute what the eager layers do.
    for &act in tessera::kernels::Activation::ALL {
        let name = match act {
            tessera::kernels::Activation::LeakyRelu(_) => "leaky_relu:0.2".to_string(),
            a => a.name().to_string(),
        };
        let o = Overrides {
            act: Some(name),
            ..Overrides::default()
        };
        for arch in ["mobilenetv3_digits", "resnet_digits", "vit_digits"] {
            check(arch, &o, &[2]);
        }
    }
}

#[test]
fn full_size_mobilenet_plans_match_eager() {
    // 224 pixels: NCHW down to 56 x 56, channels-last from 28 x 28 (the switch inside a
    // strided block's projection), at batch 1 and 2.
    check("mobilenetv3_large_100", &Overrides::default(), &[1, 2]);
    check("mobilenetv2_100", &Overrides::default(), &[1, 2]);
}

#[test]
fn a_plan_rejects_other_input_shapes() {
    let m = create("mobilenetv3_digits", &Overrides::default(), 0).unwrap();
    let [c, h, w] = m.input_chw();
    let mut plan = m.plan([2, c, h, w]).unwrap();
    let e = plan.run(&vec![0.0; c * h * w]).unwrap_err().to_string();
    assert!(e.contains("plan was built for"), "{e}");
    let vit = create("vit_digits", &Overrides::default(), 0).unwrap();
    assert!(vit.plan([1, 1, 16, 16]).is_err());
    let e = m.plan([1, c + 1, h, w]);
    assert!(e.is_err());
}

#[test]
fn channels_last_is_an_option_with_the_same_result() {
    // MobileNetV2 at 224: channels-last from the 28 x 28 maps by default, none with the
    // option off; both within float rounding of the eager forward and of each other.
    use tessera::models::plan::PlanOptions;
    let m = create("mobilenetv2_100", &Overrides::default(), 3).unwrap();
    let shape = [1, 3, 224, 224];
    let x = Tensor::randn(&shape, 4);
    let xv = x.to_vec();
    let layouts = |p: &mut tessera::models::plan::Plan| {
        let steps = p.profile_steps(&xv, 1).unwrap();
        steps.iter().filter(|s| s.detail.contains("nhwc")).count()
    };
    let mut cl = m.plan(shape).unwrap();
    let mut nchw = m
        .plan_with(
            shape,
            &PlanOptions {
                channels_last: false,
            },
        )
        .unwrap();
    assert!(
        layouts(&mut cl) > 20,
        "the default plan has channels-last steps"
    );
    assert_eq!(layouts(&mut nchw), 0, "channels_last: false keeps NCHW");
    let a = cl.run(&xv).unwrap().to_vec();
    let b = nchw.run(&xv).unwrap().to_vec();
    assert!(
        rel_err(&a, &b) <= 1e-5,
        "layouts differ: {:e}",
        rel_err(&a, &b)
    );
}
