//! Time hard-swish against swish on one slice with the engine's activation kernels (the ISA
//! tessera picked, or the one `TESSERA_ISA` forces), and print their largest difference.
//!
//! ```sh
//! cargo run --release --example hardswish_vs_swish -- [ELEMENTS]
//! ```
//!
//! A quick look; `tessera bench activations` is the measured, side-by-side version.

use std::time::Instant;
use tessera::kernels::activation::forward;
use tessera::kernels::{Activation, Isa};

fn median_ns_per_elem(
    act: Activation,
    x: &[f32],
    y: &mut [f32],
) -> Result<f64, Box<dyn std::error::Error>> {
    let mut times = Vec::new();
    for _ in 0..21 {
        let t = Instant::now();
        forward(act, x, y)?;
        times.push(t.elapsed().as_secs_f64() * 1e9 / x.len() as f64);
    }
    times.sort_by(f64::total_cmp);
    Ok(times[times.len() / 2])
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let n: usize = std::env::args().nth(1).map_or(Ok(1 << 16), |s| s.parse())?;
    let x: Vec<f32> = (0..n)
        .map(|i| -8.0 + 16.0 * i as f32 / n.max(1) as f32)
        .collect();
    let (mut hs, mut sw) = (vec![0.0f32; n], vec![0.0f32; n]);
    let t_hs = median_ns_per_elem(Activation::HardSwish, &x, &mut hs)?;
    let t_sw = median_ns_per_elem(Activation::Swish, &x, &mut sw)?;
    let gap = hs
        .iter()
        .zip(&sw)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0f32, f32::max);
    println!("{n} elements, instruction set {}", Isa::current()?);
    println!(
        "hard-swish {t_hs:.3} ns/elem, swish {t_sw:.3} ns/elem: swish costs {:.2}x",
        t_sw / t_hs
    );
    println!("largest |hard-swish - swish| on [-8, 8]: {gap:.4}");
    Ok(())
}
