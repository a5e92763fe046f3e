//! Every scenario runs with `--quick` and writes valid JSON with the expected keys, and its
//! charts as SVG beside it. No figure is checked: a shared machine makes timings meaningless as
//! assertions.

use serde_json::Value;
use std::path::Path;
use std::process::Command;

fn bench() -> Command {
    Command::new(env!("CARGO_BIN_EXE_bench"))
}

/// Runs `scenario --quick` into a fresh folder and returns the JSON it wrote (its charts, if
/// any, checked to be SVG documents).
#[allow(dead_code)] // for the scenarios whose charts are not checked by name
fn run_quick(scenario: &str) -> Value {
    run_quick_with_charts(scenario).0
}

/// `run_quick`, and the names of the charts written beside the JSON (after its stem: `sweep`,
/// `throughput-hops-1`, …).
fn run_quick_with_charts(scenario: &str) -> (Value, Vec<String>) {
    let out = tempfile::tempdir().expect("a temporary folder");
    let output = bench()
        .args([scenario, "--quick", "--out"])
        .arg(out.path())
        .output()
        .expect("run the bench binary");
    assert!(
        output.status.success(),
        "bench {scenario} --quick failed:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let files = json_files(out.path());
    assert_eq!(files.len(), 1, "one JSON file per run: {files:?}");
    let text = std::fs::read_to_string(&files[0]).expect("read the results");
    let json = serde_json::from_str(&text).expect("valid JSON");
    let stem = files[0].file_stem().expect("a file name").to_string_lossy();
    let charts = chart_names(out.path(), &stem);
    (json, charts)
}

fn chart_names(dir: &Path, stem: &str) -> Vec<String> {
    let mut names = Vec::new();
    for entry in std::fs::read_dir(dir).expect("list the output folder") {
        let path = entry.expect("a folder entry").path();
        if path.extension().is_none_or(|e| e != "svg") {
            continue;
        }
        let svg = std::fs::read_to_string(&path).expect("read a chart");
        assert!(
            svg.starts_with("<svg") || svg.starts_with("<?xml"),
            "{} is not SVG",
            path.display()
        );
        assert!(
            svg.trim_end().ends_with("</svg>"),
            "{} is cut",
            path.display()
        );
        let name = path.file_stem().expect("a file name").to_string_lossy();
        let chart = name
            .strip_prefix(stem)
            .and_then(|n| n.strip_prefix('-'))
            .unwrap_or_else(|| panic!("{name} is not named after {stem}"));
        names.push(chart.to_string());
    }
    names
}

fn json_files(dir: &Path) -> Vec<std::path::PathBuf> {
    std::fs::read_dir(dir)
        .expect("list the output folder")
        .map(|e| e.expect("a folder entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect()
}

fn has_keys(v: &Value, keys: &[&str], what: &str) {
    for k in keys {
        assert!(v.get(k).is_some(), "{what} has no `{k}`: {v:#}");
    }
}

fn check_report(v: &Value, scenario: &str) {
    has_keys(
        v,
        &[
            "scenario",
            "command",
            "quick",
            "interrupted",
            "machine",
            "settings",
            "comparisons",
            "summary",
        ],
        "the report",
    );
    assert_eq!(v["scenario"], scenario);
    let command = v["command"].as_str().expect("the command is text");
    assert!(
        command.starts_with(&format!(
            "cargo run --release -p bench -- {scenario} --quick"
        )),
        "{command}"
    );
    assert_eq!(v["quick"], true);
    assert_eq!(v["interrupted"], false);
    has_keys(
        &v["machine"],
        &[
            "cpu_model",
            "cores",
            "kernel",
            "load_average",
            "date",
            "git_commit",
        ],
        "the machine",
    );
    let comparisons = v["comparisons"].as_array().expect("comparisons is a list");
    assert!(!comparisons.is_empty());
    for c in comparisons {
        has_keys(
            c,
            &["title", "metric", "repetitions", "systems"],
            "a comparison",
        );
        has_keys(
            &c["metric"],
            &["name", "unit", "higher_is_better"],
            "a metric",
        );
        let systems = c["systems"].as_array().expect("systems is a list");
        assert!(!systems.is_empty());
        for s in systems {
            has_keys(
                s,
                &[
                    "name",
                    "samples",
                    "median",
                    "min",
                    "max",
                    "ratio_to_first",
                    "share_of_limit",
                ],
                "a system",
            );
            assert!(!s["samples"].as_array().expect("samples").is_empty());
        }
    }
}

fn system_names(v: &Value) -> Vec<String> {
    v["comparisons"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|c| c["systems"].as_array().into_iter().flatten())
        .filter_map(|s| s["name"].as_str().map(str::to_string))
        .collect()
}

#[test]
fn limit_quick_writes_every_forwarder_and_the_ping_pong() {
    let (v, charts) = run_quick_with_charts("limit");
    check_report(&v, "limit");
    for chart in ["ceilings", "sweep"] {
        assert!(
            charts.iter().any(|c| c == chart),
            "no {chart} chart in {charts:?}"
        );
    }
    let names = system_names(&v);
    for name in [
        "kernel-recvfrom-sendto",
        "kernel-recvmmsg-sendmmsg",
        "kernel-io_uring-multishot",
        "kernel-gro-gso",
        "kernel-rtt-blocking-recv",
        "kernel-rtt-busy-poll",
    ] {
        assert!(
            names.iter().any(|n| n == name),
            "no {name} row in {names:?}"
        );
    }
}

#[test]
fn forward_quick_writes_each_engine_beside_the_kernel_chain() {
    let (v, charts) = run_quick_with_charts("forward");
    check_report(&v, "forward");
    for chart in ["throughput-hops-1", "throughput-hops-2"] {
        assert!(
            charts.iter().any(|c| c == chart),
            "no {chart} chart in {charts:?}"
        );
    }
    let names = system_names(&v);
    assert!(names.iter().any(|n| n == "threaded"));
    assert!(names.iter().any(|n| n == "kernel-recvfrom-sendto"));
    // The sink node, the instrument, counts every benchmark datagram it takes from its socket
    // (it once handed them to a control thread that dropped most): at most the few routing
    // packets go uncounted, at every load and for every engine.
    let engine_samples = v["comparisons"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|c| c["systems"].as_array().into_iter().flatten())
        .filter(|s| !s["name"].as_str().unwrap_or("").starts_with("kernel-"))
        .flat_map(|s| s["samples"].as_array().into_iter().flatten());
    let mut checked = 0;
    for sample in engine_samples {
        let uncounted = sample["details"]["sink_received_not_counted"]
            .as_f64()
            .expect("the sink's uncounted datagrams");
        assert!(
            uncounted <= 50.0,
            "the sink lost datagrams inside: {sample:#}"
        );
        checked += 1;
    }
    assert!(checked > 0);
    has_keys(
        &v["summary"]["sweep"][0],
        &["hops", "system", "offered_pkt_per_s", "delivered_pkt_per_s"],
        "a sweep point",
    );
    let saturation = v["summary"]["saturation"]
        .as_array()
        .expect("saturation points");
    assert!(!saturation.is_empty());
    has_keys(
        &saturation[0],
        &[
            "hops",
            "engine",
            "delivered_pkt_per_s",
            "loss",
            "kernel_limit_pkt_per_s",
        ],
        "a saturation point",
    );
}

#[test]
fn latency_quick_writes_percentiles_loss_and_cdf_beside_the_kernel_chain() {
    let v = run_quick("latency");
    check_report(&v, "latency");
    let names = system_names(&v);
    for name in [
        "threaded",
        "threaded-busy-poll-end",
        "uring",
        "uring-busy-poll",
        "kernel-recvfrom-sendto",
        "kernel-recvfrom-sendto-busy-poll",
    ] {
        assert!(
            names.iter().any(|n| n == name),
            "no {name} row in {names:?}"
        );
    }
    let rows = v["summary"]["latency"].as_array().expect("latency rows");
    assert!(!rows.is_empty());
    for row in rows {
        has_keys(
            row,
            &[
                "hops",
                "load",
                "rate_pkt_per_s",
                "system",
                "probes_sent",
                "lost",
                "p50_us",
                "p99_us",
                "p99_9_us",
                "max_us",
                "p50_over_limit",
                "cdf",
            ],
            "a latency row",
        );
        let sent = row["probes_sent"].as_u64().expect("a count");
        assert!(sent > 0);
        // At 1,000 probes/s every path delivers: a path that loses them all is broken (as the
        // engine's was while its RMTP layer swallowed the probes).
        if row["load"] == "low" {
            assert!(
                row["lost"].as_u64().expect("a count") < sent,
                "every probe lost: {row:#}"
            );
        }
        let cdf = row["cdf"].as_array().expect("CDF points");
        assert!(!cdf.is_empty());
        has_keys(&cdf[0], &["quantile", "us"], "a CDF point");
    }
    // The low load and the engine's half saturation (found by the sweep) are both measured.
    let loads: Vec<&str> = rows.iter().filter_map(|r| r["load"].as_str()).collect();
    assert!(loads.contains(&"low"), "{loads:?}");
    assert!(
        loads.iter().any(|l| l.starts_with("half-saturation")),
        "{loads:?}"
    );
    let saturation = v["summary"]["saturation"].as_array().expect("saturation");
    has_keys(
        &saturation[0],
        &[
            "engine",
            "hops",
            "saturation_pkt_per_s",
            "half_pkt_per_s",
            "sweep",
        ],
        "a saturation point",
    );
    has_keys(
        &saturation[0]["sweep"][0],
        &["offered_pkt_per_s", "delivered_pkt_per_s"],
        "a sweep point",
    );
}

#[test]
fn scale_quick_writes_per_core_figures_with_uring_rows_and_skips_engines_without_cores() {
    let v = run_quick("scale");
    check_report(&v, "scale");
    let points = v["summary"]["scaling"].as_array().expect("scaling points");
    assert!(!points.is_empty());
    for p in points {
        has_keys(
            p,
            &[
                "forwarder",
                "cores",
                "per_core_pkt_per_s",
                "total_pkt_per_s",
                "efficiency",
            ],
            "a scaling point",
        );
    }
    assert_eq!(points[0]["cores"], 1);
    // The uring engine is a row, beside the bare cells, with its ratio to them.
    assert!(
        points.iter().any(|p| p["forwarder"] == "uring"),
        "{points:?}"
    );
    let ratios = v["summary"]["engine_vs_bare"].as_array().expect("ratios");
    assert!(
        ratios
            .iter()
            .any(|r| r["engine"] == "uring" && r["ratio"].is_f64())
    );
    // The tree rows: steered at every worker count, hand-off from two workers on.
    let trees = v["summary"]["trees"].as_array().expect("tree rows");
    let cores = v["settings"]["cores"].as_array().expect("cores").len();
    let rows = |mode: &str| trees.iter().filter(|t| t["forwarder"] == mode).count();
    assert_eq!(rows("uring-steered"), cores, "{trees:?}");
    assert_eq!(rows("uring-hand-off"), cores - 1, "{trees:?}");
    let engines = v["summary"]["engines"].as_array().expect("engine notes");
    let threaded = engines
        .iter()
        .find(|e| e["engine"] == "threaded")
        .expect("the threaded engine is listed");
    assert_eq!(threaded["measured"], false);
    assert!(threaded["note"].as_str().is_some_and(|n| !n.is_empty()));
}

#[test]
fn control_quick_writes_spf_convergence_and_snapshot_figures() {
    let v = run_quick("control");
    check_report(&v, "control");
    let titles: Vec<&str> = v["comparisons"]
        .as_array()
        .expect("comparisons")
        .iter()
        .filter_map(|c| c["title"].as_str())
        .collect();
    for part in ["SPF", "link cut", "worker", "publishing"] {
        assert!(
            titles.iter().any(|t| t.contains(part)),
            "no {part} comparison in {titles:?}"
        );
    }
    // Every SPF run found a route to every other node of the (connected) topology, and the
    // worker found every route it looked up.
    for c in v["comparisons"].as_array().expect("comparisons") {
        for s in c["systems"].as_array().expect("systems") {
            let details = &s["details"];
            if let (Some(nodes), Some(routes)) = (
                details["nodes"].as_f64(),
                details["routes_per_table"].as_f64(),
            ) {
                assert_eq!(routes, nodes - 1.0, "{}", s["name"]);
            }
            if let Some(misses) = details["misses"].as_f64() {
                assert_eq!(misses, 0.0, "{}", s["name"]);
            }
        }
    }
    let summary = &v["summary"];
    has_keys(
        summary,
        &["spf_us", "convergence", "worker_slowdown", "publish_us"],
        "the summary",
    );
    let convergence = summary["convergence"].as_array().expect("convergence");
    assert!(!convergence.is_empty());
    has_keys(
        &convergence[0],
        &["system", "virtual_ms_median", "wall_ms_after_cut_median"],
        "a convergence point",
    );
    let slowdown = summary["worker_slowdown"].as_array().expect("slowdowns");
    assert!(!slowdown.is_empty());
    has_keys(&slowdown[0], &["system", "slowdown"], "a slowdown");
}

#[test]
fn multicast_quick_writes_each_engine_beside_the_kernel_fanout_the_disk_and_a_bare_copy() {
    // The scenario runs the `burghers` executable beside the bench's (it builds it first when
    // run under cargo, as here).
    let v = run_quick("multicast");
    check_report(&v, "multicast");
    let names = system_names(&v);
    assert!(names.iter().any(|n| n == "threaded"));
    assert!(names.iter().any(|n| n == "kernel-udp-fanout"));
    assert!(names.iter().any(|n| n == "disk-write"));
    let disk = v["comparisons"][0]["systems"]
        .as_array()
        .expect("systems")
        .iter()
        .find(|s| s["name"] == "disk-write")
        .expect("a disk-write row");
    assert!(
        disk["median"].as_f64().is_some_and(|g| g > 0.0),
        "the disk wrote nothing: {disk}"
    );
    // The least work of a verified copy: every copy hashed, written and checked, its CPU
    // measured.
    let bare = v["comparisons"][0]["systems"]
        .as_array()
        .expect("systems")
        .iter()
        .find(|s| s["name"] == "verified-copy")
        .expect("a verified-copy row");
    assert!(
        bare["median"].as_f64().is_some_and(|g| g > 0.0) && bare["error"].is_null(),
        "no verified copy: {bare}"
    );
    let sample = &bare["samples"][0]["details"];
    assert!(sample["copies_verified"].as_f64().is_some_and(|n| n >= 1.0));
    assert!(sample["cpu_s_per_gb"].as_f64().is_some_and(|c| c > 0.0));
    // The cores over that CPU: a ceiling for every system that verifies and writes copies.
    assert!(sample["ceiling_b_per_s"].as_f64().is_some_and(|c| c > 0.0));
    has_keys(
        &v["settings"],
        &["file_bytes", "receivers", "shapes", "loss_per_link", "uftp"],
        "the settings",
    );
    // Every system's copies went to freshly freed pages (not `--cold-pages`).
    assert!(
        v["settings"]["page_cache"]
            .as_str()
            .is_some_and(|p| p.starts_with("warmed")),
        "{}",
        v["settings"]
    );
    let threaded = v["comparisons"]
        .as_array()
        .expect("comparisons")
        .iter()
        .flat_map(|c| c["systems"].as_array().expect("systems"))
        .find(|s| s["name"] == "threaded")
        .expect("a threaded row");
    has_keys(
        &threaded["details"],
        &[
            "time_to_last_copy_s",
            "cpu_s_per_gb",
            "repair_share",
            "copies_verified",
        ],
        "the threaded row's details",
    );
    let transfers = v["summary"]["transfers"].as_array().expect("transfers");
    assert!(!transfers.is_empty());
    has_keys(
        &transfers[0],
        &[
            "transfer",
            "system",
            "goodput_slowest_b_per_s",
            "time_to_last_copy_s",
            "cpu_s_per_gb",
            "repair_share",
            "nack_aggregation",
            "share_of_kernel_limit",
            "share_of_disk_limit",
        ],
        "a transfer row",
    );
}

#[test]
fn sink_quick_measures_every_write_path_and_each_copy_hashes_right() {
    let v = run_quick("sink");
    check_report(&v, "sink");
    let systems = v["comparisons"][0]["systems"].as_array().expect("systems");
    let names: Vec<&str> = systems.iter().filter_map(|s| s["name"].as_str()).collect();
    assert_eq!(
        names,
        [
            "staged (FileSink)",
            "staged, ring writes",
            "staged, hash staging",
            "staged, hash mapped file",
            "from-buffers, hash payloads",
            "from-buffers, hash mapped file",
        ]
    );
    // A copy whose hash differs from the file's is an error, not a sample: every row has one.
    for s in systems {
        assert!(s["error"].is_null(), "{}: {}", s["name"], s["error"]);
        assert!(s["median"].as_f64().is_some_and(|m| m > 0.0), "{s}");
        assert!(
            s["details"]["bytes_per_s"]
                .as_f64()
                .is_some_and(|b| b > 0.0)
        );
    }
}

#[test]
fn bad_arguments_get_a_clear_error() {
    for args in [
        &["nosuch"][..],
        &["limit", "--bogus"],
        &["forward", "--engines", "warp"],
        &["report", "--bogus"],
        &["latency", "--engines", "warp"],
        &["latency", "--hops", "5"],
        &["scale", "--bogus"],
        &["control", "--bogus"],
        &["multicast", "--loss", "2"],
        &["multicast", "--receivers", "0"],
        &["multicast", "--size", "lots"],
        &["multicast", "--shapes", "ring"],
        &["sink", "--size", "lots"],
        &["sink", "--repetitions", "0"],
        &[],
    ] {
        let output = bench().args(args).output().expect("run the bench binary");
        assert_eq!(output.status.code(), Some(2), "bench {args:?}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            stderr.contains("error") || stderr.contains("Usage"),
            "bench {args:?}: {stderr}"
        );
    }
}

/// Whether `perf record` works here (installed, allowed by `perf_event_paranoid`).
fn perf_records() -> bool {
    let dir = tempfile::tempdir().expect("a temporary folder");
    Command::new("perf")
        .args(["record", "--quiet", "-o"])
        .arg(dir.path().join("perf.data"))
        .args(["--", "true"])
        .output()
        .is_ok_and(|o| o.status.success())
}

#[test]
fn perf_writes_a_profile_beside_the_json() {
    if !perf_records() {
        eprintln!("skipped: perf cannot record here (apt-get install linux-perf)");
        return;
    }
    let out = tempfile::tempdir().expect("a temporary folder");
    let output = bench()
        .args(["control", "--quick", "--perf", "--out"])
        .arg(out.path())
        .output()
        .expect("run the bench binary");
    assert!(
        output.status.success(),
        "bench control --quick --perf failed:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let json = &json_files(out.path())[0];
    let profile = json.with_extension("perf.txt");
    let text = std::fs::read_to_string(&profile).expect("the profile beside the JSON");
    for section in ["by thread name", "by binary", "Top symbols"] {
        assert!(text.contains(section), "no {section} section:\n{text}");
    }
    // Samples were taken: the bench's own threads are named in the shares.
    assert!(text.contains('%'), "no share in the profile:\n{text}");
}
