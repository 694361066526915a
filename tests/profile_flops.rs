//! The profiler's FLOP count against `tessera info`'s: for a model of each family, the
//! contraction FLOPs of a profiled forward pass equal exactly 2 x the multiply-accumulates
//! `profile::count_macs` reports for the same forward (what `tessera info` shows), only
//! contractions carry MACs, and every other op adds its own (smaller) count on top.

use tessera::core::profile::{self, Phase};
use tessera::core::{no_grad, Tensor};
use tessera::models::{zoo, Mode, Overrides};

/// `tessera info`'s count: a forward on zeros at batch 1 under `no_grad`.
fn info_macs(model: &dyn zoo::Model) -> u64 {
    let [c, h, w] = model.input_chw();
    let x = Tensor::zeros(&[1, c, h, w]);
    let _g = no_grad();
    profile::count_macs(|| model.forward(&x).unwrap()).1
}

#[test]
fn contraction_flops_are_twice_info_macs_for_every_family() {
    // vit (fused attention + linears), mobilenetv2 / v3 (depthwise, SE), seresnet (dense
    // k x k convolutions, SE).
    for arch in [
        "vit_digits",
        "mobilenetv2_digits",
        "mobilenetv3_digits",
        "seresnet_digits",
    ] {
        let mut model = zoo::create(arch, &Overrides::default(), 0).unwrap();
        model.set_mode(Mode::Eval);
        let macs = info_macs(model.as_ref());
        assert!(macs > 0, "{arch}");
        let [c, h, w] = model.input_chw();
        let x = Tensor::randn(&[1, c, h, w], 3);
        let _g = no_grad();
        let (out, p) =
            profile::record(|| model.forward_stages(&x, &mut |name, _| profile::end_layer(name)));
        out.unwrap();
        let t = p.phase_totals(Phase::Forward);
        assert_eq!(
            t.ops,
            p.records.len(),
            "{arch}: inference records forward ops only"
        );
        assert_eq!(t.contraction_flops(), 2 * macs, "{arch}");
        assert!(
            t.flops > t.contraction_flops(),
            "{arch}: other ops add FLOPs"
        );
        for r in &p.records {
            assert!(r.flops >= 2 * r.macs, "{arch}: {r:?}");
            let contraction = r.op.starts_with("conv2d")
                || r.op.starts_with("linear")
                || r.op == "matmul"
                || r.op == "multi_head_attention"
                || r.op == "excite_gate";
            assert_eq!(
                r.macs > 0,
                contraction,
                "{arch}: {} has macs {}",
                r.op,
                r.macs
            );
            assert_ne!(
                r.layer,
                profile::OTHER,
                "{arch}: {} outside every stage",
                r.op
            );
        }
    }
}

#[test]
fn training_step_forward_matches_and_backward_is_attributed() {
    let mut model = zoo::create("mobilenetv3_digits", &Overrides::default(), 0).unwrap();
    let macs = info_macs(model.as_ref());
    model.set_mode(Mode::Train);
    tessera::models::module::set_requires_grad(model.as_mut(), true);
    let [c, h, w] = model.input_chw();
    let x = Tensor::randn(&[4, c, h, w], 3);
    let (_, p) = profile::record(|| {
        let y = model
            .forward_stages(&x, &mut |name, _| profile::end_layer(name))
            .unwrap();
        let loss = y.cross_entropy(&[0, 1, 2, 3], 0.0).unwrap();
        profile::end_layer("loss");
        loss.backward().unwrap();
    });
    // Training mode runs conv, batch norm and activation as separate ops: the same MACs (x 4
    // images).
    let fwd = p.phase_totals(Phase::Forward);
    assert_eq!(fwd.contraction_flops(), 2 * 4 * macs);
    let bwd = p.phase_totals(Phase::Backward);
    assert!(bwd.ops > 0 && bwd.macs > 0);
    let bwd_layers: Vec<&str> = p
        .records
        .iter()
        .filter(|r| r.phase == Phase::Backward)
        .map(|r| r.layer.as_str())
        .collect();
    assert_eq!(bwd_layers.first(), Some(&"loss"));
    assert!(bwd_layers.contains(&"conv_stem"));
    assert!(p
        .records
        .iter()
        .all(|r| r.op.ends_with(".backward") == (r.phase == Phase::Backward)));
}
