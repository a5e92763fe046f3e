//! `forward`: a chain of k nodes (k = 1..4) of each engine forwards 1024-byte DNP packets from
//! a source socket to a sink node, hop by hop by `next_hop` in each node's DNP receiver. The
//! offered load is swept open-loop at fixed rates to find saturation and the loss there. At
//! every point a chain of k bare `recvfrom`/`sendto` forwarders — the same system calls per
//! packet as the threaded engine, and no protocol — is measured in the same run: the kernel
//! limit each engine row is a share of. The uring engine runs a second time with its batching
//! (`UDP_GRO`, `UDP_SEGMENT`) off, as `uring-unbatched`, beside a chain of bare io_uring
//! forwarders: the same calls per datagram with no protocol, the limit that row is a share of.

use super::kernel_chain::KernelChain;
use super::node_chain::{How, NodeChain};
use super::{Engine, Outcome, PACKET_LEN, Sweep, dnp_packet};
use crate::forwarders::Kind;
use crate::runner::{self, Comparison, ComparisonResult, Sample, Stop, System};
use crate::traffic::{self, Rate};
use control::NodeAddr;
use serde_json::json;
use std::io;
use std::time::Duration;

/// The kernel row every engine row of a comparison is a share of.
const KERNEL_LIMIT: Kind = Kind::Blocking;
/// The kernel row of an engine moving one datagram per call on io_uring.
const UNBATCHED_LIMIT: Kind = Kind::Uring;

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
        Ok(traffic::throughput_sample(
            self.rate,
            &offered,
            delivered,
            &drops,
            self.packet.len(),
        ))
    }
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
                rates: vec![Rate::PerSecond(20_000.0), Rate::Max],
                duration: Duration::from_millis(250),
                repetitions: 1,
            }
        } else {
            Plan {
                chain_lengths: vec![1, 2, 3, 4],
                rates: [25e3, 50e3, 100e3, 200e3, 400e3]
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

pub fn run(quick: bool, engines: &[Engine], stop: &Stop) -> io::Result<Outcome> {
    let plan = Plan::new(quick);
    let rows = Row::all(engines);
    // Each kernel row a measured row is a share of, once, in the order of the rows.
    let mut limits: Vec<Kind> = Vec::new();
    for row in &rows {
        if !limits.contains(&row.limit()) {
            limits.push(row.limit());
        }
    }
    let mut comparisons = Vec::new();
    let mut saturation = Vec::new();
    let mut sweep_points = Vec::new();
    for &hops in &plan.chain_lengths {
        if stop.requested() {
            break;
        }
        let sink = NodeAddr::new(hops as u16 + 2).expect("a small node address");
        let packet = dnp_packet(sink, NodeAddr::new(1).expect("node 1"), PACKET_LEN);
        eprintln!("  starting chains of {hops} forwarding node(s) …");
        let chains = rows
            .iter()
            .map(|&row| {
                let how = How {
                    rmtp: true,
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
    }))
}

fn print_saturation(points: &[serde_json::Value]) {
    println!(
        "\n== saturation: the highest delivered rate over the sweep, beside the row's kernel \
         limit at the same load =="
    );
    println!(
        "{:>4} {:<16} {:>14} {:>9} {:>7} {:>14} {:>14} {:>7}  kernel limit",
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
}
