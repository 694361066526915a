//! timm's evaluation preprocessing, for embedders and the command line alike:
//! `timm.data.create_transform(**resolve_data_config({}, model=m))`, i.e. torchvision's
//!
//! 1. `Resize(floor(img_size / crop_pct))` of the shorter side, the longer side
//!    `int(size * long / short)`, with the architecture's filter (PIL bicubic or bilinear,
//!    antialiased when shrinking; [`resample`] computes it as Pillow does, so pixels equal
//!    timm's);
//! 2. `CenterCrop(img_size)` with offsets `int(round((len - img_size) / 2))` (Python's
//!    round-half-to-even), zero padding where the image is smaller;
//! 3. `ToTensor` (`/ 255`) and `Normalize(mean, std)`.
//!
//! The crop is folded into the resize (only the kept pixels are computed), so the work and the
//! memory are bounded by the output size and the decoded image, whatever its aspect ratio.
//! The per-architecture values come from [`config`] (timm's pretrained configurations).
//!
//! Decoding files (PNG, JPEG, WebP) needs the `image` cargo feature; [`EvalTransform::apply`]
//! on already-decoded 8-bit RGB pixels is always available.

pub mod config;
#[cfg(feature = "image")]
mod decode;
mod resample;

pub use config::{pretrained_cfg, pretrained_cfgs, Interpolation, PretrainedCfg};
#[cfg(feature = "image")]
pub use decode::{decode_rgb8, MAX_PIXELS};

use crate::error::{ModelError, Result};
use crate::zoo::Model;

const IMAGENET_MEAN: [f32; 3] = [0.485, 0.456, 0.406];
const IMAGENET_STD: [f32; 3] = [0.229, 0.224, 0.225];

/// The evaluation transform of one model: decoded RGB pixels to a `[channels, size, size]`
/// normalised tensor.
#[derive(Debug, Clone, PartialEq)]
pub struct EvalTransform {
    /// Side of the square output (the model's `img_size`).
    pub size: usize,
    /// 3 (RGB) or 1 (PIL's `L` luma, for single-channel models).
    pub channels: usize,
    /// Fraction of the resized image the centre crop keeps.
    pub crop_pct: f64,
    pub interpolation: Interpolation,
    pub mean: [f32; 3],
    pub std: [f32; 3],
}

impl EvalTransform {
    /// The transform for `arch` at input `[c, h, w]`: the architecture's pretrained
    /// configuration (crop, filter, mean, std), or its family's for tessera's own presets
    /// (ViT: mean = std = 0.5, crop 0.9; ResNet: crop 0.95; others: ImageNet mean/std, crop
    /// 0.875). Errors for a non-square input or a channel count other than 1 or 3.
    pub fn for_arch(arch: &str, [c, h, w]: [usize; 3]) -> Result<EvalTransform> {
        if h != w || h == 0 {
            return Err(ModelError::config(format!(
                "{arch}: image preprocessing needs a square input, the model expects {h}x{w}"
            )));
        }
        if c != 1 && c != 3 {
            return Err(ModelError::config(format!(
                "{arch}: image inputs need a model with 1 or 3 input channels, this one has {c}"
            )));
        }
        let (crop_pct, interpolation, mean, std) = match config::pretrained_cfg(arch) {
            Some(p) => (p.crop_pct, p.interpolation, p.mean, p.std),
            None if arch.starts_with("vit_") => (0.9, Interpolation::Bicubic, [0.5; 3], [0.5; 3]),
            None if arch.starts_with("resnet") || arch.starts_with("seresnet") => {
                (0.95, Interpolation::Bicubic, IMAGENET_MEAN, IMAGENET_STD)
            }
            None => (0.875, Interpolation::Bicubic, IMAGENET_MEAN, IMAGENET_STD),
        };
        Ok(EvalTransform {
            size: h,
            channels: c,
            crop_pct,
            interpolation,
            mean,
            std,
        })
    }

    /// [`EvalTransform::for_arch`] for a built model (its name and input size).
    pub fn for_model(model: &dyn Model) -> Result<EvalTransform> {
        EvalTransform::for_arch(model.arch(), model.input_chw())
    }

    /// The resize target of the shorter side: `floor(size / crop_pct)`.
    pub fn scale_size(&self) -> usize {
        (self.size as f64 / self.crop_pct).floor() as usize
    }

    /// Preprocesses `width x height` interleaved 8-bit RGB `pixels` to `[channels, size, size]`
    /// values (C order).
    pub fn apply(&self, pixels: &[u8], width: usize, height: usize) -> Result<Vec<f32>> {
        let cfg = |m: String| ModelError::config(format!("preprocess: {m}"));
        if width == 0 || height == 0 {
            return Err(cfg(format!("the image is empty ({width}x{height})")));
        }
        if width.checked_mul(height).and_then(|n| n.checked_mul(3)) != Some(pixels.len()) {
            return Err(cfg(format!(
                "{} bytes do not hold a {width}x{height} RGB image",
                pixels.len()
            )));
        }
        if self.size == 0 || !(self.crop_pct > 0.0 && self.crop_pct.is_finite()) {
            return Err(cfg(format!(
                "size {} and crop_pct {} must be positive",
                self.size, self.crop_pct
            )));
        }
        let scale = self.scale_size().max(1);
        let (nw, nh) = resized_size(width, height, scale);
        let s = self.size;
        let (left, top) = (crop_offset(nw, s), crop_offset(nh, s));
        let window = |off: i64| off.max(0) as usize..(off + s as i64).max(0) as usize;
        let (c, luma);
        let src = if self.channels == 1 {
            luma = to_pil_luma(pixels);
            c = 1;
            &luma
        } else {
            c = 3;
            pixels
        };
        let win = resample::resize_window(
            src,
            (width, height),
            c,
            (nw, nh),
            window(left),
            window(top),
            self.interpolation,
        );
        let mut out = vec![0.0f32; c * s * s];
        for ch in 0..c {
            let (m, sd) = if c == 1 {
                (
                    self.mean.iter().sum::<f32>() / 3.0,
                    self.std.iter().sum::<f32>() / 3.0,
                )
            } else {
                (self.mean[ch], self.std[ch])
            };
            let plane = &mut out[ch * s * s..(ch + 1) * s * s];
            // Padding (outside the resized image) is 0 before normalisation, as torchvision pads.
            plane.fill((0.0 - m) / sd);
            for (r, y) in win.rows.clone().enumerate() {
                let oy = (y as i64 - top) as usize;
                for (k, x) in win.cols.clone().enumerate() {
                    let ox = (x as i64 - left) as usize;
                    let v = win.pixels[(r * win.cols.len() + k) * c + ch];
                    plane[oy * s + ox] = (v as f32 / 255.0 - m) / sd;
                }
            }
        }
        Ok(out)
    }

    /// Decodes the image file at `path` (PNG, JPEG or WebP; at most [`MAX_PIXELS`] pixels) and
    /// preprocesses it. Errors name the file.
    #[cfg(feature = "image")]
    pub fn load(&self, path: impl AsRef<std::path::Path>) -> Result<Vec<f32>> {
        let path = path.as_ref();
        let (rgb, w, h) = decode_rgb8(path)?;
        self.apply(&rgb, w, h)
            .map_err(|e| ModelError::File(crate::io::FileError::new(path, e.to_string())))
    }

    /// Loads several image files into one `[n, channels, size, size]` batch.
    #[cfg(feature = "image")]
    pub fn load_batch<P: AsRef<std::path::Path>>(
        &self,
        paths: &[P],
    ) -> Result<tessera_core::Tensor> {
        let mut data = Vec::with_capacity(paths.len() * self.channels * self.size * self.size);
        for p in paths {
            data.extend_from_slice(&self.load(p)?);
        }
        Ok(tessera_core::Tensor::from_vec(
            data,
            &[paths.len(), self.channels, self.size, self.size],
        )?)
    }
}

/// Output size of torchvision's `Resize(size)` (shorter side to `size`) for a `w x h` image.
pub fn resized_size(w: usize, h: usize, size: usize) -> (usize, usize) {
    let (short, long) = if w <= h { (w, h) } else { (h, w) };
    let new_long = (size as u128 * long as u128 / short.max(1) as u128) as usize;
    if w <= h {
        (size, new_long)
    } else {
        (new_long, size)
    }
}

/// torchvision's centre-crop offset: `int(round((len - crop) / 2.0))` with Python's
/// round-half-to-even when the image is larger, minus the left / top padding
/// `(crop - len) // 2` when it is smaller.
pub fn crop_offset(len: usize, crop: usize) -> i64 {
    let d = len as i64 - crop as i64;
    if d < 0 {
        return -((-d) / 2);
    }
    let half = d / 2;
    if d % 2 == 0 || half % 2 == 0 {
        half
    } else {
        half + 1
    }
}

/// PIL's `convert("L")` of interleaved RGB: ITU-R 601-2 luma in 16-bit fixed point, rounded.
fn to_pil_luma(rgb: &[u8]) -> Vec<u8> {
    rgb.chunks_exact(3)
        .map(|p| {
            ((p[0] as u32 * 19595 + p[1] as u32 * 38470 + p[2] as u32 * 7471 + 0x8000) >> 16) as u8
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resize_keeps_the_aspect_ratio_as_torchvision() {
        assert_eq!(resized_size(640, 480, 256), (341, 256));
        assert_eq!(resized_size(480, 640, 256), (256, 341));
        assert_eq!(resized_size(100, 100, 256), (256, 256));
        assert_eq!(resized_size(1, 20_000, 256), (256, 5_120_000));
    }

    #[test]
    fn crop_offset_rounds_half_to_even_and_pads_as_torchvision() {
        // round(0.5) = 0, round(1.5) = 2, round(2.5) = 2 in Python.
        assert_eq!(crop_offset(225, 224), 0);
        assert_eq!(crop_offset(227, 224), 2);
        assert_eq!(crop_offset(229, 224), 2);
        assert_eq!(crop_offset(256, 224), 16);
        assert_eq!(crop_offset(341, 224), 58);
        // Padding: left = (crop - len) // 2.
        assert_eq!(crop_offset(220, 224), -2);
        assert_eq!(crop_offset(221, 224), -1);
    }

    #[test]
    fn configs_follow_timm() {
        let t = EvalTransform::for_arch("vit_base_patch16_224", [3, 224, 224]).unwrap();
        assert_eq!((t.crop_pct, t.mean, t.scale_size()), (0.9, [0.5; 3], 248));
        let t = EvalTransform::for_arch("mobilenetv2_100", [3, 224, 224]).unwrap();
        assert_eq!((t.crop_pct, t.scale_size()), (0.875, 256));
        let t = EvalTransform::for_arch("resnet50", [3, 224, 224]).unwrap();
        assert_eq!(t.scale_size(), 235);
        let t = EvalTransform::for_arch("vit_digits", [1, 8, 8]).unwrap();
        assert_eq!((t.channels, t.crop_pct), (1, 0.9));
        assert!(EvalTransform::for_arch("vit_digits", [2, 8, 8]).is_err());
        assert!(EvalTransform::for_arch("x", [3, 8, 9]).is_err());
    }

    #[test]
    fn a_uniform_image_normalises_to_constants() {
        let px: Vec<u8> = [255u8, 0, 128].repeat(40 * 30);
        let t = EvalTransform::for_arch("mobilenetv2_100", [3, 16, 16]).unwrap();
        let x = t.apply(&px, 40, 30).unwrap();
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
        let g = EvalTransform::for_arch("vit_x", [1, 8, 8]).unwrap();
        let g = g.apply(&px, 40, 30).unwrap();
        let l = ((255 * 19595 + 128 * 7471 + 0x8000) >> 16) as f32 / 255.0;
        assert!(g.iter().all(|v| (v - (l - 0.5) / 0.5).abs() < 1e-5));
    }

    #[test]
    fn bad_buffers_are_errors() {
        let t = EvalTransform::for_arch("mobilenetv2_100", [3, 16, 16]).unwrap();
        assert!(t.apply(&[0; 5], 1, 2).is_err());
        assert!(t.apply(&[], 0, 0).is_err());
    }

    #[test]
    fn an_aspect_ratio_bomb_is_cheap() {
        // 1 x 20000: the full resize would be 224 x 4.48 M pixels; only 224 x 224 are made.
        let px = vec![200u8; 3 * 20_000];
        let t = EvalTransform::for_arch("mobilenetv2_100", [3, 224, 224]).unwrap();
        let x = t.apply(&px, 1, 20_000).unwrap();
        assert_eq!(x.len(), 3 * 224 * 224);
    }
}
