//! `bench report`: renders the latest result of each scenario in a results folder into a
//! markdown document (docs/BENCHMARKS.md): the machine, the command, the tables and the charts
//! (drawn again from the JSON into `bench/` beside the document). Each scenario's part lies
//! between `<!-- bench report: begin NAME -->` and `<!-- bench report: end NAME -->`; the
//! rest of the document, its hand-written prose, is left as it is.

use crate::figures::{self, FIGURES};
use crate::report::compact;
use serde_json::Value;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

#[derive(clap::Args, Clone, Debug)]
pub struct PublishArgs {
    /// Folder of the JSON results (as written by the scenarios' --out).
    #[arg(long, value_name = "DIR", default_value = "target/bench")]
    pub results: PathBuf,
    /// The markdown document to update; the charts go to `bench/` beside it.
    #[arg(long, value_name = "FILE", default_value = "docs/BENCHMARKS.md")]
    pub out: PathBuf,
}

/// The charts' folder, beside the document: the links in it are relative to the document.
pub const CHARTS_FOLDER: &str = "bench";

pub fn main(args: &PublishArgs) -> ExitCode {
    match publish(&args.results, &args.out) {
        Ok(published) => {
            for p in &published {
                println!(
                    "{}: {} ({} chart(s)){}",
                    p.scenario,
                    p.source.display(),
                    p.charts,
                    if p.appended {
                        "; no markers for it in the document: appended at its end"
                    } else {
                        ""
                    }
                );
            }
            println!("updated {}", args.out.display());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("bench report: {e}");
            ExitCode::FAILURE
        }
    }
}

/// What was rendered for one scenario.
#[derive(Debug)]
pub struct Published {
    pub scenario: String,
    /// The JSON file it was rendered from.
    pub source: PathBuf,
    pub charts: usize,
    /// The document had no markers for this scenario: the section was added at its end.
    pub appended: bool,
}

/// Renders the latest result of each scenario in `results` into the document `markdown`
/// (created if missing) and its charts into `bench/` beside it.
pub fn publish(results: &Path, markdown: &Path) -> Result<Vec<Published>, String> {
    let latest = latest_results(results)?;
    if latest.is_empty() {
        return Err(format!(
            "no results in {}: run a scenario first (bench <scenario> --out {0})",
            results.display()
        ));
    }
    let mut doc = match std::fs::read_to_string(markdown) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => "# Benchmarks\n".to_string(),
        Err(e) => return Err(format!("cannot read {}: {e}", markdown.display())),
    };
    let charts_dir = markdown
        .parent()
        .unwrap_or(Path::new(""))
        .join(CHARTS_FOLDER);
    std::fs::create_dir_all(&charts_dir)
        .map_err(|e| format!("cannot create {}: {e}", charts_dir.display()))?;
    let mut published = Vec::new();
    for (source, result) in latest {
        let scenario = result["scenario"].as_str().unwrap_or_default().to_string();
        remove_charts(&charts_dir, &scenario)?;
        let charts = figures::write_charts(&result, &charts_dir, &scenario)
            .map_err(|e| format!("cannot write the {scenario} charts: {e}"))?;
        let links: Vec<(String, String)> = charts
            .iter()
            .map(|c| {
                let file = c.path.file_name().unwrap_or_default().to_string_lossy();
                (c.title.clone(), format!("{CHARTS_FOLDER}/{file}"))
            })
            .collect();
        let source_name = source.file_name().unwrap_or_default().to_string_lossy();
        let section = section(&result, &source_name, &links);
        let appended;
        (doc, appended) = splice(&doc, &scenario, &section)?;
        published.push(Published {
            scenario,
            source,
            charts: charts.len(),
            appended,
        });
    }
    std::fs::write(markdown, doc)
        .map_err(|e| format!("cannot write {}: {e}", markdown.display()))?;
    Ok(published)
}

/// Removes the scenario's charts of an earlier report (`<scenario>-*.svg`), which the new
/// result may not have (a shorter sweep, a chart renamed).
fn remove_charts(dir: &Path, scenario: &str) -> Result<(), String> {
    let entries =
        std::fs::read_dir(dir).map_err(|e| format!("cannot read {}: {e}", dir.display()))?;
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with(&format!("{scenario}-")) && name.ends_with(".svg") {
            std::fs::remove_file(entry.path())
                .map_err(|e| format!("cannot remove {}: {e}", entry.path().display()))?;
        }
    }
    Ok(())
}

/// Per scenario, its latest full run (or its latest `--quick` run when it has no full run), in
/// the order of `FIGURES`, then by name.
fn latest_results(dir: &Path) -> Result<Vec<(PathBuf, Value)>, String> {
    let entries =
        std::fs::read_dir(dir).map_err(|e| format!("cannot read {}: {e}", dir.display()))?;
    let mut best: Vec<(PathBuf, Value)> = Vec::new();
    for entry in entries {
        let path = entry
            .map_err(|e| format!("cannot read {}: {e}", dir.display()))?
            .path();
        if path.extension().is_none_or(|e| e != "json") {
            continue;
        }
        let parsed = std::fs::read_to_string(&path)
            .map_err(|e| e.to_string())
            .and_then(|t| serde_json::from_str::<Value>(&t).map_err(|e| e.to_string()));
        let result = match parsed {
            Ok(v) if v["scenario"].is_string() => v,
            Ok(_) => continue, // some other JSON file
            Err(e) => {
                eprintln!("bench report: skipping {}: {e}", path.display());
                continue;
            }
        };
        let rank = |(p, v): &(PathBuf, Value)| {
            (
                v["quick"] != Value::Bool(true),
                v["machine"]["date"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
                p.clone(),
            )
        };
        let candidate = (path, result);
        match best
            .iter_mut()
            .find(|(_, v)| v["scenario"] == candidate.1["scenario"])
        {
            Some(current) if rank(current) < rank(&candidate) => *current = candidate,
            Some(_) => {}
            None => best.push(candidate),
        }
    }
    let order = |v: &Value| {
        let name = v["scenario"].as_str().unwrap_or_default().to_string();
        let known = FIGURES.iter().position(|f| f.scenario == name);
        (known.unwrap_or(usize::MAX), name)
    };
    best.sort_by_key(|(_, v)| order(v));
    Ok(best)
}

fn begin_marker(scenario: &str) -> String {
    format!("<!-- bench report: begin {scenario} -->")
}

fn end_marker(scenario: &str) -> String {
    format!("<!-- bench report: end {scenario} -->")
}

/// The document with `section` between the scenario's markers (added at the end, under a
/// heading, when it has none), and whether it was added.
fn splice(doc: &str, scenario: &str, section: &str) -> Result<(String, bool), String> {
    let (begin, end) = (begin_marker(scenario), end_marker(scenario));
    let generated = format!("{begin}\n{section}{end}");
    let Some(start) = doc.find(&begin) else {
        let mut doc = doc.trim_end().to_string();
        write!(doc, "\n\n## `{scenario}`\n\n{generated}\n").expect("write to a String");
        return Ok((doc, true));
    };
    let stop = doc[start..]
        .find(&end)
        .map(|i| start + i + end.len())
        .ok_or_else(|| format!("the document has `{begin}` but no `{end}` after it"))?;
    Ok((
        format!("{}{generated}{}", &doc[..start], &doc[stop..]),
        false,
    ))
}

/// The generated part of one scenario: where and how it was measured, its summary tables,
/// its charts and every comparison.
fn section(result: &Value, source: &str, charts: &[(String, String)]) -> String {
    let mut out = String::new();
    let w = &mut out;
    let machine = &result["machine"];
    let text = |v: &Value| v.as_str().unwrap_or("unknown").to_string();
    let commit = machine["git_commit"]
        .as_str()
        .map_or("unknown".to_string(), |c| {
            c.get(..7).unwrap_or(c).to_string()
        });
    let dirty = if machine["git_dirty"] == Value::Bool(true) {
        " (with uncommitted changes)"
    } else {
        ""
    };
    let _ = writeln!(
        w,
        "<!-- Written by `bench report` from {source}: edit outside the markers. -->\n"
    );
    let _ = writeln!(
        w,
        "Measured {} at commit {commit}{dirty} on {} ({} cores), {}; load average {} at the start.\n",
        text(&machine["date"]),
        text(&machine["cpu_model"]),
        machine["cores"],
        text(&machine["kernel"]),
        text(&machine["load_average"]),
    );
    let command = result["command"].as_str().unwrap_or("(not recorded)");
    let _ = writeln!(w, "```sh\n{command}\n```\n");
    for warning in warnings(result) {
        let _ = writeln!(w, "> **{warning}**\n");
    }
    summary_tables(w, result);
    for (title, link) in charts {
        let _ = writeln!(w, "![{title}]({link})\n");
    }
    comparison_tables(w, result);
    out
}

/// What a reader must know before quoting the figures.
fn warnings(result: &Value) -> Vec<String> {
    let mut warnings = Vec::new();
    if result["quick"] == Value::Bool(true) {
        warnings.push(
            "A `--quick` run: it shows that the scenario works; its figures are not to be quoted."
                .into(),
        );
    }
    if result["interrupted"] == Value::Bool(true) {
        warnings.push("Interrupted (Ctrl-C): only part of the run was measured.".into());
    }
    let load = result["machine"]["load_average"]
        .as_str()
        .and_then(|l| l.split_whitespace().next())
        .and_then(|l| l.parse::<f64>().ok());
    let cores = result["machine"]["cores"].as_f64();
    if let (Some(load), Some(cores)) = (load, cores)
        && load > cores / 2.0
    {
        warnings.push(format!(
            "The machine was busy (load average {load} on {cores} cores): indicative figures, rerun on a quiet machine before quoting."
        ));
    }
    warnings
}

/// The summary's lists of objects, one table each, except those only drawn (the charts' points).
fn summary_tables(w: &mut String, result: &Value) {
    let Some(summary) = result["summary"].as_object() else {
        return;
    };
    let scenario = result["scenario"].as_str().unwrap_or_default();
    let drawn_only: Vec<&str> = FIGURES
        .iter()
        .filter(|f| f.scenario == scenario)
        .filter_map(|f| match f.figure {
            figures::Figure::Lines { points, .. } => points.strip_prefix("/summary/"),
            figures::Figure::Bars { .. } => None,
        })
        .collect();
    for (key, value) in summary {
        let Some(rows) = value.as_array() else {
            continue;
        };
        let rows: Vec<&serde_json::Map<String, Value>> =
            rows.iter().filter_map(Value::as_object).collect();
        if rows.is_empty() || drawn_only.contains(&key.as_str()) {
            continue;
        }
        let mut columns: Vec<&str> = Vec::new();
        for row in &rows {
            for k in row.keys() {
                if !columns.contains(&k.as_str()) {
                    columns.push(k);
                }
            }
        }
        let _ = writeln!(w, "`summary.{key}`:\n");
        let _ = writeln!(w, "| {} |", columns.join(" | "));
        let _ = writeln!(w, "|{}", "---|".repeat(columns.len()));
        for row in rows {
            let cells: Vec<String> = columns
                .iter()
                .map(|c| summary_cell(c, row.get(*c).unwrap_or(&Value::Null)))
                .collect();
            let _ = writeln!(w, "| {} |", cells.join(" | "));
        }
        let _ = writeln!(w);
    }
}

/// A summary value: fractions named `loss` or `share…` as percentages, numbers compact.
fn summary_cell(column: &str, v: &Value) -> String {
    match v {
        Value::Null => "-".into(),
        Value::String(s) => s.clone(),
        Value::Number(n) => {
            let x = n.as_f64().unwrap_or(f64::NAN);
            if column == "loss" || column.starts_with("share") {
                format!("{:.1}%", x * 100.0)
            } else if column.ends_with("_percent") {
                format!("{}%", compact(x))
            } else {
                compact(x)
            }
        }
        other => other.to_string(),
    }
}

/// Every comparison: consecutive comparisons of the same metric and systems share a table, one
/// row per comparison and one column per system, so that a new system (the `uring` engine) is
/// one more column.
fn comparison_tables(w: &mut String, result: &Value) {
    let comparisons: Vec<&Value> = result["comparisons"]
        .as_array()
        .map(|a| a.iter().collect())
        .unwrap_or_default();
    if comparisons.is_empty() {
        return;
    }
    let _ = writeln!(
        w,
        "<details><summary>Every comparison: median (min–max) over the repetitions, the ratio to the first system, the share of the kernel limit</summary>\n"
    );
    let shape = |c: &Value| (c["metric"].clone(), system_names(c));
    let mut i = 0;
    while i < comparisons.len() {
        let group_shape = shape(comparisons[i]);
        let group: Vec<&Value> = comparisons[i..]
            .iter()
            .take_while(|c| shape(c) == group_shape)
            .copied()
            .collect();
        i += group.len();
        comparison_table(w, &group);
    }
    let _ = writeln!(w, "</details>\n");
}

fn system_names(comparison: &Value) -> Vec<String> {
    comparison["systems"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|s| s["name"].as_str().unwrap_or_default().to_string())
        .collect()
}

fn comparison_table(w: &mut String, group: &[&Value]) {
    let metric = &group[0]["metric"];
    let better = if metric["higher_is_better"] == Value::Bool(false) {
        "lower"
    } else {
        "higher"
    };
    let _ = writeln!(
        w,
        "{} in {} ({better} is better), {} repetition(s):\n",
        metric["name"].as_str().unwrap_or("value"),
        metric["unit"].as_str().unwrap_or(""),
        group[0]["repetitions"],
    );
    let names = system_names(group[0]);
    let _ = writeln!(w, "| comparison | {} |", names.join(" | "));
    let _ = writeln!(w, "|---|{}", "---|".repeat(names.len()));
    for comparison in group {
        let cells: Vec<String> = comparison["systems"]
            .as_array()
            .into_iter()
            .flatten()
            .enumerate()
            .map(|(i, s)| system_cell(s, i == 0))
            .collect();
        let _ = writeln!(
            w,
            "| {} | {} |",
            comparison["title"].as_str().unwrap_or_default(),
            cells.join(" | ")
        );
    }
    let _ = writeln!(w);
}

/// `289k (280k–295k), 1.12x, 89% of limit`; `failed: why` for a system that could not run.
fn system_cell(s: &Value, first: bool) -> String {
    let number = |k: &str| s[k].as_f64().filter(|v| v.is_finite());
    let mut cell = match (number("median"), number("min"), number("max")) {
        (Some(median), Some(min), Some(max)) => {
            format!("{} ({}–{})", compact(median), compact(min), compact(max))
        }
        _ => "-".to_string(),
    };
    if let (false, Some(r)) = (first, number("ratio_to_first")) {
        let _ = write!(cell, ", {r:.2}x");
    }
    if let Some(share) = number("share_of_limit") {
        let _ = write!(cell, ", {:.0}% of limit", share * 100.0);
    }
    if let Some(e) = s["error"].as_str() {
        let _ = write!(cell, " failed: {}", e.replace('|', "/"));
    }
    cell
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splice_replaces_between_the_markers_only() {
        let doc =
            "intro\n<!-- bench report: begin a -->\nold\n<!-- bench report: end a -->\nafter\n";
        let (new, appended) = splice(doc, "a", "new\n").unwrap();
        assert!(!appended);
        assert_eq!(
            new,
            "intro\n<!-- bench report: begin a -->\nnew\n<!-- bench report: end a -->\nafter\n"
        );
        let (twice, _) = splice(&new, "a", "new\n").unwrap();
        assert_eq!(twice, new);
    }

    #[test]
    fn a_scenario_without_markers_is_appended_and_a_lone_begin_refused() {
        let (new, appended) = splice("intro\n", "b", "x\n").unwrap();
        assert!(appended);
        assert!(new.starts_with("intro\n\n## `b`\n\n<!-- bench report: begin b -->\nx\n"));
        assert!(splice("<!-- bench report: begin b -->", "b", "x").is_err());
    }

    #[test]
    fn summary_cells() {
        assert_eq!(summary_cell("loss", &serde_json::json!(0.28)), "28.0%");
        assert_eq!(
            summary_cell("share_of_kernel_limit", &serde_json::json!(0.891)),
            "89.1%"
        );
        assert_eq!(summary_cell("loss_percent", &serde_json::json!(5)), "5%");
        assert_eq!(
            summary_cell("delivered_pkt_per_s", &serde_json::json!(161_234.5)),
            "161.2k"
        );
        assert_eq!(summary_cell("limited_by", &Value::Null), "-");
    }
}
