//! `control`: the control plane's costs. Shortest-path recomputation against topology size,
//! routing convergence after a link cut in the simulator (virtual and wall-clock time), and the
//! cost of publishing a table snapshot (RCU-style, `arc-swap`) while a worker forwards.

mod convergence;
mod shapes;
mod snapshot;
mod spf;

use super::Outcome;
use crate::runner::{self, Comparison, ComparisonResult, Stop, System};
use convergence::CutConvergence;
use serde_json::{Value, json};
use shapes::Shape;
use snapshot::{Pointer, PublishLatency, WorkerUnderPublish};
use spf::SpfRun;
use std::io;
use std::time::Duration;

/// Everything the scenario's size and time depend on.
struct Plan {
    repetitions: usize,
    spf_nodes: &'static [usize],
    /// Least time one SPF or publish-latency measurement repeats for.
    budget: Duration,
    sim_nodes: &'static [usize],
    worker_table_routes: usize,
    worker_seconds: Duration,
    publish_every: &'static [Duration],
    publish_routes: &'static [usize],
}

impl Plan {
    fn new(quick: bool) -> Plan {
        const EVERY: &[Duration] = &[Duration::from_millis(10), Duration::from_millis(1)];
        if quick {
            Plan {
                repetitions: 1,
                spf_nodes: &[10, 100],
                budget: Duration::from_millis(20),
                sim_nodes: &[7, 31],
                worker_table_routes: 1_000,
                worker_seconds: Duration::from_millis(200),
                publish_every: EVERY,
                publish_routes: &[10, 100, 1_000],
            }
        } else {
            Plan {
                repetitions: 5,
                spf_nodes: &[10, 100, 1_000, 10_000],
                budget: Duration::from_millis(200),
                sim_nodes: &[7, 31, 127, 511],
                worker_table_routes: 10_000,
                worker_seconds: Duration::from_secs(1),
                publish_every: EVERY,
                publish_routes: &[10, 100, 1_000, 10_000],
            }
        }
    }

    fn settings(&self) -> Value {
        json!({
            "repetitions": self.repetitions,
            "spf_nodes": self.spf_nodes,
            "spf_shapes": Shape::ALL.map(Shape::name),
            "random_graph_extra_links_per_node": 0.75,
            "seconds_per_spf_or_publish_measurement": self.budget.as_secs_f64(),
            "sim_nodes": self.sim_nodes,
            "sim_link_delay_ms": convergence::LINK_DELAY.as_secs_f64() * 1e3,
            "sim_check_every_ms": convergence::CHECK_EVERY.as_secs_f64() * 1e3,
            "worker_table_routes": self.worker_table_routes,
            "worker_seconds": self.worker_seconds.as_secs_f64(),
            "publish_every_ms": self.publish_every.iter().map(|d| d.as_secs_f64() * 1e3).collect::<Vec<_>>(),
            "publish_routes": self.publish_routes,
            "snapshot_pointers": ["arc_swap::ArcSwap<RoutingTable>", "RwLock<Arc<RoutingTable>>"],
            "idle_tick_ms": snapshot::IDLE_TICK.as_secs_f64() * 1e3,
        })
    }
}

pub fn run(quick: bool, stop: &Stop) -> io::Result<Outcome> {
    let plan = Plan::new(quick);
    let reps = plan.repetitions;
    let mut spf_results = Vec::new();
    for shape in Shape::ALL {
        if stop.requested() {
            break;
        }
        let systems = plan
            .spf_nodes
            .iter()
            .map(|&n| Box::new(SpfRun::new(shape, n, plan.budget)) as Box<dyn System>)
            .collect();
        let comparison = Comparison {
            title: format!("SPF + routing table, {}", shape.name()),
            metric: spf::SPF_RUN,
            systems,
        };
        spf_results.push(runner::run(comparison, reps, stop));
    }

    let mut sims: Vec<Box<dyn System>> = Vec::new();
    for &n in plan.sim_nodes {
        sims.push(Box::new(CutConvergence::new(n)?));
    }
    let convergence = runner::run(
        Comparison {
            title: "convergence after a link cut (simulator)".into(),
            metric: convergence::CONVERGENCE,
            systems: sims,
        },
        reps,
        stop,
    );

    // arc-swap at every rate first (the first row is the baseline), then the threaded engine's
    // RwLock at the fastest rate and without publishing.
    let fastest = plan.publish_every.last().copied();
    let workers = std::iter::once(None)
        .chain(plan.publish_every.iter().copied().map(Some))
        .map(|every| (Pointer::ArcSwap, every))
        .chain([(Pointer::RwLock, None), (Pointer::RwLock, fastest)])
        .map(|(pointer, every)| {
            Box::new(WorkerUnderPublish::new(
                pointer,
                plan.worker_table_routes,
                every,
                plan.worker_seconds,
                stop,
            )) as Box<dyn System>
        })
        .collect();
    let worker = runner::run(
        Comparison {
            title: format!(
                "worker on a {}-route snapshot while tables are published",
                plan.worker_table_routes
            ),
            metric: snapshot::LOOKUPS,
            systems: workers,
        },
        reps,
        stop,
    );

    let publishers = plan
        .publish_routes
        .iter()
        .map(|&n| Box::new(PublishLatency::new(n, plan.budget)) as Box<dyn System>)
        .collect();
    let publish = runner::run(
        Comparison {
            title: "publishing a routing table snapshot".into(),
            metric: snapshot::PUBLISH,
            systems: publishers,
        },
        reps,
        stop,
    );

    let summary = json!({
        "spf_us": spf_results.iter().map(medians).collect::<Vec<_>>(),
        "spf": spf_points(&spf_results),
        "convergence": convergence_summary(&convergence),
        "worker_slowdown": slowdowns(&worker),
        "publish_us": medians(&publish),
    });
    print_slowdowns(&summary["worker_slowdown"]);
    Ok(Outcome {
        settings: plan.settings(),
        comparisons: spf_results
            .into_iter()
            .chain([convergence, worker, publish])
            .collect(),
        summary,
    })
}

/// SPF time per shape and size as flat chart points (bench/src/figures.rs).
fn spf_points(results: &[ComparisonResult]) -> Vec<Value> {
    Shape::ALL
        .iter()
        .zip(results)
        .flat_map(|(shape, c)| {
            c.systems.iter().map(move |s| {
                json!({
                    "system": shape.name(),
                    "nodes": s.details.get("nodes"),
                    "spf_us": s.median,
                })
            })
        })
        .collect()
}

/// `{title, medians: {system: median}}` of one comparison.
fn medians(c: &ComparisonResult) -> Value {
    let medians: serde_json::Map<String, Value> = c
        .systems
        .iter()
        .map(|s| (s.name.clone(), json!(s.median)))
        .collect();
    json!({ "title": c.title, "median": medians })
}

fn convergence_summary(c: &ComparisonResult) -> Vec<Value> {
    c.systems
        .iter()
        .map(|s| {
            json!({
                "system": s.name,
                "virtual_ms_median": s.median,
                "virtual_ms_min": s.min,
                "virtual_ms_max": s.max,
                "wall_ms_after_cut_median": s.details.get("wall_ms_after_cut"),
                "dead_interval_ms": s.details.get("dead_interval_ms"),
            })
        })
        .collect()
}

/// For each row but the first (arc-swap without publishing): the first row's lookups over this
/// row's (above 1 is a slowdown).
fn slowdowns(c: &ComparisonResult) -> Vec<Value> {
    c.systems
        .iter()
        .skip(1)
        .map(|s| {
            json!({
                "system": s.name,
                "lookups_per_s": s.median,
                "slowdown": 1.0 / s.ratio_to_first,
                "publish_us": s.details.get("publish_us"),
            })
        })
        .collect()
}

fn print_slowdowns(slowdowns: &Value) {
    println!(
        "\n== the worker's slowdown against arc-swap without publishing (its lookups / these) =="
    );
    for s in slowdowns.as_array().into_iter().flatten() {
        println!(
            "{:<32} {:>6.3}x",
            s["system"].as_str().unwrap_or(""),
            s["slowdown"].as_f64().unwrap_or(f64::NAN)
        );
    }
}
