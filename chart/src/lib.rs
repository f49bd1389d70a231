//! Line charts rendered to PNG.
//!
//! Pure Rust with an embedded bitmap font, because the charts are written on fresh machines
//! that have neither system fonts nor native graphics libraries.

mod font;

/// Smallest accepted image, so title, ticks, labels and legend always leave a plot area.
pub const MIN_SIZE: (u32, u32) = (240, 160);
/// Largest accepted side; larger images are almost certainly a mistake and cost memory.
pub const MAX_SIDE: u32 = 4096;

/// One line of the chart.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Series {
    pub name: String,
    /// `(x, y)` pairs in drawing order; pairs with a non-finite coordinate are skipped.
    pub points: Vec<(f64, f64)>,
}

impl Series {
    pub fn new(name: impl Into<String>, points: Vec<(f64, f64)>) -> Self {
        Self {
            name: name.into(),
            points,
        }
    }
}

/// A line chart: one coloured line per series, with axes, grid, title and legend.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct LineChart {
    pub title: String,
    pub x_label: String,
    pub y_label: String,
    pub series: Vec<Series>,
    /// Fixed `(min, max)` of the y axis; by default it fits the data.
    pub y_range: Option<(f64, f64)>,
}

#[derive(Debug, thiserror::Error)]
pub enum ChartError {
    #[error("the chart has no series")]
    NoSeries,
    #[error("the chart has no point with finite coordinates")]
    NoFinitePoints,
    #[error(
        "image size {width}x{height} is outside {}x{} ..= {MAX_SIDE}x{MAX_SIDE}",
        MIN_SIZE.0,
        MIN_SIZE.1
    )]
    Size { width: u32, height: u32 },
    #[error("y range {min}..{max} is not a finite interval with min < max")]
    YRange { min: f64, max: f64 },
    #[error("the data spans a range too wide for f64 arithmetic")]
    RangeOverflow,
    #[error("encoding the PNG: {0}")]
    Png(#[from] png::EncodingError),
}

type Rgb = [u8; 3];

const WHITE: Rgb = [255, 255, 255];
const INK: Rgb = [30, 30, 30];
const GRID: Rgb = [228, 228, 228];
const FRAME: Rgb = [110, 110, 110];
const LEGEND_BORDER: Rgb = [180, 180, 180];
/// Tableau 10 followed by darker hues, so 16 members still get distinct colours.
const PALETTE: [Rgb; 16] = [
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
    [0, 100, 0],
    [128, 128, 0],
    [75, 0, 130],
    [0, 128, 128],
];

const MARGIN: i64 = 10;
const TICK: i64 = 4;
const TITLE_SCALE: i64 = 2;
const LINE_H: i64 = font::HEIGHT + 1;
const LEGEND_PAD: i64 = 6;
const LEGEND_ROW: i64 = LINE_H + 4;
const SWATCH_W: i64 = 14;

impl LineChart {
    /// Renders the chart as an 8-bit RGB PNG; the same chart always gives the same bytes.
    pub fn render_png(&self, width: u32, height: u32) -> Result<Vec<u8>, ChartError> {
        let layout = self.layout(width, height)?;
        let mut canvas = Canvas::new(layout.width, layout.height);
        self.draw(&mut canvas, &layout);
        canvas.encode()
    }

    fn layout(&self, width: u32, height: u32) -> Result<Layout, ChartError> {
        if width < MIN_SIZE.0 || height < MIN_SIZE.1 || width > MAX_SIDE || height > MAX_SIDE {
            return Err(ChartError::Size { width, height });
        }
        if self.series.is_empty() {
            return Err(ChartError::NoSeries);
        }
        let finite = || self.series.iter().flat_map(finite_points);
        let (x_min, x_max) = bounds(finite().map(|p| p.0)).ok_or(ChartError::NoFinitePoints)?;
        let (y_min, y_max, expand_y) = match self.y_range {
            Some((min, max)) if min.is_finite() && max.is_finite() && min < max => {
                (min, max, false)
            }
            Some((min, max)) => return Err(ChartError::YRange { min, max }),
            None => {
                let (min, max) = bounds(finite().map(|p| p.1)).ok_or(ChartError::NoFinitePoints)?;
                (min, max, true)
            }
        };
        let (w, h) = (i64::from(width), i64::from(height));

        let title_bottom = if self.title.is_empty() {
            0
        } else {
            MARGIN + font::HEIGHT * TITLE_SCALE
        };
        // Room above the plot for half of the topmost y tick label.
        let top = title_bottom + MARGIN + LINE_H / 2;
        let x_label_h = if self.x_label.is_empty() {
            0
        } else {
            LINE_H + 4
        };
        let bottom = h - MARGIN - x_label_h - LINE_H - TICK - 3;
        let y = Axis::fit(y_min, y_max, expand_y, |labels| {
            labels.len() as i64 * (LINE_H + 8) <= bottom - top
        })?;

        let y_label_w = if self.y_label.is_empty() {
            0
        } else {
            LINE_H + 4
        };
        let y_ticks_w = y.labels.iter().map(|l| text_width(l, 1)).max().unwrap_or(0);
        let left = MARGIN + y_label_w + y_ticks_w + 3 + TICK;

        // Legend rows beyond the plot's height collapse into a "+N more" line.
        let rows_fit = (((bottom - top) - 2 * LEGEND_PAD) / LEGEND_ROW).max(1) as usize;
        let (shown, more) = match self.series.len() {
            n if n <= rows_fit => (n, None),
            n => (rows_fit - 1, Some(format!("+{} more", n - (rows_fit - 1)))),
        };
        let name_chars = ((w / 3 - 32) / font::ADVANCE).clamp(3, 24) as usize;
        let longest = self.series[..shown]
            .iter()
            .map(|s| s.name.chars().count())
            .max()
            .unwrap_or(0);
        let name_chars = longest.min(name_chars);
        let entry_w = SWATCH_W + 4 + text_width_chars(name_chars, 1);
        let more_w = more.as_deref().map_or(0, |m| text_width(m, 1));
        let legend_w = 2 * LEGEND_PAD + entry_w.max(more_w);
        let right = w - MARGIN - legend_w - MARGIN;
        let rows = (shown + usize::from(more.is_some())) as i64;
        let legend = Rect::new(
            right + MARGIN,
            top,
            right + MARGIN + legend_w - 1,
            top + 2 * LEGEND_PAD + rows * LEGEND_ROW - (LEGEND_ROW - font::HEIGHT) - 1,
        );

        let x = Axis::fit(x_min, x_max, true, |labels| {
            labels.iter().map(|l| text_width(l, 1) + 12).sum::<i64>() <= right - left
        })?;
        Ok(Layout {
            width: w,
            height: h,
            plot: Rect::new(left, top, right, bottom),
            x,
            y,
            legend,
            shown,
            name_chars,
            more,
        })
    }

    fn draw(&self, c: &mut Canvas, l: &Layout) {
        let p = &l.plot;
        let to_px = |(x, y): (f64, f64)| {
            // Clamped so that points far outside a fixed range stay within i64 and f64 precision.
            let px =
                p.left as f64 + (x - l.x.min) / (l.x.max - l.x.min) * (p.right - p.left) as f64;
            let py =
                p.bottom as f64 - (y - l.y.min) / (l.y.max - l.y.min) * (p.bottom - p.top) as f64;
            (px.clamp(-1e7, 1e7), py.clamp(-1e7, 1e7))
        };

        for &t in &l.x.ticks {
            let x = to_px((t, l.y.min)).0.round() as i64;
            c.fill(Rect::new(x, p.top, x, p.bottom), GRID);
        }
        for &t in &l.y.ticks {
            let y = to_px((l.x.min, t)).1.round() as i64;
            c.fill(Rect::new(p.left, y, p.right, y), GRID);
        }

        for (i, series) in self.series.iter().enumerate() {
            let colour = PALETTE[i % PALETTE.len()];
            let points: Vec<(f64, f64)> = finite_points(series).map(to_px).collect();
            match points.as_slice() {
                [only] => {
                    let (x, y) = (only.0.round() as i64, only.1.round() as i64);
                    c.fill(Rect::new(x - 2, y - 2, x + 2, y + 2).within(p), colour);
                }
                _ => points
                    .windows(2)
                    .for_each(|s| c.segment(s[0], s[1], p, colour)),
            }
        }

        c.outline(*p, FRAME);
        for (&t, label) in l.x.ticks.iter().zip(&l.x.labels) {
            let x = to_px((t, l.y.min)).0.round() as i64;
            c.fill(Rect::new(x, p.bottom + 1, x, p.bottom + TICK), FRAME);
            let lx = (x - text_width(label, 1) / 2).clamp(0, l.width - text_width(label, 1));
            c.text(lx, p.bottom + TICK + 3, label);
        }
        for (&t, label) in l.y.ticks.iter().zip(&l.y.labels) {
            let y = to_px((l.x.min, t)).1.round() as i64;
            c.fill(Rect::new(p.left - TICK, y, p.left - 1, y), FRAME);
            let lx = p.left - TICK - 3 - text_width(label, 1);
            // Centred on the digits, which fill the glyph's top seven rows.
            c.text(lx, y - 3, label);
        }

        let x_label = truncate(&self.x_label, ((p.right - p.left) / font::ADVANCE) as usize);
        let lx = (p.left + p.right - text_width(&x_label, 1)) / 2;
        c.text(lx, l.height - MARGIN - font::HEIGHT, &x_label);
        let y_label = truncate(&self.y_label, ((p.bottom - p.top) / font::ADVANCE) as usize);
        let ly = (p.top + p.bottom + text_width(&y_label, 1)) / 2;
        c.text_styled(MARGIN, ly, &y_label, 1, true);
        let title = truncate(
            &self.title,
            ((l.width - 2 * MARGIN) / (font::ADVANCE * TITLE_SCALE)) as usize,
        );
        let tx = (l.width - text_width(&title, TITLE_SCALE)) / 2;
        c.text_styled(tx, MARGIN, &title, TITLE_SCALE, false);

        let g = &l.legend;
        c.outline(*g, LEGEND_BORDER);
        let (x, mut y) = (g.left + LEGEND_PAD, g.top + LEGEND_PAD);
        for (i, series) in self.series[..l.shown].iter().enumerate() {
            let swatch = Rect::new(x, y + 1, x + SWATCH_W - 1, y + font::HEIGHT - 2);
            c.fill(swatch, PALETTE[i % PALETTE.len()]);
            c.text(x + SWATCH_W + 4, y, &truncate(&series.name, l.name_chars));
            y += LEGEND_ROW;
        }
        if let Some(more) = &l.more {
            c.text(x, y, more);
        }
    }
}

struct Layout {
    width: i64,
    height: i64,
    plot: Rect,
    x: Axis,
    y: Axis,
    legend: Rect,
    /// Series listed by name in the legend; the rest are counted in `more`.
    shown: usize,
    name_chars: usize,
    more: Option<String>,
}

/// Inclusive pixel rectangle.
#[derive(Debug, Clone, Copy)]
struct Rect {
    left: i64,
    top: i64,
    right: i64,
    bottom: i64,
}

impl Rect {
    const fn new(left: i64, top: i64, right: i64, bottom: i64) -> Rect {
        Rect {
            left,
            top,
            right,
            bottom,
        }
    }

    fn within(self, o: &Rect) -> Rect {
        Rect::new(
            self.left.max(o.left),
            self.top.max(o.top),
            self.right.min(o.right),
            self.bottom.min(o.bottom),
        )
    }
}

/// One axis: its extent, tick values and their labels.
#[derive(Debug)]
struct Axis {
    min: f64,
    max: f64,
    ticks: Vec<f64>,
    labels: Vec<String>,
}

impl Axis {
    /// The axis with the most ticks (at most about five) whose labels `fit`.
    fn fit(
        min: f64,
        max: f64,
        expand: bool,
        fit: impl Fn(&[String]) -> bool,
    ) -> Result<Axis, ChartError> {
        let (min, max) = pad_flat(min, max);
        if !(max - min).is_finite() {
            return Err(ChartError::RangeOverflow);
        }
        let mut axis = Axis::new(min, max, expand, 5);
        for target in [4, 3, 2] {
            if fit(&axis.labels) {
                break;
            }
            axis = Axis::new(min, max, expand, target);
        }
        // Widening to whole steps can itself overflow near f64::MAX.
        if (axis.max - axis.min).is_finite() {
            Ok(axis)
        } else {
            Err(ChartError::RangeOverflow)
        }
    }

    /// Ticks at a "nice" step (1, 2 or 5 × 10^k); `expand` widens the extent to whole steps.
    fn new(min: f64, max: f64, expand: bool, target: u32) -> Axis {
        let raw = (max - min) / f64::from(target);
        let mut exp = raw.log10().floor() as i32;
        let norm = raw / 10f64.powi(exp);
        let mult = match norm {
            n if n < 1.5 => 1.0,
            n if n < 3.0 => 2.0,
            n if n < 7.0 => 5.0,
            _ => {
                exp += 1;
                1.0
            }
        };
        let step = mult * 10f64.powi(exp);
        let (min, max) = if expand {
            ((min / step).floor() * step, (max / step).ceil() * step)
        } else {
            (min, max)
        };
        // The 1e-9 slack keeps ticks at the very ends despite rounding in the division.
        let first = (min / step - 1e-9).ceil();
        let count = ((max / step + 1e-9).floor() - first + 1.0).clamp(0.0, 20.0) as usize;
        // Adding 0.0 turns -0.0 into 0.0, so no "-0" label appears.
        let ticks: Vec<f64> = (0..count)
            .map(|i| (first + i as f64) * step + 0.0)
            .collect();
        let max_abs = min.abs().max(max.abs());
        let labels = ticks
            .iter()
            .map(|t| {
                if exp >= -4 && max_abs < 1e7 {
                    format!("{t:.*}", (-exp).max(0) as usize)
                } else {
                    format!(
                        "{t:.*e}",
                        (max_abs.log10().floor() as i32 - exp).clamp(0, 4) as usize
                    )
                }
            })
            .collect();
        Axis {
            min,
            max,
            ticks,
            labels,
        }
    }
}

/// Widens an empty or vanishing range so a flat series sits mid-axis.
fn pad_flat(min: f64, max: f64) -> (f64, f64) {
    if max - min > min.abs().max(max.abs()) * 1e-9 && max - min > 1e-100 {
        return (min, max);
    }
    let mid = min / 2.0 + max / 2.0;
    let pad = if mid.abs() < 1e-100 {
        1.0
    } else {
        mid.abs() / 10.0
    };
    (mid - pad, mid + pad)
}

fn finite_points(series: &Series) -> impl Iterator<Item = (f64, f64)> + '_ {
    series
        .points
        .iter()
        .copied()
        .filter(|(x, y)| x.is_finite() && y.is_finite())
}

fn bounds(values: impl Iterator<Item = f64>) -> Option<(f64, f64)> {
    values.fold(None, |acc, v| match acc {
        None => Some((v, v)),
        Some((lo, hi)) => Some((v.min(lo), v.max(hi))),
    })
}

fn text_width_chars(chars: usize, scale: i64) -> i64 {
    (chars as i64 * font::ADVANCE - 1).max(0) * scale
}

fn text_width(text: &str, scale: i64) -> i64 {
    text_width_chars(text.chars().count(), scale)
}

/// Shortens `text` to at most `max` characters, marking the cut with "..".
fn truncate(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        text.to_owned()
    } else if max < 3 {
        text.chars().take(max).collect()
    } else {
        text.chars().take(max - 2).chain("..".chars()).collect()
    }
}

/// An RGB image being drawn; everything outside it is silently dropped.
struct Canvas {
    width: i64,
    height: i64,
    pixels: Vec<u8>,
}

impl Canvas {
    fn new(width: i64, height: i64) -> Canvas {
        Canvas {
            width,
            height,
            pixels: WHITE.repeat((width * height) as usize),
        }
    }

    fn set(&mut self, x: i64, y: i64, colour: Rgb) {
        if (0..self.width).contains(&x) && (0..self.height).contains(&y) {
            let i = ((y * self.width + x) * 3) as usize;
            self.pixels[i..i + 3].copy_from_slice(&colour);
        }
    }

    fn fill(&mut self, r: Rect, colour: Rgb) {
        for y in r.top.max(0)..=r.bottom.min(self.height - 1) {
            for x in r.left.max(0)..=r.right.min(self.width - 1) {
                self.set(x, y, colour);
            }
        }
    }

    fn outline(&mut self, r: Rect, colour: Rgb) {
        self.fill(Rect { bottom: r.top, ..r }, colour);
        self.fill(Rect { top: r.bottom, ..r }, colour);
        self.fill(Rect { right: r.left, ..r }, colour);
        self.fill(Rect { left: r.right, ..r }, colour);
    }

    /// A 2 px wide line from `a` to `b`, clipped to `clip`.
    fn segment(&mut self, a: (f64, f64), b: (f64, f64), clip: &Rect, colour: Rgb) {
        let Some((a, b)) = clip_segment(a, b, clip) else {
            return;
        };
        let (mut x, mut y) = (a.0.round() as i64, a.1.round() as i64);
        let (x1, y1) = (b.0.round() as i64, b.1.round() as i64);
        let (dx, dy) = ((x1 - x).abs(), -(y1 - y).abs());
        let (sx, sy) = ((x1 - x).signum(), (y1 - y).signum());
        let mut err = dx + dy;
        loop {
            self.fill(Rect::new(x, y, x + 1, y + 1).within(clip), colour);
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

    /// Draws `text` with its top-left corner at `(x, y)`.
    fn text(&mut self, x: i64, y: i64, text: &str) {
        self.text_styled(x, y, text, 1, false);
    }

    /// Draws `text` magnified by `scale` with its top-left corner at `(x, y)`, or, when
    /// `vertical`, reading upwards from `(x, y)` as its bottom-left corner.
    fn text_styled(&mut self, x: i64, y: i64, text: &str, scale: i64, vertical: bool) {
        for (i, ch) in text.chars().enumerate() {
            for (gx, column) in font::glyph(ch).iter().enumerate() {
                for gy in (0..font::HEIGHT).filter(|gy| column >> gy & 1 == 1) {
                    let u = (i as i64 * font::ADVANCE + gx as i64) * scale;
                    let v = gy * scale;
                    for (du, dv) in (0..scale).flat_map(|du| (0..scale).map(move |dv| (du, dv))) {
                        if vertical {
                            self.set(x + v + dv, y - u - du, INK);
                        } else {
                            self.set(x + u + du, y + v + dv, INK);
                        }
                    }
                }
            }
        }
    }

    fn encode(&self) -> Result<Vec<u8>, ChartError> {
        let mut out = Vec::new();
        let mut encoder = png::Encoder::new(&mut out, self.width as u32, self.height as u32);
        encoder.set_color(png::ColorType::Rgb);
        encoder.set_depth(png::BitDepth::Eight);
        let mut writer = encoder.write_header()?;
        writer.write_image_data(&self.pixels)?;
        writer.finish()?;
        Ok(out)
    }
}

/// Liang–Barsky clipping of the segment `a`–`b` to `r`.
fn clip_segment(a: (f64, f64), b: (f64, f64), r: &Rect) -> Option<((f64, f64), (f64, f64))> {
    let (dx, dy) = (b.0 - a.0, b.1 - a.1);
    let (mut t0, mut t1) = (0.0f64, 1.0f64);
    for (p, q) in [
        (-dx, a.0 - r.left as f64),
        (dx, r.right as f64 - a.0),
        (-dy, a.1 - r.top as f64),
        (dy, r.bottom as f64 - a.1),
    ] {
        if p == 0.0 {
            if q < 0.0 {
                return None;
            }
        } else if p < 0.0 {
            t0 = t0.max(q / p);
        } else {
            t1 = t1.min(q / p);
        }
    }
    let at = |t: f64| (a.0 + t * dx, a.1 + t * dy);
    (t0 <= t1).then(|| (at(t0), at(t1)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode(bytes: &[u8]) -> (u32, u32, Vec<u8>) {
        let mut reader = png::Decoder::new(std::io::Cursor::new(bytes))
            .read_info()
            .unwrap();
        let mut buf = vec![0; reader.output_buffer_size().unwrap()];
        let info = reader.next_frame(&mut buf).unwrap();
        assert_eq!(info.color_type, png::ColorType::Rgb);
        buf.truncate(info.buffer_size());
        (info.width, info.height, buf)
    }

    fn pixel(buf: &[u8], width: u32, x: i64, y: i64) -> Rgb {
        let i = ((y * i64::from(width) + x) * 3) as usize;
        [buf[i], buf[i + 1], buf[i + 2]]
    }

    fn count_in(buf: &[u8], width: u32, r: Rect, keep: impl Fn(Rgb) -> bool) -> usize {
        (r.top..=r.bottom)
            .flat_map(|y| (r.left..=r.right).map(move |x| (x, y)))
            .filter(|&(x, y)| keep(pixel(buf, width, x, y)))
            .count()
    }

    fn rewards(members: usize, rounds: usize) -> LineChart {
        LineChart {
            title: "Reward per member".into(),
            x_label: "round".into(),
            y_label: "reward".into(),
            series: (0..members)
                .map(|m| {
                    let points = (0..rounds)
                        .map(|r| (r as f64, (r as f64 / 50.0 + m as f64).sin() + m as f64));
                    Series::new(format!("member-{m}"), points.collect())
                })
                .collect(),
            y_range: None,
        }
    }

    #[test]
    fn renders_each_series_in_its_colour_inside_the_plot() {
        let chart = rewards(4, 2000);
        let (w, h, buf) = decode(&chart.render_png(800, 500).unwrap());
        assert_eq!((w, h), (800, 500));
        let layout = chart.layout(800, 500).unwrap();
        for colour in &PALETTE[..4] {
            assert!(
                count_in(&buf, w, layout.plot, |p| p == *colour) > 100,
                "{colour:?}"
            );
        }
    }

    #[test]
    fn title_draws_dark_pixels_in_the_top_band() {
        let dark = |p: Rgb| p.iter().all(|&c| c < 100);
        let band = |chart: &LineChart| {
            let (w, _, buf) = decode(&chart.render_png(400, 300).unwrap());
            let bottom = MARGIN + font::HEIGHT * TITLE_SCALE;
            count_in(&buf, w, Rect::new(0, 0, 399, bottom), dark)
        };
        let mut chart = rewards(2, 10);
        assert!(band(&chart) > 50);
        // A blank title keeps the same layout but draws nothing.
        chart.title = " ".into();
        assert_eq!(band(&chart), 0);
    }

    #[test]
    fn output_is_deterministic() {
        let chart = rewards(16, 300);
        assert_eq!(
            chart.render_png(640, 480).unwrap(),
            chart.render_png(640, 480).unwrap()
        );
        assert_ne!(
            chart.render_png(640, 480).unwrap(),
            rewards(15, 300).render_png(640, 480).unwrap()
        );
    }

    #[test]
    fn fixed_range_clips_lines_to_the_plot() {
        let mut chart = rewards(1, 0);
        chart.series[0].points = vec![
            (0.0, -5.0),
            (1.0, 0.5),
            (2.0, 1e300),
            (3.0, f64::NAN),
            (4.0, 0.2),
        ];
        chart.y_range = Some((0.0, 1.0));
        let (w, h, buf) = decode(&chart.render_png(400, 300).unwrap());
        let layout = chart.layout(400, 300).unwrap();
        assert_eq!(layout.y.labels, ["0.0", "0.2", "0.4", "0.6", "0.8", "1.0"]);
        let is_series = |p: Rgb| p == PALETTE[0];
        let all = count_in(
            &buf,
            w,
            Rect::new(0, 0, i64::from(w) - 1, i64::from(h) - 1),
            is_series,
        );
        let inside =
            count_in(&buf, w, layout.plot, is_series) + count_in(&buf, w, layout.legend, is_series);
        assert!(inside > 100);
        assert_eq!(all, inside);
    }

    #[test]
    fn odd_series_still_render() {
        let chart = LineChart {
            series: vec![
                Series::new("single", vec![(3.0, 2.0)]),
                Series::new("flat", vec![(3.0, 2.0), (3.0, 2.0)]),
                Series::new(
                    "x".repeat(200),
                    vec![(f64::NAN, 1.0), (3.0, f64::INFINITY), (3.0, 2.0)],
                ),
                Series::new("non-ascii é ✓", vec![]),
            ],
            ..LineChart::default()
        };
        let (w, _, buf) = decode(&chart.render_png(MIN_SIZE.0, MIN_SIZE.1).unwrap());
        let layout = chart.layout(MIN_SIZE.0, MIN_SIZE.1).unwrap();
        assert_eq!((layout.y.min, layout.y.max), (1.8, 2.2));
        assert!(layout.name_chars < 200);
        assert!(count_in(&buf, w, layout.plot, |p| p == PALETTE[2]) > 0);
        // 40 members overflow the legend of a small image into a "+N more" line.
        assert!(rewards(40, 50).layout(300, 200).unwrap().more.is_some());
    }

    #[test]
    fn nice_ticks() {
        let x = Axis::fit(1.0, 1999.0, true, |_| true).unwrap();
        assert_eq!((x.min, x.max), (0.0, 2000.0));
        assert_eq!(x.labels, ["0", "500", "1000", "1500", "2000"]);
        let y = Axis::fit(-0.13, 0.04, true, |_| true).unwrap();
        assert_eq!(y.labels, ["-0.15", "-0.10", "-0.05", "0.00", "0.05"]);
        let flat = Axis::fit(0.0, 0.0, true, |_| true).unwrap();
        assert_eq!((flat.min, flat.max), (-1.0, 1.0));
        let narrow = Axis::fit(0.0, 1000.0, true, |labels| labels.len() <= 3).unwrap();
        assert!(narrow.labels.len() <= 3);
    }

    #[test]
    fn errors() {
        let ok = rewards(2, 10);
        assert!(matches!(
            LineChart::default().render_png(400, 300),
            Err(ChartError::NoSeries)
        ));
        let nan = LineChart {
            series: vec![Series::new("a", vec![(f64::NAN, 1.0), (1.0, f64::NAN)])],
            ..ok.clone()
        };
        assert!(matches!(
            nan.render_png(400, 300),
            Err(ChartError::NoFinitePoints)
        ));
        for (w, h) in [(239, 300), (400, 159), (MAX_SIDE + 1, 300), (0, 0)] {
            assert!(matches!(ok.render_png(w, h), Err(ChartError::Size { .. })));
        }
        for range in [
            (1.0, 1.0),
            (2.0, 1.0),
            (0.0, f64::INFINITY),
            (f64::NAN, 1.0),
        ] {
            let chart = LineChart {
                y_range: Some(range),
                ..ok.clone()
            };
            assert!(matches!(
                chart.render_png(400, 300),
                Err(ChartError::YRange { .. })
            ));
        }
        let huge = LineChart {
            series: vec![Series::new("a", vec![(0.0, -f64::MAX), (1.0, f64::MAX)])],
            ..ok
        };
        assert!(matches!(
            huge.render_png(400, 300),
            Err(ChartError::RangeOverflow)
        ));
    }
}
