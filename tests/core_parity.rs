//! Reference parity with PyTorch: every op (forward and input gradients) and one composed
//! attention block, against `tests/fixtures/core/core.tsfx` written by
//! `scripts/core_fixtures.py` (needs torch; run by hand, output committed).
//!
//! Error measure: per element `|got - want| / max(|want|, 1e-2 * max|want|)`, i.e. relative
//! error, with elements smaller than 1% of the tensor's largest judged against that scale.
//! The floor is there because near-zero values are produced by cancellation of O(scale)
//! terms: both PyTorch and tessera compute them in f32 with an absolute error of about one
//! ulp of those terms (6e-8 · scale), so demanding 1e-5 relative of a value below
//! 1e-2 · scale would ask for more than f32 resolves. Bounds: 1e-5 for element-wise ops and
//! views, 1e-4 for reductions, matmul and the fused / NCHW ops.

use std::collections::HashMap;

use tessera::core::{Conv2dParams, Pool2dParams, Result, RunningStats, Tensor};

const ELEM: f64 = 1e-5;
const RED: f64 = 1e-4;

struct Fixtures(HashMap<String, Tensor>);

impl Fixtures {
    fn load() -> Fixtures {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/core/core.tsfx");
        let bytes = std::fs::read(path).expect("fixture file (run scripts/core_fixtures.py)");
        assert_eq!(&bytes[..8], b"TSFX0001");
        let mut at = 8;
        let mut take = |n: usize| {
            let s = &bytes[at..at + n];
            at += n;
            s
        };
        let u32_ = |b: &[u8]| u32::from_le_bytes(b.try_into().unwrap()) as usize;
        let count = u32_(take(4));
        let mut map = HashMap::new();
        for _ in 0..count {
            let len = u32_(take(4));
            let name = String::from_utf8(take(len).to_vec()).unwrap();
            let rank = u32_(take(4));
            let shape: Vec<usize> = (0..rank)
                .map(|_| u64::from_le_bytes(take(8).try_into().unwrap()) as usize)
                .collect();
            let n: usize = shape.iter().product();
            let data = take(4 * n)
                .chunks(4)
                .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
                .collect();
            map.insert(name, Tensor::from_vec(data, &shape).unwrap());
        }
        Fixtures(map)
    }

    fn get(&self, name: &str) -> &Tensor {
        self.0
            .get(name)
            .unwrap_or_else(|| panic!("fixture {name} missing"))
    }

    fn indices(&self, name: &str) -> Vec<usize> {
        self.get(name)
            .to_vec()
            .iter()
            .map(|&v| v as usize)
            .collect()
    }
}

fn assert_close(what: &str, got: &Tensor, want: &Tensor, tol: f64) -> f64 {
    assert_eq!(got.shape(), want.shape(), "{what}: shape");
    let (g, w) = (got.to_vec(), want.to_vec());
    let scale = w.iter().fold(0.0f64, |m, &v| m.max(v.abs() as f64));
    let mut worst = 0.0f64;
    for (i, (&a, &b)) in g.iter().zip(&w).enumerate() {
        let denom = (b.abs() as f64).max(1e-2 * scale).max(f64::MIN_POSITIVE);
        let err = (a as f64 - b as f64).abs() / denom;
        assert!(
            err <= tol,
            "{what}[{i}]: tessera {a} vs torch {b} (relative error {err:.2e} > {tol:.0e})"
        );
        worst = worst.max(err);
    }
    worst
}

type OpFn = Box<dyn Fn(&[Tensor], &Fixtures) -> Result<Tensor>>;

fn op(f: impl Fn(&[Tensor], &Fixtures) -> Result<Tensor> + 'static) -> OpFn {
    Box::new(f)
}

fn attention(t: &[Tensor]) -> Result<Tensor> {
    let (x, g, b, wqkv, bqkv, wo, bo) = (&t[0], &t[1], &t[2], &t[3], &t[4], &t[5], &t[6]);
    let (bsz, tl, d, h) = (x.shape()[0], x.shape()[1], x.shape()[2], 2);
    let hn = x.layer_norm(&[d], Some(g), Some(b), 1e-5)?;
    let qkv = hn.linear(wqkv, Some(bqkv))?;
    let heads = |i: usize| -> Result<Tensor> {
        qkv.narrow(2, i * d, d)?
            .reshape(&[bsz, tl, h, d / h])?
            .permute(&[0, 2, 1, 3])
    };
    let (q, k, v) = (heads(0)?, heads(1)?, heads(2)?);
    let att = q
        .matmul(&k.transpose(2, 3)?)?
        .div_scalar(((d / h) as f32).sqrt())
        .softmax(3)?;
    let o = att
        .matmul(&v)?
        .permute(&[0, 2, 1, 3])?
        .reshape(&[bsz, tl, d])?;
    x.add(&o.linear(wo, Some(bo))?)
}

fn cases() -> Vec<(&'static str, f64, OpFn)> {
    let pool = |k, s, p| Pool2dParams {
        kernel: (k, k),
        stride: (s, s),
        padding: (p, p),
        ceil_mode: false,
    };
    vec![
        ("add", ELEM, op(|t, _| t[0].add(&t[1]))),
        ("sub", ELEM, op(|t, _| t[0].sub(&t[1]))),
        ("mul", ELEM, op(|t, _| t[0].mul(&t[1]))),
        ("div", ELEM, op(|t, _| t[0].div(&t[1]))),
        ("pow", ELEM, op(|t, _| t[0].pow(&t[1]))),
        ("maximum", ELEM, op(|t, _| t[0].maximum(&t[1]))),
        ("minimum", ELEM, op(|t, _| t[0].minimum(&t[1]))),
        ("neg", ELEM, op(|t, _| Ok(t[0].neg()))),
        ("add_scalar", ELEM, op(|t, _| Ok(t[0].add_scalar(1.5)))),
        ("mul_scalar", ELEM, op(|t, _| Ok(t[0].mul_scalar(-2.5)))),
        ("div_scalar", ELEM, op(|t, _| Ok(t[0].div_scalar(4.0)))),
        ("powf", ELEM, op(|t, _| Ok(t[0].powf(2.5)))),
        ("exp", ELEM, op(|t, _| Ok(t[0].exp()))),
        ("log", ELEM, op(|t, _| Ok(t[0].log()))),
        ("sqrt", ELEM, op(|t, _| Ok(t[0].sqrt()))),
        ("rsqrt", ELEM, op(|t, _| Ok(t[0].rsqrt()))),
        ("abs", ELEM, op(|t, _| Ok(t[0].abs()))),
        ("clamp", ELEM, op(|t, _| t[0].clamp(-1.0, 0.5))),
        ("relu", ELEM, op(|t, _| Ok(t[0].relu()))),
        ("relu6", ELEM, op(|t, _| Ok(t[0].relu6()))),
        ("leaky_relu", ELEM, op(|t, _| Ok(t[0].leaky_relu(0.1)))),
        ("sigmoid", ELEM, op(|t, _| Ok(t[0].sigmoid()))),
        ("tanh", ELEM, op(|t, _| Ok(t[0].tanh()))),
        ("silu", ELEM, op(|t, _| Ok(t[0].silu()))),
        ("hardsigmoid", ELEM, op(|t, _| Ok(t[0].hardsigmoid()))),
        ("hardswish", ELEM, op(|t, _| Ok(t[0].hardswish()))),
        ("gelu", ELEM, op(|t, _| Ok(t[0].gelu()))),
        ("gelu_tanh", ELEM, op(|t, _| Ok(t[0].gelu_tanh()))),
        ("sum", RED, op(|t, _| t[0].sum(&[0, 2], true))),
        ("sum_all", RED, op(|t, _| Ok(t[0].sum_all()))),
        ("mean", RED, op(|t, _| t[0].mean(&[1], false))),
        ("max", RED, op(|t, _| t[0].max(&[1], false))),
        ("var", RED, op(|t, _| t[0].var(&[0, 2], true, 1))),
        ("std", RED, op(|t, _| t[0].std(&[2], false, 0))),
        ("matmul_2d", RED, op(|t, _| t[0].matmul(&t[1]))),
        ("matmul_tn", RED, op(|t, _| t[0].t()?.matmul(&t[1]))),
        ("matmul_batched", RED, op(|t, _| t[0].matmul(&t[1]))),
        ("linear", RED, op(|t, _| t[0].linear(&t[1], Some(&t[2])))),
        (
            "permute_reshape",
            ELEM,
            op(|t, _| t[0].permute(&[2, 0, 1])?.reshape(&[4, 6])),
        ),
        (
            "narrow_expand",
            ELEM,
            op(|t, _| t[0].narrow(1, 1, 2)?.unsqueeze(0)?.expand(&[3, 2, 2, 4])),
        ),
        ("cat", ELEM, op(|t, _| Tensor::cat(&t[..2], 1))),
        ("stack", ELEM, op(|t, _| Tensor::stack(&t[..2], 1))),
        (
            "gather",
            ELEM,
            op(|t, f| t[0].gather(1, &f.indices("gather/index"), &[3, 1])),
        ),
        (
            "index_select",
            ELEM,
            op(|t, f| t[0].index_select(0, &f.indices("index_select/index"))),
        ),
        ("softmax", RED, op(|t, _| t[0].softmax(1))),
        ("log_softmax", RED, op(|t, _| t[0].log_softmax(1))),
        (
            "cross_entropy",
            RED,
            op(|t, f| t[0].cross_entropy(&f.indices("cross_entropy/targets"), 0.0)),
        ),
        (
            "cross_entropy_ls",
            RED,
            op(|t, f| t[0].cross_entropy(&f.indices("cross_entropy_ls/targets"), 0.1)),
        ),
        (
            "layer_norm",
            RED,
            op(|t, _| t[0].layer_norm(&[6], Some(&t[1]), Some(&t[2]), 1e-5)),
        ),
        (
            "batch_norm_train",
            RED,
            op(|t, f| {
                let mut m = f.get("batch_norm_train/running_mean").clone();
                let mut v = f.get("batch_norm_train/running_var").clone();
                let r = RunningStats {
                    mean: &mut m,
                    var: &mut v,
                    momentum: 0.1,
                };
                let y = t[0].batch_norm(Some(r), Some(&t[1]), Some(&t[2]), true, 1e-5)?;
                assert_close(
                    "batch_norm_train running_mean",
                    &m,
                    f.get("batch_norm_train/running_mean_out"),
                    RED,
                );
                assert_close(
                    "batch_norm_train running_var",
                    &v,
                    f.get("batch_norm_train/running_var_out"),
                    RED,
                );
                Ok(y)
            }),
        ),
        (
            "batch_norm_eval",
            RED,
            op(|t, f| {
                let mut m = f.get("batch_norm_eval/running_mean").clone();
                let mut v = f.get("batch_norm_eval/running_var").clone();
                let r = RunningStats {
                    mean: &mut m,
                    var: &mut v,
                    momentum: 0.1,
                };
                t[0].batch_norm(Some(r), Some(&t[1]), Some(&t[2]), false, 1e-5)
            }),
        ),
        (
            "conv2d",
            RED,
            op(|t, _| t[0].conv2d(&t[1], Some(&t[2]), Conv2dParams::new(2, 1))),
        ),
        (
            "conv2d_groups_dilation",
            RED,
            op(|t, _| t[0].conv2d(&t[1], None, Conv2dParams::new(1, 2).dilation(2).groups(2))),
        ),
        (
            "conv2d_depthwise",
            RED,
            op(|t, _| t[0].conv2d(&t[1], Some(&t[2]), Conv2dParams::new(2, 1).groups(4))),
        ),
        (
            "max_pool2d",
            RED,
            op(move |t, _| t[0].max_pool2d(pool(3, 2, 1))),
        ),
        (
            "avg_pool2d",
            RED,
            op(move |t, _| t[0].avg_pool2d(pool(3, 2, 1), false)),
        ),
        (
            "adaptive_avg_pool2d",
            RED,
            op(|t, _| t[0].adaptive_avg_pool2d(3, 2)),
        ),
        ("attention", RED, op(|t, _| attention(t))),
        ("sub_scalar", ELEM, op(|t, _| Ok(t[0].sub_scalar(0.5)))),
        ("select_class_token", ELEM, op(|t, _| t[0].select(1, 0))),
        (
            "squeeze_unsqueeze",
            ELEM,
            op(|t, _| t[0].unsqueeze(1)?.squeeze(2)),
        ),
        (
            "global_avg_pool2d",
            RED,
            op(|t, _| t[0].global_avg_pool2d()),
        ),
        ("mse_loss", RED, op(|t, _| t[0].mse_loss(&t[1]))),
    ]
}

#[test]
fn parity_with_pytorch() {
    let f = Fixtures::load();
    let mut report = Vec::new();
    for (name, tol, run) in cases() {
        let mut inputs = Vec::new();
        while let Some(t) = f.0.get(&format!("{name}/in{}", inputs.len())) {
            inputs.push(t.clone().requires_grad_(true));
        }
        assert!(!inputs.is_empty(), "{name}: no inputs in the fixture file");
        let out = run(&inputs, &f).unwrap_or_else(|e| panic!("{name}: {e}"));
        let mut worst = assert_close(
            &format!("{name} out"),
            &out,
            f.get(&format!("{name}/out")),
            tol,
        );
        out.backward_with(f.get(&format!("{name}/gout")))
            .unwrap_or_else(|e| panic!("{name} backward: {e}"));
        for (i, x) in inputs.iter().enumerate() {
            let want = f.get(&format!("{name}/grad{i}"));
            let got = x.grad().unwrap_or_else(|| Tensor::zeros(x.shape()));
            worst = worst.max(assert_close(&format!("{name} grad{i}"), &got, want, tol));
        }
        report.push(format!("{name}: {worst:.1e}"));
    }
    // Every case in the file is exercised.
    let names: std::collections::HashSet<&str> =
        f.0.keys().filter_map(|k| k.split('/').next()).collect();
    assert_eq!(
        names.len(),
        report.len(),
        "fixture cases without a Rust counterpart"
    );
    println!("worst relative error per case:\n{}", report.join("\n"));
}
