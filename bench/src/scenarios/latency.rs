//! `latency`: one 1024-byte probe at a time through a chain of k nodes (k = 1..4) of each
//! engine, open loop (`crate::openloop`), at a low fixed rate and at 50, 75 and 90% of the
//! engine's saturation for that chain (found by a sweep in the same run, refined around its
//! knee), beside a chain of k bare
//! forwarders under the same load. Each path is measured with sleeping waits and with
//! busy-polling ones: the bare forwarders, the measuring end and the uring engine's nodes
//! (`-busy-poll` rows: a chain of spinning nodes started for the measurement) can busy-poll;
//! the threaded engine's threads sleep by design, so its `-busy-poll-end` row busy-polls at the
//! measuring end only. The sink node, the instrument, sleeps in every engine row.
//!
//! ```text
//! engine:  probe sender ─► node 2 ─► … ─► node k+1 ─► node k+2 (sink) ─► its RMTP buffer ─► end
//! kernel:  probe sender ─► forwarder 1 ─► … ─► forwarder k ─► end socket
//! ```
//!
//! The nodes run without their RMTP layer and the probes carry the RMTP data flag: forwarding
//! nodes pass them on by `next_hop` in DNP, as they do `forward`'s packets, and the sink node
//! queues them in its RMTP buffer (attached by the bench), where the measuring end takes them
//! as a protocol thread of the node would.

use super::forward::{EngineRun, Row};
use super::node_chain::{How, NodeChain};
use super::{Engine, Outcome, PACKET_LEN, dnp_packet};
use crate::forwarders::{Kind, Line};
use crate::openloop::{
    self, CDF_QUANTILES, LOST_AFTER, Measured, Probe, ProbeEnd, ProbePacket, Schedule, SocketEnd,
    us,
};
use crate::pingpong::Wait;
use crate::report::si;
use crate::runner::{self, Comparison, Metric, Sample, Stop, System};
use crate::traffic::{self, Rate};
use crate::udp;
use control::wire::Flag;
use control::{Addr, NodeAddr};
use dataplane::threaded::{ImpatientBuffer, Pop, Received, ThreadedNode, ThreadedOptions};
use hdrhistogram::Histogram;
use serde_json::json;
use std::cell::RefCell;
use std::io;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

const LATENCY: Metric = Metric {
    name: "p50 latency from the scheduled send",
    unit: "us",
    higher_is_better: false,
};

/// The low fixed load: probes far enough apart that each crosses an idle path.
const LOW_RATE: f64 = 1_000.0;

struct Plan {
    chain_lengths: Vec<usize>,
    /// Per measurement at the low load: long enough for a p99.9 of a few thousand probes.
    duration: Duration,
    /// Per measurement at a share of saturation: many more probes per second, so shorter.
    loaded_duration: Duration,
    repetitions: usize,
    /// The coarse loads of the saturation sweep that sets each engine's loaded rows.
    sweep: Vec<f64>,
    /// Loads added evenly between the last coarse load the chain kept up with and the first
    /// it did not (the knee).
    knee_points: usize,
    sweep_duration: Duration,
    /// The loaded rows, as shares of the saturation found.
    saturation_shares: Vec<f64>,
}

impl Plan {
    fn new(quick: bool) -> Plan {
        if quick {
            Plan {
                chain_lengths: vec![1],
                duration: Duration::from_millis(200),
                loaded_duration: Duration::from_millis(200),
                repetitions: 1,
                sweep: vec![20e3, 80e3],
                knee_points: 0,
                sweep_duration: Duration::from_millis(200),
                saturation_shares: vec![0.5],
            }
        } else {
            Plan {
                chain_lengths: vec![1, 2, 3, 4],
                duration: Duration::from_secs(2),
                loaded_duration: Duration::from_secs(1),
                repetitions: 3,
                sweep: vec![25e3, 50e3, 100e3, 200e3, 400e3],
                knee_points: 3,
                sweep_duration: Duration::from_millis(500),
                saturation_shares: vec![0.5, 0.75, 0.9],
            }
        }
    }
}

/// A sweep point the chain kept up with: it delivered at least this share of the offered load.
const KEPT_UP: f64 = 0.95;

/// A chain of an engine's nodes whose sink node hands the probes to the bench. The sink is a
/// threaded node for every engine: it is the measuring instrument (its RMTP buffer is where the
/// probes end), the same under every engine's row.
struct ProbeChain {
    chain: NodeChain,
    inbox: Arc<ImpatientBuffer<Received>>,
}

impl ProbeChain {
    /// `busy_poll`: the engine's nodes spin (the sink, the instrument, sleeps as in every row).
    fn start(engine: Engine, hops: usize, busy_poll: bool) -> io::Result<ProbeChain> {
        // Without the RMTP layer a forwarding node passes the probes (RMTP-flagged) on by
        // `next_hop` in DNP, the path of `forward`'s packets, and the sink node queues them in
        // the RMTP buffer the bench attaches.
        let mut inbox = None;
        let how = How {
            rmtp: false,
            busy_poll,
            batching: true,
            workers: 1,
        };
        let chain = NodeChain::start_with(engine, hops, how, &mut |topology, me, socket| {
            let options = ThreadedOptions {
                seed: u64::from(me.get()),
                rmtp: false,
                ..ThreadedOptions::default()
            };
            let sink = ThreadedNode::start_with_socket(topology, me, socket, options)?;
            inbox = Some(sink.attach_rmtp());
            Ok(Arc::new(sink))
        })?;
        let inbox = inbox.expect("the chain started its sink");
        Ok(ProbeChain { chain, inbox })
    }

    /// The probes of `schedule` through this chain, into its sink node's buffer.
    fn measure(
        &self,
        packet: &mut ProbePacket,
        schedule: Schedule,
        wait: Wait,
        stop: &Stop,
    ) -> io::Result<openloop::Measured> {
        let mut end = InboxEnd(Arc::clone(&self.inbox));
        openloop::measure(
            self.chain.source(),
            self.chain.entry(),
            packet,
            schedule,
            wait,
            &mut end,
            stop,
        )
    }

    fn stop(self) {
        self.chain.stop();
    }
}

/// The threaded sink node's RMTP buffer, read as an application on the node reads it.
struct InboxEnd(Arc<ImpatientBuffer<Received>>);

impl ProbeEnd for InboxEnd {
    fn next(&mut self, wait: Wait, deadline: Instant) -> io::Result<Option<Probe>> {
        loop {
            let packet = match wait {
                Wait::Sleep => match self.0.pop_until(Some(deadline)) {
                    Pop::Item(r) => Some(r),
                    Pop::Timeout => return Ok(None),
                    Pop::Kicked => None,
                    Pop::Closed => return Err(io::Error::other("the sink node stopped")),
                },
                Wait::BusyPoll => self.0.try_pop(),
            };
            if let Some(probe) = packet.and_then(|r| Probe::in_datagram(r.packet.bytes())) {
                return Ok(Some(probe));
            }
            if Instant::now() >= deadline {
                return Ok(None);
            }
            if wait == Wait::BusyPoll {
                std::thread::yield_now();
            }
        }
    }
}

/// The bare forwarders of a kernel row: they sleep in `recvfrom` or spin on it, as the row's
/// measuring end does.
fn kernel_kind(wait: Wait) -> Kind {
    match wait {
        Wait::Sleep => Kind::Blocking,
        Wait::BusyPoll => Kind::BusyPoll,
    }
}

fn engine_row_name(engine: Engine, wait: Wait) -> String {
    match wait {
        Wait::Sleep => engine.name().to_string(),
        Wait::BusyPoll => format!("{}-busy-poll-end", engine.name()),
    }
}

/// What every repetition of one row measured, merged.
struct Totals {
    latency: Histogram<u64>,
    send_lag: Histogram<u64>,
    sent: u64,
    lost: u64,
    duplicates: u64,
}

impl Totals {
    fn new() -> Totals {
        Totals {
            latency: openloop::histogram(),
            send_lag: openloop::histogram(),
            sent: 0,
            lost: 0,
            duplicates: 0,
        }
    }

    fn add(&mut self, m: &Measured) {
        // Both histograms have the same bounds, so adding cannot fail.
        let _ = self.latency.add(&m.latency);
        let _ = self.send_lag.add(&m.send_lag);
        self.sent += m.sent;
        self.lost += m.lost;
        self.duplicates += m.duplicates;
    }
}

fn sample(m: &Measured) -> Sample {
    let h = &m.latency;
    Sample {
        value: us(h.value_at_quantile(0.5)),
        details: [
            ("p99_us", us(h.value_at_quantile(0.99))),
            ("p99.9_us", us(h.value_at_quantile(0.999))),
            ("max_us", us(h.max())),
            ("sent", m.sent as f64),
            ("lost", m.lost as f64),
            ("duplicates", m.duplicates as f64),
            ("send_lag_p99_us", us(m.send_lag.value_at_quantile(0.99))),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect(),
        limited_by: None,
    }
}

/// What a row's probes go through.
#[derive(Clone, Copy)]
enum Path<'a> {
    Engine(Engine, &'a ProbeChain),
    /// A chain of the engine's nodes that spin, started for each measurement (as the kernel
    /// chain is): spinning nodes left running would take the cores from every other row.
    BusyEngine(Engine),
    Kernel,
}

/// One row of a comparison: a path, its wait, its load.
struct ProbeRow<'a> {
    path: Path<'a>,
    wait: Wait,
    hops: usize,
    schedule: Schedule,
    totals: Rc<RefCell<Totals>>,
    stop: Stop,
}

impl System for ProbeRow<'_> {
    fn name(&self) -> String {
        match self.path {
            Path::Engine(engine, _) => engine_row_name(engine, self.wait),
            Path::BusyEngine(engine) => format!("{}-busy-poll", engine.name()),
            Path::Kernel => kernel_kind(self.wait).name().to_string(),
        }
    }

    fn limit(&self) -> Option<String> {
        match self.path {
            Path::Engine(..) | Path::BusyEngine(_) => {
                Some(kernel_kind(self.wait).name().to_string())
            }
            Path::Kernel => None,
        }
    }

    fn measure(&mut self) -> io::Result<Sample> {
        let node = |n: usize| Addr::Node(NodeAddr::new(n as u16).expect("a small node address"));
        let mut packet = ProbePacket::new(node(self.hops + 2), node(1), Flag::RmtpData, PACKET_LEN);
        let measured = match self.path {
            Path::Engine(_, chain) => {
                chain.measure(&mut packet, self.schedule, self.wait, &self.stop)?
            }
            Path::BusyEngine(engine) => {
                let chain = ProbeChain::start(engine, self.hops, true)?;
                let measured = chain.measure(&mut packet, self.schedule, self.wait, &self.stop);
                chain.stop();
                measured?
            }
            Path::Kernel => {
                let socket = udp::bind_loopback()?;
                udp::set_receive_buffer(&socket, traffic::SINK_RECEIVE_BUFFER)?;
                let mut end = SocketEnd::new(socket)?;
                let line = Line::start(kernel_kind(self.wait), self.hops, end.local_addr()?)?;
                let source = udp::bind_loopback()?;
                let measured = openloop::measure(
                    &source,
                    line.entry(),
                    &mut packet,
                    self.schedule,
                    self.wait,
                    &mut end,
                    &self.stop,
                );
                line.stop()?;
                measured?
            }
        };
        if !self.stop.requested() {
            self.totals.borrow_mut().add(&measured);
        }
        Ok(sample(&measured))
    }
}

/// The load of one comparison.
#[derive(Clone, Copy)]
enum Load {
    Low,
    /// A share of the engine's saturation for this chain.
    Saturation(Engine, f64),
}

impl Load {
    fn label(self) -> String {
        match self {
            Load::Low => "low".into(),
            Load::Saturation(e, 0.5) => format!("half-saturation-{e}"),
            Load::Saturation(e, share) => format!("{:.0}%-saturation-{e}", share * 100.0),
        }
    }
}

/// One point of a saturation sweep: offered and delivered, packets/s.
#[derive(Clone, Copy)]
struct SweepPoint {
    offered: f64,
    delivered: f64,
}

/// The engine's chain under the coarse sweep, then under `knee_points` loads evenly between the
/// last load it kept up with and the first it did not; every point, in the order measured.
fn saturation_sweep(
    engine: Engine,
    chain: &ProbeChain,
    hops: usize,
    plan: &Plan,
    stop: &Stop,
) -> io::Result<Vec<SweepPoint>> {
    let node = |n: usize| NodeAddr::new(n as u16).expect("a small node address");
    let packet = dnp_packet(node(hops + 2), node(1), PACKET_LEN);
    let mut points = Vec::new();
    let measure = |rate: f64, points: &mut Vec<SweepPoint>| -> io::Result<()> {
        let rate = Rate::PerSecond(rate);
        eprint!(
            "  {hops} hop(s) | {} | saturation sweep, offered {rate} … ",
            engine.name()
        );
        let sample = EngineRun {
            row: Row {
                engine,
                batching: true,
            },
            chain: &chain.chain,
            packet: &packet,
            rate,
            duration: plan.sweep_duration,
            stop: stop.clone(),
        }
        .measure()?;
        eprintln!("{}", si(sample.value, "pkt/s"));
        points.push(SweepPoint {
            offered: sample
                .details
                .get("offered_pkt_per_s")
                .copied()
                .unwrap_or(f64::NAN),
            delivered: sample.value,
        });
        Ok(())
    };
    for &rate in &plan.sweep {
        if stop.requested() {
            return Ok(points);
        }
        measure(rate, &mut points)?;
    }
    if let Some((below, above)) = knee(&plan.sweep, &points) {
        let step = (above - below) / (plan.knee_points + 1) as f64;
        for i in 1..=plan.knee_points {
            if stop.requested() {
                break;
            }
            measure(below + step * i as f64, &mut points)?;
        }
    }
    Ok(points)
}

/// The coarse loads either side of the knee: the last the chain kept up with (0 if none) and
/// the first it did not; `None` if it kept up with every one.
fn knee(loads: &[f64], points: &[SweepPoint]) -> Option<(f64, f64)> {
    let first_behind = loads
        .iter()
        .zip(points)
        .position(|(_, p)| p.delivered < KEPT_UP * p.offered)?;
    let below = first_behind.checked_sub(1).map_or(0.0, |i| loads[i]);
    Some((below, loads[first_behind]))
}

/// `hops`: the chain lengths to measure (empty: the plan's).
pub fn run(quick: bool, engines: &[Engine], hops: &[usize], stop: &Stop) -> io::Result<Outcome> {
    let mut plan = Plan::new(quick);
    if !hops.is_empty() {
        plan.chain_lengths = hops.to_vec();
    }
    let mut comparisons = Vec::new();
    let mut rows = Vec::new();
    let mut saturations = Vec::new();
    for &hops in &plan.chain_lengths {
        if stop.requested() {
            break;
        }
        eprintln!("  starting chains of {hops} forwarding node(s) …");
        let chains = engines
            .iter()
            .map(|&e| ProbeChain::start(e, hops, false).map(|c| (e, c)))
            .collect::<io::Result<Vec<_>>>()?;
        let mut loads = vec![(Load::Low, LOW_RATE)];
        for (engine, chain) in &chains {
            let points = saturation_sweep(*engine, chain, hops, &plan, stop)?;
            let saturated = points.iter().map(|p| p.delivered).fold(0.0, f64::max);
            saturations.push(json!({
                "engine": engine.name(),
                "hops": hops,
                "saturation_pkt_per_s": saturated,
                "half_pkt_per_s": saturated / 2.0,
                "sweep": points.iter().map(|p| json!({
                    "offered_pkt_per_s": p.offered,
                    "delivered_pkt_per_s": p.delivered,
                })).collect::<Vec<_>>(),
            }));
            for &share in &plan.saturation_shares {
                if saturated * share >= 1.0 {
                    loads.push((Load::Saturation(*engine, share), saturated * share));
                }
            }
        }
        for (load, rate) in loads {
            if stop.requested() {
                break;
            }
            let schedule = Schedule {
                rate,
                duration: match load {
                    Load::Low => plan.duration,
                    Load::Saturation(..) => plan.loaded_duration,
                },
            };
            let mut paths: Vec<Path> = chains
                .iter()
                .filter(|(e, _)| {
                    matches!(load, Load::Low) || matches!(load, Load::Saturation(h, _) if h == *e)
                })
                .map(|(e, c)| Path::Engine(*e, c))
                .collect();
            paths.push(Path::Kernel);
            let mut totals = Vec::new();
            let mut systems: Vec<Box<dyn System + '_>> = Vec::new();
            for path in paths {
                for wait in [Wait::Sleep, Wait::BusyPoll] {
                    let path = match path {
                        Path::Engine(e, _) if wait == Wait::BusyPoll && e.can_busy_poll() => {
                            Path::BusyEngine(e)
                        }
                        _ => path,
                    };
                    let shared = Rc::new(RefCell::new(Totals::new()));
                    totals.push(Rc::clone(&shared));
                    systems.push(Box::new(ProbeRow {
                        path,
                        wait,
                        hops,
                        schedule,
                        totals: shared,
                        stop: stop.clone(),
                    }));
                }
            }
            let comparison = Comparison {
                title: format!(
                    "{hops} hop(s), {} load, {}",
                    load.label(),
                    si(rate, "pkt/s")
                ),
                metric: LATENCY,
                systems,
            };
            let result = runner::run(comparison, plan.repetitions, stop);
            rows.extend(summary_rows(hops, load, rate, &result, &totals));
            comparisons.push(result);
        }
        for (_, chain) in chains {
            chain.stop();
        }
    }
    print_latency(&rows);
    Ok(Outcome {
        settings: json!({
            "packet_bytes": PACKET_LEN,
            "low_load_pkt_per_s": LOW_RATE,
            "saturation": "the highest rate the engine's chain delivered over a short sweep in this run: the coarse loads, then knee_points loads evenly between the last one it kept up with (delivered at least kept_up of it) and the first it did not (summary.saturation)",
            "saturation_shares": plan.saturation_shares,
            "sweep_pkt_per_s": plan.sweep,
            "knee_points": plan.knee_points,
            "kept_up": KEPT_UP,
            "seconds_per_loaded_measurement": plan.loaded_duration.as_secs_f64(),
            "sweep_seconds_per_load": plan.sweep_duration.as_secs_f64(),
            "seconds_per_measurement": plan.duration.as_secs_f64(),
            "repetitions": plan.repetitions,
            "lost_after_seconds": LOST_AFTER.as_secs_f64(),
            "cdf_quantiles": CDF_QUANTILES,
            "address": "127.0.0.1",
            "waits": {
                "sleep": "forwarders and measuring end sleep in their receive",
                "busy-poll": "kernel forwarders and the measuring end spin on a non-blocking receive (yielding between empty polls); the uring engine's forwarding nodes spin too (EngineOptions::busy_poll, yielding after an empty turn; a chain started for each measurement); the threaded engine's threads sleep by design, so its busy-poll row busy-polls at the measuring end only; the sink node (a threaded node, the instrument) sleeps in every engine row",
            },
        }),
        comparisons,
        summary: json!({ "saturation": saturations, "cdf": cdf_points(&rows), "latency": rows }),
    })
}

/// Every row's CDF as flat chart points (bench/src/figures.rs): one series per system and
/// load, one chart per chain length.
fn cdf_points(rows: &[serde_json::Value]) -> Vec<serde_json::Value> {
    rows.iter()
        .flat_map(|row| {
            let system = format!(
                "{} @ {}",
                row["system"].as_str().unwrap_or("?"),
                row["load"]
            );
            let hops = row["hops"].clone();
            row["cdf"]
                .as_array()
                .into_iter()
                .flatten()
                .map(move |point| {
                    json!({
                        "system": system,
                        "hops": hops,
                        "percentile": point["quantile"].as_f64().map(|q| q * 100.0),
                        "latency_us": point["us"],
                    })
                })
        })
        .collect()
}

/// One summary row per system of a comparison: the percentiles of every probe of every
/// repetition, the ratios to the row's kernel limit, and the CDF points.
fn summary_rows(
    hops: usize,
    load: Load,
    rate: f64,
    result: &runner::ComparisonResult,
    totals: &[Rc<RefCell<Totals>>],
) -> Vec<serde_json::Value> {
    let percentiles = |t: &Totals| {
        [0.5, 0.99, 0.999]
            .map(|q| us(t.latency.value_at_quantile(q)))
            .to_vec()
    };
    result
        .systems
        .iter()
        .zip(totals)
        // A row that an interruption left without a measurement has nothing to say.
        .filter(|(_, own)| own.borrow().sent > 0)
        .map(|(system, own)| {
            let t = own.borrow();
            let mine = percentiles(&t);
            let kernel = system
                .limit
                .as_ref()
                .and_then(|l| result.systems.iter().position(|s| &s.name == l))
                .map(|j| percentiles(&totals[j].borrow()));
            let over = |i: usize| kernel.as_ref().map(|k| mine[i] / k[i]);
            json!({
                "hops": hops,
                "load": load.label(),
                "rate_pkt_per_s": rate,
                "system": system.name,
                "limit": system.limit,
                "probes_sent": t.sent,
                "lost": t.lost,
                "duplicates": t.duplicates,
                "p50_us": mine[0],
                "p99_us": mine[1],
                "p99_9_us": mine[2],
                "max_us": us(t.latency.max()),
                "p50_over_limit": over(0),
                "p99_over_limit": over(1),
                "send_lag_p99_us": us(t.send_lag.value_at_quantile(0.99)),
                "send_lag_max_us": us(t.send_lag.max()),
                "cdf": openloop::cdf(&t.latency),
            })
        })
        .collect()
}

fn print_latency(rows: &[serde_json::Value]) {
    println!(
        "\n== latency from the scheduled send, every probe of every repetition (lost ones at the time waited for) =="
    );
    println!(
        "{:>4} {:<44} {:<34} {:>8} {:>6} {:>10} {:>10} {:>10} {:>10} {:>8} {:>8}",
        "hops",
        "load",
        "system",
        "probes",
        "lost",
        "p50 us",
        "p99 us",
        "p99.9 us",
        "max us",
        "p50/lim",
        "p99/lim"
    );
    let number = |v: &serde_json::Value| v.as_f64().unwrap_or(f64::NAN);
    let ratio = |v: &serde_json::Value| {
        v.as_f64()
            .filter(|x| x.is_finite())
            .map_or("-".to_string(), |x| format!("{x:.2}x"))
    };
    for r in rows {
        println!(
            "{:>4} {:<44} {:<34} {:>8} {:>6} {:>10.1} {:>10.1} {:>10.1} {:>10.1} {:>8} {:>8}",
            r["hops"].as_u64().unwrap_or(0),
            format!(
                "{} ({})",
                r["load"].as_str().unwrap_or(""),
                si(number(&r["rate_pkt_per_s"]), "pkt/s")
            ),
            r["system"].as_str().unwrap_or(""),
            r["probes_sent"].as_u64().unwrap_or(0),
            r["lost"].as_u64().unwrap_or(0),
            number(&r["p50_us"]),
            number(&r["p99_us"]),
            number(&r["p99_9_us"]),
            number(&r["max_us"]),
            ratio(&r["p50_over_limit"]),
            ratio(&r["p99_over_limit"]),
        );
    }
    println!(
        "(lim: the kernel chain of the same length and wait under the same load; -busy-poll: the \
         engine's forwarding nodes spin; the threaded engine's threads always sleep, its \
         -busy-poll-end row busy-polls at the measuring end only)"
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    fn points(pairs: &[(f64, f64)]) -> Vec<SweepPoint> {
        pairs
            .iter()
            .map(|&(offered, delivered)| SweepPoint { offered, delivered })
            .collect()
    }

    #[test]
    fn the_knee_lies_between_the_last_load_kept_up_with_and_the_first_not() {
        let loads = [25e3, 50e3, 100e3, 200e3];
        let kept_then_fell = points(&[(25e3, 25e3), (50e3, 49e3), (100e3, 70e3), (200e3, 72e3)]);
        assert_eq!(knee(&loads, &kept_then_fell), Some((50e3, 100e3)));
        let behind_from_the_start = points(&[(25e3, 10e3), (50e3, 11e3)]);
        assert_eq!(knee(&loads, &behind_from_the_start), Some((0.0, 25e3)));
        let kept_up_throughout = points(&[(25e3, 25e3), (50e3, 50e3)]);
        assert_eq!(knee(&loads, &kept_up_throughout), None);
    }

    #[test]
    fn loads_are_labelled_by_their_share_of_saturation() {
        assert_eq!(Load::Low.label(), "low");
        assert_eq!(
            Load::Saturation(Engine::Threaded, 0.5).label(),
            "half-saturation-threaded"
        );
        assert_eq!(
            Load::Saturation(Engine::Threaded, 0.9).label(),
            "90%-saturation-threaded"
        );
    }
}
