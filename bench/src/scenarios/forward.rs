//! `forward`: a chain of k nodes (k = 1..4, `--hops`) of each engine forwards 1024-byte DNP
//! packets from a source socket to a sink node, hop by hop by `next_hop` in each node's DNP
//! receiver. The offered load is swept open-loop at fixed rates up to 3.2M packets/s, then as
//! fast as the source can (the worst point: see `limit`), to find saturation and the loss there.
//! At every point a chain of k bare `recvfrom`/`sendto` forwarders — the same system calls per
//! packet as the threaded engine, and no protocol — is measured in the same run: the kernel
//! limit each engine row is a share of. Beside the batched uring row, the bare GRO/GSO
//! forwarder (its share of that forwarder's ceiling is in the saturation table). The uring
//! engine runs a second time with its batching (`UDP_GRO`, `UDP_SEGMENT`) off, as
//! `uring-unbatched`, beside a chain of bare io_uring forwarders: the same calls per datagram
//! with no protocol, the limit that row is a share of.
//!
//! Every engine's chain ends in the same sink, a uring node (see [`NodeChain::start`]): a sink
//! of the engine measured was the bottleneck of the uring rows, not the forwarding node. Each
//! row's details give what the first forwarding stage and the sink cost in CPU time per
//! datagram delivered (`hop1_cpu_ns_per_datagram`, `sink_cpu_ns_per_datagram`: a figure a
//! loaded machine moves less than the rate), and for an engine with the counters, the first
//! forwarding node's datagrams per receive and per send and its wake-ups.

use super::kernel_chain::KernelChain;
use super::node_chain::{How, NodeChain};
use super::{Engine, Outcome, PACKET_LEN, Sweep, rmtp_packet};
use crate::forwarders::Kind;
use crate::runner::{self, Comparison, ComparisonResult, Sample, Stop, System};
use crate::threads;
use crate::traffic::{self, Rate};
use control::NodeAddr;
use dataplane::host::counter;
use serde_json::json;
use std::io;
use std::time::Duration;

/// The kernel row every engine row of a comparison is a share of.
const KERNEL_LIMIT: Kind = Kind::Blocking;
/// The kernel row of an engine moving one datagram per call on io_uring.
const UNBATCHED_LIMIT: Kind = Kind::Uring;
/// The kernel's batched forwarder (`UDP_GRO` receives, `UDP_SEGMENT` sends): measured beside an
/// engine row that batches, so that its share of what the kernel can do with batches shows.
const BATCHED_LIMIT: Kind = Kind::GroGso;

/// A row of the comparison: an engine, with its batching on or off.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Row {
    pub(super) engine: Engine,
    pub(super) batching: bool,
}

impl Row {
    /// Each engine as it runs by default, then the uring engine unbatched (when it is compared).
    fn all(engines: &[Engine]) -> Vec<Row> {
        let batched = engines.iter().map(|&engine| Row {
            engine,
            batching: true,
        });
        let unbatched = engines.contains(&Engine::Uring).then_some(Row {
            engine: Engine::Uring,
            batching: false,
        });
        batched.chain(unbatched).collect()
    }

    pub(super) fn name(self) -> String {
        if self.batching {
            self.engine.name().to_string()
        } else {
            format!("{}-unbatched", self.engine.name())
        }
    }

    fn limit(self) -> Kind {
        if self.batching {
            KERNEL_LIMIT
        } else {
            UNBATCHED_LIMIT
        }
    }

    /// The bare forwarder making this row's kernel calls, when it is not [`Row::limit`]: the
    /// GRO/GSO forwarder for an engine that moves batches.
    fn batched_limit(self) -> Option<Kind> {
        (self.batching && moves_batches(self.engine)).then_some(BATCHED_LIMIT)
    }
}

/// Whether `engine`, batching on, moves runs of datagrams per kernel call.
fn moves_batches(engine: Engine) -> bool {
    match engine {
        Engine::Threaded => false,
        Engine::Uring => true,
    }
}

/// The kernel rows of a comparison, each once, in the order of the rows they serve.
fn kernel_rows(rows: &[Row]) -> Vec<Kind> {
    let mut kinds: Vec<Kind> = Vec::new();
    for kind in rows
        .iter()
        .flat_map(|r| std::iter::once(r.limit()).chain(r.batched_limit()))
    {
        if !kinds.contains(&kind) {
            kinds.push(kind);
        }
    }
    kinds
}

/// One engine's chain at one offered load.
pub(super) struct EngineRun<'a> {
    pub(super) row: Row,
    pub(super) chain: &'a NodeChain,
    pub(super) packet: &'a [u8],
    pub(super) rate: Rate,
    pub(super) duration: Duration,
    pub(super) stop: Stop,
}

impl System for EngineRun<'_> {
    fn name(&self) -> String {
        self.row.name()
    }

    fn limit(&self) -> Option<String> {
        Some(self.row.limit().name().to_string())
    }

    fn measure(&mut self) -> io::Result<Sample> {
        let drops_before = self.chain.drops();
        let delivered_before = self.chain.delivered();
        let counters_before = self.chain.first_forwarder_stats();
        let sink_before = self.chain.sink_stats();
        let (hop1, sink) = (node_threads(2), node_threads(self.chain.sink_addr()));
        let cpu_before = (threads::cpu_ns(&hop1), threads::cpu_ns(&sink));
        let offered = traffic::offer(
            self.chain.source(),
            self.chain.entry(),
            self.packet,
            self.rate,
            self.duration,
            &self.stop,
        )?;
        traffic::settle(|| self.chain.delivered());
        let delivered = self.chain.delivered() - delivered_before;
        let drops: Vec<(String, u64)> = self
            .chain
            .drops()
            .into_iter()
            .zip(drops_before)
            .map(|((name, after), (_, before))| (name, after.saturating_sub(before)))
            .collect();
        let mut sample =
            traffic::throughput_sample(self.rate, &offered, delivered, &drops, self.packet.len());
        let cpu = (
            threads::cpu_ns(&hop1).saturating_sub(cpu_before.0),
            threads::cpu_ns(&sink).saturating_sub(cpu_before.1),
        );
        sample
            .details
            .extend(traffic::cpu_per_datagram(cpu, delivered));
        let sink_received = moved(&sink_before, &self.chain.sink_stats(), "dnp.rx_datagrams");
        if let Some(received) = sink_received {
            // Datagrams the sink node took from its socket but did not count as delivered (an
            // instrument losing them inside, e.g. a full queue to its control thread).
            sample.details.insert(
                "sink_received_not_counted".into(),
                received.saturating_sub(delivered) as f64,
            );
        }
        let counters_after = self.chain.first_forwarder_stats();
        sample
            .details
            .extend(kernel_operations(&counters_before, &counters_after));
        Ok(sample)
    }
}

/// How far counter `name` moved from `before` to `after` (`None`: the node has no such counter).
fn moved(before: &[(String, u64)], after: &[(String, u64)], name: &str) -> Option<u64> {
    Some(counter(after, name)?.saturating_sub(counter(before, name).unwrap_or(0)))
}

/// The name prefix of node `n`'s threads (every engine names them `n<address>-<job>`).
fn node_threads(n: usize) -> String {
    format!("n{n}-")
}

/// The first forwarding node's kernel operations over a measurement, per datagram it received,
/// from the engine's counters (an engine without them adds nothing): how far its batches are
/// from the bare GRO/GSO forwarder's.
fn kernel_operations(before: &[(String, u64)], after: &[(String, u64)]) -> Vec<(String, f64)> {
    let moved = |name: &str| moved(before, after, name).map(|n| n as f64);
    let Some(received) = moved("dnp.rx_datagrams").filter(|&r| r > 0.0) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    if let (Some(receives), Some(sent), Some(sends)) = (
        moved("engine.receives"),
        moved("dnp.tx_packets"),
        moved("engine.sends"),
    ) {
        out.push((
            "hop1_datagrams_per_receive".into(),
            received / receives.max(1.0),
        ));
        out.push(("hop1_datagrams_per_send".into(), sent / sends.max(1.0)));
    }
    for (name, key) in [
        ("engine.wakeups", "hop1_wakeups_per_1k_datagrams"),
        (
            "engine.recv_buffers_exhausted",
            "hop1_buffers_exhausted_per_1k_datagrams",
        ),
        ("engine.early_sends", "hop1_early_sends_per_1k_datagrams"),
    ] {
        if let Some(n) = moved(name) {
            out.push((key.into(), n * 1000.0 / received));
        }
    }
    out
}

struct Plan {
    chain_lengths: Vec<usize>,
    rates: Vec<Rate>,
    duration: Duration,
    repetitions: usize,
}

impl Plan {
    fn new(quick: bool) -> Plan {
        if quick {
            Plan {
                chain_lengths: vec![1, 2],
                rates: vec![
                    Rate::PerSecond(20_000.0),
                    Rate::PerSecond(1_600_000.0),
                    Rate::Max,
                ],
                duration: Duration::from_millis(250),
                repetitions: 1,
            }
        } else {
            Plan {
                chain_lengths: vec![1, 2, 3, 4],
                // Up to 3.2M: a batching engine saturates between the paced points, and "max"
                // is the worst point of all (see `limit`: the source's sends do the receive
                // work of the datagrams dropped, on the cores the forwarding node needs).
                rates: [25e3, 50e3, 100e3, 200e3, 400e3, 800e3, 1.6e6, 3.2e6]
                    .into_iter()
                    .map(Rate::PerSecond)
                    .chain([Rate::Max])
                    .collect(),
                duration: Duration::from_secs(1),
                repetitions: 3,
            }
        }
    }
}

/// `hops`: the chain lengths to measure (empty: the plan's).
pub fn run(quick: bool, engines: &[Engine], hops: &[usize], stop: &Stop) -> io::Result<Outcome> {
    let mut plan = Plan::new(quick);
    if !hops.is_empty() {
        plan.chain_lengths = hops.to_vec();
    }
    let rows = Row::all(engines);
    let limits = kernel_rows(&rows);
    let mut comparisons = Vec::new();
    let mut saturation = Vec::new();
    let mut sweep_points = Vec::new();
    for &hops in &plan.chain_lengths {
        if stop.requested() {
            break;
        }
        let sink = NodeAddr::new(hops as u16 + 2).expect("a small node address");
        let packet = rmtp_packet(sink, NodeAddr::new(1).expect("node 1"), PACKET_LEN);
        eprintln!("  starting chains of {hops} forwarding node(s) …");
        let chains = rows
            .iter()
            .map(|&row| {
                // Without the RMTP layer: the RMTP-flagged packets are passed on by
                // `next_hop`, as RAP packets are with it, and the sink counts them.
                let how = How {
                    rmtp: false,
                    busy_poll: false,
                    batching: row.batching,
                    workers: 1,
                };
                NodeChain::start(row.engine, hops, how).map(|c| (row, c))
            })
            .collect::<io::Result<Vec<_>>>()?;
        let mut sweep: Sweep = Vec::new();
        for &rate in &plan.rates {
            if stop.requested() {
                break;
            }
            let mut systems: Vec<Box<dyn System + '_>> = chains
                .iter()
                .map(|(row, chain)| {
                    Box::new(EngineRun {
                        row: *row,
                        chain,
                        packet: &packet,
                        rate,
                        duration: plan.duration,
                        stop: stop.clone(),
                    }) as Box<dyn System>
                })
                .collect();
            for kind in &limits {
                systems.push(Box::new(KernelChain {
                    kind: *kind,
                    hops,
                    packet: packet.clone(),
                    rate,
                    duration: plan.duration,
                    stop: stop.clone(),
                }));
            }
            let comparison = Comparison {
                title: format!("{hops} hop(s), offered {rate}"),
                metric: super::limit::FORWARDED,
                systems,
            };
            sweep.push((rate, runner::run(comparison, plan.repetitions, stop)));
        }
        sweep_points.extend(super::sweep_points(&sweep, Some(hops)));
        for (row, chain) in chains {
            saturation.extend(saturation_point(row, hops, &sweep));
            chain.stop();
        }
        comparisons.extend(sweep.into_iter().map(|(_, c)| c));
    }
    print_saturation(&saturation);
    Ok(Outcome {
        settings: json!({
            "packet_bytes": PACKET_LEN,
            "seconds_per_measurement": plan.duration.as_secs_f64(),
            "repetitions": plan.repetitions,
            "chain_lengths": plan.chain_lengths,
            "offered_pkt_per_s": plan.rates.iter().map(|r| match r {
                Rate::Max => json!("max"),
                Rate::PerSecond(r) => json!(r),
            }).collect::<Vec<_>>(),
            "engines": engines.iter().map(|e| e.name()).collect::<Vec<_>>(),
            "systems": rows.iter().map(|r| r.name()).collect::<Vec<_>>(),
            "kernel_limit": KERNEL_LIMIT.name(),
            "unbatched_kernel_limit": UNBATCHED_LIMIT.name(),
            "batched_kernel_limit": BATCHED_LIMIT.name(),
            "address": "127.0.0.1",
        }),
        comparisons,
        summary: json!({ "saturation": saturation, "sweep": sweep_points }),
    })
}

/// The point of the sweep where `row` delivered the most, with the loss there and its kernel
/// limit's figure at the same offered load.
fn saturation_point(
    measured: Row,
    hops: usize,
    sweep: &[(Rate, ComparisonResult)],
) -> Option<serde_json::Value> {
    let (rate, comparison, row) = super::saturation(sweep, &measured.name())?;
    let limit = measured.limit().name();
    let kernel = comparison.system(limit).map(|k| k.median);
    // The batched forwarder's ceiling, wherever in the sweep it was (it saturates at another
    // load than the engine).
    let batched = measured.batched_limit().and_then(|kind| {
        let (_, _, ceiling) = super::saturation(sweep, kind.name())?;
        Some((kind.name(), ceiling.median))
    });
    Some(json!({
        "hops": hops,
        "engine": measured.name(),
        "kernel_limit": limit,
        "offered": rate.to_string(),
        "delivered_pkt_per_s": row.median,
        "delivered_gbit_per_s": row.details.get("delivered_gbit_per_s"),
        "loss": row.details.get("loss"),
        "limited_by": row.limited_by,
        "kernel_limit_pkt_per_s": kernel,
        "share_of_kernel_limit": row.share_of_limit,
        "batched_kernel_limit": batched.map(|(name, _)| name),
        "batched_kernel_limit_pkt_per_s": batched.map(|(_, ceiling)| ceiling),
        "share_of_batched_kernel_limit": batched.map(|(_, ceiling)| row.median / ceiling),
    }))
}

fn print_saturation(points: &[serde_json::Value]) {
    println!(
        "\n== saturation: the highest delivered rate over the sweep, beside the row's kernel \
         limit at the same load =="
    );
    println!(
        "{:>4} {:<16} {:>14} {:>9} {:>7} {:>14} {:>14} {:>7}  kernel limit (batched: its ceiling)",
        "hops", "engine", "delivered", "Gbit/s", "loss", "offered", "kernel", "share"
    );
    let number = |v: &serde_json::Value| v.as_f64().unwrap_or(f64::NAN);
    for p in points {
        println!(
            "{:>4} {:<16} {:>14} {:>9.3} {:>6.1}% {:>14} {:>14} {:>6.0}%  {}",
            p["hops"].as_u64().unwrap_or(0),
            p["engine"].as_str().unwrap_or(""),
            crate::report::si(number(&p["delivered_pkt_per_s"]), "pkt/s"),
            number(&p["delivered_gbit_per_s"]),
            number(&p["loss"]) * 100.0,
            p["offered"].as_str().unwrap_or(""),
            crate::report::si(number(&p["kernel_limit_pkt_per_s"]), "pkt/s"),
            number(&p["share_of_kernel_limit"]) * 100.0,
            p["kernel_limit"].as_str().unwrap_or(""),
        );
        if let Some(batched) = p["batched_kernel_limit"].as_str() {
            println!(
                "{:>4} {:<16} {:>14} {:>9} {:>7} {:>14} {:>14} {:>6.0}%  {batched}",
                "",
                "",
                "",
                "",
                "",
                "",
                crate::report::si(number(&p["batched_kernel_limit_pkt_per_s"]), "pkt/s"),
                number(&p["share_of_batched_kernel_limit"]) * 100.0,
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The uring engine is compared twice, batched and not, each row against the kernel
    /// forwarder that makes its system calls; an engine left out has no rows.
    #[test]
    fn the_unbatched_uring_row_is_measured_against_the_bare_io_uring_forwarder() {
        let rows = Row::all(&[Engine::Threaded, Engine::Uring]);
        let named: Vec<(String, &str)> =
            rows.iter().map(|r| (r.name(), r.limit().name())).collect();
        assert_eq!(
            named,
            [
                ("threaded".to_string(), "kernel-recvfrom-sendto"),
                ("uring".to_string(), "kernel-recvfrom-sendto"),
                ("uring-unbatched".to_string(), "kernel-io_uring-multishot"),
            ]
        );
        assert_eq!(Row::all(&[Engine::Threaded]).len(), 1);
    }

    /// The batched uring row brings the bare GRO/GSO forwarder into the comparison; threaded
    /// alone (one datagram per call) does not, and each kernel row is measured once.
    #[test]
    fn a_batching_engine_is_compared_with_the_gro_gso_forwarder_too() {
        let names = |engines: &[Engine]| -> Vec<&str> {
            kernel_rows(&Row::all(engines))
                .into_iter()
                .map(Kind::name)
                .collect()
        };
        assert_eq!(
            names(&[Engine::Threaded, Engine::Uring]),
            [
                "kernel-recvfrom-sendto",
                "kernel-gro-gso",
                "kernel-io_uring-multishot"
            ]
        );
        assert_eq!(names(&[Engine::Threaded]), ["kernel-recvfrom-sendto"]);
    }
}
