//! What each scenario draws, read from its JSON document: the one place that says which fields
//! a chart reads (docs/BENCHMARKS.md, "Charts", repeats it). A scenario gets its charts by
//! writing these fields in its `summary`; a new chart is one more entry in `FIGURES`.
//!
//! Every chart reads a list of objects at a JSON pointer. A line chart draws one series per
//! distinct value of its `series` field (the system) and one chart per distinct value of its
//! `split` field when the points have it; a bar chart draws one bar per object.

use crate::chart::{Axis, BarChart, Chart, LineChart, Scale, Series};
use serde_json::Value;
use std::io;
use std::path::{Path, PathBuf};

/// An axis read from a field of each point.
pub struct Field {
    pub name: &'static str,
    pub label: &'static str,
    pub scale: Scale,
}

pub enum Figure {
    Lines {
        title: &'static str,
        /// A JSON pointer to a list of point objects.
        points: &'static str,
        /// The field that names a point's series.
        series: &'static str,
        /// The field whose values get a chart each (when the points have it).
        split: Option<&'static str>,
        x: Field,
        y: Field,
    },
    Bars {
        title: &'static str,
        /// A JSON pointer to a list of bar objects.
        bars: &'static str,
        label: &'static str,
        value: Field,
    },
}

/// One chart of a scenario: its file name is `<results stem>-<name>[-<split>-<value>].svg`.
pub struct ScenarioFigure {
    pub scenario: &'static str,
    pub name: &'static str,
    pub figure: Figure,
}

const fn field(name: &'static str, label: &'static str, scale: Scale) -> Field {
    Field { name, label, scale }
}

/// Every scenario's charts. `latency`, `multicast`, `control` and `scale` draw as soon as their
/// summaries hold these fields.
pub const FIGURES: &[ScenarioFigure] = &[
    ScenarioFigure {
        scenario: "limit",
        name: "ceilings",
        figure: Figure::Bars {
            title: "limit: each forwarder's ceiling (highest delivered rate over the sweep)",
            bars: "/summary/forwarder_ceilings",
            label: "system",
            value: field("delivered_pkt_per_s", "delivered (pkt/s)", Scale::Linear),
        },
    },
    ScenarioFigure {
        scenario: "limit",
        name: "sweep",
        figure: Figure::Lines {
            title: "limit: delivered vs offered load, one-hop forwarders",
            points: "/summary/sweep",
            series: "system",
            split: None,
            x: field("offered_pkt_per_s", "offered (pkt/s)", Scale::Linear),
            y: field("delivered_pkt_per_s", "delivered (pkt/s)", Scale::Linear),
        },
    },
    ScenarioFigure {
        scenario: "forward",
        name: "throughput",
        figure: Figure::Lines {
            title: "forward: delivered vs offered load",
            points: "/summary/sweep",
            series: "system",
            split: Some("hops"),
            x: field("offered_pkt_per_s", "offered (pkt/s)", Scale::Linear),
            y: field("delivered_pkt_per_s", "delivered (pkt/s)", Scale::Linear),
        },
    },
    ScenarioFigure {
        scenario: "latency",
        name: "cdf",
        figure: Figure::Lines {
            title: "latency: distribution per system",
            points: "/summary/cdf",
            series: "system",
            split: Some("hops"),
            x: field("percentile", "percentile", Scale::Nines),
            y: field("latency_us", "latency (µs)", Scale::Log),
        },
    },
    ScenarioFigure {
        scenario: "multicast",
        name: "goodput",
        figure: Figure::Lines {
            title: "multicast: goodput vs loss",
            points: "/summary/goodput",
            series: "system",
            split: Some("receivers"),
            x: field(
                "loss_percent",
                "packet loss on each link (%)",
                Scale::Linear,
            ),
            y: field("goodput_mbit_per_s", "goodput (Mbit/s)", Scale::Linear),
        },
    },
    ScenarioFigure {
        scenario: "control",
        name: "spf",
        figure: Figure::Lines {
            title: "control: SPF time vs topology size",
            points: "/summary/spf",
            series: "system",
            split: None,
            x: field("nodes", "nodes", Scale::Log),
            y: field("spf_us", "SPF time (µs)", Scale::Log),
        },
    },
    ScenarioFigure {
        scenario: "scale",
        name: "cores",
        figure: Figure::Lines {
            title: "scale: throughput vs cores",
            points: "/summary/scaling",
            series: "forwarder",
            split: None,
            x: field("cores", "cores", Scale::Linear),
            y: field(
                "per_core_pkt_per_s",
                "delivered per core (pkt/s)",
                Scale::Linear,
            ),
        },
    },
];

/// A chart and the name its file takes after the results' stem.
pub struct NamedChart {
    pub name: String,
    pub chart: Chart,
}

/// The charts of a scenario's JSON document (those with data; none for an unknown scenario).
pub fn charts(doc: &Value) -> Vec<NamedChart> {
    let scenario = doc["scenario"].as_str().unwrap_or_default();
    FIGURES
        .iter()
        .filter(|f| f.scenario == scenario)
        .flat_map(|f| figure_charts(doc, f))
        .collect()
}

fn figure_charts(doc: &Value, f: &ScenarioFigure) -> Vec<NamedChart> {
    match &f.figure {
        Figure::Lines {
            title,
            points,
            series,
            split,
            x,
            y,
        } => {
            let points = objects(doc, points);
            let mut charts = Vec::new();
            for part in distinct(&points, split.unwrap_or_default()) {
                let in_part: Vec<&Value> = points
                    .iter()
                    .filter(|p| text(p, split.unwrap_or_default()) == part)
                    .copied()
                    .collect();
                let series = distinct(&in_part, series)
                    .into_iter()
                    .map(|name| Series {
                        points: in_part
                            .iter()
                            .filter(|p| text(p, series) == name)
                            .filter_map(|p| Some((number(p, x.name)?, number(p, y.name)?)))
                            .collect(),
                        name,
                    })
                    .collect();
                let (name, title) = match (split, part.is_empty()) {
                    (Some(split), false) => (
                        format!("{}-{split}-{part}", f.name),
                        format!("{title} ({split} = {part})"),
                    ),
                    _ => (f.name.to_string(), title.to_string()),
                };
                charts.push(NamedChart {
                    name,
                    chart: Chart::Lines(LineChart {
                        title,
                        x: axis(x),
                        y: axis(y),
                        series,
                    }),
                });
            }
            charts
        }
        Figure::Bars {
            title,
            bars,
            label,
            value,
        } => {
            let bars: Vec<(String, f64)> = objects(doc, bars)
                .into_iter()
                .filter_map(|b| Some((text(b, label), number(b, value.name)?)))
                .collect();
            if bars.is_empty() {
                return Vec::new();
            }
            vec![NamedChart {
                name: f.name.to_string(),
                chart: Chart::Bars(BarChart {
                    title: title.to_string(),
                    value_label: value.label.to_string(),
                    bars,
                }),
            }]
        }
    }
}

fn axis(f: &Field) -> Axis {
    Axis {
        label: f.label.to_string(),
        scale: f.scale,
    }
}

fn objects<'a>(doc: &'a Value, pointer: &str) -> Vec<&'a Value> {
    doc.pointer(pointer)
        .and_then(Value::as_array)
        .map(|a| a.iter().filter(|v| v.is_object()).collect())
        .unwrap_or_default()
}

/// A field as text (`""` when missing): strings as they are, numbers as JSON writes them.
fn text(v: &Value, field: &str) -> String {
    match v.get(field) {
        None | Some(Value::Null) => String::new(),
        Some(Value::String(s)) => s.clone(),
        Some(other) => other.to_string(),
    }
}

fn number(v: &Value, field: &str) -> Option<f64> {
    v.get(field)?.as_f64()
}

/// The distinct values of a field, in order of first appearance.
fn distinct(points: &[&Value], field: &str) -> Vec<String> {
    let mut seen: Vec<String> = Vec::new();
    for p in points {
        let t = text(p, field);
        if !seen.contains(&t) {
            seen.push(t);
        }
    }
    seen
}

/// A chart file written, and its title.
pub struct WrittenChart {
    pub path: PathBuf,
    pub title: String,
}

/// Writes the document's charts as `DIR/<stem>-<name>.svg`.
pub fn write_charts(doc: &Value, dir: &Path, stem: &str) -> io::Result<Vec<WrittenChart>> {
    let mut written = Vec::new();
    for named in charts(doc) {
        let svg = named
            .chart
            .to_svg()
            .map_err(|e| io::Error::other(format!("cannot draw the {} chart: {e}", named.name)))?;
        if let Some(svg) = svg {
            let path = dir.join(format!("{stem}-{}.svg", named.name));
            std::fs::write(&path, svg)?;
            written.push(WrittenChart {
                path,
                title: named.chart.title().to_string(),
            });
        }
    }
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_split_gives_a_chart_per_value_and_a_series_per_system() {
        let doc = json!({
            "scenario": "forward",
            "summary": { "sweep": [
                { "hops": 1, "system": "threaded", "offered_pkt_per_s": 1e3, "delivered_pkt_per_s": 9e2 },
                { "hops": 1, "system": "kernel", "offered_pkt_per_s": 1e3, "delivered_pkt_per_s": 1e3 },
                { "hops": 2, "system": "threaded", "offered_pkt_per_s": 1e3, "delivered_pkt_per_s": 8e2 },
            ]}
        });
        let charts = charts(&doc);
        let names: Vec<&str> = charts.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, ["throughput-hops-1", "throughput-hops-2"]);
        let Chart::Lines(first) = &charts[0].chart else {
            panic!("a line chart")
        };
        assert_eq!(first.series.len(), 2);
        assert_eq!(first.series[0].points, [(1e3, 9e2)]);
    }

    #[test]
    fn a_document_without_the_fields_has_no_chart() {
        assert!(charts(&json!({ "scenario": "latency", "summary": {} })).is_empty());
        assert!(charts(&json!({ "scenario": "nosuch" })).is_empty());
        assert!(charts(&json!([1, 2])).is_empty());
    }
}
