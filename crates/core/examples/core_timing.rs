//! Rough wall-clock timings of common core ops (median of a few runs), for comparison with
//! PyTorch eager on the same shapes. Not a benchmark suite (those live in `benches/`):
//! `cargo run --release -p tessera-core --example core_timing`.

use std::time::Instant;

use tessera_core::{no_grad, Conv2dParams, Result, Tensor};

fn time(name: &str, reps: usize, mut f: impl FnMut() -> Result<()>) -> Result<()> {
    f()?;
    let mut v: Vec<f64> = (0..reps)
        .map(|_| {
            let t = Instant::now();
            f().map(|_| t.elapsed().as_secs_f64() * 1e3)
        })
        .collect::<Result<_>>()?;
    v.sort_by(|a, b| a.total_cmp(b));
    println!("{name:<44} {:>9.3} ms", v[v.len() / 2]);
    Ok(())
}

fn main() -> Result<()> {
    let a = Tensor::randn(&[1024, 1024], 1);
    let b = Tensor::randn(&[1024, 1024], 2);
    let row = Tensor::randn(&[1024], 3);
    let at = a.t()?;
    {
        let _g = no_grad();
        time("add [1024,1024] contiguous", 20, || a.add(&b).map(drop))?;
        time("add [1024,1024] + [1024] broadcast", 20, || {
            a.add(&row).map(drop)
        })?;
        time("add transposed [1024,1024] view", 20, || {
            at.add(&b).map(drop)
        })?;
        time("contiguous() of a transposed [1024,1024]", 20, || {
            at.contiguous();
            Ok(())
        })?;
        time("gelu [1024,1024]", 20, || {
            a.gelu();
            Ok(())
        })?;
        time("sum dim 0 of [1024,1024]", 20, || {
            a.sum(&[0], false).map(drop)
        })?;
        time("sum dim 1 of [1024,1024]", 20, || {
            a.sum(&[1], false).map(drop)
        })?;
        time("softmax dim 1 of [1024,1024]", 20, || {
            a.softmax(1).map(drop)
        })?;
        let m = Tensor::randn(&[512, 512], 4);
        time("matmul 512x512x512", 10, || m.matmul(&m).map(drop))?;
        time("matmul 512x512x512, A transposed view", 10, || {
            m.t()?.matmul(&m).map(drop)
        })?;
    }
    // One training step of a ViT-ish MLP block: [256, 384] -> 1536 -> 384, gelu, layer_norm.
    let x = Tensor::randn(&[256, 384], 5);
    let w1 = Tensor::randn(&[1536, 384], 6)
        .mul_scalar(0.05)
        .requires_grad_(true);
    let b1 = Tensor::zeros(&[1536]).requires_grad_(true);
    let w2 = Tensor::randn(&[384, 1536], 7)
        .mul_scalar(0.05)
        .requires_grad_(true);
    let b2 = Tensor::zeros(&[384]).requires_grad_(true);
    time("MLP block fwd+bwd [256,384]x1536", 10, || {
        let h = x.layer_norm(&[384], None, None, 1e-5)?;
        let y = h.linear(&w1, Some(&b1))?.gelu().linear(&w2, Some(&b2))?;
        y.add(&x)?.mean_all().backward()
    })?;
    // A ResNet-ish 3x3 convolution, forward + backward.
    let xi = Tensor::randn(&[8, 64, 28, 28], 8).requires_grad_(true);
    let wc = Tensor::randn(&[64, 64, 3, 3], 9)
        .mul_scalar(0.05)
        .requires_grad_(true);
    time("conv2d 3x3 [8,64,28,28]->64 fwd+bwd", 5, || {
        xi.conv2d(&wc, None, Conv2dParams::new(1, 1))?
            .relu()
            .sum_all()
            .backward()
    })?;
    Ok(())
}
