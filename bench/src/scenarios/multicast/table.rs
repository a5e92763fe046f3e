//! The closing table: one row per system per comparison, printed and kept in the summary.

use crate::runner::ComparisonResult;
use serde_json::json;

/// One row per system per comparison: the figures a reader compares.
pub fn summary_rows(comparisons: &[ComparisonResult]) -> Vec<serde_json::Value> {
    comparisons
        .iter()
        .flat_map(|c| {
            // The disk's limit in the same comparison, for the systems that write copies.
            let disk = c.system(super::disk::NAME).map(|d| d.median);
            // The cores over the least work of a verified copy, and the kernel's fan-out.
            let ceiling = c
                .system(super::verified::NAME)
                .and_then(|v| v.details.get(super::verified::CEILING).copied());
            let fanout = c.system(super::fanout::NAME).map(|f| f.median);
            c.systems.iter().map(move |s| {
                let writes_copies = s.details.contains_key("copies_verified");
                let share_of_disk = disk
                    .filter(|_| writes_copies)
                    .and_then(|d| finite(s.median / d));
                json!({
                    "transfer": c.title,
                    "system": s.name,
                    "goodput_slowest_b_per_s": finite(s.median),
                    "time_to_last_copy_s": s.details.get("time_to_last_copy_s"),
                    "cpu_s_per_gb": s.details.get("cpu_s_per_gb"),
                    "repair_share": s.details.get("repair_share"),
                    "nack_aggregation": s.details.get("nack_aggregation"),
                    "ratio_to_first": finite(s.ratio_to_first),
                    "share_of_kernel_limit": s.share_of_limit,
                    "share_of_disk_limit": share_of_disk,
                    "share_of_copy_ceiling": ceiling
                        .filter(|_| writes_copies)
                        .and_then(|c| finite(s.median / c)),
                    "copy_ceiling_b_per_s": ceiling.filter(|_| s.name == super::verified::NAME),
                    "share_of_kernel_limit_at_ceiling": ceiling
                        .zip(fanout)
                        .filter(|_| s.name == super::verified::NAME)
                        .and_then(|(c, f)| finite(c / f)),
                    "error": s.error,
                })
            })
        })
        .collect()
}

/// Goodput against loss as flat chart points (bench/src/figures.rs): one line per system and
/// shape, one chart per receiver count. `transfers[i]` is comparison i's (receivers, shape, loss).
pub fn goodput_points(
    comparisons: &[ComparisonResult],
    transfers: &[(usize, &str, f64)],
) -> Vec<serde_json::Value> {
    comparisons
        .iter()
        .zip(transfers)
        .flat_map(|(c, &(receivers, shape, loss))| {
            c.systems.iter().map(move |s| {
                json!({
                    "system": format!("{} ({shape})", s.name),
                    "receivers": receivers,
                    "loss_percent": loss * 100.0,
                    "goodput_mbit_per_s": finite(s.median * 8.0 / 1e6),
                })
            })
        })
        .collect()
}

fn finite(x: f64) -> Option<f64> {
    x.is_finite().then_some(x)
}

pub fn print_summary(rows: &[serde_json::Value]) {
    println!("\n== multicast: medians per transfer and system ==");
    println!(
        "{:<44} {:<18} {:>12} {:>9} {:>9} {:>8} {:>7} {:>8} {:>7} {:>6} {:>8}",
        "transfer",
        "system",
        "goodput",
        "last s",
        "CPU s/GB",
        "repairs",
        "NACK:1",
        "/first",
        "/limit",
        "/disk",
        "/ceiling"
    );
    let num = |v: &serde_json::Value| v.as_f64().unwrap_or(f64::NAN);
    let opt =
        |v: &serde_json::Value, f: &dyn Fn(f64) -> String| v.as_f64().map_or("-".to_string(), f);
    for r in rows {
        println!(
            "{:<44} {:<18} {:>12} {:>9} {:>9} {:>8} {:>7} {:>8} {:>7} {:>6} {:>8}",
            r["transfer"].as_str().unwrap_or(""),
            r["system"].as_str().unwrap_or(""),
            crate::report::si(num(&r["goodput_slowest_b_per_s"]), "B/s"),
            opt(&r["time_to_last_copy_s"], &|x| format!("{x:.2}")),
            opt(&r["cpu_s_per_gb"], &|x| format!("{x:.2}")),
            opt(&r["repair_share"], &|x| format!("{:.1}%", x * 100.0)),
            opt(&r["nack_aggregation"], &|x| format!("{x:.1}")),
            opt(&r["ratio_to_first"], &|x| format!("{x:.2}x")),
            opt(&r["share_of_kernel_limit"], &|x| format!(
                "{:.0}%",
                x * 100.0
            )),
            opt(&r["share_of_disk_limit"], &|x| format!("{:.0}%", x * 100.0)),
            opt(&r["share_of_copy_ceiling"], &|x| format!(
                "{:.0}%",
                x * 100.0
            )),
        );
        // The ceiling itself, beside the kernel's limit, under the verified copy's row.
        if let (Some(c), Some(share)) = (
            r["copy_ceiling_b_per_s"].as_f64(),
            r["share_of_kernel_limit_at_ceiling"].as_f64(),
        ) {
            println!(
                "{:<44} {:<18} {:>12} = the cores over its CPU per GB; {:.0}% of the kernel's limit",
                "",
                "  ceiling",
                crate::report::si(c, "B/s"),
                share * 100.0
            );
        }
    }
}
