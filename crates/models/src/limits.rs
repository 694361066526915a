//! Resource limits: the memory budget that every size computed from a flag, a file header or an
//! image is checked against **before** anything is allocated, so an absurd request
//! (`--img-size 100000`, `--num-classes 1000000000000`, a header claiming terabytes) is an
//! error naming what asked and how many bytes it would need, not an abort inside the allocator.
//!
//! The budget is [`DEFAULT_FRACTION`] of the machine's memory (the smaller of `MemTotal` in
//! `/proc/meminfo` and a cgroup memory limit, as a container sees it; [`FALLBACK_BYTES`] where
//! neither can be read), or what the environment variable [`ENV`] says: a byte count with an
//! optional `K`, `M`, `G`, `T` suffix (powers of 1024; `KiB`, `MB`... accepted), or `none` for no
//! limit. All arithmetic on requested sizes is checked: an overflow counts as "more than the
//! budget".
//!
//! The model estimates ([`model_footprint`]) count parameters exactly for ViT and bound them
//! for the CNNs (their fixed trunk plus the parts `in_chans` and `num_classes` scale), and
//! estimate activation memory per image: for training, every op output of one forward kept for
//! the backward; for inference, a few of the largest op outputs alive at once.

use crate::archs::vit::VitConfig;
use crate::error::{ModelError, Result};
use crate::zoo::Overrides;
use std::sync::OnceLock;

/// The environment variable that overrides the budget.
pub const ENV: &str = "TESSERA_MEMORY_LIMIT";

/// The share of physical memory a single request may use by default: 3/4.
pub const DEFAULT_FRACTION: (u64, u64) = (3, 4);

/// The budget when the machine's memory cannot be read: 8 GiB.
pub const FALLBACK_BYTES: u64 = 8 << 30;

/// The machine's memory as this process sees it: `MemTotal`, lowered to a cgroup (v2 or v1)
/// memory limit when one is set. `None` where neither can be read.
pub fn physical_memory() -> Option<u64> {
    let total = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
                .and_then(|kib| kib.checked_mul(1024))
        })?;
    let cgroup = [
        "/sys/fs/cgroup/memory.max",
        "/sys/fs/cgroup/memory/memory.limit_in_bytes",
    ]
    .iter()
    .filter_map(|p| std::fs::read_to_string(p).ok())
    .filter_map(|s| s.trim().parse::<u64>().ok())
    .min();
    Some(cgroup.map_or(total, |c| c.min(total)))
}

/// Parses a byte count: digits with an optional `K`/`M`/`G`/`T` suffix (powers of 1024, an
/// optional `B` or `iB` after it), or `none`/`off`/`unlimited` (`u64::MAX`).
pub fn parse_bytes(s: &str) -> Option<u64> {
    let t = s.trim();
    if matches!(
        t.to_ascii_lowercase().as_str(),
        "none" | "off" | "unlimited"
    ) {
        return Some(u64::MAX);
    }
    let digits = t.trim_end_matches(|c: char| c.is_ascii_alphabetic());
    let suffix = t[digits.len()..].to_ascii_lowercase();
    let n: u64 = digits.trim().parse().ok()?;
    let shift = match suffix.as_str() {
        "" | "b" => 0,
        "k" | "kb" | "kib" => 10,
        "m" | "mb" | "mib" => 20,
        "g" | "gb" | "gib" => 30,
        "t" | "tb" | "tib" => 40,
        _ => return None,
    };
    n.checked_mul(1u64 << shift)
}

/// The budget in bytes (see the module docs); an error when [`ENV`] is set but unreadable.
pub fn memory_budget() -> Result<u64> {
    if let Ok(v) = std::env::var(ENV) {
        return parse_bytes(&v).ok_or_else(|| {
            ModelError::Limit(format!(
                "{ENV}={v:?} is not a byte count (e.g. 8G, 512M, 1000000, or none)"
            ))
        });
    }
    static DEFAULT: OnceLock<u64> = OnceLock::new();
    Ok(*DEFAULT.get_or_init(|| {
        physical_memory().map_or(FALLBACK_BYTES, |m| {
            m / DEFAULT_FRACTION.1 * DEFAULT_FRACTION.0
        })
    }))
}

/// `1.5 GiB (1610612736 bytes)`.
pub fn format_bytes(b: u64) -> String {
    const UNITS: [&str; 5] = ["bytes", "KiB", "MiB", "GiB", "TiB"];
    let mut v = b as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{b} bytes")
    } else {
        format!("{v:.1} {} ({b} bytes)", UNITS[u])
    }
}

/// Checks that `bytes` (`None`: the size computation overflowed) fit the budget; the error
/// names `what` asked for them.
pub fn check(what: &str, bytes: Option<u64>) -> Result<()> {
    let budget = memory_budget()?;
    match bytes {
        Some(b) if b <= budget => Ok(()),
        Some(b) => Err(ModelError::Limit(format!(
            "{what} needs {}, more than the memory budget of {} (set {ENV} to change it)",
            format_bytes(b),
            format_bytes(budget)
        ))),
        None => Err(ModelError::Limit(format!(
            "{what} needs more than 2^64 bytes (the size overflows); the memory budget is {}",
            format_bytes(budget)
        ))),
    }
}

/// Bytes of `dims` elements of `elem_size` bytes each, `None` on overflow.
pub fn bytes_of(dims: &[usize], elem_size: usize) -> Option<u64> {
    dims.iter()
        .try_fold(elem_size as u64, |acc, &d| acc.checked_mul(d as u64))
}

/// What a model needs: parameters and activation bytes per image.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Footprint {
    /// Parameters and buffers (f32), an upper bound for the CNNs.
    pub param_bytes: u64,
    /// Activations of one image's training forward, all kept for the backward.
    pub train_bytes_per_image: u64,
    /// Activations alive at once in one image's inference forward.
    pub infer_bytes_per_image: u64,
}

impl Footprint {
    /// Parameters plus `batch` images' activations (and, for training, the gradients and
    /// two optimizer moments, three more copies of the parameters); `None` on overflow.
    pub fn bytes(&self, batch: usize, training: bool) -> Option<u64> {
        let (per_image, params) = if training {
            (self.train_bytes_per_image, self.param_bytes.checked_mul(4)?)
        } else {
            (self.infer_bytes_per_image, self.param_bytes)
        };
        per_image.checked_mul(batch as u64)?.checked_add(params)
    }
}

/// Checked `a * b * ...` in u64.
fn mul(v: &[u64]) -> Option<u64> {
    v.iter().try_fold(1u64, |a, &b| a.checked_mul(b))
}

/// Checked sum.
fn add(v: &[Option<u64>]) -> Option<u64> {
    v.iter().try_fold(0u64, |a, b| a.checked_add((*b)?))
}

/// Per-family constants of the CNN estimate: the fixed trunk's parameters (an upper bound
/// over the family's presets), the widest stem (channels x kernel area, scaled by `in_chans`),
/// the widest head (features, scaled by `num_classes`), and activation floats per input pixel
/// for one image's training forward (every op output) and inference (the largest op outputs
/// alive at once). The activation ratios are upper bounds over each family's presets, read off
/// the op records of `tessera_core::profile` at the presets' resolutions (the sum and the
/// largest of the forward outputs' bytes), with margin; the `*_digits` presets keep their stem
/// at full resolution and so have their own row.
struct CnnBound {
    trunk_params: u64,
    stem_per_in_chan: u64,
    head_features: u64,
    train_floats_per_pixel: u64,
    infer_floats_per_pixel: u64,
}

fn cnn_bound(arch: &str) -> Option<CnnBound> {
    let digits = arch.ends_with("_digits");
    let (trunk_params, stem_per_in_chan, head_features) = if arch.starts_with("mobilenetv2") {
        (8_000_000, 48 * 9, 1792)
    } else if arch.starts_with("mobilenetv3") {
        (8_000_000, 16 * 9, 1280)
    } else if arch.starts_with("resnet") || arch.starts_with("seresnet") {
        (52_000_000, 64 * 49, 2048)
    } else {
        return None;
    };
    let resnet = trunk_params > 10_000_000;
    let (train, infer) = match (digits, resnet) {
        (true, _) => (CNN_DIGITS_TRAIN, CNN_DIGITS_INFER),
        (false, false) => (CNN_TRAIN, CNN_INFER),
        (false, true) => (RESNET_TRAIN, CNN_INFER),
    };
    Some(CnnBound {
        trunk_params,
        stem_per_in_chan,
        head_features,
        train_floats_per_pixel: train,
        infer_floats_per_pixel: infer,
    })
}

/// Activation floats per input pixel, CNNs with a stride-2 stem (see [`CnnBound`]).
const CNN_TRAIN: u64 = 480;
const CNN_INFER: u64 = 80;
/// Training ratio of the (SE-)ResNets: deeper trunks keep more outputs per pixel.
const RESNET_TRAIN: u64 = 1400;
/// The same for the `*_digits` presets (stride-1 stem).
const CNN_DIGITS_TRAIN: u64 = 2000;
const CNN_DIGITS_INFER: u64 = 160;

/// The footprint of `arch` built with `o`, from the configuration alone (nothing is
/// allocated); `None` when a size overflows u64.
pub fn model_footprint(arch: &str, o: &Overrides) -> Result<Option<Footprint>> {
    if crate::archs::vit::NAMES.contains(&arch) {
        let c = VitConfig::named(arch, o)?;
        return Ok(vit_footprint(&c));
    }
    let Some(b) = cnn_bound(arch) else {
        return Err(ModelError::config(format!("unknown architecture {arch:?}")));
    };
    // The presets' defaults: 3x224x224 and 1000 classes, or 1x8x8 and 10 for `*_digits`.
    let (c0, i0, k0) = if arch.ends_with("_digits") {
        (1, 8, 10)
    } else {
        (3, 224, 1000)
    };
    let (in_chans, img, classes) = (
        o.in_chans.unwrap_or(c0) as u64,
        o.img_size.unwrap_or(i0) as u64,
        o.num_classes.unwrap_or(k0) as u64,
    );
    let params = add(&[
        Some(b.trunk_params),
        mul(&[b.stem_per_in_chan, in_chans]),
        mul(&[b.head_features.saturating_add(1), classes]),
    ]);
    let pixels = mul(&[img, img]);
    // The input itself: in_chans planes.
    let input = pixels.and_then(|p| mul(&[p, in_chans, 4]));
    let train = add(&[
        pixels.and_then(|p| mul(&[p, b.train_floats_per_pixel, 4])),
        input,
    ]);
    let infer = add(&[
        pixels.and_then(|p| mul(&[p, b.infer_floats_per_pixel, 4])),
        input,
    ]);
    Ok((|| {
        Some(Footprint {
            param_bytes: params?.checked_mul(4)?,
            train_bytes_per_image: train?,
            infer_bytes_per_image: infer?,
        })
    })())
}

/// ViT: parameters counted exactly; activations per block as the ops produce them (two
/// layer norms, qkv, the attention probabilities, its output and projection, the MLP's hidden
/// before and after the activation, its output, two residual sums).
fn vit_footprint(c: &VitConfig) -> Option<Footprint> {
    let (d, h, k) = (
        c.embed_dim as u64,
        c.mlp_hidden() as u64,
        c.num_classes as u64,
    );
    let heads = c.num_heads as u64;
    let grid = (c.img_size / c.patch_size.max(1)) as u64;
    let t = mul(&[grid, grid])?.checked_add(1)?;
    let block = add(&[
        Some(mul(&[d, 4])?),                         // two layer norms
        mul(&[d, d, 3])?.checked_add(mul(&[d, 3])?), // qkv
        mul(&[d, d])?.checked_add(d),                // proj
        mul(&[h, d])?.checked_add(h),                // fc1
        mul(&[d, h])?.checked_add(d),                // fc2
    ])?;
    let params = add(&[
        mul(&[
            d,
            c.in_chans as u64,
            c.patch_size as u64,
            c.patch_size as u64,
        ])?
        .checked_add(d),
        mul(&[t, d])?.checked_add(d), // pos_embed, cls_token
        mul(&[block, c.depth as u64]),
        Some(mul(&[d, 2])?),
        mul(&[d, k])?.checked_add(k),
    ])?;
    let block_acts = add(&[mul(&[t, d, 9]), mul(&[t, h, 2]), mul(&[heads, t, t])])?;
    let input = mul(&[c.in_chans as u64, c.img_size as u64, c.img_size as u64])?;
    let train = add(&[
        Some(input),
        mul(&[t, d, 3]),
        mul(&[block_acts, c.depth as u64]),
    ])?;
    let largest = [mul(&[heads, t, t])?, mul(&[t, h])?, mul(&[t, d, 3])?, input]
        .into_iter()
        .max()?;
    Some(Footprint {
        param_bytes: params.checked_mul(4)?,
        train_bytes_per_image: train.checked_mul(4)?,
        infer_bytes_per_image: largest.checked_mul(4 * 4)?,
    })
}

/// Checks an explicit ViT configuration (what `VisionTransformer::new` takes): parameters and
/// one image's forward.
pub fn check_vit(arch: &str, cfg: &VitConfig) -> Result<()> {
    check_footprint(
        &format!("{arch} (configuration {cfg:?})"),
        vit_footprint(cfg),
    )
}

/// Checks an explicit ResNet configuration (what `archs::resnet::build_config` takes): its
/// parameters, bounded stage by stage (each bottleneck's three convolutions, its downsample
/// and squeeze-excitation, at most `3 (4c)^2 + 9 w^2` with `w` the stage's group width), and
/// one image's forward, with the family's activation ratio scaled by the widest stage.
pub fn check_resnet(arch: &str, cfg: &crate::archs::resnet::ResNetConfig) -> Result<()> {
    let params = (|| {
        let mut total = mul(&[64, 49, cfg.in_chans as u64])?;
        for (&n, &c) in cfg.layers.iter().zip(&cfg.channels) {
            let (c, n) = (c as u64, n as u64);
            let w = mul(&[c, cfg.base_width as u64, cfg.cardinality as u64])? / 64;
            let block = add(&[mul(&[3, 16, c, c]), mul(&[9, w, w]), mul(&[8, w, c])])?;
            total = total.checked_add(mul(&[n, block])?)?;
        }
        let feats = mul(&[cfg.channels.last().copied().unwrap_or(0) as u64, 4])?;
        total = total.checked_add(mul(&[feats.checked_add(1)?, cfg.num_classes as u64])?)?;
        total.checked_mul(4)
    })();
    check(
        &format!("{arch} (configuration {cfg:?}): its parameter storage"),
        params,
    )?;
    let widest = cfg.channels.iter().copied().max().unwrap_or(1) as u64;
    let digits = matches!(cfg.stem, crate::archs::resnet::Stem::Small);
    let (base, ratio) = if digits {
        (16, CNN_DIGITS_INFER)
    } else {
        (64, CNN_INFER)
    };
    let act = (|| {
        let per_pixel = mul(&[ratio, widest.div_ceil(base)])?;
        let pixels = mul(&[cfg.img_size as u64, cfg.img_size as u64])?;
        add(&[
            mul(&[pixels, per_pixel, 4]),
            mul(&[pixels, cfg.in_chans as u64, 4]),
            params,
        ])
    })();
    check(
        &format!("{arch} (configuration {cfg:?}): one image's forward pass"),
        act,
    )
}

/// Checks that `arch` with `o` can be built and run on one image within the budget; the error
/// names the overrides that drive the size.
pub fn check_model(arch: &str, o: &Overrides) -> Result<()> {
    check_footprint(&describe(arch, o), model_footprint(arch, o)?)
}

/// Checks a footprint's parameters, then one image's forward pass, naming `what` and the
/// part over the budget. `None` (the footprint's arithmetic overflowed, in the parameters or
/// the activations) is reported as both together rather than blamed on the parameters.
fn check_footprint(what: &str, fp: Option<Footprint>) -> Result<()> {
    let Some(fp) = fp else {
        return check(
            &format!("{what}: the storage of its parameters and one image's forward pass"),
            None,
        );
    };
    check(
        &format!("{what}: its parameter storage"),
        Some(fp.param_bytes),
    )?;
    check(
        &format!("{what}: one image's forward pass"),
        fp.bytes(1, false),
    )
}

/// Checks a forward (or, with `training`, a training step) of `batch` images of `arch` with
/// `o`; `flag` names where the batch size came from (`--batch 64`, `the input file`).
pub fn check_batch(
    arch: &str,
    o: &Overrides,
    batch: usize,
    training: bool,
    flag: &str,
) -> Result<()> {
    let fp = model_footprint(arch, o)?;
    let what = format!(
        "{} with {flag} ({batch} image{}{})",
        describe(arch, o),
        if batch == 1 { "" } else { "s" },
        if training { ", training" } else { "" }
    );
    check(&what, fp.and_then(|f| f.bytes(batch, training)))
}

/// `vit_tiny_patch16_224 (--img-size 100000 --embed-dim 10)`.
fn describe(arch: &str, o: &Overrides) -> String {
    let mut flags = Vec::new();
    let mut push = |name: &str, v: Option<String>| {
        if let Some(v) = v {
            flags.push(format!("--{name} {v}"));
        }
    };
    push("img-size", o.img_size.map(|v| v.to_string()));
    push("in-chans", o.in_chans.map(|v| v.to_string()));
    push("num-classes", o.num_classes.map(|v| v.to_string()));
    push("patch-size", o.patch_size.map(|v| v.to_string()));
    push("embed-dim", o.embed_dim.map(|v| v.to_string()));
    push("depth", o.depth.map(|v| v.to_string()));
    push("num-heads", o.num_heads.map(|v| v.to_string()));
    push("mlp-ratio", o.mlp_ratio.map(|v| v.to_string()));
    if flags.is_empty() {
        arch.to_string()
    } else {
        format!("{arch} ({})", flags.join(" "))
    }
}
