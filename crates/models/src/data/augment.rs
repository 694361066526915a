//! Seeded augmentation: random crop with zero padding (pad, then crop back to the original size
//! at a random offset) and random horizontal flip, as used to train on CIFAR-10 (He et al.,
//! 2016; the seed's ViT-on-CIFAR-10 recipe).

use tessera_core::Rng;

/// Which augmentations to apply.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Augment {
    /// Zero padding on each side before a random crop back to the original size (0 = none).
    pub crop_padding: usize,
    /// Flip left-right with probability 1/2.
    pub hflip: bool,
}

impl Augment {
    /// Appends the augmented `image` (`chw`) to `out`.
    pub fn apply(&self, image: &[f32], chw: [usize; 3], rng: &mut Rng, out: &mut Vec<f32>) {
        let [c, h, w] = chw;
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
