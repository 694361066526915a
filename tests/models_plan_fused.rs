//! The fused expansion + depthwise step of the inverted residual blocks (`plan/fused.rs`):
//! at sizes where the plan fuses (an expanded tensor larger than twice the L2), the fused plan
//! must equal the unfused one bit for bit (`Model::plan_reference` emits every step unfused;
//! both with every map NCHW),
//! match the eager forward within 1e-5, and give the same bits on pools of 1 to 3 threads.

use tessera::core::{no_grad, Tensor};
use tessera::models::plan::PlanOptions;
use tessera::models::{create, Overrides};

fn run_in_pool(threads: usize, f: impl FnOnce() -> Vec<f32> + Send) -> Vec<f32> {
    rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .unwrap()
        .install(f)
}

fn check(arch: &str, img: usize, batch: usize) {
    let o = Overrides {
        img_size: Some(img),
        num_classes: Some(10),
        ..Overrides::default()
    };
    let m = create(arch, &o, 5).unwrap();
    let [c, h, w] = m.input_chw();
    let shape = [batch, c, h, w];
    let x = Tensor::randn(&shape, 9);
    let xv = x.to_vec();
    // NCHW throughout, as the reference plan (channels-last maps are summed in other orders).
    let nchw = PlanOptions {
        channels_last: false,
    };
    let mut fused = m.plan_with(shape, &nchw).unwrap();
    let n_fused = fused
        .step_counts()
        .iter()
        .find(|(k, _)| *k == "expand_depthwise")
        .map_or(0, |p| p.1);
    assert!(
        n_fused > 0,
        "{arch} at {img}: no fused step in {:?}",
        fused.step_counts()
    );
    let y = fused.run(&xv).unwrap().to_vec();
    let mut unfused = m.plan_reference(shape).unwrap();
    assert!(unfused
        .step_counts()
        .iter()
        .all(|(k, _)| *k != "expand_depthwise"));
    let y_ref = unfused.run(&xv).unwrap().to_vec();
    assert!(
        y.iter()
            .zip(&y_ref)
            .all(|(a, b)| a.to_bits() == b.to_bits()),
        "{arch}: fused and unfused plans differ"
    );
    let eager = {
        let _g = no_grad();
        m.forward(&x).unwrap().to_vec()
    };
    let diff = y
        .iter()
        .zip(&eager)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0, f32::max);
    let scale = eager.iter().map(|v| v.abs()).fold(0.0, f32::max);
    assert!(
        diff <= 1e-5 * scale,
        "{arch}: plan vs eager {diff:e} of {scale:e}"
    );
    for threads in [1, 2, 3] {
        let mut p = m.plan_with(shape, &nchw).unwrap();
        let yt = run_in_pool(threads, || p.run(&xv).unwrap().to_vec());
        assert!(
            yt.iter().zip(&y).all(|(a, b)| a.to_bits() == b.to_bits()),
            "{arch}: {threads} threads differ"
        );
    }
}

#[test]
fn fused_expand_depthwise_equals_the_unfused_plan() {
    // Expanded tensors of 19.7 MB (48 x 320 x 320) and 12.8 MB (64 x 224 x 224): fused on
    // any L2 up to 6 MiB.
    check("mobilenetv2_050", 640, 1);
    check("mobilenetv3_large_100", 448, 1);
}
