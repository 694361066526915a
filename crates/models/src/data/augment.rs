//! Seeded augmentation: random crop with zero padding (pad, then crop back to the original size
//! at a random offset) and random horizontal flip, as used to train on CIFAR-10 (He et al.,
//! 2016; the seed's ViT-on-CIFAR-10 recipe); and timm's `RandomResizedCrop` (Szegedy et al.,
//! 2015, "Going deeper with convolutions": a crop of random area and aspect ratio resized back
//! to the full size, `timm.data.transforms.RandomResizedCropAndInterpolation.get_params`) for
//! fine-tuning on photographs.

use tessera_core::Rng;

/// Which augmentations to apply.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Augment {
    /// Zero padding on each side before a random crop back to the original size (0 = none).
    pub crop_padding: usize,
    /// Flip left-right with probability 1/2.
    pub hflip: bool,
    /// A random resized crop (applied before the flip), or none.
    pub resized_crop: Option<ResizedCrop>,
}

/// timm's `RandomResizedCrop`: a crop covering a random fraction `scale` of the image area with
/// a random aspect ratio (log-uniform in `ratio`), resized back to the image size (bilinear).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ResizedCrop {
    /// Range of the crop's area as a fraction of the image's (timm: 0.08 to 1).
    pub scale: (f32, f32),
    /// Range of the crop's width / height (timm: 3/4 to 4/3).
    pub ratio: (f32, f32),
}

impl Default for ResizedCrop {
    /// timm's defaults: scale (0.08, 1), ratio (3/4, 4/3).
    fn default() -> Self {
        ResizedCrop {
            scale: (0.08, 1.0),
            ratio: (3.0 / 4.0, 4.0 / 3.0),
        }
    }
}

impl ResizedCrop {
    /// The crop `(top, left, height, width)` inside an `h x w` image, drawn as timm draws it:
    /// ten tries of a random area and log-uniform aspect ratio, else the centre crop with the
    /// ratio clamped into range.
    pub fn params(&self, h: usize, w: usize, rng: &mut Rng) -> (usize, usize, usize, usize) {
        let area = (h * w) as f32;
        let (lr0, lr1) = (self.ratio.0.ln(), self.ratio.1.ln());
        for _ in 0..10 {
            let target = area * (self.scale.0 + rng.uniform() * (self.scale.1 - self.scale.0));
            let aspect = (lr0 + rng.uniform() * (lr1 - lr0)).exp();
            let cw = (target * aspect).sqrt().round() as usize;
            let ch = (target / aspect).sqrt().round() as usize;
            if cw > 0 && cw <= w && ch > 0 && ch <= h {
                let top = rng.below(h - ch + 1);
                let left = rng.below(w - cw + 1);
                return (top, left, ch, cw);
            }
        }
        let in_ratio = w as f32 / h as f32;
        let (ch, cw) = if in_ratio < self.ratio.0 {
            ((w as f32 / self.ratio.0).round() as usize, w)
        } else if in_ratio > self.ratio.1 {
            (h, (h as f32 * self.ratio.1).round() as usize)
        } else {
            (h, w)
        };
        let (ch, cw) = (ch.clamp(1, h), cw.clamp(1, w));
        ((h - ch) / 2, (w - cw) / 2, ch, cw)
    }
}

/// Bilinear sample of `plane` (`h x w`) over the crop `(top, left, ch, cw)`, resized to `h x w`
/// with half-pixel centres (`align_corners=False`), appended to `out`.
fn resize_crop(
    plane: &[f32],
    h: usize,
    w: usize,
    (top, left, ch, cw): (usize, usize, usize, usize),
    out: &mut Vec<f32>,
) {
    let sy = ch as f32 / h as f32;
    let sx = cw as f32 / w as f32;
    for y in 0..h {
        let fy = ((y as f32 + 0.5) * sy - 0.5).clamp(0.0, (ch - 1) as f32);
        let y0 = fy.floor() as usize;
        let y1 = (y0 + 1).min(ch - 1);
        let ty = fy - y0 as f32;
        for x in 0..w {
            let fx = ((x as f32 + 0.5) * sx - 0.5).clamp(0.0, (cw - 1) as f32);
            let x0 = fx.floor() as usize;
            let x1 = (x0 + 1).min(cw - 1);
            let tx = fx - x0 as f32;
            let at = |yy: usize, xx: usize| plane[(top + yy) * w + left + xx];
            let a = at(y0, x0) + (at(y0, x1) - at(y0, x0)) * tx;
            let b = at(y1, x0) + (at(y1, x1) - at(y1, x0)) * tx;
            out.push(a + (b - a) * ty);
        }
    }
}

impl Augment {
    /// Appends the augmented `image` (`chw`) to `out`.
    pub fn apply(&self, image: &[f32], chw: [usize; 3], rng: &mut Rng, out: &mut Vec<f32>) {
        let [c, h, w] = chw;
        let cropped;
        let image = match &self.resized_crop {
            Some(rc) if h > 0 && w > 0 => {
                let crop = rc.params(h, w, rng);
                let mut v = Vec::with_capacity(c * h * w);
                for plane in image.chunks_exact(h * w) {
                    resize_crop(plane, h, w, crop, &mut v);
                }
                cropped = v;
                &cropped[..]
            }
            _ => image,
        };
        let p = self.crop_padding;
        // Offset of the crop inside the padded image, in 0..=2p.
        let (dy, dx) = if p > 0 {
            (rng.below(2 * p + 1), rng.below(2 * p + 1))
        } else {
            (p, p)
        };
        let flip = self.hflip && rng.below(2) == 1;
        for ch in 0..c {
            let plane = &image[ch * h * w..(ch + 1) * h * w];
            for y in 0..h {
                // Source row in the unpadded image.
                let sy = (y + dy) as isize - p as isize;
                for x in 0..w {
                    let xx = if flip { w - 1 - x } else { x };
                    let sx = (xx + dx) as isize - p as isize;
                    let v = if sy >= 0 && sy < h as isize && sx >= 0 && sx < w as isize {
                        plane[sy as usize * w + sx as usize]
                    } else {
                        0.0
                    };
                    out.push(v);
                }
            }
        }
    }
}
