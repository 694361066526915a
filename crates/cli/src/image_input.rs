//! Image inputs of `tessera run`: PNG / JPEG decoded (the `image` crate) and preprocessed as
//! timm's default evaluation transform (`timm.data.create_transform(**resolve_data_config({},
//! model=m))`, i.e. `transforms_imagenet_eval` with `crop_mode="center"`):
//!
//! 1. `Resize(floor(img_size / crop_pct))` on the shorter side, the longer side
//!    `int(size * long / short)` as torchvision computes it, with the architecture's filter
//!    (bicubic, or bilinear for a few MobileNetV3 variants; antialiased on downscaling as PIL
//!    does);
//! 2. `CenterCrop(img_size)` with torchvision's offsets `int(round((h - img_size) / 2))`
//!    (Python's round-half-to-even), zero padding if the image is smaller;
//! 3. `ToTensor` (`/ 255`) and `Normalize(mean, std)`.
//!
//! The per-architecture values (`crop_pct`, mean, std, filter) are those timm 1.0.31 reports
//! for each name's default pretrained config; see [`data_config`]. PIL rounds to 8 bits between
//! its horizontal and vertical passes and the `image` crate keeps the intermediate in f32, so
//! pixels can differ from timm's by about one grey level (1/255 before normalisation).

use image::imageops::FilterType;
use image::{GrayImage, ImageReader, RgbImage};
use std::path::Path;

/// The resampling filter of the resize step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Interp {
    Bicubic,
    Bilinear,
}

/// timm's evaluation data config for one architecture.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DataConfig {
    /// Fraction of the resized image the centre crop keeps.
    pub crop_pct: f64,
    pub mean: [f32; 3],
    pub std: [f32; 3],
    pub interp: Interp,
}

const IMAGENET_MEAN: [f32; 3] = [0.485, 0.456, 0.406];
const IMAGENET_STD: [f32; 3] = [0.229, 0.224, 0.225];
const HALF: [f32; 3] = [0.5, 0.5, 0.5];

/// The data config of `arch`, from `timm.data.resolve_data_config({}, model=create_model(arch))`
/// (timm 1.0.31): exact entries for the names that differ from their family, then the family
/// defaults (ViT augreg: mean = std = 0.5, crop 0.9; ViT at 384: crop 1.0; MobileNet and
/// SE-ResNet: ImageNet mean/std, crop 0.875; plain ResNet: crop 0.95).
pub fn data_config(arch: &str) -> DataConfig {
    let cfg = |crop_pct, mean, std, interp| DataConfig {
        crop_pct,
        mean,
        std,
        interp,
    };
    use Interp::{Bicubic, Bilinear};
    match arch {
        "mobilenetv3_large_075" => cfg(0.875, IMAGENET_MEAN, IMAGENET_STD, Bilinear),
        "mobilenetv3_large_150d" => cfg(0.95, HALF, HALF, Bilinear),
        "seresnet50" | "seresnet152d" => cfg(0.95, IMAGENET_MEAN, IMAGENET_STD, Bicubic),
        a if a.starts_with("vit_") && a.ends_with("_384") => cfg(1.0, HALF, HALF, Bicubic),
        a if a.starts_with("vit_") => cfg(0.9, HALF, HALF, Bicubic),
        a if a.starts_with("resnet") => cfg(0.95, IMAGENET_MEAN, IMAGENET_STD, Bicubic),
        _ => cfg(0.875, IMAGENET_MEAN, IMAGENET_STD, Bicubic),
    }
}

/// The most pixels an input image may have (PIL's decompression-bomb error threshold,
/// `2 * Image.MAX_IMAGE_PIXELS`).
pub const MAX_IMAGE_PIXELS: u64 = 178_956_970;

/// Output size of torchvision's `Resize(size)` (shorter side to `size`) for a `w x h` image.
pub fn resized_size(w: u32, h: u32, size: u32) -> (u32, u32) {
    let (short, long) = if w <= h { (w, h) } else { (h, w) };
    let new_long = (size as u64 * long as u64 / short as u64) as u32;
    if w <= h {
        (size, new_long)
    } else {
        (new_long, size)
    }
}

/// torchvision's centre-crop offset `int(round((len - crop) / 2.0))` with Python's
/// round-half-to-even; negative when the image must be padded.
pub fn crop_offset(len: u32, crop: u32) -> i64 {
    let d = len as i64 - crop as i64;
    let half = d.div_euclid(2);
    if d.rem_euclid(2) == 0 || half.rem_euclid(2) == 0 {
        half
    } else {
        half + 1
    }
}

/// The resize target of the shorter side: `floor(img_size / crop_pct)`.
pub fn scale_size(img_size: usize, crop_pct: f64) -> u32 {
    (img_size as f64 / crop_pct).floor() as u32
}

/// Decodes the image at `path` and preprocesses it to a `[c, size, size]` f32 tensor (C order)
/// as timm's evaluation transform does. `c` must be 3 (RGB) or 1 (PIL's `L` luma).
pub fn load(path: &Path, c: usize, size: usize, cfg: &DataConfig) -> Result<Vec<f32>, String> {
    let shown = path.display();
    if c != 1 && c != 3 {
        return Err(format!(
            "{shown}: image inputs need a model with 1 or 3 input channels, this one has {c}; \
             give a .npy array [N, {c}, H, W] instead"
        ));
    }
    let open = || {
        ImageReader::open(path)
            .map_err(|e| format!("{shown}: cannot open: {e}"))?
            .with_guessed_format()
            .map_err(|e| format!("{shown}: cannot read: {e}"))
    };
    // Decompression bombs: the pixel count is read from the header and checked first.
    if let Ok((w, h)) = open()?.into_dimensions() {
        let pixels = w as u64 * h as u64;
        if pixels > MAX_IMAGE_PIXELS {
            return Err(format!(
                "{shown}: {w}x{h} is {pixels} pixels, more than the {MAX_IMAGE_PIXELS} an input image may have"
            ));
        }
        // The resize target (shorter side to the scale size) bounds the work too.
        let (nw, nh) = resized_size(w.max(1), h.max(1), scale_size(size, cfg.crop_pct));
        tessera::models::limits::check(
            &format!("{shown} ({w}x{h}, resized to {nw}x{nh} before the crop)"),
            (nw as u64)
                .checked_mul(nh as u64)
                .and_then(|p| p.checked_mul(4 * 3)),
        )
        .map_err(|e| e.to_string())?;
    }
    let img = open()?
        .decode()
        .map_err(|e| format!("{shown}: not a readable PNG or JPEG image (or .npy array): {e}"))?;
    let rgb = img.to_rgb8();
    if rgb.width() == 0 || rgb.height() == 0 {
        return Err(format!("{shown}: the image is empty"));
    }
    Ok(preprocess_rgb(&rgb, c, size, cfg))
}

/// Resize, centre-crop and normalise an RGB image (see the module docs); `c` is 1 or 3.
pub fn preprocess_rgb(rgb: &RgbImage, c: usize, size: usize, cfg: &DataConfig) -> Vec<f32> {
    let filter = match cfg.interp {
        Interp::Bicubic => FilterType::CatmullRom,
        Interp::Bilinear => FilterType::Triangle,
    };
    let (w, h) = (rgb.width(), rgb.height());
    let (nw, nh) = resized_size(w, h, scale_size(size, cfg.crop_pct));
    let s = size as u32;
    let (left, top) = (crop_offset(nw, s), crop_offset(nh, s));
    let mut out = vec![0.0f32; c * size * size];
    let mut put = |ch: usize, y: usize, x: usize, v: u8| {
        let (m, sd) = if c == 1 {
            (
                cfg.mean.iter().sum::<f32>() / 3.0,
                cfg.std.iter().sum::<f32>() / 3.0,
            )
        } else {
            (cfg.mean[ch], cfg.std[ch])
        };
        out[(ch * size + y) * size + x] = (v as f32 / 255.0 - m) / sd;
    };
    // Pixels outside the image (padding) stay 0 before normalisation, as torchvision pads.
    let inside = |y: usize, x: usize| -> Option<(u32, u32)> {
        let (sy, sx) = (y as i64 + top, x as i64 + left);
        (sy >= 0 && sx >= 0 && sy < nh as i64 && sx < nw as i64).then_some((sx as u32, sy as u32))
    };
    if c == 3 {
        let resized = if (nw, nh) == (w, h) {
            rgb.clone()
        } else {
            image::imageops::resize(rgb, nw, nh, filter)
        };
        for y in 0..size {
            for x in 0..size {
                let px = inside(y, x).map_or([0, 0, 0], |(sx, sy)| resized.get_pixel(sx, sy).0);
                for (ch, v) in px.into_iter().enumerate() {
                    put(ch, y, x, v);
                }
            }
        }
    } else {
        let luma = to_pil_luma(rgb);
        let resized = if (nw, nh) == (w, h) {
            luma
        } else {
            image::imageops::resize(&luma, nw, nh, filter)
        };
        for y in 0..size {
            for x in 0..size {
                let v = inside(y, x).map_or(0, |(sx, sy)| resized.get_pixel(sx, sy).0[0]);
                put(0, y, x, v);
            }
        }
    }
    out
}

/// PIL's `convert("L")`: ITU-R 601-2 luma in 16-bit fixed point, rounded.
fn to_pil_luma(rgb: &RgbImage) -> GrayImage {
    GrayImage::from_fn(rgb.width(), rgb.height(), |x, y| {
        let [r, g, b] = rgb.get_pixel(x, y).0;
        let l = (r as u32 * 19595 + g as u32 * 38470 + b as u32 * 7471 + 0x8000) >> 16;
        image::Luma([l as u8])
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resize_keeps_the_aspect_ratio_as_torchvision() {
        assert_eq!(resized_size(640, 480, 256), (341, 256));
        assert_eq!(resized_size(480, 640, 256), (256, 341));
        assert_eq!(resized_size(100, 100, 256), (256, 256));
        assert_eq!(scale_size(224, 0.875), 256);
        assert_eq!(scale_size(224, 0.9), 248);
        assert_eq!(scale_size(224, 0.95), 235);
    }

    #[test]
    fn crop_offset_rounds_half_to_even() {
        // round(0.5) = 0, round(1.5) = 2, round(2.5) = 2 in Python.
        assert_eq!(crop_offset(225, 224), 0);
        assert_eq!(crop_offset(227, 224), 2);
        assert_eq!(crop_offset(229, 224), 2);
        assert_eq!(crop_offset(256, 224), 16);
        assert_eq!(crop_offset(341, 224), 58);
        assert_eq!(crop_offset(220, 224), -2);
    }

    #[test]
    fn family_configs_match_timm() {
        assert_eq!(data_config("vit_base_patch16_224").mean, HALF);
        assert_eq!(data_config("vit_base_patch16_224").crop_pct, 0.9);
        assert_eq!(data_config("vit_tiny_patch16_384").crop_pct, 1.0);
        assert_eq!(data_config("mobilenetv2_100").crop_pct, 0.875);
        assert_eq!(data_config("mobilenetv3_large_100").std, IMAGENET_STD);
        assert_eq!(
            data_config("mobilenetv3_large_075").interp,
            Interp::Bilinear
        );
        assert_eq!(data_config("seresnet101").crop_pct, 0.875);
        assert_eq!(data_config("seresnet50").crop_pct, 0.95);
    }

    #[test]
    fn a_uniform_image_normalises_to_constants() {
        let img = RgbImage::from_pixel(40, 30, image::Rgb([255, 0, 128]));
        let cfg = data_config("mobilenetv2_100");
        let x = preprocess_rgb(&img, 3, 16, &cfg);
        assert_eq!(x.len(), 3 * 16 * 16);
        let want = [
            (1.0 - 0.485) / 0.229,
            (0.0 - 0.456) / 0.224,
            (128.0 / 255.0 - 0.406) / 0.225,
        ];
        for (ch, w) in want.iter().enumerate() {
            for v in &x[ch * 256..(ch + 1) * 256] {
                assert!((v - w).abs() < 1e-5, "channel {ch}: {v} vs {w}");
            }
        }
        let g = preprocess_rgb(&img, 1, 8, &data_config("vit_base_patch16_224"));
        let l = ((255 * 19595 + 128 * 7471 + 0x8000) >> 16) as f32 / 255.0;
        assert!(g.iter().all(|v| (v - (l - 0.5) / 0.5).abs() < 1e-5));
    }

    #[test]
    fn centre_crop_takes_the_middle() {
        // A 2x-wide image whose left and right thirds differ from the middle: after the crop
        // only the middle colour remains.
        let img = RgbImage::from_fn(96, 32, |x, _| {
            if (32..64).contains(&x) {
                image::Rgb([200, 200, 200])
            } else {
                image::Rgb([0, 0, 0])
            }
        });
        let cfg = DataConfig {
            crop_pct: 1.0,
            mean: [0.0; 3],
            std: [1.0; 3],
            interp: Interp::Bicubic,
        };
        let x = preprocess_rgb(&img, 3, 16, &cfg);
        // Resized to 48x16, cropped to columns 16..32, the exact middle; bicubic ringing only
        // touches the columns next to the edges.
        for y in 0..16 {
            for xx in 2..14 {
                let v = x[y * 16 + xx];
                assert!((v - 200.0 / 255.0).abs() < 0.02, "({y},{xx}) = {v}");
            }
        }
    }
}
