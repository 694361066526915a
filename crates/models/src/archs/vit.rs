//! Vision Transformer (Dosovitskiy et al., "An Image is Worth 16x16 Words: Transformers for
//! Image Recognition at Scale", ICLR 2021), exactly as timm's `VisionTransformer`
//! (`timm/models/vision_transformer.py`) with its defaults: class token, learned position
//! embedding added after the class token is prepended, pre-norm blocks, final norm, and a linear
//! head on the class token (`global_pool = 'token'`; `fc_norm` is `Identity` and has no weights).
//!
//! ```text
//! x      = patch_embed(img)                                   [n, N, D]   (conv k = s = p)
//! x      = cat(cls_token, x) + pos_embed                      [n, N+1, D] (pos_drop: rate 0)
//! x      = x + attn(norm1(x));  x = x + mlp(norm2(x))         blocks.0 .. blocks.{depth-1}
//! logits = head(norm(x)[:, 0])                                [n, num_classes]
//! ```
//!
//! Tensor names are timm's `state_dict` keys (`cls_token`, `pos_embed`, `patch_embed.proj.*`,
//! `blocks.{i}.{norm1,attn.qkv,attn.proj,norm2,mlp.fc1,mlp.fc2}.*`, `norm.*`, `head.*`), so a
//! timm checkpoint saved with `safetensors.torch.save_file` loads with [`crate::weights::load`].
//! LayerNorms use eps 1e-6, the MLP the exact (erf) GELU.
//!
//! Initialisation is timm's `init_weights(mode = '')`: `pos_embed` truncated normal (std .02),
//! `cls_token` normal (std 1e-6), every `nn.Linear` truncated normal (std .02) with zero bias,
//! LayerNorm 1 / 0, the patch convolution PyTorch's default.
//!
//! ## Names ([`NAMES`])
//!
//! | name | img | patch | in | classes | D | depth | heads | mlp | parameters |
//! |---|---|---|---|---|---|---|---|---|---|
//! | `vit_tiny_patch16_224`  | 224 | 16 | 3 | 1000 | 192 | 12 | 3  | 4 | 5,717,416 (timm) |
//! | `vit_small_patch16_224` | 224 | 16 | 3 | 1000 | 384 | 12 | 6  | 4 | 22,050,664 (timm) |
//! | `vit_base_patch16_224`  | 224 | 16 | 3 | 1000 | 768 | 12 | 12 | 4 | 86,567,656 (timm) |
//! | `vit_digits` (tessera preset) | 8 | 2 | 1 | 10 | 64 | 4 | 4 | 4 | 202,186 |
//! | `vit_cifar` (tessera preset)  | 32 | 4 | 3 | 10 | 128 | 6 | 4 | 4 | 1,205,898 |
//!
//! The two presets are not timm names: they are tessera's small configurations of the same
//! architecture for the 8x8 grey-scale digits and 32x32 CIFAR-10 training runs (17 and 65
//! tokens); `timm.create_model('vit_tiny_patch16_224', **overrides)` with the same sizes builds
//! the same network (same parameter count).
//! Every name accepts timm's overrides `img_size`, `in_chans`, `num_classes`, `patch_size`,
//! `embed_dim`, `depth`, `num_heads`, `mlp_ratio` (and `act`, timm's `act_layer`);
//! `num_classes = 0` gives timm's headless model (the output is the normalised class token).
//!
//! ## Attention maps
//!
//! [`VisionTransformer::forward_with_attention`] returns, next to the logits, the attention
//! probabilities of every block, `[n, heads, N+1, N+1]` each (row `i`: how token `i` (0 = class
//! token) attends to every token). With the `capture_attention` flag set, every forward keeps
//! them for [`VisionTransformer::take_attention`]. Off by default; the probabilities are a
//! tensor of the forward anyway, so capturing costs a reference count per block (plus keeping
//! the `[n, heads, N+1, N+1]` tensors alive), and nothing when off: the plain forward runs the
//! blocks' `Module::forward`, which releases the probabilities right after `a v`.
//! [`crate::attention_maps`] turns the maps into class-token heat maps and attention rollout.

use crate::blocks::attention::Attention;
use crate::blocks::mlp::{LinearInit, Mlp};
use crate::blocks::patch_embed::PatchEmbed;
use crate::error::{ModelError, Result};
use crate::init;
use crate::layers::{Activation, LayerNorm, Linear};
use crate::module::{child, in_child, Mode, Module, TensorKind};
use crate::module_children;
use crate::plan::{plan_vit, Plan, PlanOptions};
use crate::zoo::{Model, Overrides};
use std::sync::Mutex;
use tessera_core::{Rng, Tensor};

/// LayerNorm epsilon of timm's ViT (`partial(nn.LayerNorm, eps=1e-6)`).
pub const LN_EPS: f32 = 1e-6;

/// The configuration of one ViT: timm's `VisionTransformer` constructor arguments that tessera
/// supports.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct VitConfig {
    /// Default (square) input size.
    pub img_size: usize,
    /// Side of a square patch.
    pub patch_size: usize,
    /// Input channels.
    pub in_chans: usize,
    /// 0: no head (timm's `Identity`), the output is the pooled feature.
    pub num_classes: usize,
    /// Token width.
    pub embed_dim: usize,
    /// Number of transformer blocks.
    pub depth: usize,
    /// Attention heads per block.
    pub num_heads: usize,
    /// MLP hidden width = `int(embed_dim * mlp_ratio)`.
    pub mlp_ratio: f32,
    /// Activation of the MLPs (timm: GELU).
    pub act: Activation,
}

const fn cfg(
    img_size: usize,
    patch_size: usize,
    in_chans: usize,
    num_classes: usize,
    embed_dim: usize,
    depth: usize,
    num_heads: usize,
) -> VitConfig {
    VitConfig {
        img_size,
        patch_size,
        in_chans,
        num_classes,
        embed_dim,
        depth,
        num_heads,
        mlp_ratio: 4.0,
        act: Activation::GeluErf,
    }
}

/// The named configurations (see the table in the module docs).
#[rustfmt::skip]
const PRESETS: &[(&str, VitConfig)] = &[
    //                            img patch in classes   D  depth heads
    ("vit_tiny_patch16_224",  cfg(224, 16, 3, 1000, 192, 12, 3)),
    ("vit_small_patch16_224", cfg(224, 16, 3, 1000, 384, 12, 6)),
    ("vit_base_patch16_224",  cfg(224, 16, 3, 1000, 768, 12, 12)),
    ("vit_digits",            cfg(8,   2,  1, 10,   64,  4,  4)),
    ("vit_cifar",             cfg(32,  4,  3, 10,   128, 6,  4)),
];

/// Architecture names this family provides: timm's `vit_{tiny,small,base}_patch16_224` and the
/// tessera presets `vit_digits` (8x8x1, patch 2) and `vit_cifar` (32x32x3, patch 4).
pub const NAMES: &[&str] = &[
    "vit_tiny_patch16_224",
    "vit_small_patch16_224",
    "vit_base_patch16_224",
    "vit_digits",
    "vit_cifar",
];

impl VitConfig {
    /// The configuration of `arch` with `o` applied.
    pub fn named(arch: &str, o: &Overrides) -> Result<VitConfig> {
        let mut c = PRESETS
            .iter()
            .find(|(n, _)| *n == arch)
            .map(|(_, c)| *c)
            .ok_or_else(|| {
                ModelError::config(format!("unknown ViT {arch:?}; known: {}", NAMES.join(", ")))
            })?;
        c.img_size = o.img_size.unwrap_or(c.img_size);
        c.patch_size = o.patch_size.unwrap_or(c.patch_size);
        c.in_chans = o.in_chans.unwrap_or(c.in_chans);
        c.num_classes = o.num_classes.unwrap_or(c.num_classes);
        c.embed_dim = o.embed_dim.unwrap_or(c.embed_dim);
        c.depth = o.depth.unwrap_or(c.depth);
        c.num_heads = o.num_heads.unwrap_or(c.num_heads);
        c.mlp_ratio = o.mlp_ratio.unwrap_or(c.mlp_ratio);
        if let Some(a) = &o.act {
            c.act = crate::layers::parse_override(arch, a)?;
        }
        c.validate().map_err(|e| match e {
            ModelError::Config(m) => ModelError::config(format!("{arch}: {m}")),
            e => e,
        })?;
        Ok(c)
    }

    /// Checks the sizes: all positive (except `num_classes`), the image divisible into
    /// patches, the width into heads, a positive MLP width.
    pub fn validate(&self) -> Result<()> {
        for (name, v) in [
            ("img_size", self.img_size),
            ("patch_size", self.patch_size),
            ("in_chans", self.in_chans),
            ("embed_dim", self.embed_dim),
            ("depth", self.depth),
            ("num_heads", self.num_heads),
        ] {
            if v == 0 {
                return Err(ModelError::config(format!(
                    "{name} must be positive, got 0"
                )));
            }
        }
        if !self.img_size.is_multiple_of(self.patch_size) {
            return Err(ModelError::config(format!(
                "img_size {} is not divisible by patch_size {}",
                self.img_size, self.patch_size
            )));
        }
        if !self.embed_dim.is_multiple_of(self.num_heads) {
            return Err(ModelError::config(format!(
                "embed_dim {} is not divisible by num_heads {}",
                self.embed_dim, self.num_heads
            )));
        }
        if !(self.mlp_ratio.is_finite() && self.mlp_ratio > 0.0) || self.mlp_hidden() == 0 {
            return Err(ModelError::config(format!(
                "mlp_ratio {} gives an MLP width of {} for embed_dim {}; it must be positive",
                self.mlp_ratio,
                self.mlp_hidden(),
                self.embed_dim
            )));
        }
        Ok(())
    }

    /// `int(embed_dim * mlp_ratio)` (computed in f64, as Python does).
    pub fn mlp_hidden(&self) -> usize {
        let h = self.embed_dim as f64 * self.mlp_ratio as f64;
        if h.is_finite() && h > 0.0 {
            h as usize
        } else {
            0
        }
    }

    /// Patch tokens (`(img_size / patch_size)^2`).
    pub fn num_patches(&self) -> usize {
        let g = self.img_size / self.patch_size.max(1);
        g * g
    }
}

/// A pre-norm transformer encoder block (timm's `Block`; `ls1`, `ls2`, `drop_path*` are
/// `Identity` in ViT).
pub struct Block {
    /// Layer norm before attention.
    pub norm1: LayerNorm,
    /// Multi-head self-attention.
    pub attn: Attention,
    /// Layer norm before the MLP.
    pub norm2: LayerNorm,
    /// The two-layer MLP.
    pub mlp: Mlp,
}

impl Block {
    /// A block of width `dim`.
    pub fn new(
        dim: usize,
        num_heads: usize,
        hidden: usize,
        act: Activation,
        rng: &mut Rng,
    ) -> Result<Self> {
        let init = LinearInit::TruncNormal(0.02);
        Ok(Block {
            norm1: LayerNorm::new(dim, LN_EPS),
            attn: Attention::new(dim, num_heads, true, init, rng)?,
            norm2: LayerNorm::new(dim, LN_EPS),
            mlp: Mlp::new(dim, hidden, dim, act, init, rng),
        })
    }

    /// The block output and the attention probabilities `[n, heads, L, L]`.
    pub fn forward_with_probs(&self, x: &Tensor) -> Result<(Tensor, Tensor)> {
        let h = in_child("norm1", || self.norm1.forward(x))?;
        let (a, probs) = in_child("attn", || self.attn.forward_with_probs(&h))?;
        Ok((self.finish(x, &a)?, probs))
    }

    /// The rest of the block after attention: `x + a`, then the MLP residual.
    fn finish(&self, x: &Tensor, a: &Tensor) -> Result<Tensor> {
        let x = x.add(a)?;
        let h = in_child("norm2", || self.norm2.forward(&x))?;
        let h = in_child("mlp", || self.mlp.forward(&h))?;
        Ok(x.add(&h)?)
    }
}

impl Module for Block {
    /// The plain forward: the attention probabilities are released inside the attention.
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let h = in_child("norm1", || self.norm1.forward(x))?;
        let a = in_child("attn", || self.attn.forward(&h))?;
        self.finish(x, &a)
    }

    module_children!("norm1" => norm1, "attn" => attn, "norm2" => norm2, "mlp" => mlp);
}

/// timm's `VisionTransformer` (class token, learned position embedding, token pooling).
pub struct VisionTransformer {
    arch: String,
    cfg: VitConfig,
    /// `[1, 1, D]`.
    pub cls_token: Tensor,
    /// `[1, N + 1, D]` (the class token's row first).
    pub pos_embed: Tensor,
    /// Patch embedding (a strided convolution).
    pub patch_embed: PatchEmbed,
    /// The transformer blocks.
    pub blocks: Vec<Block>,
    /// The final LayerNorm.
    pub norm: LayerNorm,
    /// `D -> num_classes`; `None` when `num_classes == 0` (timm's `Identity`).
    pub head: Option<Linear>,
    /// When set, every forward keeps the attention probabilities for
    /// [`VisionTransformer::take_attention`]. Off by default.
    pub capture_attention: bool,
    captured: Mutex<Vec<Tensor>>,
}

impl VisionTransformer {
    /// A ViT of configuration `cfg` named `arch`, initialised as timm from `seed`.
    pub fn new(arch: &str, cfg: VitConfig, seed: u64) -> Result<Self> {
        cfg.validate()?;
        crate::limits::check_vit(arch, &cfg)?;
        let mut rng = Rng::new(seed);
        let d = cfg.embed_dim;
        let n_tok = cfg.num_patches() + 1;
        let patch_embed = PatchEmbed::new(cfg.img_size, cfg.patch_size, cfg.in_chans, d, &mut rng)?;
        let pos_embed = init::trunc_normal(&[1, n_tok, d], 0.02, &mut rng);
        let cls_token = init::normal(&[1, 1, d], 1e-6, &mut rng);
        let blocks = (0..cfg.depth)
            .map(|_| Block::new(d, cfg.num_heads, cfg.mlp_hidden(), cfg.act, &mut rng))
            .collect::<Result<Vec<_>>>()?;
        let head = (cfg.num_classes > 0)
            .then(|| LinearInit::TruncNormal(0.02).linear(d, cfg.num_classes, true, &mut rng));
        Ok(VisionTransformer {
            arch: arch.to_string(),
            cfg,
            cls_token,
            pos_embed,
            patch_embed,
            blocks,
            norm: LayerNorm::new(d, LN_EPS),
            head,
            capture_attention: false,
            captured: Mutex::new(Vec::new()),
        })
    }

    /// The configuration.
    pub fn config(&self) -> &VitConfig {
        &self.cfg
    }

    /// The logits and the attention probabilities of every block, `[n, heads, N+1, N+1]`
    /// each, whatever `capture_attention` says.
    pub fn forward_with_attention(&self, x: &Tensor) -> Result<(Tensor, Vec<Tensor>)> {
        let mut maps = Vec::with_capacity(self.blocks.len());
        let y = self.run(x, &mut |_, _| {}, Some(&mut maps))?;
        Ok((y, maps))
    }

    /// The attention probabilities kept by the last forward run with `capture_attention` set
    /// (empty otherwise); taking them clears the store.
    pub fn take_attention(&self) -> Vec<Tensor> {
        std::mem::take(&mut *self.captured.lock().unwrap_or_else(|e| e.into_inner()))
    }

    /// timm's `forward_features`: the normalised token sequence `[n, N+1, D]`.
    pub fn forward_features(&self, x: &Tensor) -> Result<Tensor> {
        let mut t = self.embed(x)?;
        for (i, b) in self.blocks.iter().enumerate() {
            t = in_child(format_args!("blocks.{i}"), || b.forward(&t))?;
        }
        in_child("norm", || self.norm.forward(&t))
    }

    /// Patch tokens with the class token prepended and the position embedding added.
    fn embed(&self, x: &Tensor) -> Result<Tensor> {
        let p = in_child("patch_embed", || self.patch_embed.forward(x))?; // [n, N, D]
        let (n, d) = (p.shape()[0], self.cfg.embed_dim);
        let cls = self.cls_token.expand(&[n, 1, d])?;
        Ok(Tensor::cat(&[cls, p], 1)?.add(&self.pos_embed)?)
    }

    fn run(
        &self,
        x: &Tensor,
        stage: &mut dyn FnMut(&str, &Tensor),
        mut maps: Option<&mut Vec<Tensor>>,
    ) -> Result<Tensor> {
        let mut t = self.embed(x)?;
        stage("patch_embed", &t);
        for (i, b) in self.blocks.iter().enumerate() {
            t = in_child(format_args!("blocks.{i}"), || match maps.as_deref_mut() {
                Some(m) => {
                    let (y, probs) = b.forward_with_probs(&t)?;
                    m.push(probs.detach());
                    Ok(y)
                }
                // Off: the plain block forward, which keeps no probabilities.
                None => b.forward(&t),
            })?;
            stage(&format!("blocks.{i}"), &t);
        }
        let t = in_child("norm", || self.norm.forward(&t))?;
        stage("norm", &t);
        let pooled = t.select(1, 0)?; // the class token, [n, D]
        match &self.head {
            Some(h) => {
                let y = in_child("head", || h.forward(&pooled))?;
                stage("head", &y);
                Ok(y)
            }
            None => Ok(pooled),
        }
    }
}

impl Module for VisionTransformer {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.forward_stages(x, &mut |_, _| {})
    }

    fn visit(&self, prefix: &str, f: &mut dyn FnMut(&str, &Tensor, TensorKind)) {
        f(
            &format!("{prefix}cls_token"),
            &self.cls_token,
            TensorKind::Parameter,
        );
        f(
            &format!("{prefix}pos_embed"),
            &self.pos_embed,
            TensorKind::Parameter,
        );
        self.patch_embed.visit(&child(prefix, "patch_embed"), f);
        for (i, b) in self.blocks.iter().enumerate() {
            b.visit(&child(prefix, &format!("blocks.{i}")), f);
        }
        self.norm.visit(&child(prefix, "norm"), f);
        if let Some(h) = &self.head {
            h.visit(&child(prefix, "head"), f);
        }
    }

    fn visit_mut(&mut self, prefix: &str, f: &mut dyn FnMut(&str, &mut Tensor, TensorKind)) {
        f(
            &format!("{prefix}cls_token"),
            &mut self.cls_token,
            TensorKind::Parameter,
        );
        f(
            &format!("{prefix}pos_embed"),
            &mut self.pos_embed,
            TensorKind::Parameter,
        );
        self.patch_embed.visit_mut(&child(prefix, "patch_embed"), f);
        for (i, b) in self.blocks.iter_mut().enumerate() {
            b.visit_mut(&child(prefix, &format!("blocks.{i}")), f);
        }
        self.norm.visit_mut(&child(prefix, "norm"), f);
        if let Some(h) = &mut self.head {
            h.visit_mut(&child(prefix, "head"), f);
        }
    }

    fn set_mode(&mut self, _mode: Mode) {}
}

impl Model for VisionTransformer {
    fn arch(&self) -> &str {
        &self.arch
    }

    fn input_chw(&self) -> [usize; 3] {
        [self.cfg.in_chans, self.cfg.img_size, self.cfg.img_size]
    }

    fn num_classes(&self) -> usize {
        self.cfg.num_classes
    }

    /// Stages: `patch_embed` (the embedded tokens, class token and position embedding
    /// included, `[n, N+1, D]`), `blocks.{i}`, `norm`, `head` (absent without a head).
    fn forward_stages(&self, x: &Tensor, stage: &mut dyn FnMut(&str, &Tensor)) -> Result<Tensor> {
        if !self.capture_attention {
            return self.run(x, stage, None);
        }
        let mut maps = Vec::with_capacity(self.blocks.len());
        let y = self.run(x, stage, Some(&mut maps))?;
        *self.captured.lock().unwrap_or_else(|e| e.into_inner()) = maps;
        Ok(y)
    }

    fn plan_with(&self, input: [usize; 4], _options: &PlanOptions) -> Result<Plan> {
        plan_vit(self, input, false)
    }

    fn plan_reference(&self, input: [usize; 4]) -> Result<Plan> {
        plan_vit(self, input, true)
    }
}

/// Builds one of [`NAMES`] as the concrete type (for the attention-map tools).
pub fn create_vit(arch: &str, o: &Overrides, seed: u64) -> Result<VisionTransformer> {
    VisionTransformer::new(arch, VitConfig::named(arch, o)?, seed)
}

/// Builds one of [`NAMES`].
pub fn build(arch: &str, o: &Overrides, seed: u64) -> Result<Box<dyn Model>> {
    Ok(Box::new(create_vit(arch, o, seed)?))
}
