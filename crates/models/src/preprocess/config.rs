//! timm's pretrained configurations: for each timm architecture of the zoo, the weights the
//! Hugging Face hub holds under `timm/` and the evaluation preprocessing they were trained for
//! (input size, `crop_pct`, interpolation, mean, std), as `timm.create_model(name).pretrained_cfg`
//! reports them (timm 1.0.31).
//!
//! The table is data (`crates/models/data/pretrained_cfgs.tsv`, written by
//! `scripts/pretrained_data.py`), embedded at compile time and parsed once.

use std::sync::OnceLock;

/// The resampling filter of the resize step (PIL's filters, which torchvision uses on images).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Interpolation {
    /// PIL `BICUBIC` (Keys cubic, a = -0.5, support 2).
    Bicubic,
    /// PIL `BILINEAR` (triangle, support 1).
    Bilinear,
}

impl Interpolation {
    /// Parses timm's name (`bicubic`, `bilinear`).
    pub fn from_name(name: &str) -> Option<Interpolation> {
        match name {
            "bicubic" => Some(Interpolation::Bicubic),
            "bilinear" => Some(Interpolation::Bilinear),
            _ => None,
        }
    }

    /// timm's name.
    pub fn name(self) -> &'static str {
        match self {
            Interpolation::Bicubic => "bicubic",
            Interpolation::Bilinear => "bilinear",
        }
    }
}

/// One architecture's pretrained configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct PretrainedCfg {
    /// The zoo name (`mobilenetv3_large_100`).
    pub arch: String,
    /// The default weights on the Hugging Face hub (`timm/mobilenetv3_large_100.ra_in1k`), or
    /// `None` when timm has no pretrained weights for this name.
    pub hf_hub_id: Option<String>,
    /// timm's pretrained tag (`ra_in1k`, or `untrained`).
    pub tag: String,
    /// `[channels, height, width]` the weights expect.
    pub input_size: [usize; 3],
    /// Fraction of the resized image the centre crop keeps.
    pub crop_pct: f64,
    pub interpolation: Interpolation,
    pub mean: [f32; 3],
    pub std: [f32; 3],
    pub num_classes: usize,
}

impl PretrainedCfg {
    /// The URL of the weights file (`model.safetensors`) on the hub, if there is one.
    pub fn weights_url(&self) -> Option<String> {
        self.hf_hub_id
            .as_ref()
            .map(|id| format!("https://huggingface.co/{id}/resolve/main/model.safetensors"))
    }
}

const TABLE: &str = include_str!("../../data/pretrained_cfgs.tsv");

fn floats<const N: usize>(s: &str) -> Option<[f32; N]> {
    let v: Vec<f32> = s
        .split(',')
        .map(|p| p.parse().ok())
        .collect::<Option<_>>()?;
    v.try_into().ok()
}

fn parse_row(line: &str) -> Option<PretrainedCfg> {
    let f: Vec<&str> = line.split('\t').collect();
    let [arch, hub, tag, size, crop, _mode, interp, mean, std, classes] = f.as_slice() else {
        return None;
    };
    let size: Vec<usize> = size
        .split(',')
        .map(|p| p.parse().ok())
        .collect::<Option<_>>()?;
    Some(PretrainedCfg {
        arch: arch.to_string(),
        hf_hub_id: (*hub != "-").then(|| hub.to_string()),
        tag: tag.to_string(),
        input_size: size.try_into().ok()?,
        crop_pct: crop.parse().ok()?,
        interpolation: Interpolation::from_name(interp)?,
        mean: floats(mean)?,
        std: floats(std)?,
        num_classes: classes.parse().ok()?,
    })
}

/// Every row of the embedded table, in the zoo's order.
pub fn pretrained_cfgs() -> &'static [PretrainedCfg] {
    static CFGS: OnceLock<Vec<PretrainedCfg>> = OnceLock::new();
    CFGS.get_or_init(|| {
        TABLE
            .lines()
            .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
            // The table is generated and checked by a test: a bad row is a build defect.
            .filter_map(parse_row)
            .collect()
    })
}

/// The pretrained configuration of a timm architecture, `None` for tessera's own presets
/// (`vit_digits`, ...) and unknown names.
pub fn pretrained_cfg(arch: &str) -> Option<&'static PretrainedCfg> {
    pretrained_cfgs().iter().find(|c| c.arch == arch)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_row_parses() {
        let rows = TABLE
            .lines()
            .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
            .count();
        assert_eq!(pretrained_cfgs().len(), rows);
        assert!(rows >= 17);
    }

    #[test]
    fn known_entries() {
        let m = pretrained_cfg("mobilenetv3_large_100").unwrap();
        assert_eq!(
            m.hf_hub_id.as_deref(),
            Some("timm/mobilenetv3_large_100.ra_in1k")
        );
        assert_eq!(m.crop_pct, 0.875);
        assert_eq!(m.mean, [0.485, 0.456, 0.406]);
        assert_eq!(m.interpolation, Interpolation::Bicubic);
        assert_eq!(
            m.weights_url().unwrap(),
            "https://huggingface.co/timm/mobilenetv3_large_100.ra_in1k/resolve/main/model.safetensors"
        );
        let v = pretrained_cfg("vit_base_patch16_224").unwrap();
        assert_eq!((v.crop_pct, v.mean, v.std), (0.9, [0.5; 3], [0.5; 3]));
        assert_eq!(pretrained_cfg("resnet50").unwrap().crop_pct, 0.95);
        assert_eq!(
            pretrained_cfg("mobilenetv3_large_075")
                .unwrap()
                .interpolation,
            Interpolation::Bilinear
        );
        assert!(pretrained_cfg("seresnet101").unwrap().hf_hub_id.is_none());
        assert!(pretrained_cfg("vit_digits").is_none());
    }
}
