//! `PatchEmbed`: an image cut into non-overlapping `p x p` patches, each projected linearly to
//! `embed_dim` (Dosovitskiy et al., "An Image is Worth 16x16 Words", ICLR 2021, eq. 1), written
//! as timm's `timm.layers.PatchEmbed`: one `Conv2d(in_chans, embed_dim, k = p, stride = p)`
//! with bias (`patch_embed.proj`), then `flatten(2).transpose(1, 2)` to `[n, tokens, embed_dim]`
//! in row-major patch order.
//!
//! Since the stride equals the kernel, the convolution is computed as one GEMM of the
//! patch rows `[n * N, in_chans * p * p]` (gathered by a reshape-permute of the image, its only
//! copy) with the weight viewed as `[embed_dim, in_chans * p * p]`: the im2col of a
//! non-overlapping convolution is a permutation, and no general convolution path is involved.
//!
//! The convolution is PyTorch-default initialised (timm's ViT `init_weights` leaves it alone).
//! As timm with `strict_img_size = True` (its default), the input must be exactly
//! `[n, in_chans, img_size, img_size]`: the position embedding has one row per patch.

use crate::error::{ModelError, Result};
use crate::layers::Conv2d;
use crate::module::{in_child, Module};
use crate::module_children;
use tessera_core::ops::conv::Conv2dParams;
use tessera_core::{Rng, Tensor, TensorError};

/// Image to patch tokens.
pub struct PatchEmbed {
    /// `Conv2d(in_chans, embed_dim, patch_size, stride = patch_size)`, with bias.
    pub proj: Conv2d,
    img_size: usize,
    patch_size: usize,
}

impl PatchEmbed {
    /// Patches of `patch_size` over a square `img_size` image. Errors on zero sizes or an image
    /// side not divisible by the patch side.
    pub fn new(
        img_size: usize,
        patch_size: usize,
        in_chans: usize,
        embed_dim: usize,
        rng: &mut Rng,
    ) -> Result<Self> {
        for (name, v) in [
            ("img_size", img_size),
            ("patch_size", patch_size),
            ("in_chans", in_chans),
            ("embed_dim", embed_dim),
        ] {
            if v == 0 {
                return Err(ModelError::config(format!(
                    "patch_embed: {name} must be positive, got 0"
                )));
            }
        }
        if !img_size.is_multiple_of(patch_size) {
            return Err(ModelError::config(format!(
                "patch_embed: img_size {img_size} is not divisible by patch_size {patch_size}"
            )));
        }
        Ok(PatchEmbed {
            proj: Conv2d::new(
                in_chans,
                embed_dim,
                patch_size,
                Conv2dParams::new(patch_size, 0),
                true,
                rng,
            )?,
            img_size,
            patch_size,
        })
    }

    /// Patches per side (`img_size / patch_size`).
    pub fn grid_size(&self) -> usize {
        self.img_size / self.patch_size
    }

    /// Number of patch tokens (`grid_size^2`).
    pub fn num_patches(&self) -> usize {
        self.grid_size() * self.grid_size()
    }

    /// Input image side.
    pub fn img_size(&self) -> usize {
        self.img_size
    }

    /// Patch side.
    pub fn patch_size(&self) -> usize {
        self.patch_size
    }
}

impl Module for PatchEmbed {
    /// `[n, in_chans, img, img]` -> `[n, num_patches, embed_dim]`, equal to timm's
    /// `proj(x).flatten(2).transpose(1, 2)`.
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let c = self.proj.in_channels();
        let s = x.shape();
        if s.len() != 4 || s[1] != c || s[2] != self.img_size || s[3] != self.img_size {
            return Err(TensorError::shape(
                "patch_embed",
                format!(
                    "expected input [n, {c}, {0}, {0}], got {s:?}",
                    self.img_size
                ),
            )
            .into());
        }
        // A convolution whose stride equals its kernel is a GEMM on the patches: gather each
        // patch's `c * p * p` pixels into a row (one copy of the image) and multiply by the
        // convolution weight seen as `[d, c * p * p]` (a view), bias fused.
        let (n, p, g) = (s[0], self.patch_size, self.grid_size());
        let d = self.proj.out_channels();
        let patches = x
            .reshape(&[n, c, g, p, g, p])?
            .permute(&[0, 2, 4, 1, 3, 5])? // [n, gy, gx, c, py, px]
            .reshape(&[n, g * g, c * p * p])?;
        let w = self.proj.weight.reshape(&[d, c * p * p])?;
        Ok(in_child("proj", || {
            patches.linear(&w, self.proj.bias.as_ref())
        })?)
    }

    module_children!("proj" => proj);
}
