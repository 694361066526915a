//! `tessera list [--json]`: every architecture and preset the zoo builds, with its input,
//! classes, parameters, multiply-accumulates of one image, and the pretrained weights timm
//! publishes for it (Hugging Face hub id), so a name can be picked before `info`, `run` or
//! `train`.
//!
//! Parameters and MACs come from building each model without drawing random values
//! (`tessera_models::init::without_draws`) and one forward pass on zeros, as `tessera info`
//! counts them.

use crate::info::{summarize, thousands};
use clap::Args;
use tessera::models::init::without_draws;
use tessera::models::preprocess::pretrained_cfg;
use tessera::models::zoo::{self, Overrides};

/// Options of `tessera list`.
#[derive(Args)]
pub struct ListArgs {
    /// One JSON object per architecture instead of the table.
    #[arg(long)]
    pub json: bool,
}

/// One line of the list.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    pub arch: String,
    pub input_chw: [usize; 3],
    pub num_classes: usize,
    pub params: usize,
    pub macs: u64,
    /// timm's default pretrained weights on the Hugging Face hub, if any.
    pub hf_hub_id: Option<String>,
}

/// The entry of one zoo name.
pub fn entry(arch: &str) -> Result<Entry, String> {
    let model = without_draws(|| zoo::create(arch, &Overrides::default(), 0))
        .map_err(|e| format!("list {arch}: {e}"))?;
    let s = summarize(model.as_ref())?;
    Ok(Entry {
        arch: arch.to_string(),
        input_chw: s.input_chw,
        num_classes: s.num_classes,
        params: s.params,
        macs: s.macs,
        hf_hub_id: pretrained_cfg(arch).and_then(|c| c.hf_hub_id.clone()),
    })
}

/// Runs `tessera list`.
pub fn run(args: &ListArgs) -> Result<(), String> {
    let entries = zoo::names()
        .into_iter()
        .map(entry)
        .collect::<Result<Vec<_>, _>>()?;
    if args.json {
        for e in &entries {
            outln!(
                "{}",
                serde_json::json!({
                    "arch": e.arch, "input": e.input_chw, "num_classes": e.num_classes,
                    "params": e.params, "macs": e.macs, "hf_hub_id": e.hf_hub_id,
                })
            );
        }
        return Ok(());
    }
    outln!(
        "{:<24} {:>11} {:>7} {:>13} {:>15}  pretrained weights (Hugging Face hub)",
        "architecture",
        "input",
        "classes",
        "parameters",
        "MACs"
    );
    for e in &entries {
        let [c, h, w] = e.input_chw;
        let hub = match (&e.hf_hub_id, pretrained_cfg(&e.arch)) {
            (Some(id), _) => id.as_str(),
            (None, Some(_)) => "- (timm has none)",
            (None, None) => "- (tessera preset: train it)",
        };
        outln!(
            "{:<24} {:>11} {:>7} {:>13} {:>15}  {hub}",
            e.arch,
            format!("{c}x{h}x{w}"),
            e.num_classes,
            thousands(e.params as u64),
            thousands(e.macs)
        );
    }
    outln!("");
    outln!(
        "Details per layer: tessera info ARCH. Pretrained weights: see `tessera run --help` and \
         the README."
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_match_timm_counts() {
        let e = entry("mobilenetv3_large_100").unwrap();
        assert_eq!(e.params, 5_483_032);
        assert_eq!(
            e.hf_hub_id.as_deref(),
            Some("timm/mobilenetv3_large_100.ra_in1k")
        );
        assert!(e.macs > 200_000_000 && e.macs < 240_000_000, "{}", e.macs);
        let d = entry("vit_digits").unwrap();
        assert_eq!((d.input_chw, d.num_classes), ([1, 8, 8], 10));
        assert_eq!(d.params, 202_186);
        assert!(d.hf_hub_id.is_none());
    }
}
