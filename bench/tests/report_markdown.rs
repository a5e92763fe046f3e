//! `bench report` renders saved results into a markdown document: the tables, the charts and the
//! command, between the generated-section markers, and nothing else of the document. Synthetic
//! results: no network, no timing.

use serde_json::{Value, json};
use std::path::Path;

fn system(name: &str, median: f64, share_of_limit: Option<f64>) -> Value {
    json!({
        "name": name,
        "samples": [{ "value": median, "details": {}, "limited_by": null }],
        "median": median,
        "min": median * 0.9,
        "max": median * 1.1,
        "details": {},
        "limited_by": null,
        "ratio_to_first": median / 100_000.0,
        "limit": share_of_limit.map(|_| "kernel-recvfrom-sendto"),
        "share_of_limit": share_of_limit,
        "error": null,
    })
}

fn machine(date: &str) -> Value {
    json!({
        "cpu_model": "Example CPU @ 2.0GHz",
        "cores": 8,
        "kernel": "Linux 6.1.0 x86_64",
        "load_average": "0.10 0.20 0.30",
        "date": date,
        "git_commit": "0123456789abcdef0123456789abcdef01234567",
        "git_dirty": false,
    })
}

/// A `forward` result with a `uring` column beside the threaded engine and the kernel chain.
fn forward(date: &str, quick: bool, threaded_pkt_per_s: f64) -> Value {
    let metric =
        json!({ "name": "forwarded datagrams", "unit": "pkt/s", "higher_is_better": true });
    let comparison = |offered: &str, threaded: f64| {
        json!({
            "title": format!("1 hop(s), offered {offered}"),
            "metric": metric,
            "repetitions": 3,
            "systems": [
                system("threaded", threaded, Some(0.5)),
                system("uring", 150_000.0, Some(0.75)),
                system("kernel-recvfrom-sendto", 200_000.0, None),
            ],
        })
    };
    let point = |system: &str, offered: f64, delivered: f64| json!({ "hops": 1, "system": system, "offered_pkt_per_s": offered, "delivered_pkt_per_s": delivered });
    json!({
        "scenario": "forward",
        "command": "cargo run --release -p bench -- forward --engines threaded,uring",
        "quick": quick,
        "interrupted": false,
        "machine": machine(date),
        "settings": { "packet_bytes": 1024 },
        "comparisons": [comparison("50 kpkt/s", 50_000.0), comparison("max", threaded_pkt_per_s)],
        "summary": {
            "saturation": [{
                "hops": 1,
                "engine": "threaded",
                "delivered_pkt_per_s": threaded_pkt_per_s,
                "loss": 0.25,
                "share_of_kernel_limit": 0.5,
            }],
            "sweep": [
                point("threaded", 50e3, 50e3),
                point("threaded", 400e3, threaded_pkt_per_s),
                point("uring", 50e3, 50e3),
                point("uring", 400e3, 150e3),
                point("kernel-recvfrom-sendto", 50e3, 50e3),
                point("kernel-recvfrom-sendto", 400e3, 200e3),
            ],
        },
    })
}

/// A scenario the document has no markers for yet, with a latency distribution to draw.
fn latency() -> Value {
    let cdf: Vec<Value> = [
        (50.0, 7.0),
        (90.0, 9.0),
        (99.0, 13.0),
        (99.9, 26.0),
        (100.0, 4800.0),
    ]
    .into_iter()
    .map(|(p, us)| json!({ "system": "threaded", "percentile": p, "latency_us": us }))
    .collect();
    json!({
        "scenario": "latency",
        "command": "cargo run --release -p bench -- latency",
        "quick": false,
        "interrupted": false,
        "machine": machine("2026-11-30T12:00:00Z"),
        "settings": {},
        "comparisons": [],
        "summary": { "cdf": cdf },
    })
}

fn write(dir: &Path, name: &str, v: &Value) {
    std::fs::write(dir.join(name), serde_json::to_string_pretty(v).unwrap()).unwrap();
}

const PROSE_BEFORE: &str = "# Benchmarks\n\nHand-written: where the time goes.\n\n## `forward`\n\n";
const OLD_SECTION: &str =
    "<!-- bench report: begin forward -->\nstale table\n<!-- bench report: end forward -->";
const PROSE_AFTER: &str = "\n\nHand-written: what limits each figure.\n";

#[test]
fn the_report_renders_the_latest_results_between_the_markers_only() {
    let results = tempfile::tempdir().unwrap();
    // The latest full run wins over an older full run and a newer quick one.
    write(
        results.path(),
        "forward-old.json",
        &forward("2026-11-29T10:00:00Z", false, 11_111.0),
    );
    write(
        results.path(),
        "forward-new.json",
        &forward("2026-11-30T10:00:00Z", false, 100_000.0),
    );
    write(
        results.path(),
        "forward-quick.json",
        &forward("2026-11-30T11:00:00Z", true, 22_222.0),
    );
    write(results.path(), "latency-1.json", &latency());
    std::fs::write(results.path().join("notes.json"), "not json").unwrap();

    let docs = tempfile::tempdir().unwrap();
    let markdown = docs.path().join("BENCHMARKS.md");
    std::fs::write(
        &markdown,
        format!("{PROSE_BEFORE}{OLD_SECTION}{PROSE_AFTER}"),
    )
    .unwrap();
    // A chart of an earlier report that the latest result does not have.
    let stale = docs.path().join("bench/forward-throughput-hops-9.svg");
    std::fs::create_dir_all(stale.parent().unwrap()).unwrap();
    std::fs::write(&stale, "<svg/>").unwrap();

    let published = bench::publish::publish(results.path(), &markdown).expect("the report");
    let scenarios: Vec<&str> = published.iter().map(|p| p.scenario.as_str()).collect();
    assert_eq!(scenarios, ["forward", "latency"]);
    assert!(published[0].source.ends_with("forward-new.json"));
    assert!(!published[0].appended && published[1].appended);

    let doc = std::fs::read_to_string(&markdown).unwrap();
    // The prose around the markers is untouched, the stale generated part gone.
    assert!(doc.starts_with(PROSE_BEFORE), "{doc}");
    assert!(doc.contains(PROSE_AFTER));
    assert!(!doc.contains("stale table"));
    let begin = doc.find("<!-- bench report: begin forward -->").unwrap();
    let end = doc.find("<!-- bench report: end forward -->").unwrap();
    let forward_section = &doc[begin..end];
    assert!(doc[end..].starts_with(&format!("<!-- bench report: end forward -->{PROSE_AFTER}")));

    // The machine, the command, the summary table and a column per system (uring included).
    assert!(forward_section.contains("Example CPU @ 2.0GHz (8 cores)"));
    assert!(forward_section.contains("commit 0123456"));
    assert!(
        forward_section
            .contains("cargo run --release -p bench -- forward --engines threaded,uring")
    );
    assert!(!forward_section.contains("--quick"));
    assert!(
        forward_section
            .contains("| hops | engine | delivered_pkt_per_s | loss | share_of_kernel_limit |")
    );
    assert!(forward_section.contains("| 1 | threaded | 100k | 25.0% | 50.0% |"));
    assert!(forward_section.contains("| comparison | threaded | uring | kernel-recvfrom-sendto |"));
    assert!(forward_section.contains(
        "| 1 hop(s), offered max | 100k (90k–110k), 50% of limit | 150k (135k–165k), 1.50x, 75% of limit | 200k (180k–220k), 2.00x |"
    ));
    assert!(
        !doc.contains("11.11k") && !doc.contains("22.22k"),
        "an old or quick run was rendered"
    );

    // The charts, drawn again from the JSON beside the document and linked relative to it.
    for (chart, linked_from) in [
        ("forward-throughput-hops-1.svg", forward_section),
        ("latency-cdf.svg", &doc[end..]),
    ] {
        let svg = std::fs::read_to_string(docs.path().join("bench").join(chart)).unwrap();
        assert!(
            svg.starts_with("<svg") && svg.contains("threaded"),
            "{chart}"
        );
        assert!(
            linked_from.contains(&format!("](bench/{chart})")),
            "{chart} not linked"
        );
    }
    assert!(!stale.exists(), "an earlier report's chart is left");
    // A scenario without markers gets a heading and markers at the end.
    assert!(doc.contains("## `latency`\n\n<!-- bench report: begin latency -->"));
    assert!(
        doc.trim_end()
            .ends_with("<!-- bench report: end latency -->")
    );

    // Rendering again changes nothing.
    bench::publish::publish(results.path(), &markdown).unwrap();
    assert_eq!(std::fs::read_to_string(&markdown).unwrap(), doc);
}

#[test]
fn an_empty_results_folder_is_a_clear_error() {
    let results = tempfile::tempdir().unwrap();
    let docs = tempfile::tempdir().unwrap();
    let error = bench::publish::publish(results.path(), &docs.path().join("B.md")).unwrap_err();
    assert!(error.contains("no results"), "{error}");
    let missing = results.path().join("nosuch");
    let error = bench::publish::publish(&missing, &docs.path().join("B.md")).unwrap_err();
    assert!(error.contains("cannot read"), "{error}");
}
