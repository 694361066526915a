//! Tests of a checking recording (the first op with a non-finite output, forward or backward)
//! and of module paths.

use super::*;
use crate::Tensor;

#[test]
fn the_first_forward_op_with_a_non_finite_output_is_flagged_with_its_module() {
    let x = Tensor::randn(&[4, 8], 0);
    let mut wv = Tensor::randn(&[6, 8], 1).to_vec();
    wv[3] = f32::NAN;
    let w = Tensor::from_vec(wv, &[6, 8]).unwrap();
    let rec = Recorder::start_checking();
    let h = {
        let _m = module_scope("blocks.1");
        let a = x.relu();
        let _fc = module_scope("fc");
        a.linear(&w, None).unwrap()
    };
    // Every later op sees the NaN too; only the first is flagged.
    let y = h.gelu().sum_all();
    end_layer("stage");
    let p = rec.finish();
    assert!(y.item().unwrap().is_nan());
    let first = p.first_non_finite().unwrap();
    assert_eq!(
        (first.op.as_str(), first.module.as_str(), first.phase),
        ("linear", "blocks.1.fc", Phase::Forward)
    );
    assert_eq!(first.layer, "stage");
    let nf = first.non_finite.unwrap();
    // One NaN weight row: one NaN per row of x in that output column.
    assert_eq!((nf.nan, nf.inf, nf.numel), (4, 0, 24));
    assert_eq!(
        p.records.iter().filter(|r| r.non_finite.is_some()).count(),
        1
    );
    assert_eq!(p.records[0].module, "blocks.1"); // the relu
    assert_eq!(p.records.last().unwrap().module, ""); // sum_all, outside any module
}

#[test]
fn a_plain_recording_checks_nothing_and_finite_values_flag_nothing() {
    let bad = Tensor::full(&[3], f32::INFINITY);
    let (_, p) = record(|| bad.exp());
    assert_eq!(p.records.len(), 1);
    assert_eq!(p.first_non_finite(), None);
    let rec = Recorder::start_checking();
    let _ = Tensor::randn(&[5, 5], 0).softmax(1).unwrap().log();
    assert_eq!(rec.finish().first_non_finite(), None);
}

#[test]
fn backward_names_the_rule_whose_gradient_is_not_finite_and_its_forward_module() {
    // sqrt(0) is finite forward; its derivative 1 / (2 sqrt(0)) is infinite.
    let x = Tensor::from_vec(vec![0.0, 1.0, 4.0], &[3])
        .unwrap()
        .requires_grad_(true);
    let rec = Recorder::start_checking();
    let s = {
        let _m = module_scope("norm");
        x.sqrt()
    };
    let loss = s.mul_scalar(3.0).sum_all();
    loss.backward().unwrap();
    let p = rec.finish();
    let first = p.first_non_finite().unwrap();
    assert_eq!(
        (first.op.as_str(), first.module.as_str(), first.phase),
        ("sqrt.backward", "norm", Phase::Backward)
    );
    assert_eq!(first.non_finite.unwrap().inf, 1);
    assert!(x.grad().unwrap().to_vec()[0].is_infinite());
    // The forward ops before it were all checked and finite.
    assert!(p
        .records
        .iter()
        .filter(|r| r.phase == Phase::Forward)
        .all(|r| r.non_finite.is_none()));
}

#[test]
fn module_paths_nest_and_an_empty_name_opens_nothing() {
    let x = Tensor::randn(&[2, 3], 0);
    let (_, p) = record(|| {
        let _a = module_scope("layer1");
        let _b = module_scope(format_args!("{}", 0));
        let _c = module_scope("");
        let y = x.relu();
        drop(_c);
        drop(_b);
        let z = y.exp();
        drop(_a);
        z.sigmoid()
    });
    let mods: Vec<&str> = p.records.iter().map(|r| r.module.as_str()).collect();
    assert_eq!(mods, ["layer1.0", "layer1", ""]);
    // Module paths leave layers alone.
    assert!(p.records.iter().all(|r| r.layer == OTHER));
    // Off: nothing is formatted or pushed.
    let _g = module_scope(format_args!("{}", 1));
    assert!(!is_recording());
}
