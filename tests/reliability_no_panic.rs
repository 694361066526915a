//! No panic reachable from input: a sweep over the public API with a `catch_unwind` harness.
//! Tensor ops get wrong shapes, out-of-range and repeated dimensions, empty tensors, NaN and
//! infinities; model constructors get extreme and degenerate configurations and models get
//! inputs of the wrong rank, channels and size; the file readers get corrupt bytes. Every call
//! must return (an `Ok` with a self-consistent tensor, or an `Err`); a panic fails the test with
//! the call that caused it.

use std::io::Cursor;
use std::panic::{catch_unwind, AssertUnwindSafe};
use tessera::core::kernels::Activation;
use tessera::core::{Conv2dParams, Pool2dParams, RunningStats, Tensor};
use tessera::models::checkpoint::Checkpoint;
use tessera::models::io::{json, npy, safetensors};
use tessera::models::{create, zoo, Overrides};

/// Runs `f`; records a panic under `what`.
fn probe<T>(panics: &mut Vec<String>, what: String, f: impl FnOnce() -> T) -> Option<T> {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(v) => Some(v),
        Err(e) => {
            let msg = e
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default();
            panics.push(format!("{what}: {msg}"));
            None
        }
    }
}

/// A result tensor must be self-consistent.
fn consistent(r: &tessera::core::Result<Tensor>) -> bool {
    match r {
        Ok(t) => t.to_vec().len() == t.shape().iter().product::<usize>(),
        Err(e) => !e.to_string().is_empty(),
    }
}

fn inputs() -> Vec<(String, Tensor)> {
    let shapes: &[&[usize]] = &[
        &[],
        &[0],
        &[1],
        &[5],
        &[2, 3],
        &[3, 0],
        &[0, 4, 2],
        &[1, 1, 1, 1],
        &[2, 3, 4, 5],
        &[1, 3, 8, 8],
        &[2, 1, 7, 3],
        &[1, 2, 3, 4, 2],
    ];
    let mut v = Vec::new();
    for s in shapes {
        let n: usize = s.iter().product();
        let ramp: Vec<f32> = (0..n).map(|i| i as f32 * 0.37 - 1.0).collect();
        let mut odd = ramp.clone();
        for (i, x) in odd.iter_mut().enumerate() {
            *x = match i % 4 {
                0 => f32::NAN,
                1 => f32::INFINITY,
                2 => f32::NEG_INFINITY,
                _ => f32::MIN_POSITIVE / 2.0,
            };
        }
        v.push((format!("{s:?}"), Tensor::from_vec(ramp, s).unwrap()));
        v.push((format!("{s:?} NaN/Inf"), Tensor::from_vec(odd, s).unwrap()));
    }
    // A strided view.
    let t = Tensor::randn(&[4, 6], 1).transpose(0, 1).unwrap();
    v.push(("[6, 4] transposed".into(), t));
    v
}

#[test]
fn tensor_ops_never_panic() {
    let mut panics = Vec::new();
    let xs = inputs();
    let dims = [0usize, 1, 2, 3, 4, 7, usize::MAX];
    let acts = [
        Activation::Relu,
        Activation::GeluErf,
        Activation::LeakyRelu(f32::NAN),
        Activation::Swish,
        Activation::HardSwish,
        Activation::Sigmoid,
    ];
    for (name, x) in &xs {
        let p = &mut panics;
        macro_rules! unary {
            ($($label:literal => $e:expr),* $(,)?) => {$(
                probe(p, format!("{} on {name}", $label), || {
                    let r = $e;
                    assert!(consistent(&r));
                });
            )*};
        }
        unary!(
            "relu" => Ok(x.relu()),
            "exp" => Ok(x.exp()),
            "log" => Ok(x.log()),
            "rsqrt" => Ok(x.rsqrt()),
            "powf" => Ok(x.powf(-0.5)),
            "leaky_relu" => Ok(x.leaky_relu(f32::NAN)),
            "sum_all" => Ok(x.sum_all()),
            "mean_all" => Ok(x.mean_all()),
            "contiguous" => Ok(x.contiguous()),
            "clamp" => x.clamp(1.0, -1.0),
            "clamp NaN" => x.clamp(f32::NAN, 1.0),
            "dropout" => x.dropout(1.5, true, 0),
            "dropout NaN" => x.dropout(f32::NAN, true, 0),
            "dropout 1" => x.dropout(1.0, true, 0),
            "reshape" => x.reshape(&[usize::MAX, 2]),
            "reshape 0" => x.reshape(&[0]),
            "reshape overflow" => x.reshape(&[1 << 63, 2]),
            "reshape overflow 0" => x.reshape(&[1 << 63, 2, 0]),
            "from_vec overflow" => Tensor::from_vec(x.to_vec(), &[1 << 63, 2]),
            "expand" => x.expand(&[3, 3, 3]),
            "broadcast_to" => x.broadcast_to(&[usize::MAX, usize::MAX]),
            "permute dup" => x.permute(&[0, 0]),
            "permute" => x.permute(&[1, 0]),
            "t" => x.t(),
            "global_avg_pool2d" => x.global_avg_pool2d(),
            "adaptive_avg_pool2d 0" => x.adaptive_avg_pool2d(0, 0),
            "adaptive_avg_pool2d big" => x.adaptive_avg_pool2d(100, 3),
            "max_pool2d k0" => x.max_pool2d(Pool2dParams::new(0)),
            "max_pool2d k9" => x.max_pool2d(Pool2dParams::new(9)),
            "max_pool2d s0" => x.max_pool2d(Pool2dParams::new(2).stride_padding(0, 5)),
            "avg_pool2d pad" => x.avg_pool2d(Pool2dParams::new(2).stride_padding(1, 3), false),
            "cross_entropy" => x.cross_entropy(&[0, 1, 99], 0.1),
            "cross_entropy smooth" => x.cross_entropy(&[0, 0], 2.0),
            "mse_loss" => x.mse_loss(&Tensor::zeros(&[2])),
            "attention" => x.multi_head_attention(3, 1.0),
            "attention 0 heads" => x.multi_head_attention(0, 1.0),
            "index_select" => x.index_select(0, &[0, 5, usize::MAX]),
            "gather" => x.gather(1, &[0, 1], &[1, 2]),
            "sum_to" => x.sum_to(&[1]),
            "layer_norm" => x.layer_norm(&[5], None, None, 1e-5),
            "layer_norm empty" => x.layer_norm(&[], None, None, -1.0),
            "batch_norm" => x.batch_norm(None, None, None, true, 1e-5),
            "batch_norm eval" => x.batch_norm(None, None, None, false, f32::NAN),
            "matmul self" => x.matmul(x),
            "linear" => x.linear(&Tensor::zeros(&[3, 5]), Some(&Tensor::zeros(&[2]))),
            "conv2d" => x.conv2d(&Tensor::zeros(&[2, 3, 3, 3]), None, Conv2dParams::new(1, 1)),
            "conv2d groups" => x.conv2d(
                &Tensor::zeros(&[3, 1, 3, 3]),
                None,
                Conv2dParams::new(0, 0).groups(0)
            ),
            "conv2d dilation" => x.conv2d(
                &Tensor::zeros(&[3, 3, 3, 3]),
                None,
                Conv2dParams::new(1, 0).dilation(usize::MAX)
            ),
            "cat" => Tensor::cat(&[x.clone(), Tensor::zeros(&[2, 3])], 0),
            "cat none" => Tensor::cat(&[], 0),
            "stack" => Tensor::stack(&[x.clone(), x.clone()], 9),
        );
        for &d in &dims {
            unary!(
                "softmax" => x.softmax(d),
                "log_softmax" => x.log_softmax(d),
                "sum" => x.sum(&[d], true),
                "sum dup" => x.sum(&[d, d], false),
                "mean" => x.mean(&[d], false),
                "var" => x.var(&[d], false, 5),
                "std" => x.std(&[d], true, 0),
                "max" => x.max(&[d], false),
                "argmax" => x.argmax(d).map(|v| Tensor::zeros(&[v.len()])),
                "flatten" => x.flatten(d, 1),
                "transpose" => x.transpose(d, 0),
                "narrow" => x.narrow(d, 1, usize::MAX),
                "narrow 2" => x.narrow(d, usize::MAX, 2),
                "select" => x.select(d, 2),
                "squeeze" => x.squeeze(d),
                "unsqueeze" => x.unsqueeze(d),
                "dim" => x.dim(d).map(|v| Tensor::zeros(&[v.min(3)])),
            );
        }
        for a in acts {
            unary!("activate" => Ok(x.activate(a)));
        }
        for (other_name, y) in &xs {
            let what = format!("{name} with {other_name}");
            type Binary = fn(&Tensor, &Tensor) -> tessera::core::Result<Tensor>;
            let binaries: [(&str, Binary); 9] = [
                ("add", |a, b| a.add(b)),
                ("sub", |a, b| a.sub(b)),
                ("mul", |a, b| a.mul(b)),
                ("div", |a, b| a.div(b)),
                ("pow", |a, b| a.pow(b)),
                ("maximum", |a, b| a.maximum(b)),
                ("add_relu", |a, b| a.add_relu(b)),
                ("matmul", |a, b| a.matmul(b)),
                ("mse", |a, b| a.mse_loss(b)),
            ];
            for (label, f) in binaries {
                probe(p, format!("{label} {what}"), || {
                    assert!(consistent(&f(x, y)))
                });
            }
            probe(p, format!("batch_norm running stats {what}"), || {
                let (mut m, mut v) = (y.clone(), y.clone());
                x.batch_norm_act(
                    Some(RunningStats {
                        mean: &mut m,
                        var: &mut v,
                        momentum: 2.0,
                    }),
                    Some(y),
                    Some(y),
                    true,
                    0.0,
                    Activation::Relu6,
                )
            });
        }
        // Backward through whatever built: never a panic either.
        probe(p, format!("backward on {name}"), || {
            let leaf = x.clone().requires_grad_(true);
            if let Ok(y) = leaf.softmax(0) {
                let _ = y.sum_all().backward();
                let _ = y.sum_all().backward(); // twice: the graph is gone
            }
            let _ = leaf.backward(); // non-scalar
        });
    }
    assert!(
        panics.is_empty(),
        "{} panics:\n{}",
        panics.len(),
        panics.join("\n")
    );
}

#[test]
fn model_constructors_and_forwards_never_panic() {
    let mut panics = Vec::new();
    let big = usize::MAX;
    let configs: Vec<Overrides> = vec![
        Overrides::default(),
        Overrides {
            img_size: Some(0),
            ..Default::default()
        },
        Overrides {
            img_size: Some(1),
            ..Default::default()
        },
        Overrides {
            img_size: Some(big),
            ..Default::default()
        },
        Overrides {
            in_chans: Some(0),
            ..Default::default()
        },
        Overrides {
            in_chans: Some(big),
            ..Default::default()
        },
        Overrides {
            num_classes: Some(0),
            ..Default::default()
        },
        Overrides {
            num_classes: Some(big),
            ..Default::default()
        },
        Overrides {
            patch_size: Some(0),
            ..Default::default()
        },
        Overrides {
            patch_size: Some(big),
            ..Default::default()
        },
        Overrides {
            embed_dim: Some(big),
            ..Default::default()
        },
        Overrides {
            depth: Some(big),
            ..Default::default()
        },
        Overrides {
            num_heads: Some(big),
            ..Default::default()
        },
        Overrides {
            mlp_ratio: Some(f32::NAN),
            ..Default::default()
        },
        Overrides {
            mlp_ratio: Some(-1.0),
            ..Default::default()
        },
        Overrides {
            mlp_ratio: Some(f32::INFINITY),
            ..Default::default()
        },
        Overrides {
            mlp_ratio: Some(f32::MAX),
            ..Default::default()
        },
        Overrides {
            act: Some("no-such-act".into()),
            ..Default::default()
        },
        Overrides {
            img_size: Some(4_294_967_296),
            patch_size: Some(1),
            ..Default::default()
        },
    ];
    for arch in [
        "vit_digits",
        "mobilenetv2_digits",
        "mobilenetv3_digits",
        "resnet_digits",
        "seresnet_digits",
    ] {
        for o in &configs {
            let what = format!("create {arch} {o:?}");
            let Some(Ok(model)) = probe(&mut panics, what.clone(), || create(arch, o, 0)) else {
                continue;
            };
            // Only small models get forward passes.
            let [c, h, w] = model.input_chw();
            if c * h * w > 1 << 12 {
                continue;
            }
            for shape in [
                vec![1, c, h, w],
                vec![0, c, h, w],
                vec![c, h, w],
                vec![1, c + 1, h, w],
                vec![1, c, h + 1, w],
                vec![1, c, 1, 1],
                vec![2, c, h, w, 1],
            ] {
                let x = Tensor::full(&shape, f32::NAN);
                probe(&mut panics, format!("{what} forward {shape:?}"), || {
                    let _ = model.forward(&x);
                });
            }
        }
    }
    // An unknown name.
    probe(&mut panics, "create unknown".into(), || {
        create("nope", &Overrides::default(), 0)
    });
    assert!(!zoo::names().is_empty());
    assert!(
        panics.is_empty(),
        "{} panics:\n{}",
        panics.len(),
        panics.join("\n")
    );
}

/// Deterministic byte mutations of a valid file: flips, truncations, insertions, and header
/// fields overwritten with extreme numbers.
fn mutations(valid: &[u8], rounds: usize) -> Vec<Vec<u8>> {
    let mut out = vec![Vec::new(), valid[..valid.len() / 2].to_vec()];
    let mut s = 0x9E37_79B9_7F4A_7C15u64;
    let mut next = move || {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        s
    };
    for len in [1, 7, 8, 9, 16, 64] {
        out.push(valid[..len.min(valid.len())].to_vec());
    }
    for _ in 0..rounds {
        let mut b = valid.to_vec();
        for _ in 0..1 + next() % 4 {
            let i = (next() as usize) % b.len().max(1);
            match next() % 5 {
                0 => b[i] ^= 1 << (next() % 8),
                1 => b[i] = [0, 0xff, b'9', b'-', b'"', b'[', b'}'][next() as usize % 7],
                2 => b.truncate(i),
                3 => b.insert(i, next() as u8),
                _ => {
                    // An extreme little-endian length at the front.
                    let v = [u64::MAX, 1 << 40, 0, 7][next() as usize % 4];
                    if b.len() >= 8 {
                        b[..8].copy_from_slice(&v.to_le_bytes());
                    }
                }
            }
            if b.is_empty() {
                break;
            }
        }
        out.push(b);
    }
    out
}

#[test]
fn readers_never_panic_on_corrupt_bytes() {
    let dir = std::env::temp_dir().join(format!("tessera-no-panic-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut panics = Vec::new();

    // safetensors, and the same bytes as a checkpoint.
    let st = dir.join("w.safetensors");
    let mut model = create("vit_digits", &Overrides::default(), 0).unwrap();
    let mut trainer = tessera::models::train::Trainer::new(
        tessera::models::train::TrainConfig::default(),
        model.as_mut(),
        10,
    )
    .unwrap();
    trainer.epoch = 1;
    trainer.save_checkpoint(model.as_ref(), &st).unwrap();
    let valid = std::fs::read(&st).unwrap();
    for (i, b) in mutations(&valid, 300).into_iter().enumerate() {
        let r = probe(&mut panics, format!("safetensors mutation {i}"), || {
            safetensors::read_from(Cursor::new(&b), "m.safetensors")
        });
        if let Some(Ok(file)) = r {
            probe(&mut panics, format!("checkpoint mutation {i}"), || {
                if let Ok(c) = Checkpoint::from_safetensors(file, "m") {
                    let opt = tessera::models::optim::AdamW::new(0.9, 0.999, 1e-8, 0.0).unwrap();
                    let _ = c.validate(model.as_ref(), &opt, "adamw", 0);
                }
            });
        }
    }

    // .npy
    let np = dir.join("x.npy");
    npy::write_f32(&np, &[2, 3, 4], &[0.5; 24]).unwrap();
    let valid = std::fs::read(&np).unwrap();
    for (i, b) in mutations(&valid, 300).into_iter().enumerate() {
        probe(&mut panics, format!("npy mutation {i}"), || {
            npy::read_from(Cursor::new(&b), b.len() as u64, "m.npy")
        });
        // A length that lies about the file.
        probe(&mut panics, format!("npy mutation {i} long"), || {
            npy::read_from(Cursor::new(&b), u64::MAX, "m.npy")
        });
    }

    // JSON
    let valid = br#"{"a": [1, -2.5e3, true, null, {"b": "\u00e9\n"}], "c": 18446744073709551615}"#;
    for (i, b) in mutations(valid, 500).into_iter().enumerate() {
        if let Ok(text) = std::str::from_utf8(&b) {
            probe(&mut panics, format!("json mutation {i}"), || {
                json::parse(text)
            });
        }
    }
    let deep = "[".repeat(100_000);
    probe(&mut panics, "json deep nesting".into(), || {
        json::parse(&deep)
    });

    // CIFAR-10 records.
    let mut rec = vec![3u8];
    rec.extend(std::iter::repeat_n(7u8, 3072));
    let valid: Vec<u8> = rec.iter().chain(rec.iter()).copied().collect();
    for (i, b) in mutations(&valid, 100).into_iter().enumerate() {
        probe(&mut panics, format!("cifar mutation {i}"), || {
            tessera::models::data::cifar::parse_batch(&b, std::path::Path::new("m.bin"))
        });
    }
    let _ = std::fs::remove_dir_all(&dir);
    assert!(
        panics.is_empty(),
        "{} panics:\n{}",
        panics.len(),
        panics.join("\n")
    );
}
