//! `scale`: packets/s per dataplane core as the cores go from 1 to all the process may use.
//! Each core gets one cell of its own: a source, a one-hop bare forwarder and a sink, each with
//! its own socket, all three pinned to that core (threads inherit the core of the cell's thread
//! that starts them). The cells run at once, each offered the same load; the sweep of loads is
//! `limit`'s, and a forwarder's figure at N cores is the best per-core rate over it. The scaling
//! efficiency is that per-core rate over the one at 1 core.
//!
//! Engines join with their per-core workers: for N from 1 to the cores, one node with N
//! dataplane workers forwards N streams between a source and a sink node (node_chain.rs), each
//! stream's packets from another DNP source, so the steering program spreads them one per worker
//! (`control::wire::steer::worker_of_source`). Its per-worker rate is measured in the same
//! comparisons as the bare cells (alternated with them) and printed beside them with its ratio
//! to the bare per-core figure. With the uring engine, the tree rows (trees.rs) then compare
//! the two ways a node's workers get their trees' datagrams, steering and hand-off, at each
//! worker count. An engine with no core setting (the threaded engine) is listed
//! as skipped, with the reason, in the output and in the JSON.

use super::Engine;
use super::node_chain::{How, NodeChain};
use super::trees::{self, Steering, Trees};
use super::{Outcome, PACKET_LEN, Sweep, dnp_packet, rmtp_packet};
use crate::affinity;
use crate::forwarders::{Chain, Kind};
use crate::report::si;
use crate::runner::{self, Comparison, Metric, Sample, Stop, System};
use crate::traffic::{self, Offered, Rate};
use crate::udp;
use control::NodeAddr;
use serde_json::json;
use std::io;
use std::sync::Barrier;
use std::time::Duration;

const PER_CORE: Metric = Metric {
    name: "forwarded datagrams per core",
    unit: "pkt/s",
    higher_is_better: true,
};

/// Said in the output and in the JSON: on a small machine the figure is not the forwarders'
/// alone.
const SHARED_CORES_NOTE: &str = "each core runs its cell's source and sink beside its forwarder: the load generator \
     competes with the forwarder for the core (on a 2-core machine there is no spare core to \
     move it to), so a per-core figure is the forwarder's share of a core it shares";

/// Why an engine is not measured here; None once an engine has per-core workers.
fn skipped_because(engine: Engine) -> Option<&'static str> {
    match engine {
        Engine::Threaded => Some(
            "no core setting: a thread per protocol and one receiver thread per node, none \
             tied to a core, so per-core scaling does not apply (skipped)",
        ),
        Engine::Uring => None,
    }
}

/// The row name of an engine's node with `workers` workers.
fn engine_row(engine: Engine, workers: usize) -> String {
    format!("{} x{workers} worker(s)", engine.name())
}

/// One node of an engine with `workers` dataplane workers between a source and a sink node,
/// offered `workers` streams at one load per stream (the chain's sink, a uring node counting on
/// its worker, is the same instrument as `forward`'s). Stream `i`'s packets come from DNP source
/// `base + i` (base a multiple of the worker count), which the steering program gives to worker
/// `i`: the source sends from one socket (node 1's), so the kernel's own hash would put every
/// stream on one worker.
struct EngineWorkers {
    engine: Engine,
    workers: usize,
    packets: Vec<Vec<u8>>,
    rate: Rate,
    duration: Duration,
    stop: Stop,
}

impl EngineWorkers {
    fn new(engine: Engine, workers: usize, rate: Rate, duration: Duration, stop: Stop) -> Self {
        let node = |n: usize| NodeAddr::new(n as u16).expect("a small node address");
        let base = 100 * workers;
        // The chain's sink is node 3: source node 1, the node measured, the sink. RMTP DATA
        // for a node, as `forward`'s: passed on by a node without the RMTP layer, counted by
        // the sink on its worker.
        let packets = (0..workers)
            .map(|i| rmtp_packet(node(3), node(base + i), PACKET_LEN))
            .collect();
        EngineWorkers {
            engine,
            workers,
            packets,
            rate,
            duration,
            stop,
        }
    }
}

impl System for EngineWorkers {
    fn name(&self) -> String {
        engine_row(self.engine, self.workers)
    }

    fn measure(&mut self) -> io::Result<Sample> {
        let how = How {
            rmtp: false,
            busy_poll: false,
            batching: true,
            workers: self.workers,
        };
        let chain = NodeChain::start(self.engine, 1, how)?;
        let before = chain.delivered();
        let barrier = Barrier::new(self.workers);
        let this = &*self;
        let offered = std::thread::scope(|scope| {
            let streams: Vec<_> = this
                .packets
                .iter()
                .map(|packet| {
                    let (chain, barrier) = (&chain, &barrier);
                    scope.spawn(move || {
                        barrier.wait();
                        traffic::offer(
                            chain.source(),
                            chain.entry(),
                            packet,
                            this.rate,
                            this.duration,
                            &this.stop,
                        )
                    })
                })
                .collect();
            streams
                .into_iter()
                .map(|s| {
                    s.join()
                        .map_err(|_| io::Error::other("a source thread panicked"))?
                })
                .collect::<io::Result<Vec<Offered>>>()
        });
        let offered = match offered {
            Ok(o) => o,
            Err(e) => {
                chain.stop();
                return Err(e);
            }
        };
        traffic::settle(|| chain.delivered());
        let delivered = chain.delivered() - before;
        let drops = chain.drops();
        chain.stop();
        let offered = Offered {
            datagrams: offered.iter().map(|o| o.datagrams).sum(),
            elapsed: offered.iter().map(|o| o.elapsed).max().unwrap_or_default(),
        };
        let n = self.workers;
        let total_rate = match self.rate {
            Rate::PerSecond(r) => Rate::PerSecond(r * n as f64),
            Rate::Max => Rate::Max,
        };
        let mut sample =
            traffic::throughput_sample(total_rate, &offered, delivered, &drops, PACKET_LEN);
        sample
            .details
            .insert("total_pkt_per_s".into(), sample.value);
        sample.details.insert("cores".into(), n as f64);
        sample.value /= n as f64;
        Ok(sample)
    }
}

struct Plan {
    kinds: Vec<Kind>,
    loads: Vec<Rate>,
    duration: Duration,
    repetitions: usize,
    /// Bytes of each file of the tree rows.
    tree_bytes: usize,
}

impl Plan {
    fn new(quick: bool) -> Plan {
        if quick {
            Plan {
                kinds: vec![Kind::Blocking],
                loads: super::limit::offered_loads(true),
                duration: Duration::from_millis(250),
                repetitions: 1,
                tree_bytes: 4 << 20,
            }
        } else {
            Plan {
                kinds: Kind::ALL.to_vec(),
                loads: super::limit::offered_loads(false),
                duration: Duration::from_secs(1),
                repetitions: 3,
                tree_bytes: 32 << 20,
            }
        }
    }
}

/// N cells of one forwarder kind on the first N allowed cores, at one load per cell.
struct Cells<'a> {
    kind: Kind,
    cores: &'a [usize],
    packet: &'a [u8],
    rate: Rate,
    duration: Duration,
    stop: Stop,
}

/// What one cell measured.
struct CellRun {
    offered: Offered,
    delivered: u64,
    drops: Vec<(String, u64)>,
}

impl Cells<'_> {
    /// Pins this thread to `core`, starts the cell there, waits for the other cells, offers the
    /// load and counts what arrived.
    fn cell(&self, core: usize, barrier: &Barrier) -> io::Result<CellRun> {
        let setup = affinity::pin_current_thread(core)
            .and_then(|()| Ok((Chain::start(self.kind, 1)?, udp::bind_loopback()?)));
        // Every cell passes the barrier, set up or not, so that none waits forever.
        barrier.wait();
        let (chain, source) = setup?;
        let offered = traffic::offer(
            &source,
            chain.entry(),
            self.packet,
            self.rate,
            self.duration,
            &self.stop,
        );
        traffic::settle(|| chain.delivered());
        let delivered = chain.delivered();
        let drops = chain
            .drops()
            .into_iter()
            .map(|(name, d)| (format!("core {core} {name}"), d))
            .collect();
        chain.stop()?;
        Ok(CellRun {
            offered: offered?,
            delivered,
            drops,
        })
    }
}

impl System for Cells<'_> {
    fn name(&self) -> String {
        format!("{} x{} core(s)", self.kind.name(), self.cores.len())
    }

    fn measure(&mut self) -> io::Result<Sample> {
        let n = self.cores.len();
        let barrier = Barrier::new(n);
        let this = &*self;
        let runs = std::thread::scope(|scope| {
            let cells: Vec<_> = this
                .cores
                .iter()
                .map(|&core| {
                    let barrier = &barrier;
                    scope.spawn(move || this.cell(core, barrier))
                })
                .collect();
            cells
                .into_iter()
                .map(|c| {
                    c.join()
                        .map_err(|_| io::Error::other("a cell's thread panicked"))?
                })
                .collect::<io::Result<Vec<CellRun>>>()
        })?;
        let offered = Offered {
            datagrams: runs.iter().map(|r| r.offered.datagrams).sum(),
            elapsed: runs
                .iter()
                .map(|r| r.offered.elapsed)
                .max()
                .unwrap_or_default(),
        };
        let delivered = runs.iter().map(|r| r.delivered).sum();
        let drops: Vec<(String, u64)> = runs.into_iter().flat_map(|r| r.drops).collect();
        let total_rate = match self.rate {
            Rate::PerSecond(r) => Rate::PerSecond(r * n as f64),
            Rate::Max => Rate::Max,
        };
        let mut sample =
            traffic::throughput_sample(total_rate, &offered, delivered, &drops, PACKET_LEN);
        sample
            .details
            .insert("total_pkt_per_s".into(), sample.value);
        sample.details.insert("cores".into(), n as f64);
        sample.value /= n as f64;
        Ok(sample)
    }
}

pub fn run(quick: bool, engines: &[Engine], stop: &Stop) -> io::Result<Outcome> {
    let plan = Plan::new(quick);
    let allowed = affinity::allowed_cores()?;
    let skipped: Vec<serde_json::Value> = engines
        .iter()
        .filter_map(|&e| {
            let why = skipped_because(e)?;
            eprintln!("  engine {}: {why}", e.name());
            Some(json!({ "engine": e.name(), "measured": false, "note": why }))
        })
        .collect();
    eprintln!("  note: {SHARED_CORES_NOTE}");
    let node = |n| NodeAddr::new(n).expect("a node address");
    let packet = dnp_packet(node(3), node(1), PACKET_LEN);
    let measured: Vec<Engine> = engines
        .iter()
        .copied()
        .filter(|&e| skipped_because(e).is_none())
        .collect();
    let mut comparisons = Vec::new();
    let mut scaling = Vec::new();
    let mut ratios = Vec::new();
    for (k, &kind) in plan.kinds.iter().enumerate() {
        // The engines are measured beside the first kind's cells (the same loads, alternated).
        let with_engines: &[Engine] = if k == 0 { &measured } else { &[] };
        let mut sweep: Sweep = Vec::new();
        for &rate in &plan.loads {
            if stop.requested() {
                break;
            }
            let mut systems: Vec<Box<dyn System + '_>> = (1..=allowed.len())
                .map(|n| {
                    Box::new(Cells {
                        kind,
                        cores: &allowed[..n],
                        packet: &packet,
                        rate,
                        duration: plan.duration,
                        stop: stop.clone(),
                    }) as Box<dyn System>
                })
                .collect();
            for &engine in with_engines {
                for n in 1..=allowed.len() {
                    let row = EngineWorkers::new(engine, n, rate, plan.duration, stop.clone());
                    systems.push(Box::new(row));
                }
            }
            let comparison = Comparison {
                title: format!("{}, offered {rate} per core", kind.name()),
                metric: PER_CORE,
                systems,
            };
            sweep.push((rate, runner::run(comparison, plan.repetitions, stop)));
        }
        let bare = scaling_points(
            kind.name(),
            &|n| format!("{} x{n} core(s)", kind.name()),
            allowed.len(),
            &sweep,
        );
        for &engine in with_engines {
            let points = scaling_points(
                engine.name(),
                &|n| engine_row(engine, n),
                allowed.len(),
                &sweep,
            );
            ratios.extend(engine_ratios(engine, &points, &bare));
            scaling.extend(points);
        }
        scaling.extend(bare);
        comparisons.extend(sweep.into_iter().map(|(_, c)| c));
    }
    let mut tree_points = Vec::new();
    if measured.contains(&Engine::Uring) && !stop.requested() {
        let (comparison, points) = tree_rows(&plan, allowed.len(), stop);
        comparisons.push(comparison);
        tree_points = points;
    }
    print_scaling(&scaling, &ratios, &skipped);
    print_trees(&tree_points);
    Ok(Outcome {
        settings: json!({
            "packet_bytes": PACKET_LEN,
            "cores": allowed,
            "offered_pkt_per_s_per_core": plan.loads.iter().map(|r| match r {
                Rate::Max => json!("max"),
                Rate::PerSecond(r) => json!(r),
            }).collect::<Vec<_>>(),
            "seconds_per_measurement": plan.duration.as_secs_f64(),
            "repetitions": plan.repetitions,
            "cell": "per core: a source, a one-hop bare forwarder and a sink, each with its own socket, all pinned to that core",
            "tree_bytes": plan.tree_bytes,
            "tree_row": "three uring nodes in a line, N workers each, N files at once from the first to the last on N groups (one per worker); the relay's received datagrams per second and per worker, steered by the program or handed off between workers",
            "engine_row": "one node with N dataplane workers between a source and a sink node, N streams of packets from N DNP sources, one per worker (unpinned)",
            "address": "127.0.0.1",
        }),
        comparisons,
        summary: json!({
            "scaling": scaling,
            "engine_vs_bare": ratios,
            "trees": tree_points,
            "engines": skipped,
            "note": SHARED_CORES_NOTE,
        }),
    })
}

/// Per core count: the best per-core rate over the sweep of the system `row(n)` names, and its
/// share of the 1-core figure.
fn scaling_points(
    forwarder: &str,
    row: &dyn Fn(usize) -> String,
    cores: usize,
    sweep: &Sweep,
) -> Vec<serde_json::Value> {
    let best = |n: usize| super::saturation(sweep, &row(n));
    let one_core = best(1).map(|(_, _, row)| row.median);
    (1..=cores)
        .filter_map(|n| {
            let (rate, _, row) = best(n)?;
            Some(json!({
                "forwarder": forwarder,
                "cores": n,
                "per_core_pkt_per_s": row.median,
                "total_pkt_per_s": row.details.get("total_pkt_per_s"),
                "efficiency": one_core.map(|one| row.median / one),
                "offered_per_core": rate.to_string(),
                "loss": row.details.get("loss"),
                "limited_by": row.limited_by,
            }))
        })
        .collect()
}

/// The tree rows: steered at 1 worker, then steered and hand-off at each larger count, in one
/// comparison (alternated); per count, each mode's median and hand-off over steered.
fn tree_rows(
    plan: &Plan,
    cores: usize,
    stop: &Stop,
) -> (runner::ComparisonResult, Vec<serde_json::Value>) {
    let mut systems: Vec<Box<dyn System>> = Vec::new();
    for n in 1..=cores {
        for steering in Steering::ALL {
            // One worker has no one to hand off to: the same as steered.
            if n > 1 || steering == Steering::Program {
                systems.push(Box::new(Trees {
                    steering,
                    workers: n,
                    bytes: plan.tree_bytes,
                }));
            }
        }
    }
    let comparison = Comparison {
        title: format!(
            "uring trees, {} per tree: steered by the program vs handed off between workers",
            crate::report::si(plan.tree_bytes as f64, "B")
        ),
        metric: PER_CORE,
        systems,
    };
    let result = runner::run(comparison, plan.repetitions, stop);
    let points = (1..=cores)
        .flat_map(|n| {
            let result = &result;
            Steering::ALL.into_iter().filter_map(move |steering| {
                let row = result.system(&trees::row(steering, n))?;
                let steered = result.system(&trees::row(Steering::Program, n))?;
                Some(json!({
                    "forwarder": format!("uring-{}", steering.name()),
                    "cores": n,
                    "per_core_pkt_per_s": row.median,
                    "total_pkt_per_s": row.details.get("total_pkt_per_s"),
                    "goodput_mb_per_s": row.details.get("goodput_mb_per_s"),
                    "handed_over": row.details.get("relay_handed_over"),
                    "over_steered": row.median / steered.median,
                }))
            })
        })
        .collect();
    (result, points)
}

fn print_trees(points: &[serde_json::Value]) {
    if points.is_empty() {
        return;
    }
    println!("\n== trees: the relay's received datagrams per worker, steered vs hand-off ==");
    println!(
        "{:<20} {:>7} {:>14} {:>14} {:>12} {:>12} {:>10}",
        "mode", "workers", "per worker", "total", "goodput", "handed over", "/steered"
    );
    let number = |v: &serde_json::Value| v.as_f64().unwrap_or(f64::NAN);
    for p in points {
        println!(
            "{:<20} {:>7} {:>14} {:>14} {:>9.0} MB/s {:>12.0} {:>9.2}x",
            p["forwarder"].as_str().unwrap_or(""),
            p["cores"].as_u64().unwrap_or(0),
            si(number(&p["per_core_pkt_per_s"]), "pkt/s"),
            si(number(&p["total_pkt_per_s"]), "pkt/s"),
            number(&p["goodput_mb_per_s"]),
            number(&p["handed_over"]),
            number(&p["over_steered"]),
        );
    }
}

/// Per core count: an engine's best per-worker rate over the bare cells' best per-core rate.
fn engine_ratios(
    engine: Engine,
    points: &[serde_json::Value],
    bare: &[serde_json::Value],
) -> Vec<serde_json::Value> {
    points
        .iter()
        .filter_map(|p| {
            let cores = p["cores"].as_u64()?;
            let b = bare.iter().find(|b| b["cores"].as_u64() == Some(cores))?;
            let ratio = p["per_core_pkt_per_s"].as_f64()? / b["per_core_pkt_per_s"].as_f64()?;
            Some(json!({
                "engine": engine.name(),
                "bare": b["forwarder"],
                "cores": cores,
                "ratio": ratio,
            }))
        })
        .collect()
}

fn print_scaling(
    points: &[serde_json::Value],
    ratios: &[serde_json::Value],
    skipped: &[serde_json::Value],
) {
    println!("\n== scaling: each forwarder's best per-core rate over the loads, per core count ==");
    println!(
        "{:<28} {:>5} {:>14} {:>14} {:>10} {:>14} {:>7}",
        "forwarder", "cores", "per core", "total", "efficiency", "offered/core", "loss"
    );
    let number = |v: &serde_json::Value| v.as_f64().unwrap_or(f64::NAN);
    for p in points {
        println!(
            "{:<28} {:>5} {:>14} {:>14} {:>9.0}% {:>14} {:>6.1}%",
            p["forwarder"].as_str().unwrap_or(""),
            p["cores"].as_u64().unwrap_or(0),
            si(number(&p["per_core_pkt_per_s"]), "pkt/s"),
            si(number(&p["total_pkt_per_s"]), "pkt/s"),
            number(&p["efficiency"]) * 100.0,
            p["offered_per_core"].as_str().unwrap_or(""),
            number(&p["loss"]) * 100.0,
        );
    }
    for r in ratios {
        println!(
            "{} per worker / {} per core at {} core(s): {:.2}",
            r["engine"].as_str().unwrap_or(""),
            r["bare"].as_str().unwrap_or(""),
            r["cores"].as_u64().unwrap_or(0),
            number(&r["ratio"]),
        );
    }
    for s in skipped {
        println!(
            "engine {}: {}",
            s["engine"].as_str().unwrap_or(""),
            s["note"].as_str().unwrap_or("")
        );
    }
    println!("note: {SHARED_CORES_NOTE}");
}
