//! Line charts of training metrics rendered to PNG with `plotters`.
//!
//! Drawn into an in-memory RGB buffer by plotters' bitmap backend and encoded with `png`; text
//! uses the DejaVu Sans font embedded in the binary (registered with plotters' `ab_glyph`
//! renderer), because the charts are written on fresh machines that have neither system fonts nor
//! native graphics libraries.

use std::sync::OnceLock;

use plotters::prelude::*;
use plotters::style::{FontStyle, register_font};

/// Smallest accepted image, so title, ticks, labels and legend always leave a plot area.
pub const MIN_SIZE: (u32, u32) = (240, 160);
/// Largest accepted side; larger images are almost certainly a mistake and cost memory.
pub const MAX_SIDE: u32 = 4096;

/// The family name the embedded font is registered under.
const FONT: &str = "sans-serif";

/// One line of the chart.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Series {
    pub name: String,
    /// `(x, y)` pairs in drawing order; pairs with a non-finite coordinate are skipped.
    pub points: Vec<(f64, f64)>,
    /// A shaded band around the line (e.g. the spread over seeds): `(x, low, high)` triples;
    /// non-finite ones are skipped.
    pub band: Vec<(f64, f64, f64)>,
}

impl Series {
    pub fn new(name: impl Into<String>, points: Vec<(f64, f64)>) -> Self {
        Self {
            name: name.into(),
            points,
            band: Vec::new(),
        }
    }

    /// The series with a band from `low` to `high` at each `x`.
    pub fn with_band(mut self, band: Vec<(f64, f64, f64)>) -> Self {
        self.band = band;
        self
    }

    fn finite_points(&self) -> impl Iterator<Item = (f64, f64)> + '_ {
        self.points
            .iter()
            .copied()
            .filter(|(x, y)| x.is_finite() && y.is_finite())
    }

    fn finite_band(&self) -> impl Iterator<Item = (f64, f64, f64)> + '_ {
        self.band
            .iter()
            .copied()
            .filter(|(x, low, high)| x.is_finite() && low.is_finite() && high.is_finite())
    }
}

/// A line chart: one coloured line per series (with its band, if any), axes with a mesh, title
/// and legend.
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
    #[error("the embedded font cannot be loaded: {0}")]
    Font(String),
    #[error("drawing: {0}")]
    Draw(String),
    #[error("encoding the PNG: {0}")]
    Png(#[from] png::EncodingError),
}

/// Tableau 10 followed by darker hues, so 16 lines still get distinct colours.
const PALETTE: [RGBColor; 16] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(127, 127, 127),
    RGBColor(188, 189, 34),
    RGBColor(23, 190, 207),
    RGBColor(0, 0, 128),
    RGBColor(128, 0, 0),
    RGBColor(0, 100, 0),
    RGBColor(75, 0, 130),
    RGBColor(139, 69, 19),
    RGBColor(47, 79, 79),
];

/// The colour of the `index`-th series.
pub fn colour(index: usize) -> (u8, u8, u8) {
    let RGBColor(r, g, b) = PALETTE[index % PALETTE.len()];
    (r, g, b)
}

/// Registers the embedded font once per process.
fn font() -> Result<(), ChartError> {
    static REGISTERED: OnceLock<Result<(), String>> = OnceLock::new();
    REGISTERED
        .get_or_init(|| {
            register_font(FONT, FontStyle::Normal, dejavu::sans::regular())
                .map_err(|_| "DejaVu Sans is not a font ab_glyph can read".to_owned())
        })
        .clone()
        .map_err(ChartError::Font)
}

fn draw_error(error: impl std::fmt::Display) -> ChartError {
    ChartError::Draw(error.to_string())
}

impl LineChart {
    /// The chart as a `width` x `height` RGB PNG.
    pub fn render_png(&self, width: u32, height: u32) -> Result<Vec<u8>, ChartError> {
        if !(MIN_SIZE.0..=MAX_SIDE).contains(&width) || !(MIN_SIZE.1..=MAX_SIDE).contains(&height) {
            return Err(ChartError::Size { width, height });
        }
        if self.series.is_empty() {
            return Err(ChartError::NoSeries);
        }
        let (x_range, y_range) = self.ranges()?;
        font()?;
        let mut pixels = vec![255u8; width as usize * height as usize * 3];
        {
            let root = BitMapBackend::with_buffer(&mut pixels, (width, height)).into_drawing_area();
            root.fill(&WHITE).map_err(draw_error)?;
            let mut chart = ChartBuilder::on(&root)
                .caption(&self.title, (FONT, 20))
                .margin(12)
                .x_label_area_size(40)
                .y_label_area_size(56)
                .build_cartesian_2d(x_range.0..x_range.1, y_range.0..y_range.1)
                .map_err(draw_error)?;
            chart
                .configure_mesh()
                .x_desc(&self.x_label)
                .y_desc(&self.y_label)
                .label_style((FONT, 13))
                .axis_desc_style((FONT, 14))
                .x_label_formatter(&|x| tick(*x))
                .y_label_formatter(&|y| tick(*y))
                .light_line_style(RGBColor(236, 236, 236))
                .bold_line_style(RGBColor(214, 214, 214))
                .draw()
                .map_err(draw_error)?;
            for (index, series) in self.series.iter().enumerate() {
                let colour = PALETTE[index % PALETTE.len()];
                let band: Vec<(f64, f64, f64)> = series.finite_band().collect();
                if !band.is_empty() {
                    // The band as one polygon: along its upper edge, then back along the lower.
                    let outline: Vec<(f64, f64)> = band
                        .iter()
                        .map(|(x, _, high)| (*x, *high))
                        .chain(band.iter().rev().map(|(x, low, _)| (*x, *low)))
                        .collect();
                    chart
                        .draw_series(std::iter::once(Polygon::new(outline, colour.mix(0.18))))
                        .map_err(draw_error)?;
                }
                chart
                    .draw_series(LineSeries::new(
                        series.finite_points(),
                        colour.stroke_width(2),
                    ))
                    .map_err(draw_error)?
                    .label(&series.name)
                    .legend(move |(x, y)| {
                        PathElement::new([(x, y), (x + 18, y)], colour.stroke_width(2))
                    });
            }
            chart
                .configure_series_labels()
                .label_font((FONT, 13))
                .background_style(WHITE.mix(0.85))
                .border_style(RGBColor(180, 180, 180))
                .position(SeriesLabelPosition::UpperLeft)
                .draw()
                .map_err(draw_error)?;
            root.present().map_err(draw_error)?;
        }
        encode(&pixels, width, height)
    }

    /// The axes' ranges: the data's (or the fixed y range), widened where flat.
    fn ranges(&self) -> Result<(Range, Range), ChartError> {
        let xs = self
            .series
            .iter()
            .flat_map(|s| s.finite_points().map(|(x, _)| x));
        let x = bounds(xs).ok_or(ChartError::NoFinitePoints)?;
        let y = match self.y_range {
            Some((min, max)) if min.is_finite() && max.is_finite() && min < max => (min, max),
            Some((min, max)) => return Err(ChartError::YRange { min, max }),
            None => {
                let ys = self.series.iter().flat_map(|s| {
                    s.finite_points().map(|(_, y)| y).chain(
                        s.finite_band()
                            .flat_map(|(_, low, high)| [low, high].into_iter()),
                    )
                });
                let (min, max) = bounds(ys).ok_or(ChartError::NoFinitePoints)?;
                // Room above the data for the legend.
                let span = (max - min).max(f64::EPSILON);
                (min, max + span * 0.15)
            }
        };
        Ok((widen(x), widen(y)))
    }
}

/// A tick label: whole numbers without decimals, others with as few as tell them apart.
fn tick(value: f64) -> String {
    // Rounded first: plotters' tick values carry float error (0.9999999 must read "1").
    let text = format!("{value:.3}");
    match text.trim_end_matches('0').trim_end_matches('.') {
        "-0" => "0".to_owned(),
        trimmed => trimmed.to_owned(),
    }
}

/// `(min, max)` of an axis.
type Range = (f64, f64);

fn bounds(values: impl Iterator<Item = f64>) -> Option<Range> {
    values.fold(None, |acc, v| match acc {
        None => Some((v, v)),
        Some((min, max)) => Some((min.min(v), max.max(v))),
    })
}

/// A range a little wider than a single value, so an axis always has an extent.
fn widen((min, max): Range) -> Range {
    if max > min {
        (min, max)
    } else {
        let pad = (min.abs() * 0.05).max(0.5);
        (min - pad, max + pad)
    }
}

fn encode(pixels: &[u8], width: u32, height: u32) -> Result<Vec<u8>, ChartError> {
    let mut out = Vec::new();
    let mut encoder = png::Encoder::new(&mut out, width, height);
    encoder.set_color(png::ColorType::Rgb);
    encoder.set_depth(png::BitDepth::Eight);
    let mut writer = encoder.write_header()?;
    writer.write_image_data(pixels)?;
    writer.finish()?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn decode(bytes: &[u8]) -> (u32, u32, Vec<u8>) {
        let decoder = png::Decoder::new(std::io::Cursor::new(bytes));
        let mut reader = decoder.read_info().unwrap();
        let mut buf = vec![0; reader.output_buffer_size().unwrap()];
        let info = reader.next_frame(&mut buf).unwrap();
        assert_eq!(info.color_type, png::ColorType::Rgb);
        buf.truncate(info.buffer_size());
        (info.width, info.height, buf)
    }

    fn count(buf: &[u8], keep: impl Fn((u8, u8, u8)) -> bool) -> usize {
        buf.chunks(3).filter(|p| keep((p[0], p[1], p[2]))).count()
    }

    fn rewards(members: usize, rounds: usize) -> LineChart {
        LineChart {
            title: "Reward per member".into(),
            x_label: "round".into(),
            y_label: "reward".into(),
            series: (0..members)
                .map(|m| {
                    let points = (0..rounds)
                        .map(|r| {
                            (
                                r as f64,
                                0.2 + 0.5 * r as f64 / rounds as f64 + 0.02 * m as f64,
                            )
                        })
                        .collect();
                    Series::new(format!("member-{m}"), points)
                })
                .collect(),
            y_range: Some((0.0, 1.0)),
        }
    }

    #[test]
    fn renders_each_series_in_its_colour_and_text_in_ink() {
        let png = rewards(3, 50).render_png(640, 400).unwrap();
        let (width, height, buf) = decode(&png);
        assert_eq!((width, height), (640, 400));
        for index in 0..3 {
            let wanted = colour(index);
            assert!(
                count(&buf, |p| p == wanted) > 100,
                "series {index} is not drawn in its colour"
            );
        }
        // The title, ticks and labels: dark grey antialiased text from the embedded font.
        assert!(count(&buf, |(r, g, b)| r < 90 && g < 90 && b < 90) > 300);
    }

    #[test]
    fn bands_shade_around_their_line() {
        let mut chart = rewards(1, 20);
        let line = chart.series[0].points.clone();
        let plain = decode(&chart.render_png(640, 400).unwrap()).2;
        chart.series[0] = chart.series[0]
            .clone()
            .with_band(line.iter().map(|(x, y)| (*x, y - 0.1, y + 0.1)).collect());
        let banded = decode(&chart.render_png(640, 400).unwrap()).2;
        let (r, g, b) = colour(0);
        // A light tint of the series colour: between it and white.
        let tint = |(pr, pg, pb): (u8, u8, u8)| {
            (pr, pg, pb) != (255, 255, 255) && pr >= r && pg >= g && pb >= b && pr > 200 && pg > 200
        };
        assert!(count(&banded, tint) > count(&plain, tint) + 2000);
    }

    #[test]
    fn output_is_deterministic() {
        let chart = rewards(4, 100);
        assert_eq!(
            chart.render_png(480, 300).unwrap(),
            chart.render_png(480, 300).unwrap()
        );
    }

    #[test]
    fn odd_series_still_render() {
        let chart = LineChart {
            title: "odd".into(),
            series: vec![
                Series::new("one point", vec![(3.0, 0.5)]),
                Series::new("with NaN", vec![(0.0, f64::NAN), (1.0, 2.0), (2.0, 2.0)]),
                Series::new("empty", Vec::new()),
            ],
            ..LineChart::default()
        };
        assert!(chart.render_png(300, 200).is_ok());
    }

    #[test]
    fn ticks_drop_needless_decimals() {
        assert_eq!(tick(20.0), "20");
        assert_eq!(tick(0.25), "0.25");
        assert_eq!(tick(0.1), "0.1");
        assert_eq!(tick(-3.0), "-3");
        assert_eq!(tick(0.999_999_9), "1");
        assert_eq!(tick(100.0), "100");
        assert_eq!(tick(-0.000_01), "0");
    }

    #[test]
    fn errors() {
        let chart = rewards(1, 5);
        assert!(matches!(
            chart.render_png(100, 100),
            Err(ChartError::Size { .. })
        ));
        assert!(matches!(
            chart.render_png(5000, 400),
            Err(ChartError::Size { .. })
        ));
        assert!(matches!(
            LineChart::default().render_png(400, 300),
            Err(ChartError::NoSeries)
        ));
        let nan = LineChart {
            series: vec![Series::new("nan", vec![(f64::NAN, 1.0)])],
            ..LineChart::default()
        };
        assert!(matches!(
            nan.render_png(400, 300),
            Err(ChartError::NoFinitePoints)
        ));
        let bad_range = LineChart {
            y_range: Some((1.0, 1.0)),
            ..rewards(1, 5)
        };
        assert!(matches!(
            bad_range.render_png(400, 300),
            Err(ChartError::YRange { .. })
        ));
    }
}
