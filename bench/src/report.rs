//! Results for people (tables on stdout) and for programs (one JSON file per run).

use crate::machine::Machine;
use crate::runner::ComparisonResult;
use serde::Serialize;
use std::io;
use std::path::{Path, PathBuf};

/// The JSON document a scenario run writes.
#[derive(Debug, Serialize)]
pub struct Report {
    pub scenario: String,
    /// The command line that ran it (`cargo run --release -p bench -- …`).
    pub command: String,
    pub quick: bool,
    /// Ctrl-C ended the run early: what is here was measured, the rest was not.
    pub interrupted: bool,
    pub machine: Machine,
    /// The scenario's fixed parameters (packet size, durations, …).
    pub settings: serde_json::Value,
    pub comparisons: Vec<ComparisonResult>,
    /// Scenario-specific conclusions drawn from the comparisons (e.g. saturation points).
    pub summary: serde_json::Value,
}

/// The files a run wrote.
pub struct Written {
    pub json: PathBuf,
    pub charts: Vec<PathBuf>,
}

impl Report {
    /// Writes `DIR/<scenario>-<date>.json` and, beside it, the scenario's charts drawn from it
    /// (`<same stem>-<chart>.svg`, figures.rs).
    pub fn write(&self, dir: &Path) -> io::Result<Written> {
        std::fs::create_dir_all(dir)?;
        let stamp: String = self
            .machine
            .date
            .chars()
            .filter(|c| *c != ':' && *c != '-')
            .collect();
        let path = dir.join(format!("{}-{stamp}.json", self.scenario));
        let doc = serde_json::to_value(self).map_err(io::Error::other)?;
        let json = serde_json::to_string_pretty(&doc).map_err(io::Error::other)?;
        std::fs::write(&path, json + "\n")?;
        let stem = format!("{}-{stamp}", self.scenario);
        let charts = crate::figures::write_charts(&doc, dir, &stem)?
            .into_iter()
            .map(|c| c.path)
            .collect();
        Ok(Written { json: path, charts })
    }
}

/// `1234567.0, "pkt/s"` → `1.235 Mpkt/s`; rates get SI prefixes, other units none.
pub fn si(value: f64, unit: &str) -> String {
    if !value.is_finite() {
        return format!("- {unit}");
    }
    if !unit.ends_with("/s") {
        return format!("{value:.3} {unit}");
    }
    let (scaled, prefix) = match value.abs() {
        v if v >= 1e9 => (value / 1e9, "G"),
        v if v >= 1e6 => (value / 1e6, "M"),
        v if v >= 1e3 => (value / 1e3, "k"),
        _ => (value, ""),
    };
    format!("{scaled:.3} {prefix}{unit}")
}

/// A chart label: `1500000.0` → `1.5M`, `289000.0` → `289k`, `0.25` → `0.25`.
pub fn compact(value: f64) -> String {
    let (scaled, suffix) = match value.abs() {
        v if v >= 1e9 => (value / 1e9, "G"),
        v if v >= 1e6 => (value / 1e6, "M"),
        v if v >= 1e3 => (value / 1e3, "k"),
        _ => (value, ""),
    };
    // About four significant digits.
    let decimals = match scaled.abs() {
        v if v >= 100.0 => 1,
        v if v >= 10.0 => 2,
        _ => 3,
    };
    let digits = format!("{scaled:.decimals$}");
    let digits = if digits.contains('.') {
        digits.trim_end_matches('0').trim_end_matches('.')
    } else {
        &digits
    };
    format!("{digits}{suffix}")
}

fn ratio(x: f64) -> String {
    if x.is_finite() {
        format!("{x:.2}x")
    } else {
        "-".into()
    }
}

/// The summary table of one comparison.
pub fn print_comparison(r: &ComparisonResult) {
    let better = if r.metric.higher_is_better {
        "higher"
    } else {
        "lower"
    };
    println!(
        "\n== {} — {} in {} ({better} is better), {} repetition(s) ==",
        r.title, r.metric.name, r.metric.unit, r.repetitions
    );
    let first = r.systems.first().map_or("", |s| s.name.as_str());
    println!(
        "{:<30} {:>16} {:>16} {:>16} {:>9} {:>9}",
        "system",
        "median",
        "min",
        "max",
        format!("/{}", abbreviate(first)),
        "/limit"
    );
    for s in &r.systems {
        println!(
            "{:<30} {:>16} {:>16} {:>16} {:>9} {:>9}",
            s.name,
            si(s.median, r.metric.unit),
            si(s.min, r.metric.unit),
            si(s.max, r.metric.unit),
            ratio(s.ratio_to_first),
            s.share_of_limit
                .map_or("-".into(), |x| format!("{:.0}%", x * 100.0)),
        );
        let details: Vec<String> = s
            .details
            .iter()
            .map(|(k, v)| format!("{k} {}", plain(*v)))
            .collect();
        if !details.is_empty() {
            println!("    {}", details.join(", "));
        }
        if let Some(e) = &s.error {
            println!("    failed: {e}");
        }
        if let Some(l) = &s.limited_by {
            println!("    limited by: {l}");
        }
        if let Some(l) = &s.limit {
            println!("    kernel limit row: {l}");
        }
    }
}

fn abbreviate(name: &str) -> &str {
    name.get(..8).unwrap_or(name)
}

/// A detail value: integers as such, others with 3 significant decimals.
fn plain(v: f64) -> String {
    if v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{v:.0}")
    } else if v.abs() >= 100.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.3}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn si_prefixes() {
        assert_eq!(si(1_234_567.0, "pkt/s"), "1.235 Mpkt/s");
        assert_eq!(si(12_345.0, "us"), "12345.000 us");
        assert_eq!(si(f64::NAN, "us"), "- us");
        assert_eq!(compact(1_500_000.0), "1.5M");
        assert_eq!(compact(289_000.0), "289k");
        assert_eq!(compact(0.25), "0.25");
        assert_eq!(compact(161_234.5), "161.2k");
        assert_eq!(compact(-20.0), "-20");
    }
}
