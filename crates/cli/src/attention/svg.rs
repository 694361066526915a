//! The self-contained SVG of `tessera attention`: a grid of panels, each the input image in
//! grey levels with a per-patch heat map laid over it, a title per panel and a colour-scale
//! legend. Nothing outside the file is referenced: the image is defined once in `<defs>` (one
//! `<rect>` per pixel for small inputs, an embedded base64 PNG data URI otherwise) and every
//! panel `<use>`s it; the colour scale is an internal `<linearGradient>`.
//!
//! The colour map is viridis (van der Walt & Smith, matplotlib's default since 2.0), sampled at
//! five stops and interpolated linearly, with an opacity rising from 0.2 to 0.85 so the image
//! shows through low values. By default every panel shares one scale, from 0 to the largest
//! value of any panel (written in the legend), so layers and heads can be compared: a panel
//! that looks pale attends diffusely. With [`Figure::shared_scale`] off, each panel is scaled
//! to its own maximum (written in its title), which shows the shape of a diffuse map.

use std::fmt::Write as _;

/// Inputs with at most this many pixels are drawn as one `<rect>` per pixel; larger ones are
/// embedded as a PNG.
pub const MAX_RECT_PIXELS: usize = 48 * 48;

/// Displayed side of a panel's image, in SVG pixels.
const PANEL: f64 = 144.0;
const GAP: f64 = 14.0;
const TITLE: f64 = 18.0;
const MARGIN: f64 = 12.0;
/// Opacity of the heat map over the image: from `HEAT_OPACITY.0` at 0 to `HEAT_OPACITY.1` at the
/// panel's maximum, so the image shows through where the attention is low.
const HEAT_OPACITY: (f64, f64) = (0.2, 0.85);

/// The overlay opacity of a value `t` in [0, 1].
fn opacity(t: f64) -> f64 {
    HEAT_OPACITY.0 + (HEAT_OPACITY.1 - HEAT_OPACITY.0) * t.clamp(0.0, 1.0)
}

/// Viridis at 0, 1/4, 1/2, 3/4 and 1.
const VIRIDIS: [[f64; 3]; 5] = [
    [68.0, 1.0, 84.0],
    [59.0, 82.0, 139.0],
    [33.0, 145.0, 140.0],
    [94.0, 201.0, 98.0],
    [253.0, 231.0, 37.0],
];

/// The colour of `t` in [0, 1] (clamped; NaN as 0) as `#rrggbb`.
pub fn colour(t: f64) -> String {
    let t = if t.is_nan() { 0.0 } else { t.clamp(0.0, 1.0) };
    let x = t * 4.0;
    let i = (x.floor() as usize).min(3);
    let f = x - i as f64;
    let c: Vec<u8> = (0..3)
        .map(|k| (VIRIDIS[i][k] + f * (VIRIDIS[i + 1][k] - VIRIDIS[i][k])).round() as u8)
        .collect();
    format!("#{:02x}{:02x}{:02x}", c[0], c[1], c[2])
}

/// Escapes text for SVG element content and attribute values.
pub fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// Standard base64 (RFC 4648, with padding).
pub fn base64(bytes: &[u8]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (b[0] as u32) << 16 | (b[1] as u32) << 8 | b[2] as u32;
        for (k, shift) in [18, 12, 6, 0].into_iter().enumerate() {
            if k <= chunk.len() {
                out.push(T[(n >> shift & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// A grey-level image, row-major, values in [0, 255].
pub struct Grey {
    pub height: usize,
    pub width: usize,
    pub pixels: Vec<u8>,
}

impl Grey {
    /// The mean over channels of `chw` (`[c, h, w]`, C order), min-max scaled to 0..=255 (a
    /// constant image is mid-grey).
    pub fn from_chw(chw: &[f32], c: usize, h: usize, w: usize) -> Grey {
        let mean: Vec<f32> = (0..h * w)
            .map(|p| (0..c).map(|ch| chw[ch * h * w + p]).sum::<f32>() / c as f32)
            .collect();
        let lo = mean.iter().copied().fold(f32::INFINITY, f32::min);
        let hi = mean.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let pixels = mean
            .iter()
            .map(|&v| {
                if hi > lo && v.is_finite() {
                    ((v - lo) / (hi - lo) * 255.0).round() as u8
                } else {
                    128
                }
            })
            .collect();
        Grey {
            height: h,
            width: w,
            pixels,
        }
    }
}

/// One panel: a title and, for heat-map panels, the patch grid of values.
pub struct Panel {
    pub title: String,
    /// `[grid_h][grid_w]` row-major values (attention, >= 0); `None` shows the bare image.
    pub heat: Option<Vec<f32>>,
}

/// The whole figure.
pub struct Figure {
    /// A line above the grid (architecture, input, prediction).
    pub caption: String,
    pub image: Grey,
    /// `[grid_h, grid_w]` patches over the image.
    pub grid: [usize; 2],
    /// Rows of panels (a row may be shorter than the widest).
    pub rows: Vec<Vec<Panel>>,
    /// One colour scale for every panel (0 to the largest value of any panel); `false` scales
    /// each panel to its own maximum.
    pub shared_scale: bool,
}

/// The largest heat value of any panel (0 if none).
pub fn shared_max(f: &Figure) -> f32 {
    f.rows
        .iter()
        .flatten()
        .filter_map(|p| p.heat.as_ref())
        .flatten()
        .copied()
        .filter(|v| v.is_finite())
        .fold(0.0f32, f32::max)
}

/// Number of panels (`<g class="panel">` elements) a figure renders.
pub fn panel_count(f: &Figure) -> usize {
    f.rows.iter().map(Vec::len).sum()
}

fn image_defs(img: &Grey) -> Result<String, String> {
    let (h, w) = (img.height, img.width);
    let mut s = String::new();
    if h * w <= MAX_RECT_PIXELS {
        let _ = write!(s, r#"<g id="img" shape-rendering="crispEdges">"#);
        for y in 0..h {
            for x in 0..w {
                let v = img.pixels[y * w + x];
                let _ = write!(
                    s,
                    r##"<rect x="{x}" y="{y}" width="1" height="1" fill="#{v:02x}{v:02x}{v:02x}"/>"##
                );
            }
        }
        s.push_str("</g>");
    } else {
        let gi = image::GrayImage::from_raw(w as u32, h as u32, img.pixels.clone())
            .ok_or("attention: internal error: image buffer size")?;
        let mut png = std::io::Cursor::new(Vec::new());
        gi.write_to(&mut png, image::ImageFormat::Png)
            .map_err(|e| format!("attention: cannot encode the input as PNG: {e}"))?;
        let _ = write!(
            s,
            r#"<image id="img" width="{w}" height="{h}" image-rendering="pixelated" href="data:image/png;base64,{}"/>"#,
            base64(png.get_ref())
        );
    }
    Ok(s)
}

/// Renders `f` as one self-contained SVG document.
pub fn render(f: &Figure) -> Result<String, String> {
    let (h, w) = (f.image.height, f.image.width);
    let [gh, gw] = f.grid;
    if h == 0 || w == 0 || gh == 0 || gw == 0 || h % gh != 0 || w % gw != 0 {
        return Err(format!(
            "attention: cannot lay a {gh}x{gw} patch grid over a {h}x{w} image"
        ));
    }
    let (ph, pw) = (h / gh, w / gw);
    let scale = PANEL / h.max(w) as f64;
    let (dw, dh) = (w as f64 * scale, h as f64 * scale);
    let cols = f.rows.iter().map(Vec::len).max().unwrap_or(1).max(2);
    let cell_w = dw + GAP;
    let cell_h = TITLE + dh + GAP;
    let top = MARGIN + 22.0;
    let legend_h = 44.0;
    // Wide enough for the grid and for the caption (13 px sans-serif: about 7 px a character).
    let width = (2.0 * MARGIN + cols as f64 * cell_w - GAP)
        .max(2.0 * MARGIN + 7.0 * f.caption.chars().count() as f64);
    let height = top + f.rows.len() as f64 * cell_h + legend_h + MARGIN;
    let global_max = shared_max(f);
    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{width:.0}" height="{height:.0}" viewBox="0 0 {width:.0} {height:.0}" font-family="sans-serif" font-size="11">"#
    );
    s.push_str("<defs>");
    s.push_str(&image_defs(&f.image)?);
    s.push_str(r#"<linearGradient id="scale" x1="0" x2="1" y1="0" y2="0">"#);
    for k in 0..=8 {
        let t = k as f64 / 8.0;
        let _ = write!(
            s,
            r#"<stop offset="{t}" stop-color="{}" stop-opacity="{:.3}"/>"#,
            colour(t),
            opacity(t)
        );
    }
    s.push_str("</linearGradient></defs>\n");
    let _ = writeln!(
        s,
        r#"<rect width="100%" height="100%" fill="white"/><text x="{MARGIN}" y="{:.0}" font-size="13">{}</text>"#,
        MARGIN + 12.0,
        escape(&f.caption)
    );
    for (r, row) in f.rows.iter().enumerate() {
        for (c, p) in row.iter().enumerate() {
            let (x0, y0) = (MARGIN + c as f64 * cell_w, top + r as f64 * cell_h);
            let _ = write!(
                s,
                r#"<g class="panel"><text x="{x0:.1}" y="{:.1}">{}</text>"#,
                y0 + 12.0,
                escape(&p.title)
            );
            let _ = write!(
                s,
                r##"<g transform="translate({x0:.1},{:.1}) scale({scale:.4})"><use href="#img"/>"##,
                y0 + TITLE
            );
            if let Some(heat) = &p.heat {
                if heat.len() != gh * gw {
                    return Err(format!(
                        "attention: internal error: panel {:?} has {} values for a {gh}x{gw} grid",
                        p.title,
                        heat.len()
                    ));
                }
                let max = if f.shared_scale {
                    global_max
                } else {
                    heat.iter().copied().fold(0.0f32, f32::max)
                };
                s.push_str("<g>");
                for (i, &v) in heat.iter().enumerate() {
                    let t = if max > 0.0 { (v / max) as f64 } else { 0.0 };
                    let _ = write!(
                        s,
                        r#"<rect x="{}" y="{}" width="{pw}" height="{ph}" fill="{}" fill-opacity="{:.2}"/>"#,
                        (i % gw) * pw,
                        (i / gw) * ph,
                        colour(t),
                        opacity(t)
                    );
                }
                s.push_str("</g>");
            }
            s.push_str("</g></g>\n");
        }
    }
    // The legend: the colour bar from 0 to the shared maximum, or to each panel's.
    let ly = top + f.rows.len() as f64 * cell_h;
    let bar = (width - 2.0 * MARGIN).min(260.0);
    let (top_label, how) = if f.shared_scale {
        (
            format!("{global_max:.3}"),
            "one scale shared by every panel",
        )
    } else {
        ("panel max".to_string(), "scaled per panel")
    };
    let _ = writeln!(
        s,
        r#"<g class="legend"><rect x="{MARGIN}" y="{ly:.1}" width="{bar:.1}" height="12" fill="url(#scale)" stroke="black" stroke-width="0.5"/><text x="{MARGIN}" y="{:.1}">0</text><text x="{:.1}" y="{:.1}" text-anchor="end">{top_label}</text><text x="{MARGIN}" y="{:.1}">class-token attention to each patch, {how}</text></g>"#,
        ly + 24.0,
        MARGIN + bar,
        ly + 24.0,
        ly + 38.0
    );
    s.push_str("</svg>\n");
    Ok(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_rfc4648_vectors() {
        for (i, o) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(base64(i.as_bytes()), o, "{i:?}");
        }
        assert_eq!(base64(&[0xff, 0xfe, 0x00]), "//4A");
    }

    #[test]
    fn colour_map_ends_and_clamps() {
        assert_eq!(colour(0.0), "#440154");
        assert_eq!(colour(1.0), "#fde725");
        assert_eq!(colour(0.5), "#21918c");
        assert_eq!(colour(-3.0), colour(0.0));
        assert_eq!(colour(7.0), colour(1.0));
        assert_eq!(colour(f64::NAN), colour(0.0));
    }

    #[test]
    fn escape_handles_markup() {
        assert_eq!(escape(r#"a<b>&"c""#), "a&lt;b&gt;&amp;&quot;c&quot;");
    }

    fn figure(h: usize, rows: usize) -> Figure {
        Figure {
            caption: "x <y>".into(),
            image: Grey::from_chw(&(0..h * h).map(|v| v as f32).collect::<Vec<_>>(), 1, h, h),
            grid: [4, 4],
            rows: (0..rows)
                .map(|r| {
                    vec![
                        Panel {
                            title: format!("row {r}"),
                            heat: Some((0..16).map(|v| v as f32).collect()),
                        },
                        Panel {
                            title: "bare".into(),
                            heat: None,
                        },
                    ]
                })
                .collect(),
            shared_scale: true,
        }
    }

    /// The colour of heat cell `i` (the `fill` of the `i`-th heat `<rect>` after the image's).
    fn heat_fills(svg: &str) -> Vec<String> {
        svg.split("<rect")
            .filter(|r| r.contains("fill-opacity"))
            .map(|r| {
                r.split("fill=\"")
                    .nth(1)
                    .unwrap()
                    .split('"')
                    .next()
                    .unwrap()
                    .to_string()
            })
            .collect()
    }

    #[test]
    fn panels_share_one_scale_unless_asked_otherwise() {
        let mut f = figure(8, 2);
        // Row 1 attends half as strongly as row 0.
        f.rows[1][0].heat = Some((0..16).map(|v| v as f32 / 2.0).collect());
        let shared = heat_fills(&render(&f).unwrap());
        assert_eq!(shared.len(), 32);
        // Shared: row 1's strongest cell (7.5) is not row 0's (15) colour, but row 0's cell 15 is
        // the top of the scale.
        assert_eq!(shared[15], colour(1.0));
        assert_ne!(shared[16 + 15], colour(1.0));
        assert_eq!(shared[16 + 15], colour(7.5 / 15.0));
        assert!(render(&f)
            .unwrap()
            .contains("one scale shared by every panel"));
        f.shared_scale = false;
        let own = heat_fills(&render(&f).unwrap());
        assert_eq!(own[16 + 15], colour(1.0));
        assert!(render(&f).unwrap().contains("scaled per panel"));
        assert_eq!(shared_max(&f), 15.0);
    }

    #[test]
    fn small_images_are_rects_large_ones_an_embedded_png() {
        let f = figure(8, 3);
        let svg = render(&f).unwrap();
        assert!(svg.starts_with("<svg xmlns=\"http://www.w3.org/2000/svg\""));
        assert!(svg.trim_end().ends_with("</svg>"));
        assert_eq!(svg.matches(r#"<g class="panel">"#).count(), 6);
        assert_eq!(panel_count(&f), 6);
        // 64 image pixels + 3 x 16 heat cells + background + legend bar.
        assert_eq!(svg.matches("<rect").count(), 64 + 48 + 2);
        assert!(svg.contains("x &lt;y&gt;"));
        let big = render(&figure(64, 1)).unwrap();
        assert!(big.contains("href=\"data:image/png;base64,iVBORw0KGgo"));
        assert_eq!(big.matches("<rect").count(), 16 + 2);
    }

    #[test]
    fn bad_grids_are_errors() {
        let mut f = figure(8, 1);
        f.grid = [3, 3];
        assert!(render(&f)
            .unwrap_err()
            .contains("3x3 patch grid over a 8x8"));
        let mut f = figure(8, 1);
        f.rows[0][0].heat = Some(vec![0.0; 3]);
        assert!(render(&f).unwrap_err().contains("3 values"));
    }
}
