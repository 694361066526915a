//! `tessera bench softmax`: softmax and log-softmax over the last dimension of attention-sized
//! tensors (ViT-B/16 at 224 px: 12 heads x 197 tokens; ViT-Ti: 3 heads; a long-sequence case),
//! median ns per element after warm-up.

use super::BenchArgs;
use crate::timing::median_per_call;
use tessera::kernels::softmax::{log_softmax_with, softmax_with};
use tessera::kernels::Isa;

/// (leading dims, row length, label).
pub const SHAPES: [(usize, usize, &str); 3] = [
    (12 * 197, 197, "12x197x197"),
    (3 * 197, 197, "3x197x197"),
    (8 * 1024, 1024, "8x1024x1024"),
];

fn inputs(len: usize) -> Vec<f32> {
    let mut s = 0x2545_F491_4F6C_DD1Du64;
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

/// Runs the benchmark.
pub fn run(args: &BenchArgs) -> Result<(), String> {
    if args.m.is_some() || args.n.is_some() || args.k.is_some() || args.svg.is_some() {
        return Err("bench softmax: --m/--n/--k/--svg do not apply to softmax".into());
    }
    let threads = crate::init_threads(args.threads)?;
    let isa = Isa::current().map_err(|e| e.to_string())?;
    if !args.json {
        outln!("tessera bench softmax: isa {isa}, {threads} thread(s); median ns per element after warm-up (softmax over the last dim)");
        outln!("{:<12} {:<14} {:>10}", "op", "shape", "ns/elem");
    }
    for (rows, row_len, label) in SHAPES {
        let x = inputs(rows * row_len);
        let mut y = vec![0.0f32; x.len()];
        let budget = if x.len() <= 1 << 20 { 0.4 } else { 1.0 };
        for (op, f) in [
            (
                "softmax",
                softmax_with as fn(Isa, &[f32], &mut [f32], usize) -> _,
            ),
            ("log_softmax", log_softmax_with),
        ] {
            let mut err = None;
            let t = median_per_call(
                || {
                    if let Err(e) = f(isa, &x, &mut y, row_len) {
                        err = Some(e);
                    }
                },
                budget,
                5,
            );
            if let Some(e) = err {
                return Err(e.to_string());
            }
            let ns = t * 1e9 / x.len() as f64;
            if args.json {
                outln!(
                    "{}",
                    serde_json::json!({
                        "op": op, "shape": label, "threads": threads,
                        "ns_per_elem": (ns * 1e4).round() / 1e4, "isa": isa.name(),
                    })
                );
            } else {
                outln!("{op:<12} {label:<14} {ns:>10.4}");
            }
        }
    }
    Ok(())
}
