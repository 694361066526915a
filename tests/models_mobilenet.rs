//! MobileNetV2 and MobileNetV3 against timm: exact parameter counts and state_dict keys/shapes
//! of the full-size models, eval-mode logits of small variants against PyTorch
//! (`scripts/fixtures_mobilenet.py`), the small-image presets, the `act` override, override
//! errors and timm's `_init_weight_goog` initialisation.
//!
//! The full-size random-weight parity check is `#[ignore]`d (its files are too big to commit):
//! `python3 scripts/fixtures_mobilenet.py --full /tmp/mbn && TESSERA_MOBILENET_FULL=/tmp/mbn
//! cargo test --release --test models_mobilenet -- --ignored`.

use std::path::{Path, PathBuf};
use tessera::core::{no_grad, Tensor};
use tessera::models::io::safetensors::{self, SafeTensors};
use tessera::models::module::{named_tensors, parameter_count};
use tessera::models::{create, weights, zoo, Mode, Model, ModelError, Overrides};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/models")
}

fn io() -> SafeTensors {
    safetensors::read(fixtures().join("mobilenet_io.safetensors")).unwrap()
}

fn get(io: &SafeTensors, name: &str) -> Tensor {
    let t = &io.tensors[name];
    Tensor::from_slice(t.as_f32().unwrap(), &t.shape).unwrap()
}

/// max |a - b| / max |b|.
fn rel_err(a: &Tensor, b: &Tensor) -> f32 {
    assert_eq!(a.shape(), b.shape());
    let (a, b) = (a.to_vec(), b.to_vec());
    let diff = a
        .iter()
        .zip(&b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max);
    let scale = b.iter().map(|y| y.abs()).fold(0.0, f32::max);
    diff / scale
}

fn ov(f: impl FnOnce(&mut Overrides)) -> Overrides {
    let mut o = Overrides::default();
    f(&mut o);
    o
}

fn classes10(in_chans: usize) -> Overrides {
    ov(|o| {
        o.num_classes = Some(10);
        o.in_chans = Some(in_chans);
    })
}

fn loaded(arch: &str, o: &Overrides, file: &str) -> Box<dyn Model> {
    let mut m = create(arch, o, 0).unwrap();
    // An inference forward first fills the folded-batch-norm caches with the initial weights:
    // loading must invalidate them.
    let c = m.input_chw()[0];
    logits(m.as_ref(), &Tensor::randn(&[1, c, 16, 16], 1));
    weights::load(m.as_mut(), fixtures().join(file)).unwrap();
    m
}

fn logits(m: &dyn Model, x: &Tensor) -> Tensor {
    let _g = no_grad();
    m.forward(x).unwrap()
}

#[test]
fn parameter_counts_equal_timm() {
    let expected = [
        ("mobilenetv2_035", 1_677_128),
        ("mobilenetv2_050", 1_968_680),
        ("mobilenetv2_075", 2_636_424),
        ("mobilenetv2_100", 3_504_872),
        ("mobilenetv2_140", 6_108_776),
        ("mobilenetv3_large_075", 3_993_528),
        ("mobilenetv3_large_100", 5_483_032),
        ("mobilenetv3_small_050", 1_593_224),
        ("mobilenetv3_small_075", 2_041_872),
        ("mobilenetv3_small_100", 2_542_856),
        // tessera presets = timm mobilenetv2_035 / mobilenetv3_small_050, in_chans 1, 10 classes.
        ("mobilenetv2_digits", 408_650),
        ("mobilenetv3_digits", 578_186),
    ];
    for (arch, n) in expected {
        let m = create(arch, &Overrides::default(), 1).unwrap();
        assert_eq!(parameter_count(m.as_ref()), n, "{arch}");
        assert_eq!(m.arch(), arch);
    }
    let mut listed: Vec<&str> = expected.iter().map(|e| e.0).collect();
    listed.sort_unstable();
    let mut names: Vec<&str> = zoo::names()
        .into_iter()
        .filter(|n| n.starts_with("mobilenet"))
        .collect();
    names.sort_unstable();
    assert_eq!(names, listed);
}

#[test]
fn state_dict_keys_and_shapes_equal_timm() {
    for arch in [
        "mobilenetv2_100",
        "mobilenetv3_large_100",
        "mobilenetv3_small_100",
    ] {
        let text =
            std::fs::read_to_string(fixtures().join(format!("mobilenet_keys_{arch}.txt"))).unwrap();
        let want: Vec<String> = text
            .lines()
            .filter(|l| !l.starts_with('#'))
            .map(str::to_string)
            .collect();
        let m = create(arch, &Overrides::default(), 0).unwrap();
        let got: Vec<String> = named_tensors(m.as_ref())
            .into_iter()
            .map(|(n, t, _)| {
                let s: Vec<String> = t.shape().iter().map(|d| d.to_string()).collect();
                format!("{n} {}", s.join(","))
            })
            .collect();
        assert_eq!(got, want, "{arch}");
    }
}

#[test]
fn mobilenetv2_matches_timm() {
    let io = io();
    let m = loaded(
        "mobilenetv2_035",
        &classes10(3),
        "mobilenetv2_035.safetensors",
    );
    let y = logits(m.as_ref(), &get(&io, "v2_input"));
    let e = rel_err(&y, &get(&io, "v2_logits"));
    assert!(e <= 1e-4, "mobilenetv2_035 relative error {e}");
}

#[test]
fn mobilenetv2_digits_matches_timm_with_strides_removed() {
    let io = io();
    let m = loaded(
        "mobilenetv2_digits",
        &classes10(3),
        "mobilenetv2_035.safetensors",
    );
    let y = logits(m.as_ref(), &get(&io, "v2_digits_input"));
    let e = rel_err(&y, &get(&io, "v2_digits_logits"));
    assert!(e <= 1e-4, "mobilenetv2_digits relative error {e}");
}

#[test]
fn mobilenetv3_matches_timm() {
    let io = io();
    let x = get(&io, "v3_input");
    let m = loaded(
        "mobilenetv3_small_050",
        &classes10(3),
        "mobilenetv3_small_050.safetensors",
    );
    let y = logits(m.as_ref(), &x);
    let e = rel_err(&y, &get(&io, "v3_logits"));
    assert!(e <= 1e-4, "mobilenetv3_small_050 relative error {e}");

    let mut o = classes10(3);
    o.act = Some("swish".into());
    let s = loaded(
        "mobilenetv3_small_050",
        &o,
        "mobilenetv3_small_050.safetensors",
    );
    let ys = logits(s.as_ref(), &x);
    let e = rel_err(&ys, &get(&io, "v3_swish_logits"));
    assert!(
        e <= 1e-4,
        "mobilenetv3_small_050 act=swish relative error {e}"
    );
    // The swap is real: same weights, clearly different logits.
    assert!(rel_err(&ys, &y) > 1e-2, "swish and hard-swish logits agree");
}

#[test]
fn mobilenetv3_digits_matches_timm_with_strides_removed() {
    let io = io();
    let m = loaded(
        "mobilenetv3_digits",
        &classes10(3),
        "mobilenetv3_small_050.safetensors",
    );
    let y = logits(m.as_ref(), &get(&io, "v3_digits_input"));
    let e = rel_err(&y, &get(&io, "v3_digits_logits"));
    assert!(e <= 1e-4, "mobilenetv3_digits relative error {e}");
}

#[test]
fn act_override_takes_every_spelling_of_the_kernels_parser() {
    let x = Tensor::randn(&[1, 3, 32, 32], 3);
    let reference = create("mobilenetv3_small_050", &Overrides::default(), 5).unwrap();
    let y = logits(reference.as_ref(), &x).to_vec();
    // Hard-swish is the default: each spelling builds the same model.
    for name in [
        "hardswish",
        "hard_swish",
        "hard-swish",
        "h-swish",
        "HardSwish",
    ] {
        let m = create(
            "mobilenetv3_small_050",
            &ov(|o| o.act = Some(name.into())),
            5,
        )
        .unwrap();
        assert_eq!(logits(m.as_ref(), &x).to_vec(), y, "{name}");
    }
    // Swish by both names; leaky ReLU with a slope; the exact GELU as `gelu_erf`.
    let swish = |name: &str| {
        let m = create(
            "mobilenetv3_small_050",
            &ov(|o| o.act = Some(name.into())),
            5,
        )
        .unwrap();
        logits(m.as_ref(), &x).to_vec()
    };
    assert_eq!(swish("silu"), swish("swish"));
    assert_eq!(swish("gelu_erf"), swish("gelu"));
    assert_ne!(swish("leaky_relu:0.2"), swish("relu"));
    assert_ne!(swish("swish"), y);
}

#[test]
fn act_override_changes_mobilenetv3_only_where_timm_does() {
    let x = Tensor::randn(&[1, 3, 32, 32], 3);
    let hs = create("mobilenetv3_small_050", &Overrides::default(), 5).unwrap();
    let sw = create(
        "mobilenetv3_small_050",
        &ov(|o| o.act = Some("swish".into())),
        5,
    )
    .unwrap();
    // Same seed, same weights; only the activation differs.
    let (a, b) = (named_tensors(hs.as_ref()), named_tensors(sw.as_ref()));
    assert!(a
        .iter()
        .zip(&b)
        .all(|(p, q)| p.0 == q.0 && p.1.to_vec() == q.1.to_vec()));
    assert!(rel_err(&logits(sw.as_ref(), &x), &logits(hs.as_ref(), &x)) > 1e-3);
}

#[test]
fn overrides_shape_the_model_and_any_input_size_works() {
    let m = create(
        "mobilenetv3_large_100",
        &ov(|o| {
            o.in_chans = Some(1);
            o.num_classes = Some(7);
            o.img_size = Some(64);
        }),
        2,
    )
    .unwrap();
    assert_eq!(m.input_chw(), [1, 64, 64]);
    assert_eq!(m.num_classes(), 7);
    assert_eq!(
        logits(m.as_ref(), &Tensor::randn(&[2, 1, 33, 47], 1)).shape(),
        &[2, 7]
    );

    let d = create("mobilenetv2_digits", &Overrides::default(), 2).unwrap();
    assert_eq!(d.input_chw(), [1, 8, 8]);
    assert_eq!(
        logits(d.as_ref(), &Tensor::randn(&[3, 1, 8, 8], 1)).shape(),
        &[3, 10]
    );
    let d3 = create("mobilenetv3_digits", &Overrides::default(), 2).unwrap();
    assert_eq!(d3.input_chw(), [1, 8, 8]);
    assert_eq!(
        logits(d3.as_ref(), &Tensor::randn(&[1, 1, 8, 8], 1)).shape(),
        &[1, 10]
    );

    // num_classes 0: timm's Identity classifier, the head features come out.
    let f = create("mobilenetv2_035", &ov(|o| o.num_classes = Some(0)), 2).unwrap();
    assert_eq!(
        logits(f.as_ref(), &Tensor::randn(&[1, 3, 40, 40], 1)).shape(),
        &[1, 1280]
    );
    let f = create("mobilenetv3_small_050", &ov(|o| o.num_classes = Some(0)), 2).unwrap();
    assert_eq!(
        logits(f.as_ref(), &Tensor::randn(&[1, 3, 40, 40], 1)).shape(),
        &[1, 1024]
    );
}

#[test]
fn forward_stages_reports_stem_stages_and_head() {
    let m = create("mobilenetv3_small_050", &Overrides::default(), 0).unwrap();
    let mut seen = Vec::new();
    let y = {
        let _g = no_grad();
        m.forward_stages(&Tensor::randn(&[1, 3, 64, 64], 0), &mut |n, t| {
            seen.push((n.to_string(), t.shape().to_vec()))
        })
        .unwrap()
    };
    let names: Vec<&str> = seen.iter().map(|s| s.0.as_str()).collect();
    assert_eq!(
        names,
        [
            "conv_stem",
            "blocks.0",
            "blocks.1",
            "blocks.2",
            "blocks.3",
            "blocks.4",
            "blocks.5",
            "conv_head",
            "classifier"
        ]
    );
    assert_eq!(seen[0].1, [1, 16, 32, 32]);
    assert_eq!(seen[6].1, [1, 288, 2, 2]);
    assert_eq!(seen[7].1, [1, 1024, 1, 1]);
    assert_eq!(y.shape(), &[1, 1000]);
    let m2 = create("mobilenetv2_100", &Overrides::default(), 0).unwrap();
    let mut n2 = Vec::new();
    let _g = no_grad();
    m2.forward_stages(&Tensor::randn(&[1, 3, 32, 32], 0), &mut |n, _| {
        n2.push(n.to_string())
    })
    .unwrap();
    assert_eq!(n2.len(), 1 + 7 + 2);
    assert_eq!(n2[7], "blocks.6");
}

fn config_err(arch: &str, o: &Overrides) -> String {
    match create(arch, o, 0) {
        Err(ModelError::Config(msg)) => msg,
        Err(e) => panic!("{arch}: expected a config error, got {e}"),
        Ok(_) => panic!("{arch}: expected a config error, got a model"),
    }
}

#[test]
fn invalid_overrides_are_config_errors() {
    let swish = ov(|o| o.act = Some("swish".into()));
    assert!(config_err("mobilenetv2_100", &swish).contains("MobileNetV3 only"));
    let bad = ov(|o| o.act = Some("wiggle".into()));
    let e = config_err("mobilenetv3_large_100", &bad);
    // Names the architecture and the bad name, and lists the valid ones.
    for part in [
        "mobilenetv3_large_100",
        "\"wiggle\"",
        "hardswish",
        "swish",
        "gelu_tanh",
    ] {
        assert!(e.contains(part), "{e} lacks {part}");
    }
    let patch = ov(|o| o.patch_size = Some(16));
    assert!(config_err("mobilenetv3_small_100", &patch).contains("patch_size"));
    let depth = ov(|o| o.depth = Some(3));
    assert!(config_err("mobilenetv2_050", &depth).contains("depth"));
    assert!(config_err("mobilenetv2_100", &ov(|o| o.in_chans = Some(0))).contains("in_chans"));
    assert!(
        config_err("mobilenetv3_large_100", &ov(|o| o.img_size = Some(0))).contains("img_size")
    );
    assert!(config_err("mobilenetv3_huge_100", &Overrides::default()).contains("unknown"));
    // A wrong input is a tensor error naming the shapes, not a panic.
    let m = create("mobilenetv2_035", &Overrides::default(), 0).unwrap();
    let err = m.forward(&Tensor::randn(&[1, 4, 16, 16], 0)).unwrap_err();
    assert!(matches!(err, ModelError::Tensor(_)), "{err}");
}

#[test]
fn initialisation_follows_timm_goog() {
    let mut m = create("mobilenetv3_large_100", &Overrides::default(), 9).unwrap();
    m.set_mode(Mode::Eval);
    let t = named_tensors(m.as_ref());
    let find = |n: &str| t.iter().find(|e| e.0 == n).unwrap().1.to_vec();
    let std = |v: &[f32]| {
        let mean = v.iter().sum::<f32>() / v.len() as f32;
        (v.iter().map(|x| (x - mean).powi(2)).sum::<f32>() / v.len() as f32).sqrt()
    };
    // Pointwise conv 160 -> 960: fan_out = 960.
    let w = find("blocks.6.0.conv.weight");
    let want = (2.0f32 / 960.0).sqrt();
    assert!((std(&w) / want - 1.0).abs() < 0.03, "{} vs {want}", std(&w));
    // Depthwise 5x5 on 960 channels with groups 960: fan_out = 25.
    let w = find("blocks.5.2.conv_dw.weight");
    let want = (2.0f32 / 25.0).sqrt();
    assert!((std(&w) / want - 1.0).abs() < 0.05, "{} vs {want}", std(&w));
    assert!(find("blocks.5.2.se.conv_reduce.bias")
        .iter()
        .all(|v| *v == 0.0));
    assert!(find("conv_head.bias").iter().all(|v| *v == 0.0));
    assert!(find("blocks.5.2.bn2.weight").iter().all(|v| *v == 1.0));
    assert!(find("blocks.5.2.bn2.bias").iter().all(|v| *v == 0.0));
    // Classifier U(-1/sqrt(1000), 1/sqrt(1000)), bias zero.
    let w = find("classifier.weight");
    let bound = 1.0 / 1000f32.sqrt();
    assert!(w.iter().all(|v| v.abs() <= bound));
    assert!(w.iter().any(|v| v.abs() > 0.9 * bound));
    assert!(find("classifier.bias").iter().all(|v| *v == 0.0));
    // Same seed, same weights; another seed, other weights.
    let again = create("mobilenetv3_large_100", &Overrides::default(), 9).unwrap();
    assert_eq!(named_tensors(again.as_ref())[0].1.to_vec(), t[0].1.to_vec());
    let other = create("mobilenetv3_large_100", &Overrides::default(), 10).unwrap();
    assert_ne!(named_tensors(other.as_ref())[0].1.to_vec(), t[0].1.to_vec());
}

/// Full-size random-weight parity with timm (files written by
/// `scripts/fixtures_mobilenet.py --full DIR`, not committed).
#[test]
#[ignore]
fn full_size_timm_parity() {
    let dir = PathBuf::from(
        std::env::var("TESSERA_MOBILENET_FULL").expect("set TESSERA_MOBILENET_FULL=DIR"),
    );
    for arch in [
        "mobilenetv2_100",
        "mobilenetv3_large_100",
        "mobilenetv3_small_100",
    ] {
        let mut m = create(arch, &Overrides::default(), 0).unwrap();
        weights::load(m.as_mut(), dir.join(format!("{arch}.safetensors"))).unwrap();
        let io = safetensors::read(dir.join(format!("{arch}_io.safetensors"))).unwrap();
        let y = logits(m.as_ref(), &get(&io, "input"));
        let e = rel_err(&y, &get(&io, "logits"));
        println!("{arch}: relative error {e:e}");
        assert!(e <= 1e-4, "{arch}: relative error {e}");
    }
}

fn pool(threads: usize) -> rayon::ThreadPool {
    rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .unwrap()
}

#[test]
fn logits_are_bit_identical_for_any_thread_count() {
    for arch in ["mobilenetv2_035", "mobilenetv3_small_050"] {
        let m = create(arch, &Overrides::default(), 4).unwrap();
        let x = Tensor::randn(&[2, 3, 48, 40], 8);
        let one = pool(1).install(|| logits(m.as_ref(), &x).to_vec());
        let two = pool(2).install(|| logits(m.as_ref(), &x).to_vec());
        assert_eq!(one, two, "{arch}");
    }
}

/// Batch-1 224x224 inference time with 1 and 2 threads (min and median of 30 after warm-up),
/// printed;
/// checks the two thread counts give identical logits. Run with
/// `cargo test --release --test models_mobilenet inference_time -- --ignored --nocapture`.
#[test]
#[ignore]
fn inference_time() {
    for arch in ["mobilenetv2_100", "mobilenetv3_large_100"] {
        let m = create(arch, &Overrides::default(), 0).unwrap();
        let x = Tensor::randn(&[1, 3, 224, 224], 1);
        let mut outs = Vec::new();
        for threads in [1, 2] {
            let (ms, y) = pool(threads).install(|| {
                for _ in 0..3 {
                    logits(m.as_ref(), &x);
                }
                let mut times: Vec<f64> = (0..30)
                    .map(|_| {
                        let t0 = std::time::Instant::now();
                        logits(m.as_ref(), &x);
                        t0.elapsed().as_secs_f64() * 1e3
                    })
                    .collect();
                times.sort_by(f64::total_cmp);
                (
                    (times[0], times[times.len() / 2]),
                    logits(m.as_ref(), &x).to_vec(),
                )
            });
            println!(
                "{arch}: batch 1, 224x224, {threads} thread(s): min {:.2} ms, median {:.2} ms",
                ms.0, ms.1
            );
            outs.push(y);
        }
        assert!(outs[0].iter().all(|v| v.is_finite()));
        assert_eq!(outs[0], outs[1], "{arch}: thread count changed the logits");
    }
}

#[test]
fn folded_inference_equals_the_recorded_graph() {
    // Under no_grad in eval mode the batch norms are folded into the convolutions; with
    // parameters requiring grad the plain conv -> bn -> act graph runs. Both must agree.
    for (arch, file) in [
        ("mobilenetv2_035", "mobilenetv2_035.safetensors"),
        ("mobilenetv3_small_050", "mobilenetv3_small_050.safetensors"),
    ] {
        let mut m = loaded(arch, &classes10(3), file);
        let x = Tensor::randn(&[1, 3, 40, 36], 6);
        let folded = logits(m.as_ref(), &x);
        tessera::models::module::set_requires_grad(m.as_mut(), true);
        let graph = m.forward(&x).unwrap();
        assert!(
            graph.requires_grad(),
            "{arch}: the graph path did not record"
        );
        let e = rel_err(&folded, &graph.detach());
        assert!(e <= 1e-5, "{arch}: folded vs graph relative error {e}");
        // A training forward moves the running statistics; back in eval the fold follows.
        m.set_mode(Mode::Train);
        m.forward(&Tensor::randn(&[4, 3, 24, 24], 2)).unwrap();
        m.set_mode(Mode::Eval);
        let graph = m.forward(&x).unwrap().detach();
        let folded = logits(m.as_ref(), &x);
        let e = rel_err(&folded, &graph);
        assert!(
            e <= 1e-5,
            "{arch}: after training, folded vs graph relative error {e}"
        );
        assert!(
            rel_err(
                &folded,
                &logits(loaded(arch, &classes10(3), file).as_ref(), &x)
            ) > 1e-4
        );
    }
}

#[test]
fn training_forward_gives_every_parameter_a_gradient() {
    for arch in ["mobilenetv2_digits", "mobilenetv3_digits"] {
        let mut m = create(arch, &Overrides::default(), 3).unwrap();
        tessera::models::module::set_requires_grad(m.as_mut(), true);
        m.set_mode(Mode::Train);
        let x = Tensor::randn(&[4, 1, 8, 8], 5);
        let loss = m
            .forward(&x)
            .unwrap()
            .cross_entropy(&[0, 3, 7, 9], 0.0)
            .unwrap();
        loss.backward().unwrap();
        let params = tessera::models::module::named_parameters(m.as_ref());
        for (name, p) in &params {
            let g = p
                .grad()
                .unwrap_or_else(|| panic!("{arch}: no gradient for {name}"));
            assert_eq!(g.shape(), p.shape(), "{arch}: {name}");
            assert!(g.to_vec().iter().all(|v| v.is_finite()), "{arch}: {name}");
        }
        let nonzero = params
            .iter()
            .filter(|(_, p)| p.grad().unwrap().to_vec().iter().any(|v| *v != 0.0))
            .count();
        assert!(
            nonzero * 10 >= params.len() * 9,
            "{arch}: {nonzero} of {}",
            params.len()
        );
    }
}
