//! `tessera bench dwconv`: the depthwise convolutions of MobileNetV2/V3 (batch 1, padding
//! k/2), forward with bias + ReLU6 (NCHW, and channels-last as the plan runs small planes), input gradient and weight gradient; prints the median time
//! and GFLOP/s (FLOPs = 2 * c * oh * ow * k * k for every pass) after warm-up.

use super::BenchArgs;
use crate::timing::{reps_for, stats, time_once};
use tessera::kernels::conv::depthwise::nhwc;
use tessera::kernels::conv::{
    conv2d_backward_input, conv2d_backward_weight, conv2d_forward, Conv2dShape,
};
use tessera::kernels::{Activation, Isa};

/// (channels, height = width, kernel, stride).
const SHAPES: &[(usize, usize, usize, usize)] = &[
    (32, 112, 3, 1),
    (144, 56, 3, 1),
    (144, 56, 3, 2),
    (240, 28, 5, 1),
    (960, 7, 3, 1),
    (384, 14, 3, 1),
    (576, 14, 3, 2),
    (672, 14, 5, 2),
];

/// `forward_nhwc`: the channels-last forward pass the inference plan runs on small planes
/// (`tessera::kernels::conv::depthwise::nhwc`), same FLOPs.
const PASSES: [&str; 4] = [
    "forward",
    "forward_nhwc",
    "backward_input",
    "backward_weight",
];

fn random(len: usize, seed: u64) -> Vec<f32> {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            s ^= s >> 12;
            s ^= s << 25;
            s ^= s >> 27;
            ((s.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect()
}

/// The depthwise shape of one bench row.
pub fn shape(c: usize, hw: usize, k: usize, stride: usize) -> Conv2dShape {
    Conv2dShape {
        n: 1,
        c_in: c,
        h: hw,
        w: hw,
        c_out: c,
        kh: k,
        kw: k,
        stride: (stride, stride),
        padding: (k / 2, k / 2),
        dilation: (1, 1),
        groups: c,
    }
}

/// Median seconds of one pass.
fn measure(s: &Conv2dShape, pass: &str) -> Result<f64, String> {
    let x = random(s.input_len(), 1);
    let w = random(s.weight_len(), 2);
    let b = random(s.c_out, 3);
    let dy = random(s.output_len(), 4);
    let mut y = vec![0.0f32; s.output_len()];
    let mut dx = vec![0.0f32; s.input_len()];
    let mut dw = vec![0.0f32; s.weight_len()];
    let w_nhwc = nhwc::pack_weights(s, &w).map_err(|e| e.to_string())?;
    let mut run = || match pass {
        "forward" => conv2d_forward(s, &x, &w, Some(&b), Activation::Relu6, &mut y),
        "forward_nhwc" => nhwc::forward(s, &x, &w_nhwc, Some(&b), Activation::Relu6, &mut y),
        "backward_input" => conv2d_backward_input(s, &w, &dy, &mut dx),
        _ => conv2d_backward_weight(s, &x, &dy, &mut dw),
    };
    let mut err = None;
    let one = time_once(|| err = run().err());
    if let Some(e) = err {
        return Err(e.to_string());
    }
    time_once(|| {
        let _ = run();
    });
    let reps = reps_for(one, 0.3, 10, 2000);
    let samples = (0..reps)
        .map(|_| {
            time_once(|| {
                let _ = run();
            })
        })
        .collect();
    Ok(stats(samples).median)
}

/// Runs the benchmark.
pub fn run(args: &BenchArgs) -> Result<(), String> {
    if args.m.is_some() || args.n.is_some() || args.k.is_some() {
        return Err("bench dwconv: --m/--n/--k apply to gemm only".into());
    }
    let threads = crate::init_threads(args.threads)?;
    let isa = Isa::current().map_err(|e| e.to_string())?;
    if !args.json {
        outln!("tessera bench dwconv: isa {isa}, {threads} thread(s); batch 1, padding k/2, median after warm-up");
        outln!(
            "{:<16} {:>4} {:>6} {:>16} {:>10} {:>8}",
            "shape",
            "k",
            "stride",
            "pass",
            "us",
            "GFLOP/s"
        );
    }
    for &(c, hw, k, stride) in SHAPES {
        let s = shape(c, hw, k, stride);
        let flops = 2.0 * (c * s.out_h() * s.out_w() * k * k) as f64;
        for pass in PASSES {
            let t = measure(&s, pass)?;
            let us = t * 1e6;
            let gflops = flops / t / 1e9;
            if args.json {
                outln!(
                    "{}",
                    serde_json::json!({
                        "op": "dwconv", "pass": pass, "c": c, "h": hw, "k": k, "stride": stride,
                        "threads": threads, "isa": isa.name(),
                        "us": (us * 100.0).round() / 100.0, "gflops": (gflops * 100.0).round() / 100.0,
                    })
                );
            } else {
                outln!(
                    "{:<16} {:>4} {:>6} {:>16} {:>10.1} {:>8.1}",
                    format!("{c}x{hw}x{hw}"),
                    k,
                    stride,
                    pass,
                    us,
                    gflops
                );
            }
        }
    }
    Ok(())
}
