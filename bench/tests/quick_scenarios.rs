//! Every scenario runs with `--quick` and writes valid JSON with the expected keys. No figure is
//! checked: a shared machine makes timings meaningless as assertions.

use serde_json::Value;
use std::path::Path;
use std::process::Command;

fn bench() -> Command {
    Command::new(env!("CARGO_BIN_EXE_bench"))
}

/// Runs `scenario --quick` into a fresh folder and returns the JSON it wrote.
fn run_quick(scenario: &str) -> Value {
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
    serde_json::from_str(&text).expect("valid JSON")
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
    let v = run_quick("limit");
    check_report(&v, "limit");
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
    let v = run_quick("forward");
    check_report(&v, "forward");
    let names = system_names(&v);
    assert!(names.iter().any(|n| n == "threaded"));
    assert!(names.iter().any(|n| n == "kernel-recvfrom-sendto"));
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
fn multicast_quick_writes_each_engine_beside_the_kernel_fanout() {
    // The scenario runs the `burghers` executable beside the bench's (it builds it first when
    // run under cargo, as here).
    let v = run_quick("multicast");
    check_report(&v, "multicast");
    let names = system_names(&v);
    assert!(names.iter().any(|n| n == "threaded"));
    assert!(names.iter().any(|n| n == "kernel-udp-fanout"));
    has_keys(
        &v["settings"],
        &["file_bytes", "receivers", "shapes", "loss_per_link", "uftp"],
        "the settings",
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
        ],
        "a transfer row",
    );
}

#[test]
fn bad_arguments_get_a_clear_error() {
    for args in [
        &["nosuch"][..],
        &["limit", "--bogus"],
        &["forward", "--engines", "warp"],
        &["multicast", "--loss", "2"],
        &["multicast", "--receivers", "0"],
        &["multicast", "--size", "lots"],
        &["multicast", "--shapes", "ring"],
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
