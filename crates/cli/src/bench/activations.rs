//! `tessera bench activations`: the hard-swish vs swish study. Time per element of relu6,
//! sigmoid, swish, hardsigmoid, hardswish and gelu (erf), forward and backward, in cache
//! (64 Ki elements) and streaming from memory (16 Mi elements); the swish / hardswish cost
//! ratio; the approximation error max |swish - hardswish| (and sigmoid - hardsigmoid) over
//! [-8, 8]; optionally one SVG chart of the curves and the costs (`--svg FILE`). A plain copy
//! of the same buffers (`op` = `copy`) is measured alongside as the memory-bandwidth baseline.
//! The buffers are 64-byte aligned, as the inference plan's arena and PyTorch's tensors are:
//! on a glibc block (16 bytes into a cache line) every vector access straddles two lines, and
//! hard-swish out of place measured 1.54x the copy there against 1.14x aligned (Sapphire
//! Rapids class, 2026-12-05).
//!
//! Hard-swish: Howard et al., "Searching for MobileNetV3" (ICCV 2019), section 5.2.

use super::BenchArgs;
use crate::timing::median_per_call;
use std::fmt::Write as _;
use tessera::kernels::activation::{backward_with, forward_with, reference, Activation};
use tessera::kernels::memory::AlignedBuf;
use tessera::kernels::Isa;

/// The activations of the study, in table order.
pub const OPS: [Activation; 6] = [
    Activation::Relu6,
    Activation::Sigmoid,
    Activation::Swish,
    Activation::HardSigmoid,
    Activation::HardSwish,
    Activation::GeluErf,
];
/// In cache (256 KiB per operand) and streaming from memory (64 MiB per operand).
pub const SIZES: [(usize, &str); 2] = [(1 << 16, "cache"), (1 << 24, "memory")];

/// Deterministic inputs uniform in [-8, 8) (xorshift64*).
fn inputs(len: usize, seed: u64) -> Vec<f32> {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            s ^= s >> 12;
            s ^= s << 25;
            s ^= s >> 27;
            let r = s.wrapping_mul(0x2545_F491_4F6C_DD1D);
            ((r >> 40) as f32 / (1u64 << 24) as f32) * 16.0 - 8.0
        })
        .collect()
}

/// One measurement.
#[derive(Clone, Debug)]
struct Cost {
    /// `None` for the copy baseline.
    act: Option<Activation>,
    pass: &'static str,
    numel: usize,
    ns_per_elem: f64,
}

/// Max |f(x) - g(x)| over a grid of step 1/4096 on [-8, 8] (f64 references), and where.
fn max_gap(f: Activation, g: Activation) -> (f64, f64) {
    let mut best = (0.0f64, 0.0f64);
    for i in -32_768..=32_768 {
        let x = i as f64 / 4096.0;
        let d = (reference::forward(f, x) - reference::forward(g, x)).abs();
        if d > best.0 {
            best = (d, x);
        }
    }
    best
}

fn measure(isa: Isa) -> Result<Vec<Cost>, String> {
    let mut out = Vec::new();
    for (numel, _) in SIZES {
        let x = AlignedBuf::from_slice(&inputs(numel, 1));
        let dy = AlignedBuf::from_slice(&inputs(numel, 2));
        let mut y = AlignedBuf::zeroed(numel);
        let budget = if numel <= 1 << 16 { 0.25 } else { 0.6 };
        // Baseline: a plain copy moves the same bytes as a forward pass (read x, write y).
        let t = median_per_call(|| y.copy_from_slice(&x), budget, 5);
        out.push(Cost {
            act: None,
            pass: "forward",
            numel,
            ns_per_elem: t * 1e9 / numel as f64,
        });
        for act in OPS {
            let mut err = None;
            let t = median_per_call(
                || {
                    if let Err(e) = forward_with(isa, act, &x, &mut y) {
                        err = Some(e);
                    }
                },
                budget,
                5,
            );
            if let Some(e) = err.take() {
                return Err(e.to_string());
            }
            out.push(Cost {
                act: Some(act),
                pass: "forward",
                numel,
                ns_per_elem: t * 1e9 / numel as f64,
            });
            let t = median_per_call(
                || {
                    if let Err(e) = backward_with(isa, act, &x, &dy, &mut y) {
                        err = Some(e);
                    }
                },
                budget,
                5,
            );
            if let Some(e) = err {
                return Err(e.to_string());
            }
            out.push(Cost {
                act: Some(act),
                pass: "backward",
                numel,
                ns_per_elem: t * 1e9 / numel as f64,
            });
        }
    }
    Ok(out)
}

fn cost(costs: &[Cost], act: Activation, pass: &str, numel: usize) -> f64 {
    costs
        .iter()
        .find(|c| c.act == Some(act) && c.pass == pass && c.numel == numel)
        .map_or(f64::NAN, |c| c.ns_per_elem)
}

/// Runs the benchmark.
pub fn run(args: &BenchArgs) -> Result<(), String> {
    if args.m.is_some() || args.n.is_some() || args.k.is_some() {
        return Err("bench activations: --m/--n/--k apply to gemm only".into());
    }
    let threads = crate::init_threads(args.threads)?;
    let isa = Isa::current().map_err(|e| e.to_string())?;
    if !args.json {
        outln!("tessera bench activations: isa {isa}, {threads} thread(s); median ns per element after warm-up");
        outln!(
            "{:<12} {:>9} {:>10} {:>12} {:>12}",
            "op",
            "pass",
            "numel",
            "ns/elem",
            "GB/s"
        );
    }
    let costs = measure(isa)?;
    for c in &costs {
        if args.json {
            outln!(
                "{}",
                serde_json::json!({
                    "op": c.act.map_or("copy", |a| a.name()), "pass": c.pass, "numel": c.numel, "threads": threads,
                    "ns_per_elem": round4(c.ns_per_elem), "isa": isa.name(),
                })
            );
        } else {
            // Bytes moved per element: forward reads x and writes y, backward reads x, dy.
            let bytes = if c.pass == "forward" { 8.0 } else { 12.0 };
            outln!(
                "{:<12} {:>9} {:>10} {:>12.4} {:>12.1}",
                c.act.map_or("copy", |a| a.name()),
                c.pass,
                c.numel,
                c.ns_per_elem,
                bytes / c.ns_per_elem
            );
        }
    }
    let (sw, hs) = (Activation::Swish, Activation::HardSwish);
    let (small, big) = (SIZES[0].0, SIZES[1].0);
    let ratio = |pass: &str, n: usize| cost(&costs, sw, pass, n) / cost(&costs, hs, pass, n);
    let (gap, at) = max_gap(sw, hs);
    let (sgap, sat) = max_gap(Activation::Sigmoid, Activation::HardSigmoid);
    if args.json {
        outln!(
            "{}",
            serde_json::json!({
                "op": "swish_vs_hardswish", "threads": threads, "isa": isa.name(),
                "cost_ratio_forward_cache": round4(ratio("forward", small)),
                "cost_ratio_backward_cache": round4(ratio("backward", small)),
                "cost_ratio_forward_memory": round4(ratio("forward", big)),
                "cost_ratio_backward_memory": round4(ratio("backward", big)),
                "max_abs_error": round4(gap), "at_x": at,
                "sigmoid_hardsigmoid_max_abs_error": round4(sgap), "sigmoid_hardsigmoid_at_x": sat,
            })
        );
    } else {
        outln!("");
        outln!(
            "swish / hardswish cost: forward {:.2}x (cache), {:.2}x (memory); backward {:.2}x (cache), {:.2}x (memory)",
            ratio("forward", small),
            ratio("forward", big),
            ratio("backward", small),
            ratio("backward", big)
        );
        outln!("max |swish(x) - hardswish(x)| on [-8, 8] (step 1/4096): {gap:.5} at x = {at}");
        outln!(
            "max |sigmoid(x) - hardsigmoid(x)| on [-8, 8] (step 1/4096): {sgap:.5} at x = {sat}"
        );
    }
    if let Some(path) = &args.svg {
        let svg = chart(&costs, isa, threads, (gap, at));
        write_atomic(path, &svg)?;
        if !args.json {
            outln!("chart written to {}", path.display());
        }
    }
    Ok(())
}

fn round4(x: f64) -> f64 {
    (x * 1e4).round() / 1e4
}

/// Writes `text` to `path` through the models crate's safe replacement
/// (`tessera::models::io::atomic`).
fn write_atomic(path: &std::path::Path, text: &str) -> Result<(), String> {
    tessera::models::io::atomic::write_bytes(path, text.as_bytes()).map_err(|e| e.to_string())
}

/// One self-contained SVG: left, the curves (swish / hardswish above, sigmoid / hardsigmoid
/// below) over [-8, 8]; right, the in-cache and streaming cost bars per op and pass.
fn chart(costs: &[Cost], isa: Isa, threads: usize, (gap, at): (f64, f64)) -> String {
    let (w, h) = (1000.0, 570.0);
    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" viewBox="0 0 {w} {h}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(s, r#"<rect width="{w}" height="{h}" fill="white"/>"#);
    let _ = writeln!(
        s,
        r#"<text x="20" y="24" font-size="16" font-weight="bold">Hard-swish vs swish: shape and cost (tessera, {isa}, {threads} thread(s))</text>"#
    );
    // Curves.
    let panels = [
        (
            Activation::Swish,
            Activation::HardSwish,
            -1.0,
            8.0,
            50.0,
            "swish vs hardswish",
        ),
        (
            Activation::Sigmoid,
            Activation::HardSigmoid,
            0.0,
            1.0,
            310.0,
            "sigmoid vs hardsigmoid",
        ),
    ];
    let (px, pw, ph) = (60.0, 360.0, 200.0);
    for (f, g, ylo, yhi, py, title) in panels {
        let sx = |x: f64| px + (x + 8.0) / 16.0 * pw;
        let sy = |y: f64| py + ph - (y - ylo) / (yhi - ylo) * ph;
        let _ = writeln!(
            s,
            r##"<rect x="{px}" y="{py}" width="{pw}" height="{ph}" fill="none" stroke="#999"/>"##
        );
        let _ = writeln!(
            s,
            r#"<text x="{}" y="{}" font-weight="bold">{title}</text>"#,
            px,
            py - 6.0
        );
        for xt in [-8, -4, -3, 0, 3, 4, 8] {
            let x = sx(xt as f64);
            let _ = writeln!(
                s,
                r##"<line x1="{x:.1}" y1="{py}" x2="{x:.1}" y2="{:.1}" stroke="#eee"/>"##,
                py + ph
            );
            let _ = writeln!(
                s,
                r#"<text x="{x:.1}" y="{:.1}" text-anchor="middle">{xt}</text>"#,
                py + ph + 14.0
            );
        }
        for yt in [ylo, (ylo + yhi) / 2.0, yhi] {
            let y = sy(yt);
            let _ = writeln!(
                s,
                r#"<text x="{:.1}" y="{:.1}" text-anchor="end">{yt}</text>"#,
                px - 4.0,
                y + 4.0
            );
        }
        if ylo < 0.0 {
            let _ = writeln!(
                s,
                r##"<line x1="{px}" y1="{0:.1}" x2="{1}" y2="{0:.1}" stroke="#ccc"/>"##,
                sy(0.0),
                px + pw
            );
        }
        for (act, color, dash) in [
            (f, "#1f77b4", ""),
            (g, "#d62728", r#" stroke-dasharray="6 3""#),
        ] {
            let mut d = String::new();
            for i in 0..=320 {
                let x = -8.0 + i as f64 * 0.05;
                let y = reference::forward(act, x);
                let _ = write!(
                    d,
                    "{}{:.1},{:.1}",
                    if i == 0 { "M" } else { " L" },
                    sx(x),
                    sy(y)
                );
            }
            let _ = writeln!(
                s,
                r#"<path d="{d}" fill="none" stroke="{color}" stroke-width="2"{dash}/>"#
            );
        }
        let _ = writeln!(
            s,
            r##"<line x1="{0}" y1="{1}" x2="{2}" y2="{1}" stroke="#1f77b4" stroke-width="2"/><text x="{3}" y="{4}">{5}</text>"##,
            px + 10.0,
            py + 14.0,
            px + 30.0,
            px + 34.0,
            py + 18.0,
            f.name()
        );
        let _ = writeln!(
            s,
            r##"<line x1="{0}" y1="{1}" x2="{2}" y2="{1}" stroke="#d62728" stroke-width="2" stroke-dasharray="6 3"/><text x="{3}" y="{4}">{5}</text>"##,
            px + 10.0,
            py + 30.0,
            px + 30.0,
            px + 34.0,
            py + 34.0,
            g.name()
        );
    }
    let _ = writeln!(
        s,
        r#"<text x="{px}" y="{:.1}">max |swish - hardswish| = {gap:.4} at x = {at}</text>"#,
        50.0 + ph + 32.0
    );
    // Cost bars: one group per op, four bars (fwd/bwd x cache/memory).
    let (bx, by, bw, bh) = (500.0, 50.0, 470.0, 440.0);
    let max = costs
        .iter()
        .filter(|c| c.act.is_some())
        .map(|c| c.ns_per_elem)
        .fold(0.0f64, f64::max)
        * 1.1;
    let _ = writeln!(
        s,
        r#"<text x="{bx}" y="{:.1}" font-weight="bold">ns per element (lower is better)</text>"#,
        by - 6.0
    );
    let _ = writeln!(
        s,
        r##"<line x1="{bx}" y1="{0}" x2="{bx}" y2="{1}" stroke="#999"/>"##,
        by,
        by + bh
    );
    let series = [
        ("forward", SIZES[0].0, "#1f77b4", "forward, in cache"),
        ("forward", SIZES[1].0, "#aec7e8", "forward, from memory"),
        ("backward", SIZES[0].0, "#ff7f0e", "backward, in cache"),
        ("backward", SIZES[1].0, "#ffbb78", "backward, from memory"),
    ];
    let group = bh / OPS.len() as f64;
    let label_w = 104.0;
    let scale = (bw - label_w - 60.0) / max;
    for (k, act) in OPS.iter().enumerate() {
        let gy = by + k as f64 * group;
        let _ = writeln!(
            s,
            r#"<text x="{:.1}" y="{:.1}" text-anchor="end" font-weight="bold">{}</text>"#,
            bx + label_w - 8.0,
            gy + group / 2.0,
            act.name()
        );
        for (j, (pass, n, color, _)) in series.iter().enumerate() {
            let v = cost(costs, *act, pass, *n);
            let y = gy + 6.0 + j as f64 * (group - 12.0) / 4.0;
            let len = if v.is_finite() { v * scale } else { 0.0 };
            let _ = writeln!(
                s,
                r#"<rect x="{:.1}" y="{y:.1}" width="{len:.1}" height="{:.1}" fill="{color}"/><text x="{:.1}" y="{:.1}" font-size="10">{v:.3}</text>"#,
                bx + label_w,
                (group - 12.0) / 4.0 - 2.0,
                bx + label_w + len + 4.0,
                y + (group - 12.0) / 4.0 - 4.0
            );
        }
    }
    // The copy baselines (same bytes as a forward pass) as dashed vertical lines, explained
    // under the legend.
    let mut note = String::from("dashed: plain copy of the same buffers,");
    for (n, color, label) in [
        (SIZES[0].0, "#1f77b4", "cache"),
        (SIZES[1].0, "#7f7f7f", "memory"),
    ] {
        if let Some(c) = costs.iter().find(|c| c.act.is_none() && c.numel == n) {
            let x = bx + label_w + c.ns_per_elem * scale;
            let _ = writeln!(
                s,
                r#"<line x1="{x:.1}" y1="{by}" x2="{x:.1}" y2="{:.1}" stroke="{color}" stroke-dasharray="3 3"/>"#,
                by + bh
            );
            let _ = write!(note, " {:.3} ({label})", c.ns_per_elem);
        }
    }
    let _ = writeln!(
        s,
        r##"<text x="{bx}" y="{:.1}" font-size="11" fill="#555">{note}</text>"##,
        by + bh + 54.0
    );
    for (j, (_, _, color, label)) in series.iter().enumerate() {
        let lx = bx + (j % 2) as f64 * 220.0;
        let ly = by + bh + 20.0 + (j / 2) as f64 * 16.0;
        let _ = writeln!(
            s,
            r#"<rect x="{lx}" y="{:.1}" width="12" height="10" fill="{color}"/><text x="{:.1}" y="{ly:.1}">{label}</text>"#,
            ly - 9.0,
            lx + 16.0
        );
    }
    let _ = writeln!(s, "</svg>");
    s
}
