//! Classify images with pretrained timm weights, printing ImageNet-1k class names.
//!
//! ```sh
//! huggingface-cli download timm/mobilenetv3_large_100.ra_in1k model.safetensors --local-dir mnv3
//! cargo run --release --example classify -- mobilenetv3_large_100 mnv3/model.safetensors cat.jpg
//! ```
//!
//! The model is built straight from the file (`create_pretrained`: no random initialisation,
//! peak memory about one copy of the weights) and each image goes through timm's evaluation
//! preprocessing for that architecture (`EvalTransform`: resize, centre crop, normalise).

use tessera::models::labels::imagenet1k;
use tessera::models::preprocess::EvalTransform;
use tessera::models::zoo::create_pretrained;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [arch, weights, images @ ..] = args.as_slice() else {
        return Err("usage: classify ARCH WEIGHTS.safetensors IMAGE [IMAGE ...]".into());
    };
    let model = create_pretrained(arch, weights)?;
    let transform = EvalTransform::for_model(model.as_ref())?;
    let batch = transform.load_batch(images)?;
    let probs = model.forward(&batch)?.softmax(1)?.to_vec();
    for (image, p) in images.iter().zip(probs.chunks(model.num_classes())) {
        let best = (0..p.len())
            .max_by(|&a, &b| p[a].total_cmp(&p[b]))
            .unwrap_or(0);
        let name = imagenet1k().get(best).copied().unwrap_or("?");
        println!("{image}: {name} (class {best}, p = {:.3})", p[best]);
    }
    Ok(())
}
