//! `tessera info ARCH [overrides] [--json]`: the layer table of an architecture (each top-level
//! stage's name, output shape, parameters and multiply-accumulates) and its totals, in the
//! style of `torchinfo.summary` / timm's `--model-info`.
//!
//! The table comes from running the model once on a zero input of its default shape
//! `[1, in_chans, img_size, img_size]` under `no_grad`, with `Model::forward_stages` reporting
//! each stage and `tessera_core::profile::macs` read at every report: a stage's MACs are the
//! counter's increase since the previous report. A parameter belongs to the stage whose name is
//! the longest prefix of the parameter's name (`blocks.3` owns `blocks.3.attn.qkv.weight`);
//! parameters no stage owns (ViT's `cls_token`, `pos_embed`) and MACs after the last report are
//! shown on an `(other)` row, so the totals always equal `parameter_count` and the MACs of the
//! whole forward pass.

use crate::overrides::{self, OverrideArgs};
use clap::Args;
use tessera::core::{no_grad, profile, Tensor};
use tessera::models::module::{named_parameters, parameter_count};
use tessera::models::zoo::Model;

/// Options of `tessera info`.
#[derive(Args)]
pub struct InfoArgs {
    /// Architecture name, as in timm (`vit_base_patch16_224`, `mobilenetv2_100`, ...);
    /// `tessera list` shows every architecture and preset.
    pub arch: String,
    #[command(flatten)]
    pub overrides: OverrideArgs,
    /// One JSON object instead of the table.
    #[arg(long)]
    pub json: bool,
}

/// One row of the layer table.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    /// The stage's parameter-name prefix (`blocks.3`), or `(other)`.
    pub name: String,
    /// Output shape at batch 1 (empty for the `(other)` row).
    pub shape: Vec<usize>,
    pub params: usize,
    pub macs: u64,
}

/// The layer table of a model and its totals.
#[derive(Debug, Clone, PartialEq)]
pub struct Summary {
    pub arch: String,
    /// `[in_chans, img_size, img_size]`.
    pub input_chw: [usize; 3],
    pub num_classes: usize,
    pub rows: Vec<Row>,
    /// `parameter_count(model)`.
    pub params: usize,
    /// Multiply-accumulates of one forward pass at batch 1.
    pub macs: u64,
    /// Output shape of the whole forward pass.
    pub output_shape: Vec<usize>,
    /// Top-level names of the parameters no stage owns (shown on the `(other)` row).
    pub other_names: Vec<String>,
}

/// The name of the row collecting what no stage owns.
pub const OTHER: &str = "(other)";

/// Runs `model` once on zeros and builds its layer table.
pub fn summarize(model: &dyn Model) -> Result<Summary, String> {
    let [c, h, w] = model.input_chw();
    let x = Tensor::zeros(&[1, c, h, w]);
    let mut rows: Vec<Row> = Vec::new();
    let _guard = no_grad();
    let start = profile::macs();
    let mut last = start;
    let out = model
        .forward_stages(&x, &mut |name, t| {
            let now = profile::macs();
            rows.push(Row {
                name: name.to_string(),
                shape: t.shape().to_vec(),
                params: 0,
                macs: now.wrapping_sub(last),
            });
            last = now;
        })
        .map_err(|e| format!("info {}: forward pass failed: {e}", model.arch()))?;
    let end = profile::macs();
    let total_macs = end.wrapping_sub(start);
    let mut other = Row {
        name: OTHER.to_string(),
        shape: Vec::new(),
        params: 0,
        macs: end.wrapping_sub(last),
    };
    let mut other_names: Vec<String> = Vec::new();
    for (pname, t) in named_parameters(model) {
        match owner(&rows, &pname) {
            Some(i) => rows[i].params += t.numel(),
            None => {
                other.params += t.numel();
                let top = pname.split('.').next().unwrap_or(&pname).to_string();
                if !other_names.contains(&top) {
                    other_names.push(top);
                }
            }
        }
    }
    if other.params > 0 || other.macs > 0 {
        rows.push(other);
    }
    Ok(Summary {
        arch: model.arch().to_string(),
        input_chw: model.input_chw(),
        num_classes: model.num_classes(),
        rows,
        params: parameter_count(model),
        macs: total_macs,
        output_shape: out.shape().to_vec(),
        other_names,
    })
}

/// Index of the first row whose name is the longest prefix (at a `.` boundary) of `param`.
fn owner(rows: &[Row], param: &str) -> Option<usize> {
    let mut best: Option<(usize, usize)> = None;
    for (i, r) in rows.iter().enumerate() {
        let owns = param == r.name
            || (param.len() > r.name.len()
                && param.starts_with(&r.name)
                && param.as_bytes()[r.name.len()] == b'.');
        if owns && best.is_none_or(|(_, len)| r.name.len() > len) {
            best = Some((i, r.name.len()));
        }
    }
    best.map(|(i, _)| i)
}

/// `12345678` -> `12,345,678`.
pub fn thousands(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::with_capacity(s.len() + s.len() / 3);
    for (i, ch) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(ch);
    }
    out
}

fn shape_str(s: &[usize]) -> String {
    let parts: Vec<String> = s.iter().map(|d| d.to_string()).collect();
    format!("[{}]", parts.join(", "))
}

/// The summary as one JSON object.
pub fn to_json(s: &Summary) -> serde_json::Value {
    let layers: Vec<serde_json::Value> = s
        .rows
        .iter()
        .map(|r| {
            let mut j = serde_json::json!({
                "name": r.name, "shape": r.shape, "params": r.params, "macs": r.macs
            });
            if r.name == OTHER {
                j["includes"] = serde_json::json!(s.other_names);
            }
            j
        })
        .collect();
    serde_json::json!({
        "arch": s.arch,
        "input": s.input_chw,
        "num_classes": s.num_classes,
        "output": s.output_shape,
        "params": s.params,
        "macs": s.macs,
        "layers": layers,
    })
}

/// Runs `tessera info`.
pub fn run(args: &InfoArgs) -> Result<(), String> {
    let model = overrides::build("info", &args.arch, &args.overrides, 0)?;
    let s = summarize(model.as_ref())?;
    if args.json {
        outln!("{}", to_json(&s));
        return Ok(());
    }
    let [c, h, w] = s.input_chw;
    outln!(
        "{}: input [1, {c}, {h}, {w}], {} classes",
        s.arch,
        s.num_classes
    );
    let label = |r: &Row| {
        if r.name == OTHER && !s.other_names.is_empty() {
            format!("(other: {})", s.other_names.join(", "))
        } else {
            r.name.clone()
        }
    };
    let name_w = s
        .rows
        .iter()
        .map(|r| label(r).len())
        .max()
        .unwrap_or(0)
        .max(5);
    let shape_w = s
        .rows
        .iter()
        .map(|r| shape_str(&r.shape).len())
        .max()
        .unwrap_or(0)
        .max(12);
    outln!(
        "{:<name_w$}  {:<shape_w$}  {:>14}  {:>17}",
        "stage",
        "output shape",
        "parameters",
        "MACs"
    );
    for r in &s.rows {
        let shape = if r.shape.is_empty() {
            String::new()
        } else {
            shape_str(&r.shape)
        };
        outln!(
            "{:<name_w$}  {:<shape_w$}  {:>14}  {:>17}",
            label(r),
            shape,
            thousands(r.params as u64),
            thousands(r.macs)
        );
    }
    outln!(
        "{:<name_w$}  {:<shape_w$}  {:>14}  {:>17}",
        "total",
        shape_str(&s.output_shape),
        thousands(s.params as u64),
        thousands(s.macs)
    );
    outln!(
        "{:.2} M parameters ({:.1} MB as f32), {:.3} G multiply-accumulates per image",
        s.params as f64 / 1e6,
        s.params as f64 * 4.0 / 1e6,
        s.macs as f64 / 1e9
    );
    Ok(())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use tessera::core::ops::conv::Conv2dParams;
    use tessera::core::{Rng, Tensor};
    use tessera::models::layers::{Conv2d, Linear};
    use tessera::models::module::{child, Mode, Module, TensorKind};
    use tessera::models::Result;

    /// A tiny conv net for unit tests: stem conv 3x3 stride 2 -> global average pool -> linear
    /// head, plus a top-level `scale` parameter owned by no stage.
    pub(crate) struct Tiny {
        pub conv: Conv2d,
        pub head: Linear,
        pub scale: Tensor,
        pub chw: [usize; 3],
    }

    impl Tiny {
        pub(crate) fn new(c: usize, hw: usize, classes: usize, seed: u64) -> Self {
            let mut rng = Rng::new(seed);
            Tiny {
                conv: Conv2d::new(c, 4, 3, Conv2dParams::new(2, 1), true, &mut rng).unwrap(),
                head: Linear::new(4, classes, true, &mut rng),
                scale: Tensor::ones(&[1]),
                chw: [c, hw, hw],
            }
        }
    }

    impl Module for Tiny {
        fn forward(&self, x: &Tensor) -> Result<Tensor> {
            self.forward_stages(x, &mut |_, _| {})
        }
        fn visit(&self, prefix: &str, f: &mut dyn FnMut(&str, &Tensor, TensorKind)) {
            self.conv.visit(&child(prefix, "stem"), f);
            f(
                &format!("{prefix}scale"),
                &self.scale,
                TensorKind::Parameter,
            );
            self.head.visit(&child(prefix, "head"), f);
        }
        fn visit_mut(&mut self, prefix: &str, f: &mut dyn FnMut(&str, &mut Tensor, TensorKind)) {
            self.conv.visit_mut(&child(prefix, "stem"), f);
            f(
                &format!("{prefix}scale"),
                &mut self.scale,
                TensorKind::Parameter,
            );
            self.head.visit_mut(&child(prefix, "head"), f);
        }
        fn set_mode(&mut self, _mode: Mode) {}
    }

    impl Model for Tiny {
        fn arch(&self) -> &str {
            "tiny"
        }
        fn input_chw(&self) -> [usize; 3] {
            self.chw
        }
        fn num_classes(&self) -> usize {
            self.head.out_features()
        }
        fn forward_stages(
            &self,
            x: &Tensor,
            stage: &mut dyn FnMut(&str, &Tensor),
        ) -> Result<Tensor> {
            let h = self.conv.forward(x)?;
            stage("stem", &h);
            let p = h.global_avg_pool2d()?.reshape(&[x.shape()[0], 4])?;
            let y = self.head.forward(&p)?.mul(&self.scale)?;
            stage("head", &y);
            Ok(y)
        }
    }

    #[test]
    fn rows_sum_to_the_totals() {
        let m = Tiny::new(3, 8, 5, 1);
        let s = summarize(&m).unwrap();
        let names: Vec<&str> = s.rows.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(names, ["stem", "head", OTHER]);
        assert_eq!(s.rows[0].shape, [1, 4, 4, 4]);
        assert_eq!(s.rows[0].params, 4 * 3 * 9 + 4);
        assert_eq!(s.rows[0].macs, 4 * 4 * 4 * 3 * 9);
        assert_eq!(s.rows[1].params, 4 * 5 + 5);
        assert_eq!(s.rows[1].macs, 4 * 5);
        assert_eq!(s.rows[2].params, 1);
        assert_eq!(s.other_names, ["scale"]);
        assert_eq!(s.params, parameter_count(&m));
        assert_eq!(s.params, s.rows.iter().map(|r| r.params).sum::<usize>());
        assert_eq!(s.macs, s.rows.iter().map(|r| r.macs).sum::<u64>());
        assert_eq!(s.output_shape, [1, 5]);
        let j = to_json(&s);
        assert_eq!(j["params"], s.params);
        assert_eq!(j["layers"][0]["name"], "stem");
    }

    #[test]
    fn longest_prefix_owns_a_parameter() {
        let row = |n: &str| Row {
            name: n.into(),
            shape: vec![],
            params: 0,
            macs: 0,
        };
        let rows = [row("blocks.1"), row("blocks.10"), row("blocks")];
        assert_eq!(owner(&rows, "blocks.10.attn.qkv.weight"), Some(1));
        assert_eq!(owner(&rows, "blocks.1.norm1.weight"), Some(0));
        assert_eq!(owner(&rows, "blocks.2.x"), Some(2));
        assert_eq!(owner(&rows, "blocks10.x"), None);
        assert_eq!(owner(&rows, "head.weight"), None);
    }

    #[test]
    fn thousands_groups_digits() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1000), "1,000");
        assert_eq!(thousands(86_567_656), "86,567,656");
    }
}
