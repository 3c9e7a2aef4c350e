//! Small PNG charts without a plotting library: an RGB canvas, lines,
//! rectangles, a 5×7 bitmap font, and a PNG encoder (zlib from flate2,
//! CRC-32 from crc32fast, both already dependencies).

use std::io::Write as _;

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

pub struct Canvas {
    pub w: usize,
    pub h: usize,
    px: Vec<u8>,
}

/// 5×7 glyphs, one string of 35 cells ('#' on) per character.
fn glyph(c: char) -> Option<&'static str> {
    Some(match c.to_ascii_uppercase() {
        '0' => ".###.#...##..###.#.###..##...#.###.",
        '1' => "..#...##....#....#....#....#...###.",
        '2' => ".###.#...#....#...#...#...#...#####",
        '3' => "#####...#...#.....#.....##...#.###.",
        '4' => "...#...##..#.#.#..#.#####...#....#.",
        '5' => "######....####.....#....##...#.###.",
        '6' => "..##..#...#....####.#...##...#.###.",
        '7' => "#####....#...#...#...#....#....#...",
        '8' => ".###.#...##...#.###.#...##...#.###.",
        '9' => ".###.#...##...#.####....#...#..##..",
        'A' => ".###.#...##...#######...##...##...#",
        'B' => "####.#...##...#####.#...##...#####.",
        'C' => ".###.#...##....#....#....#...#.###.",
        'D' => "###..#..#.#...##...##...##..#.###..",
        'E' => "######....#....####.#....#....#####",
        'F' => "######....#....####.#....#....#....",
        'G' => ".###.#...##....#.####...##...#.####",
        'H' => "#...##...##...#######...##...##...#",
        'I' => ".###...#....#....#....#....#...###.",
        'J' => "..###...#....#....#....#.#..#..##..",
        'K' => "#...##..#.#.#..##...#.#..#..#.#...#",
        'L' => "#....#....#....#....#....#....#####",
        'M' => "#...###.###.#.##.#.##...##...##...#",
        'N' => "#...##...###..##.#.##..###...##...#",
        'O' => ".###.#...##...##...##...##...#.###.",
        'P' => "####.#...##...#####.#....#....#....",
        'Q' => ".###.#...##...##...##.#.##..#..##.#",
        'R' => "####.#...##...#####.#.#..#..#.#...#",
        'S' => ".#####....#.....###.....#....#####.",
        'T' => "#####..#....#....#....#....#....#..",
        'U' => "#...##...##...##...##...##...#.###.",
        'V' => "#...##...##...##...##...#.#.#...#..",
        'W' => "#...##...##...##.#.##.#.##.#.#.#.#.",
        'X' => "#...##...#.#.#...#...#.#.#...##...#",
        'Y' => "#...##...#.#.#...#....#....#....#..",
        'Z' => "#####....#...#...#...#...#....#####",
        '-' => "................###................",
        '.' => "..........................##...##..",
        ',' => ".....................##....#...#...",
        ':' => "......##...##........##...##.......",
        '%' => "##...##..#...#...#...#...#..##...##",
        '/' => ".........#...#...#...#...#.........",
        '(' => "...#...#...#....#....#.....#.....#.",
        ')' => ".#.....#.....#....#....#...#...#...",
        '>' => ".#.....#.....#.....#...#...#...#...",
        '<' => "...#...#...#...#.....#.....#.....#.",
        '=' => "..........#####.....#####..........",
        '+' => ".......#....#..#####..#....#.......",
        '_' => "..............................#####",
        ' ' => "...................................",
        _ => return None,
    })
}

impl Canvas {
    pub fn new(w: usize, h: usize) -> Canvas {
        Canvas {
            w,
            h,
            px: [255u8; 3].repeat(w * h),
        }
    }

    pub fn set(&mut self, x: i64, y: i64, c: Rgb) {
        if x < 0 || y < 0 || x >= self.w as i64 || y >= self.h as i64 {
            return;
        }
        let i = (y as usize * self.w + x as usize) * 3;
        self.px[i..i + 3].copy_from_slice(&c);
    }

    pub fn get(&self, x: usize, y: usize) -> Rgb {
        let i = (y * self.w + x) * 3;
        [self.px[i], self.px[i + 1], self.px[i + 2]]
    }

    pub fn rect(&mut self, x0: i64, y0: i64, x1: i64, y1: i64, c: Rgb) {
        for y in y0.min(y1)..=y0.max(y1) {
            for x in x0.min(x1)..=x0.max(x1) {
                self.set(x, y, c);
            }
        }
    }

    /// A line `width` pixels thick (Bresenham, stamped).
    pub fn line(&mut self, (x0, y0): (i64, i64), (x1, y1): (i64, i64), c: Rgb, width: i64) {
        let (dx, dy) = ((x1 - x0).abs(), -(y1 - y0).abs());
        let (sx, sy) = (if x0 < x1 { 1 } else { -1 }, if y0 < y1 { 1 } else { -1 });
        let (mut x, mut y, mut err) = (x0, y0, dx + dy);
        let r = width / 2;
        loop {
            self.rect(x - r, y - r, x + r, y + r, c);
            if x == x1 && y == y1 {
                break;
            }
            let e2 = 2 * err;
            if e2 >= dy {
                err += dy;
                x += sx;
            }
            if e2 <= dx {
                err += dx;
                y += sy;
            }
        }
    }

    /// Text at (x, y) (top left), `scale` pixels per font pixel. Returns
    /// the width drawn. Characters the font lacks are drawn as '?'-less
    /// gaps.
    pub fn text(&mut self, x: i64, y: i64, s: &str, c: Rgb, scale: i64) -> i64 {
        let mut cx = x;
        for ch in s.chars() {
            if let Some(g) = glyph(ch) {
                for (i, cell) in g.bytes().enumerate().take(35) {
                    if cell == b'#' {
                        let (gx, gy) = ((i % 5) as i64, (i / 5) as i64);
                        self.rect(
                            cx + gx * scale,
                            y + gy * scale,
                            cx + gx * scale + scale - 1,
                            y + gy * scale + scale - 1,
                            c,
                        );
                    }
                }
            }
            cx += 6 * scale;
        }
        cx - x
    }

    /// The canvas as a PNG file (8-bit RGB, no interlace).
    pub fn png(&self) -> Vec<u8> {
        let mut raw = Vec::with_capacity((self.w * 3 + 1) * self.h);
        for row in self.px.chunks(self.w * 3) {
            raw.push(0); // filter: none
            raw.extend_from_slice(row);
        }
        let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
        let _ = z.write_all(&raw);
        let idat = z.finish().unwrap_or_default();
        let mut out = b"\x89PNG\r\n\x1a\n".to_vec();
        let mut ihdr = Vec::with_capacity(13);
        ihdr.extend_from_slice(&(self.w as u32).to_be_bytes());
        ihdr.extend_from_slice(&(self.h as u32).to_be_bytes());
        ihdr.extend_from_slice(&[8, 2, 0, 0, 0]); // 8-bit, RGB
        chunk(&mut out, b"IHDR", &ihdr);
        chunk(&mut out, b"IDAT", &idat);
        chunk(&mut out, b"IEND", &[]);
        out
    }
}

fn chunk(out: &mut Vec<u8>, kind: &[u8; 4], data: &[u8]) {
    out.extend_from_slice(&(data.len() as u32).to_be_bytes());
    out.extend_from_slice(kind);
    out.extend_from_slice(data);
    let mut h = crc32fast::Hasher::new();
    h.update(kind);
    h.update(data);
    out.extend_from_slice(&h.finalize().to_be_bytes());
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
    c.text(LEFT, 15, title, BLACK, 3);
    for k in 0..=5 {
        let v = y_max * k as f64 / 5.0;
        let y = y1 - ((y1 - y0) as f64 * k as f64 / 5.0) as i64;
        c.line((x0, y), (x1, y), GREY, 1);
        let label = if y_max >= 100.0 {
            format!("{v:.0}")
        } else {
            format!("{v:.1}")
        };
        c.text(x0 - 8 - 12 * label.len() as i64, y - 7, &label, DARK, 2);
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
        c.text(x - 6 * l.len() as i64, y1 + 12, l, DARK, 2);
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
            let mut prev: Option<(i64, i64)> = None;
            for (i, v) in values.iter().enumerate() {
                match v {
                    Some(v) => {
                        let p = (xpos(i), ypos(*v));
                        if let Some(q) = prev {
                            c.line(q, p, col, 3);
                        }
                        c.rect(p.0 - 3, p.1 - 3, p.0 + 3, p.1 + 3, col);
                        prev = Some(p);
                    }
                    None => prev = None,
                }
            }
            let ly = TOP + 22 * k as i64;
            c.rect(x1 + 15, ly + 3, x1 + 35, ly + 9, col);
            c.text(x1 + 42, ly, name, BLACK, 2);
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
            c.text(xa, ypos(*v) - 18, &format!("{v:.1}"), BLACK, 2);
        }
        if let Some((t, label)) = self.target {
            c.line((x0, ypos(t)), (x1, ypos(t)), [0, 0, 0], 2);
            c.text(x1 + 10, ypos(t) - 7, label, BLACK, 2);
        }
        c
    }
}

/// A station × day calendar of the daily AQI in the AQI category colours,
/// as SVG: text is drawn by the viewer's fonts, so station names in
/// Chinese show (the bitmap charts cannot draw them).
pub struct Calendar<'a> {
    pub title: &'a str,
    /// Column labels (days).
    pub days: Vec<String>,
    /// Row labels (stations) and each day's AQI (None: no valid day).
    pub rows: Vec<(String, Vec<Option<u32>>)>,
}

impl Calendar<'_> {
    pub fn svg(&self) -> String {
        use std::fmt::Write as _;
        const CELL: usize = 42;
        const ROW: usize = 24;
        const LABEL: usize = 200;
        const TOP: usize = 60;
        let w = LABEL + CELL * self.days.len().max(1) + 20;
        let h = TOP + ROW * self.rows.len().max(1) + 40;
        let mut o = format!(
            "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" \
             viewBox=\"0 0 {w} {h}\" font-family=\"'WenQuanYi Zen Hei', 'Noto Sans CJK SC', \
             'Microsoft YaHei', sans-serif\" font-size=\"12\">\
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

    #[test]
    fn every_glyph_has_35_cells() {
        for c in "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ-.,:%/()<>=+_ ".chars() {
            assert_eq!(glyph(c).unwrap().len(), 35, "{c:?}");
        }
    }

    #[test]
    fn the_png_decodes_back_to_the_pixels() {
        let mut c = Canvas::new(7, 5);
        c.set(2, 3, [10, 20, 30]);
        let png = c.png();
        assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
        assert_eq!(&png[12..16], b"IHDR");
        assert_eq!(u32::from_be_bytes(png[16..20].try_into().unwrap()), 7);
        // Inflate IDAT and find the pixel.
        let len = u32::from_be_bytes(png[33..37].try_into().unwrap()) as usize;
        assert_eq!(&png[37..41], b"IDAT");
        let mut raw = Vec::new();
        use std::io::Read;
        flate2::read::ZlibDecoder::new(&png[41..41 + len])
            .read_to_end(&mut raw)
            .unwrap();
        assert_eq!(raw.len(), (7 * 3 + 1) * 5);
        let row = &raw[3 * 22..4 * 22];
        assert_eq!(&row[1 + 2 * 3..1 + 3 * 3], &[10, 20, 30]);
        // CRC of IHDR checks.
        let crc = u32::from_be_bytes(png[29..33].try_into().unwrap());
        assert_eq!(crc, crc32fast::hash(&png[12..29]));
    }
}
