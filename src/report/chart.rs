//! Small SVG charts without a plotting library: lines, rectangles and
//! text, drawn by the viewer (a browser, an image viewer, a Markdown
//! renderer) with its fonts, Chinese ones included.

use std::fmt::Write as _;

use crate::units::escape_html as xml;

pub type Rgb = [u8; 3];

pub const WHITE: Rgb = [255, 255, 255];
pub const BLACK: Rgb = [0, 0, 0];
pub const GREY: Rgb = [200, 200, 200];
pub const DARK: Rgb = [90, 90, 90];

/// Distinct colours for series.
pub const PALETTE: [Rgb; 12] = [
    [31, 119, 180],
    [255, 127, 14],
    [44, 160, 44],
    [214, 39, 40],
    [148, 103, 189],
    [140, 86, 75],
    [227, 119, 194],
    [127, 127, 127],
    [188, 189, 34],
    [23, 190, 207],
    [0, 0, 128],
    [128, 0, 0],
];

/// An SVG drawing: rectangles, lines and text. Text is drawn by the
/// viewer's fonts (a CJK one first), so Chinese station names show.
pub struct Canvas {
    pub w: usize,
    pub h: usize,
    body: String,
}

/// The fonts text asks for: CJK ones first (Debian's fonts-wqy-zenhei,
/// Noto CJK, Windows' YaHei), then any sans-serif.
pub const FONTS: &str = "'WenQuanYi Zen Hei', 'Noto Sans CJK SC', 'Microsoft YaHei', sans-serif";

fn hex(c: Rgb) -> String {
    format!("#{:02x}{:02x}{:02x}", c[0], c[1], c[2])
}

impl Canvas {
    pub fn new(w: usize, h: usize) -> Canvas {
        Canvas {
            w,
            h,
            body: String::new(),
        }
    }

    /// A filled rectangle between two corners (both included).
    pub fn rect(&mut self, x0: i64, y0: i64, x1: i64, y1: i64, c: Rgb) {
        let _ = write!(
            self.body,
            "<rect x=\"{}\" y=\"{}\" width=\"{}\" height=\"{}\" fill=\"{}\"/>",
            x0.min(x1),
            y0.min(y1),
            (x1 - x0).abs() + 1,
            (y1 - y0).abs() + 1,
            hex(c)
        );
    }

    /// A line `width` pixels thick.
    pub fn line(&mut self, (x0, y0): (i64, i64), (x1, y1): (i64, i64), c: Rgb, width: i64) {
        let _ = write!(
            self.body,
            "<line x1=\"{x0}\" y1=\"{y0}\" x2=\"{x1}\" y2=\"{y1}\" stroke=\"{}\" stroke-width=\"{width}\"/>",
            hex(c)
        );
    }

    /// Connected points, `width` pixels thick.
    pub fn polyline(&mut self, points: &[(i64, i64)], c: Rgb, width: i64) {
        if points.len() < 2 {
            return;
        }
        let pts: Vec<String> = points.iter().map(|(x, y)| format!("{x},{y}")).collect();
        let _ = write!(
            self.body,
            "<polyline points=\"{}\" fill=\"none\" stroke=\"{}\" stroke-width=\"{width}\" stroke-linejoin=\"round\"/>",
            pts.join(" "),
            hex(c)
        );
    }

    /// Text with its baseline at (x, y), `size` pixels high; `anchor`:
    /// "start", "middle" or "end".
    pub fn text(&mut self, x: i64, y: i64, s: &str, c: Rgb, size: i64, anchor: &str) {
        let _ = write!(
            self.body,
            "<text x=\"{x}\" y=\"{y}\" font-size=\"{size}\" fill=\"{}\" text-anchor=\"{anchor}\">{}</text>",
            hex(c),
            xml(s)
        );
    }

    /// The drawing as an SVG document on a white background.
    pub fn svg(&self) -> String {
        let (w, h) = (self.w, self.h);
        format!(
            "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" \
             viewBox=\"0 0 {w} {h}\" font-family=\"{FONTS}\">\
             <rect width=\"{w}\" height=\"{h}\" fill=\"#fff\"/>{}</svg>",
            self.body
        )
    }
}

/// A line chart: one polyline per series over shared x labels, with
/// optional horizontal bands (y0, y1, colour) behind and reference lines.
pub struct LineChart<'a> {
    pub title: &'a str,
    pub x_labels: Vec<String>,
    /// (name, values per x; None = gap)
    pub series: Vec<(String, Vec<Option<f64>>)>,
    pub bands: Vec<(f64, f64, Rgb)>,
    pub y_max: Option<f64>,
}

const W: usize = 1100;
const H: usize = 560;
const LEFT: i64 = 70;
const RIGHT: i64 = 240;
const TOP: i64 = 50;
const BOTTOM: i64 = 70;

fn nice_max(v: f64) -> f64 {
    if v <= 0.0 {
        return 1.0;
    }
    let mag = 10f64.powf(v.log10().floor());
    for m in [1.0, 2.0, 2.5, 5.0, 10.0] {
        if v <= m * mag {
            return m * mag;
        }
    }
    10.0 * mag
}

fn axes(c: &mut Canvas, title: &str, y_max: f64, x_labels: &[String]) -> (i64, i64, i64, i64) {
    let (x0, y0, x1, y1) = (LEFT, TOP, W as i64 - RIGHT, H as i64 - BOTTOM);
    c.text(LEFT, 30, title, BLACK, 20, "start");
    for k in 0..=5 {
        let v = y_max * k as f64 / 5.0;
        let y = y1 - ((y1 - y0) as f64 * k as f64 / 5.0) as i64;
        c.line((x0, y), (x1, y), GREY, 1);
        let label = if y_max >= 100.0 {
            format!("{v:.0}")
        } else {
            format!("{v:.1}")
        };
        c.text(x0 - 8, y + 5, &label, DARK, 14, "end");
    }
    c.line((x0, y0), (x0, y1), DARK, 1);
    c.line((x0, y1), (x1, y1), DARK, 1);
    let n = x_labels.len().max(1);
    let step = n.div_ceil(8);
    for (i, l) in x_labels.iter().enumerate() {
        if i % step != 0 {
            continue;
        }
        let x = x0 + ((x1 - x0) as f64 * (i as f64 + 0.5) / n as f64) as i64;
        c.line((x, y1), (x, y1 + 5), DARK, 1);
        c.text(x, y1 + 22, l, DARK, 14, "middle");
    }
    (x0, y0, x1, y1)
}

impl LineChart<'_> {
    pub fn render(&self) -> Canvas {
        let mut c = Canvas::new(W, H);
        let data_max = self
            .series
            .iter()
            .flat_map(|s| s.1.iter().flatten())
            .fold(0.0f64, |a, b| a.max(*b));
        let y_max = self.y_max.unwrap_or_else(|| nice_max(data_max * 1.05));
        let (x0, y0, x1, y1) = (LEFT, TOP, W as i64 - RIGHT, H as i64 - BOTTOM);
        let ypos = |v: f64| y1 - ((y1 - y0) as f64 * (v / y_max).clamp(0.0, 1.0)) as i64;
        for &(a, b, col) in &self.bands {
            if a < y_max {
                c.rect(x0 + 1, ypos(b.min(y_max)), x1, ypos(a) - 1, col);
            }
        }
        axes(&mut c, self.title, y_max, &self.x_labels);
        let n = self.x_labels.len().max(1);
        let xpos = |i: usize| x0 + ((x1 - x0) as f64 * (i as f64 + 0.5) / n as f64) as i64;
        for (k, (name, values)) in self.series.iter().enumerate() {
            let col = PALETTE[k % PALETTE.len()];
            // A gap (None) ends a run of connected points.
            let mut run: Vec<(i64, i64)> = Vec::new();
            for (i, v) in values.iter().enumerate() {
                match v {
                    Some(v) => {
                        let p = (xpos(i), ypos(*v));
                        c.rect(p.0 - 3, p.1 - 3, p.0 + 3, p.1 + 3, col);
                        run.push(p);
                    }
                    None => c.polyline(&std::mem::take(&mut run), col, 3),
                }
            }
            c.polyline(&run, col, 3);
            let ly = TOP + 22 * k as i64;
            c.rect(x1 + 15, ly + 3, x1 + 35, ly + 9, col);
            c.text(x1 + 42, ly + 12, name, BLACK, 14, "start");
        }
        c
    }
}

/// A bar chart with a reference line (e.g. the 95 % target).
pub struct BarChart<'a> {
    pub title: &'a str,
    pub bars: Vec<(String, f64)>,
    pub target: Option<(f64, &'a str)>,
    pub y_max: f64,
}

impl BarChart<'_> {
    pub fn render(&self) -> Canvas {
        let mut c = Canvas::new(W, H);
        let labels: Vec<String> = self.bars.iter().map(|b| b.0.clone()).collect();
        let (x0, y0, x1, y1) = axes(&mut c, self.title, self.y_max, &labels);
        let n = self.bars.len().max(1);
        let ypos = |v: f64| y1 - ((y1 - y0) as f64 * (v / self.y_max).clamp(0.0, 1.0)) as i64;
        for (i, (_, v)) in self.bars.iter().enumerate() {
            let w = (x1 - x0) / n as i64;
            let xa = x0 + w * i as i64 + w / 5;
            let xb = x0 + w * (i as i64 + 1) - w / 5;
            let below = self.target.is_some_and(|(t, _)| *v < t);
            let col = if below { [214, 39, 40] } else { [44, 160, 44] };
            c.rect(xa, ypos(*v), xb, y1 - 1, col);
            c.text(
                (xa + xb) / 2,
                ypos(*v) - 6,
                &format!("{v:.1}"),
                BLACK,
                14,
                "middle",
            );
        }
        if let Some((t, label)) = self.target {
            c.line((x0, ypos(t)), (x1, ypos(t)), [0, 0, 0], 2);
            c.text(x1 + 10, ypos(t) + 5, label, BLACK, 14, "start");
        }
        c
    }
}

/// A station × day calendar of the daily AQI in the AQI category colours,
/// as SVG.
pub struct Calendar<'a> {
    pub title: &'a str,
    /// Column labels (days).
    pub days: Vec<String>,
    /// Row labels (stations) and each day's AQI (None: no valid day).
    pub rows: Vec<(String, Vec<Option<u32>>)>,
}

impl Calendar<'_> {
    pub fn svg(&self) -> String {
        const CELL: usize = 42;
        const ROW: usize = 24;
        const LABEL: usize = 200;
        const TOP: usize = 60;
        let w = LABEL + CELL * self.days.len().max(1) + 20;
        let h = TOP + ROW * self.rows.len().max(1) + 40;
        let mut o = format!(
            "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" \
             viewBox=\"0 0 {w} {h}\" font-family=\"{FONTS}\" font-size=\"12\">\
             <rect width=\"{w}\" height=\"{h}\" fill=\"#fff\"/>\
             <text x=\"10\" y=\"24\" font-size=\"16\" font-weight=\"bold\">{}</text>",
            xml(self.title)
        );
        for (j, d) in self.days.iter().enumerate() {
            let _ = write!(
                o,
                "<text x=\"{}\" y=\"{}\" text-anchor=\"middle\">{}</text>",
                LABEL + j * CELL + CELL / 2,
                TOP - 8,
                xml(d)
            );
        }
        for (i, (name, values)) in self.rows.iter().enumerate() {
            let y = TOP + i * ROW;
            let _ = write!(
                o,
                "<text x=\"{}\" y=\"{}\" text-anchor=\"end\">{}</text>",
                LABEL - 8,
                y + ROW / 2 + 4,
                xml(name)
            );
            for (j, v) in values.iter().enumerate() {
                let x = LABEL + j * CELL;
                match v {
                    Some(aqi) => {
                        // HJ 633's six categories (the EPA's bands and
                        // colours are the same).
                        let c = crate::evaluate::aqi::Standard::Hj633_2026.category(*aqi);
                        let ink = if matches!(c.color, "#FFFF00" | "#00E400" | "#FF7E00") {
                            "#000"
                        } else {
                            "#fff"
                        };
                        let _ = write!(
                            o,
                            "<rect x=\"{x}\" y=\"{y}\" width=\"{}\" height=\"{}\" fill=\"{}\">\
                             <title>{} {}: AQI {aqi}</title></rect>\
                             <text x=\"{}\" y=\"{}\" text-anchor=\"middle\" fill=\"{ink}\">{aqi}</text>",
                            CELL - 2,
                            ROW - 2,
                            c.color,
                            xml(name),
                            xml(&self.days[j]),
                            x + CELL / 2,
                            y + ROW / 2 + 4
                        );
                    }
                    None => {
                        let _ = write!(
                            o,
                            "<rect x=\"{x}\" y=\"{y}\" width=\"{}\" height=\"{}\" fill=\"#eee\"/>",
                            CELL - 2,
                            ROW - 2
                        );
                    }
                }
            }
        }
        let _ = write!(
            o,
            "<text x=\"10\" y=\"{}\" fill=\"#555\">Grey: no valid day. Colours: the AQI categories (HJ 633).</text></svg>",
            h - 12
        );
        o
    }
}

#[cfg(test)]
mod tests {

    /// A cell per station and day in its category's colour, the value in
    /// it, grey for a day with none; names (Chinese too) as text.
    #[test]
    fn the_calendar_colours_each_day_by_its_category() {
        let c = Calendar {
            title: "Daily AQI 日空气质量指数",
            days: vec!["03-21".into(), "03-22".into()],
            rows: vec![
                ("东四 dongsi".into(), vec![Some(45), Some(500)]),
                ("x<y".into(), vec![None, Some(160)]),
            ],
        };
        let svg = c.svg();
        assert!(svg.starts_with("<svg xmlns=\"http://www.w3.org/2000/svg\""));
        assert!(svg.ends_with("</svg>"));
        assert!(svg.contains(">东四 dongsi</text>"));
        assert!(svg.contains(">x&lt;y</text>"));
        let fills: Vec<&str> = svg
            .split("<rect x=")
            .skip(1)
            .map(|r| {
                let f = &r[r.find("fill=\"").unwrap() + 6..];
                &f[..f.find('"').unwrap()]
            })
            .collect();
        assert_eq!(fills, ["#00E400", "#7E0023", "#eee", "#FF0000"]);
        assert!(svg.contains(">500</text>") && svg.contains("AQI 160"));
    }

    use super::*;

    /// The charts are SVG with their text as text: a Chinese name and
    /// markup in a name survive, gaps split a series' line.
    #[test]
    fn line_and_bar_charts_are_svg_with_text_as_text() {
        let c = LineChart {
            title: "Daily AQI 日空气质量指数",
            x_labels: vec![
                "03-21".into(),
                "03-22".into(),
                "03-23".into(),
                "03-24".into(),
            ],
            series: vec![
                (
                    "东四 dongsi".into(),
                    vec![Some(45.0), Some(80.0), None, Some(120.0)],
                ),
                (
                    "x<y".into(),
                    vec![Some(10.0), Some(20.0), Some(30.0), Some(40.0)],
                ),
            ],
            bands: vec![(0.0, 50.0, [220, 247, 220])],
            y_max: None,
        };
        let svg = c.render().svg();
        assert!(svg.starts_with(
            "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"1100\" height=\"560\""
        ));
        assert!(svg.ends_with("</svg>"));
        assert!(svg.contains(&format!("font-family=\"{FONTS}\"")));
        assert!(svg.contains(">Daily AQI 日空气质量指数</text>"));
        assert!(svg.contains(">东四 dongsi</text>") && svg.contains(">x&lt;y</text>"));
        // dongsi: two points, a gap, one point (no line to a lone point);
        // x<y: one line through four.
        assert_eq!(svg.matches("<polyline").count(), 2);
        // Scale: 120 × 1.05 rounded up to 200 at the top.
        assert!(svg.contains(">200</text>"), "{svg}");
        let b = BarChart {
            title: "Sewage treatment rate 污水处理率 (%)",
            bars: vec![("huaifang".into(), 91.0), ("全市 city".into(), 96.5)],
            target: Some((95.0, "target 95")),
            y_max: 100.0,
        };
        let svg = b.render().svg();
        assert!(svg.contains(">91.0</text>") && svg.contains(">全市 city</text>"));
        // Below the target red, above green.
        assert!(svg.contains("fill=\"#d62728\"") && svg.contains("fill=\"#2ca02c\""));
    }
}
