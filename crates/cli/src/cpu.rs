//! `tessera cpu`: what this host is and what the kernels chose for it: instruction sets, the
//! CPU's identity, its caches (and where they were read), and for each ISA the GEMM
//! microkernel and block sizes in force with the reason (analytical model or `tessera tune`),
//! and the ISAs whose inference plans run dense convolutions as implicit GEMMs.

use clap::Args;
use tessera::kernels::conv::{Conv2dShape, PackedConvWeight};
use tessera::kernels::gemm::blocking::explain;
use tessera::kernels::gemm::table::{selected, Origin};
use tessera::kernels::host::{CacheLevel, Host};
use tessera::kernels::Isa;

/// Arguments of `tessera cpu`.
#[derive(Args)]
pub struct CpuArgs {
    /// One JSON object instead of text.
    #[arg(long)]
    json: bool,
}

fn level_json(c: &CacheLevel) -> serde_json::Value {
    serde_json::json!({
        "bytes": c.size, "ways": c.ways, "line": c.line, "sets": c.sets, "shared_by": c.shared_by
    })
}

fn level_text(c: &CacheLevel) -> String {
    let size = if c.size >= 4 << 20 {
        format!("{} MiB", c.size >> 20)
    } else {
        format!("{} KiB", c.size >> 10)
    };
    format!(
        "{size}, {}-way, {}-byte lines, {} sets, shared by {}",
        c.ways, c.line, c.sets, c.shared_by
    )
}

/// Runs `tessera cpu`.
pub fn run(args: &CpuArgs) -> Result<(), String> {
    let current = Isa::current().map_err(|e| e.to_string())?;
    let available = Isa::available();
    let names: Vec<&str> = available.iter().map(|i| i.name()).collect();
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let host = Host::get();
    let id = &host.identity;
    let caches = &host.caches;
    let gemm: Vec<_> = available
        .iter()
        .map(|&isa| {
            let s = selected(isa);
            let origin = match &s.origin {
                Origin::Analytical => "analytical model".to_string(),
                Origin::Tuned(path) => format!("tessera tune ({path})"),
            };
            let analytical = s.origin == Origin::Analytical;
            (
                isa,
                s.tuning.kernel.name,
                s.tuning.blocking,
                s.tuning.deep_kc,
                origin,
                analytical,
            )
        })
        .collect();
    // The ISAs whose inference plans run k x k convolutions as implicit GEMMs (probed on a
    // ResNet 3x3 layer; docs/kernels/conv.md), the others through im2col and the GEMM.
    let probe = Conv2dShape {
        padding: (1, 1),
        ..Conv2dShape::new(1, 256, 14, 14, 256, 3, 3)
    };
    let implicit: Vec<&str> = available
        .iter()
        .filter(|&&isa| PackedConvWeight::implicit_applies(&probe, Some(isa)))
        .map(|isa| isa.name())
        .collect();
    if args.json {
        let gemm_json: Vec<_> = gemm
            .iter()
            .map(|(isa, kernel, b, deep_kc, origin, _)| {
                serde_json::json!({
                    "isa": isa.name(), "kernel": kernel, "mr": b.mr, "nr": b.nr,
                    "kc": b.kc, "mc": b.mc, "nc": b.nc, "deep_kc": deep_kc, "origin": origin
                })
            })
            .collect();
        outln!(
            "{}",
            serde_json::json!({
                "isa": current.name(), "available": names, "cores": threads,
                "cpu": { "vendor": id.vendor, "brand": id.brand, "family": id.family,
                         "model": id.model, "stepping": id.stepping },
                "caches": { "source": format!("{:?}", caches.source).to_lowercase(),
                            "l1d": level_json(&caches.l1d), "l2": level_json(&caches.l2),
                            "l3": caches.l3.as_ref().map(level_json) },
                "gemm": gemm_json, "conv_implicit": implicit
            })
        );
        return Ok(());
    }
    outln!("instruction set in use: {current} (override with TESSERA_ISA)");
    outln!("available on this CPU:  {}", names.join(", "));
    outln!("logical cores:          {threads}");
    outln!(
        "cpu:                    {} ({}, family {} model {} stepping {})",
        id.brand,
        id.vendor,
        id.family,
        id.model,
        id.stepping
    );
    outln!(
        "caches (from {}):",
        format!("{:?}", caches.source).to_lowercase()
    );
    outln!("  L1d  {}", level_text(&caches.l1d));
    outln!("  L2   {}", level_text(&caches.l2));
    if let Some(l3) = &caches.l3 {
        outln!("  L3   {}", level_text(l3));
    }
    outln!("GEMM kernels and blocks (Low et al. 2016 model unless tuned):");
    for (isa, kernel, b, deep_kc, origin, analytical) in &gemm {
        outln!(
            "  {:8} {kernel:14} MR {:2} NR {:2} KC {:3} MC {:4} NC {:4}  [{origin}]",
            isa.name(),
            b.mr,
            b.nr,
            b.kc,
            b.mc,
            b.nc
        );
        if *deep_kc != b.kc {
            outln!(
                "           KC {deep_kc} (MC and NC scaled to keep the blocks' bytes) for products \
                 whose C outgrows L2 and no operand is pre-packed: {}",
                if *analytical {
                    "the model's (2 x KC, at most 512 and a B micro-panel of one L2 way)"
                } else {
                    "chosen by `tessera tune` on this host"
                }
            );
        }
        if *analytical {
            outln!("           {}", explain(b, caches));
        }
    }
    outln!(
        "dense convolutions (inference plan): Winograd F(2x2, 3x3) for 3x3 stride-1 layers of \
         64+ channels and 32+ output tiles (every ISA); implicit GEMM on {}; im2col + GEMM otherwise",
        if implicit.is_empty() {
            "no ISA of this CPU".to_string()
        } else {
            implicit.join(", ")
        }
    );
    outln!(
        "threads: kernels called from outside the pool run on the caller too; workers linger \
         {} us after their last task (TESSERA_LINGER_US)",
        tessera::kernels::parallel::linger_time().as_micros()
    );
    Ok(())
}
