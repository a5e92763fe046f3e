//! Generic SVG charts (plotters' SVG backend): a line chart of named series of (x, y) points
//! with linear, logarithmic or "nines" (percentile) axes, and a horizontal bar chart. What each
//! scenario draws, from which JSON fields, is in `figures.rs`.

use crate::report::compact;
use plotters::coord::ranged1d::{DefaultFormatting, KeyPointHint, Ranged};
use plotters::prelude::*;
use std::ops::Range;

const SIZE: (u32, u32) = (800, 480);
const FONT: &str = "sans-serif";

/// How values are laid out along an axis.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scale {
    Linear,
    /// Decades equally spaced; values ≤ 0 are not drawn.
    Log,
    /// Percentiles (0–100): 90, 99, 99.9, … equally spaced, as a latency CDF needs. 100 (the
    /// maximum) lies at infinity and is not drawn.
    Nines,
}

impl Scale {
    /// Where a value lies along the drawn axis; None when it cannot be drawn on this scale.
    fn place(self, v: f64) -> Option<f64> {
        let placed = match self {
            Scale::Linear => v,
            Scale::Log if v > 0.0 => v.log10(),
            Scale::Nines if (0.0..100.0).contains(&v) => -(1.0 - v / 100.0).log10(),
            _ => return None,
        };
        placed.is_finite().then_some(placed)
    }

    /// The value at a place along the drawn axis (the inverse of `place`).
    fn value(self, placed: f64) -> f64 {
        match self {
            Scale::Linear => placed,
            Scale::Log => 10f64.powf(placed),
            Scale::Nines => 100.0 * (1.0 - 10f64.powf(-placed)),
        }
    }

    /// The drawn range for placed values from `lo` to `hi`, with a margin.
    fn range(self, lo: f64, hi: f64) -> Range<f64> {
        match self {
            // A rate or a time from zero: a bar or a line that starts at 0 does not exaggerate.
            Scale::Linear => {
                let lo = lo.min(0.0);
                let hi = if hi > lo { hi } else { lo + 1.0 };
                lo..hi + (hi - lo) * 0.05
            }
            Scale::Log => lo.floor()..hi.ceil().max(lo.floor() + 1.0),
            // Room past the highest percentile, whose point is often the last label.
            Scale::Nines => 0.0..(hi + 0.3).max(1.0),
        }
    }

    /// The labelled places along a drawn range.
    fn ticks(self, range: &Range<f64>) -> Vec<f64> {
        match self {
            Scale::Linear => linear_ticks(range),
            Scale::Log => {
                let decades = (range.end - range.start).round() as i64;
                let mut ticks = Vec::new();
                for d in range.start as i64..=range.end as i64 {
                    ticks.push(d as f64);
                    // Few decades: 2 and 5 times each too, so that the axis has labels enough.
                    if decades <= 2 && (d as f64) < range.end {
                        ticks.extend([2f64.log10() + d as f64, 5f64.log10() + d as f64]);
                    }
                }
                ticks
            }
            Scale::Nines => {
                let mut ticks = vec![2f64.log10()]; // the median
                ticks.extend((1..=range.end as i64).map(|n| n as f64));
                ticks
            }
        }
    }

    fn label(self, placed: f64) -> String {
        let v = self.value(placed);
        match self {
            Scale::Nines => format!("{}%", trim_float(v, 6)),
            _ => compact(v),
        }
    }
}

/// 1-2-5 steps, about six labels.
fn linear_ticks(range: &Range<f64>) -> Vec<f64> {
    let span = range.end - range.start;
    if span <= 0.0 || !span.is_finite() {
        return vec![range.start];
    }
    let rough = span / 6.0;
    let magnitude = 10f64.powf(rough.log10().floor());
    let step = [1.0, 2.0, 5.0, 10.0]
        .into_iter()
        .map(|m| m * magnitude)
        .find(|s| *s >= rough)
        .unwrap_or(10.0 * magnitude);
    let first = (range.start / step).ceil() as i64;
    let last = (range.end / step).floor() as i64;
    (first..=last).map(|i| i as f64 * step).collect()
}

/// `99.90000001` → `99.9`.
fn trim_float(v: f64, decimals: usize) -> String {
    let s = format!("{v:.decimals$}");
    let s = s.trim_end_matches('0').trim_end_matches('.');
    s.to_string()
}

#[derive(Clone, Debug)]
pub struct Axis {
    pub label: String,
    pub scale: Scale,
}

/// One line: a name for the legend and its points in data units (drawn in x order).
#[derive(Clone, Debug)]
pub struct Series {
    pub name: String,
    pub points: Vec<(f64, f64)>,
}

#[derive(Clone, Debug)]
pub struct LineChart {
    pub title: String,
    pub x: Axis,
    pub y: Axis,
    pub series: Vec<Series>,
}

/// Horizontal bars, one per label, top to bottom in the order given.
#[derive(Clone, Debug)]
pub struct BarChart {
    pub title: String,
    pub value_label: String,
    pub bars: Vec<(String, f64)>,
}

#[derive(Clone, Debug)]
pub enum Chart {
    Lines(LineChart),
    Bars(BarChart),
}

/// A drawn axis: a range of placed values and where its labels go (plotters' own f64 axis picks
/// its labels itself, which suits neither a log nor a nines axis).
struct Axis1d {
    range: Range<f64>,
    ticks: Vec<f64>,
}

impl Ranged for Axis1d {
    type FormatOption = DefaultFormatting;
    type ValueType = f64;

    fn map(&self, value: &f64, limit: (i32, i32)) -> i32 {
        let share = (value - self.range.start) / (self.range.end - self.range.start);
        limit.0 + (share * f64::from(limit.1 - limit.0)).round() as i32
    }

    fn key_points<Hint: KeyPointHint>(&self, hint: Hint) -> Vec<f64> {
        // Grid lines at the labels only, none in between.
        if hint.weight().allow_light_points() {
            Vec::new()
        } else {
            self.ticks.clone()
        }
    }

    fn range(&self) -> Range<f64> {
        self.range.clone()
    }
}

impl Chart {
    pub fn title(&self) -> &str {
        match self {
            Chart::Lines(c) => &c.title,
            Chart::Bars(c) => &c.title,
        }
    }

    /// The chart as an SVG document, or None when it has nothing to draw (no finite point).
    pub fn to_svg(&self) -> Result<Option<String>, String> {
        let mut svg = String::new();
        let drawn = {
            let root = SVGBackend::with_string(&mut svg, SIZE).into_drawing_area();
            root.fill(&WHITE).map_err(|e| e.to_string())?;
            let drawn = match self {
                Chart::Lines(c) => draw_lines(&root, c),
                Chart::Bars(c) => draw_bars(&root, c),
            }
            .map_err(|e| e.to_string())?;
            root.present().map_err(|e| e.to_string())?;
            drawn
        };
        Ok(drawn.then_some(svg))
    }
}

type DrawResult<T> = Result<T, Box<dyn std::error::Error>>;

/// The drawn axis for values already placed on `scale`; None when there is none.
fn drawn_axis(scale: Scale, placed: impl Iterator<Item = f64>) -> Option<Axis1d> {
    let (lo, hi) = placed.fold(None, |bounds: Option<(f64, f64)>, v| {
        Some(bounds.map_or((v, v), |(lo, hi)| (lo.min(v), hi.max(v))))
    })?;
    let range = scale.range(lo, hi);
    let ticks = scale.ticks(&range);
    Some(Axis1d { range, ticks })
}

fn draw_lines(
    root: &DrawingArea<SVGBackend, plotters::coord::Shift>,
    c: &LineChart,
) -> DrawResult<bool> {
    let placed: Vec<(&str, Vec<(f64, f64)>)> = c
        .series
        .iter()
        .map(|s| {
            let mut points: Vec<(f64, f64)> = s
                .points
                .iter()
                .filter_map(|&(x, y)| Some((c.x.scale.place(x)?, c.y.scale.place(y)?)))
                .collect();
            points.sort_by(|a, b| a.0.total_cmp(&b.0));
            (s.name.as_str(), points)
        })
        .filter(|(_, points)| !points.is_empty())
        .collect();
    let all = || placed.iter().flat_map(|(_, p)| p.iter());
    let (Some(x_axis), Some(y_axis)) = (
        drawn_axis(c.x.scale, all().map(|p| p.0)),
        drawn_axis(c.y.scale, all().map(|p| p.1)),
    ) else {
        return Ok(false);
    };
    let mut chart = ChartBuilder::on(root)
        .caption(&c.title, (FONT, 20))
        .margin(12)
        .margin_right(36) // the last x label is centred on the axis's end
        .x_label_area_size(45)
        .y_label_area_size(70)
        .build_cartesian_2d(x_axis, y_axis)?;
    chart
        .configure_mesh()
        .x_desc(c.x.label.as_str())
        .y_desc(c.y.label.as_str())
        .x_label_formatter(&|v| c.x.scale.label(*v))
        .y_label_formatter(&|v| c.y.scale.label(*v))
        .draw()?;
    for (i, (name, points)) in placed.iter().enumerate() {
        let color = Palette99::pick(i).to_rgba();
        chart
            .draw_series(LineSeries::new(
                points.iter().copied(),
                color.stroke_width(2),
            ))?
            .label(*name)
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 20, y)], color.stroke_width(2)));
        chart.draw_series(points.iter().map(|p| Circle::new(*p, 3, color.filled())))?;
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .label_font((FONT, 13))
        .draw()?;
    Ok(true)
}

fn draw_bars(
    root: &DrawingArea<SVGBackend, plotters::coord::Shift>,
    c: &BarChart,
) -> DrawResult<bool> {
    let bars: Vec<(&str, f64)> = c
        .bars
        .iter()
        .filter(|(_, v)| v.is_finite())
        .map(|(name, v)| (name.as_str(), *v))
        .collect();
    let Some(value_axis) = drawn_axis(Scale::Linear, bars.iter().map(|b| b.1)) else {
        return Ok(false);
    };
    let n = bars.len();
    // Bar i (from the top) is centred on n - i - 0.5.
    let label_axis = Axis1d {
        range: 0.0..n as f64,
        ticks: (0..n).map(|i| i as f64 + 0.5).collect(),
    };
    let label_of = |v: f64| -> String {
        let from_top = n as f64 - v - 0.5;
        bars.get(from_top.round() as usize)
            .map_or(String::new(), |b| b.0.to_string())
    };
    let longest = bars.iter().map(|b| b.0.len()).max().unwrap_or(0);
    let mut chart = ChartBuilder::on(root)
        .caption(&c.title, (FONT, 20))
        .margin(12)
        .x_label_area_size(45)
        .y_label_area_size((20 + 8 * longest as u32).min(SIZE.0 / 2))
        .build_cartesian_2d(value_axis, label_axis)?;
    chart
        .configure_mesh()
        .disable_y_mesh()
        .x_desc(c.value_label.as_str())
        .x_label_formatter(&|v| compact(*v))
        .y_label_formatter(&|v| label_of(*v))
        .draw()?;
    for (i, (_, value)) in bars.iter().enumerate() {
        let centre = n as f64 - i as f64 - 0.5;
        let color = Palette99::pick(i).to_rgba();
        chart.draw_series([Rectangle::new(
            [(0.0, centre - 0.35), (*value, centre + 0.35)],
            color.filled(),
        )])?;
        // The value just past the bar's end, vertically centred on it.
        chart.draw_series([EmptyElement::at((*value, centre))
            + Text::new(
                compact(*value),
                (6, -7),
                (FONT, 13).into_font().color(&BLACK),
            )])?;
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nines_place_percentiles_a_decade_apart() {
        let place = |p| Scale::Nines.place(p).unwrap();
        assert!((place(90.0) - 1.0).abs() < 1e-9);
        assert!((place(99.9) - 3.0).abs() < 1e-9);
        assert_eq!(Scale::Nines.place(100.0), None);
        assert_eq!(Scale::Nines.label(2.0), "99%");
        assert_eq!(Scale::Log.place(0.0), None);
    }

    #[test]
    fn linear_ticks_step_by_one_two_or_five() {
        assert_eq!(linear_ticks(&(0.0..10.0)), [0.0, 2.0, 4.0, 6.0, 8.0, 10.0]);
        assert_eq!(linear_ticks(&(0.0..260_000.0)).len(), 6);
    }

    #[test]
    fn a_chart_with_no_drawable_point_draws_nothing() {
        let chart = Chart::Lines(LineChart {
            title: "t".into(),
            x: Axis {
                label: "x".into(),
                scale: Scale::Log,
            },
            y: Axis {
                label: "y".into(),
                scale: Scale::Linear,
            },
            series: vec![Series {
                name: "s".into(),
                points: vec![(0.0, 1.0), (f64::NAN, 2.0)],
            }],
        });
        assert_eq!(chart.to_svg().unwrap(), None);
    }

    #[test]
    fn lines_and_bars_render_svg() {
        let lines = Chart::Lines(LineChart {
            title: "latency".into(),
            x: Axis {
                label: "percentile".into(),
                scale: Scale::Nines,
            },
            y: Axis {
                label: "us".into(),
                scale: Scale::Log,
            },
            series: vec![Series {
                name: "kernel".into(),
                points: vec![(50.0, 7.0), (99.0, 13.0), (99.9, 26.0), (100.0, 4800.0)],
            }],
        });
        let svg = lines.to_svg().unwrap().unwrap();
        assert!(svg.starts_with("<svg"));
        assert!(svg.contains("kernel") && svg.contains("99.9%"));
        let bars = Chart::Bars(BarChart {
            title: "ceilings".into(),
            value_label: "pkt/s".into(),
            bars: vec![("a".into(), 289e3), ("b".into(), 1.5e6)],
        });
        let svg = bars.to_svg().unwrap().unwrap();
        assert!(svg.contains("1.5M"));
    }
}
