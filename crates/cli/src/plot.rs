//! A small self-contained SVG line-chart writer for training curves (`tessera train --plot`,
//! `tessera compare --plot`): panels side by side, each with axes, "nice" ticks (steps of 1, 2
//! or 5 times a power of ten, as Heckbert's "Nice numbers for graph labels", Graphics Gems,
//! 1990), one polyline with point markers per series, and a legend. No dependencies.

use crate::attention::svg::escape;
use std::fmt::Write as _;

/// One line of a panel.
#[derive(Debug, Clone)]
pub struct Series {
    /// Legend text.
    pub label: String,
    /// `(x, y)` points in drawing order; non-finite points are skipped.
    pub points: Vec<(f64, f64)>,
    /// Stroke colour (`#rrggbb`).
    pub colour: &'static str,
    /// Dashed instead of solid.
    pub dashed: bool,
}

/// One chart.
#[derive(Debug, Clone)]
pub struct Panel {
    pub title: String,
    pub x_label: String,
    pub y_label: String,
    pub series: Vec<Series>,
    /// Fixed y range (accuracy: 0 to 1); `None` fits the data.
    pub y_range: Option<(f64, f64)>,
}

/// Colours of successive series (colour-blind-safe Okabe-Ito palette).
pub const PALETTE: [&str; 6] = [
    "#0072b2", "#d55e00", "#009e73", "#cc79a7", "#e69f00", "#56b4e9",
];

const W: f64 = 420.0;
const H: f64 = 300.0;
const LEFT: f64 = 58.0;
const RIGHT: f64 = 16.0;
const TOP: f64 = 30.0;
const BOTTOM: f64 = 46.0;

/// Tick positions covering `[lo, hi]` with about `n` intervals of a nice step; returns the
/// (possibly widened) range and the ticks.
pub fn nice_ticks(lo: f64, hi: f64, n: usize) -> ((f64, f64), Vec<f64>) {
    let (lo, hi) = if !(lo.is_finite() && hi.is_finite()) {
        (0.0, 1.0)
    } else if hi - lo <= f64::EPSILON * hi.abs().max(1.0) {
        (lo - 0.5, hi + 0.5)
    } else {
        (lo, hi)
    };
    let raw = (hi - lo) / n.max(1) as f64;
    let mag = 10f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 5.0, 10.0]
        .iter()
        .map(|m| m * mag)
        .find(|s| *s >= raw)
        .unwrap_or(10.0 * mag);
    let a = (lo / step).floor() * step;
    let b = (hi / step).ceil() * step;
    let count = ((b - a) / step).round() as usize;
    let ticks = (0..=count).map(|i| a + i as f64 * step).collect();
    ((a, b), ticks)
}

fn fmt_tick(v: f64) -> String {
    if v == 0.0 {
        return "0".into();
    }
    let a = v.abs();
    if !(1e-3..1000.0).contains(&a) {
        format!("{v:.0e}")
    } else {
        let s = format!("{v:.3}");
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    }
}

fn panel_svg(s: &mut String, p: &Panel, x0: f64) {
    let pts = p
        .series
        .iter()
        .flat_map(|se| se.points.iter())
        .filter(|(x, y)| x.is_finite() && y.is_finite());
    let (mut xl, mut xh, mut yl, mut yh) = (
        f64::INFINITY,
        f64::NEG_INFINITY,
        f64::INFINITY,
        f64::NEG_INFINITY,
    );
    for &(x, y) in pts {
        xl = xl.min(x);
        xh = xh.max(x);
        yl = yl.min(y);
        yh = yh.max(y);
    }
    if let Some((a, b)) = p.y_range {
        (yl, yh) = (a, b);
    }
    let ((xa, xb), xt) = nice_ticks(xl.min(0.0), xh, 6);
    let ((ya, yb), yt) = match p.y_range {
        Some((a, b)) => nice_ticks(a, b, 5),
        None => nice_ticks(yl.min(0.0), yh, 5),
    };
    let (pw, ph) = (W - LEFT - RIGHT, H - TOP - BOTTOM);
    let sx = |x: f64| x0 + LEFT + (x - xa) / (xb - xa) * pw;
    let sy = |y: f64| TOP + ph - (y - ya) / (yb - ya) * ph;
    let _ = write!(
        s,
        r#"<g class="panel"><text x="{:.1}" y="18" text-anchor="middle" font-weight="bold">{}</text>"#,
        x0 + LEFT + pw / 2.0,
        escape(&p.title)
    );
    let _ = write!(
        s,
        r##"<rect x="{:.1}" y="{TOP}" width="{pw:.1}" height="{ph:.1}" fill="none" stroke="#333" stroke-width="0.8"/>"##,
        x0 + LEFT
    );
    for &t in &xt {
        let x = sx(t);
        let _ = write!(
            s,
            r##"<line x1="{x:.1}" x2="{x:.1}" y1="{TOP}" y2="{:.1}" stroke="#ddd" stroke-width="0.5"/><text x="{x:.1}" y="{:.1}" text-anchor="middle">{}</text>"##,
            TOP + ph,
            TOP + ph + 14.0,
            fmt_tick(t)
        );
    }
    for &t in &yt {
        let y = sy(t);
        let _ = write!(
            s,
            r##"<line x1="{:.1}" x2="{:.1}" y1="{y:.1}" y2="{y:.1}" stroke="#ddd" stroke-width="0.5"/><text x="{:.1}" y="{:.1}" text-anchor="end">{}</text>"##,
            x0 + LEFT,
            x0 + LEFT + pw,
            x0 + LEFT - 4.0,
            y + 4.0,
            fmt_tick(t)
        );
    }
    let _ = write!(
        s,
        r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">{}</text><text transform="translate({:.1},{:.1}) rotate(-90)" text-anchor="middle">{}</text>"#,
        x0 + LEFT + pw / 2.0,
        H - 10.0,
        escape(&p.x_label),
        x0 + 14.0,
        TOP + ph / 2.0,
        escape(&p.y_label)
    );
    for (i, se) in p.series.iter().enumerate() {
        let pts: Vec<String> = se
            .points
            .iter()
            .filter(|(x, y)| x.is_finite() && y.is_finite())
            .map(|&(x, y)| format!("{:.1},{:.1}", sx(x), sy(y.clamp(ya, yb))))
            .collect();
        let dash = if se.dashed {
            r#" stroke-dasharray="5,3""#
        } else {
            ""
        };
        let _ = write!(
            s,
            r#"<polyline fill="none" stroke="{}" stroke-width="1.6"{dash} points="{}"/>"#,
            se.colour,
            pts.join(" ")
        );
        if pts.len() <= 80 {
            for p in &pts {
                let (x, y) = p.split_once(',').unwrap_or(("0", "0"));
                let _ = write!(
                    s,
                    r#"<circle cx="{x}" cy="{y}" r="2" fill="{}"/>"#,
                    se.colour
                );
            }
        }
        // Legend entry, top right inside the plot.
        let ly = TOP + 12.0 + 14.0 * i as f64;
        let lx = x0 + LEFT + pw - 150.0;
        let _ = write!(
            s,
            r#"<line x1="{lx:.1}" x2="{:.1}" y1="{:.1}" y2="{:.1}" stroke="{}" stroke-width="2"{dash}/><text x="{:.1}" y="{ly:.1}">{}</text>"#,
            lx + 18.0,
            ly - 4.0,
            ly - 4.0,
            se.colour,
            lx + 22.0,
            escape(&se.label)
        );
    }
    s.push_str("</g>");
}

/// The SVG of `panels` side by side under `caption` (a line of small text at the bottom).
pub fn render(panels: &[Panel], caption: &str) -> String {
    let width = W * panels.len().max(1) as f64;
    let height = H + 20.0;
    let mut s = format!(
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{width:.0}" height="{height:.0}" viewBox="0 0 {width:.0} {height:.0}" font-family="sans-serif" font-size="11"><rect width="100%" height="100%" fill="white"/>"#
    );
    for (i, p) in panels.iter().enumerate() {
        panel_svg(&mut s, p, i as f64 * W);
    }
    let _ = write!(
        s,
        r##"<text x="8" y="{:.1}" font-size="10" fill="#555">{}</text></svg>"##,
        height - 6.0,
        escape(caption)
    );
    s.push('\n');
    s
}

/// Writes `svg` to `path` atomically (a synced temporary file beside it, then a rename).
pub fn write_atomically(path: &std::path::Path, svg: &str) -> Result<(), String> {
    tessera::models::io::atomic::write_bytes(path, svg.as_bytes()).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nice_ticks_cover_the_range_with_round_steps() {
        let ((a, b), t) = nice_ticks(0.0, 0.97, 5);
        assert_eq!((a, b), (0.0, 1.0));
        assert_eq!(t.len(), 6);
        let ((a, b), t) = nice_ticks(0.0, 57.0, 6);
        assert_eq!((a, b), (0.0, 60.0));
        assert_eq!(t[1], 10.0);
        // A flat series still gets a range.
        let ((a, b), _) = nice_ticks(2.0, 2.0, 5);
        assert!(a < 2.0 && b > 2.0);
    }

    #[test]
    fn render_draws_every_series_and_escapes_text() {
        let p = Panel {
            title: "loss <train>".into(),
            x_label: "epoch".into(),
            y_label: "loss".into(),
            series: vec![
                Series {
                    label: "train".into(),
                    points: vec![(1.0, 2.0), (2.0, 1.0), (3.0, f64::NAN)],
                    colour: PALETTE[0],
                    dashed: false,
                },
                Series {
                    label: "test".into(),
                    points: vec![(1.0, 2.5), (2.0, 1.5)],
                    colour: PALETTE[1],
                    dashed: true,
                },
            ],
            y_range: None,
        };
        let svg = render(&[p.clone(), p], "caption & more");
        assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
        assert_eq!(svg.matches("<polyline").count(), 4);
        assert!(svg.contains("loss &lt;train&gt;") && svg.contains("caption &amp; more"));
        // The NaN point is skipped: two circles per series.
        assert_eq!(svg.matches("<circle").count(), 8);
        assert!(!svg.contains("NaN"));
    }
}
