//! `forward`: a chain of k nodes (k = 1..4) of each engine forwards 1024-byte DNP packets from
//! a source socket to a sink node, hop by hop by `next_hop` in each node's DNP receiver. The
//! offered load is swept open-loop at fixed rates to find saturation and the loss there. At
//! every point a chain of k bare `recvfrom`/`sendto` forwarders — the same system calls per
//! packet as the threaded engine, and no protocol — is measured in the same run: the kernel
//! limit each engine row is a share of.

use super::kernel_chain::KernelChain;
use super::node_chain::NodeChain;
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

/// One engine's chain at one offered load.
pub(super) struct EngineRun<'a> {
    pub(super) engine: Engine,
    pub(super) chain: &'a NodeChain,
    pub(super) packet: &'a [u8],
    pub(super) rate: Rate,
    pub(super) duration: Duration,
    pub(super) stop: Stop,
}

impl System for EngineRun<'_> {
    fn name(&self) -> String {
        self.engine.name().to_string()
    }

    fn limit(&self) -> Option<String> {
        Some(KERNEL_LIMIT.name().to_string())
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
        let chains = engines
            .iter()
            .map(|&e| NodeChain::start(e, hops, true).map(|c| (e, c)))
            .collect::<io::Result<Vec<_>>>()?;
        let mut sweep: Sweep = Vec::new();
        for &rate in &plan.rates {
            if stop.requested() {
                break;
            }
            let mut systems: Vec<Box<dyn System + '_>> = chains
                .iter()
                .map(|(engine, chain)| {
                    Box::new(EngineRun {
                        engine: *engine,
                        chain,
                        packet: &packet,
                        rate,
                        duration: plan.duration,
                        stop: stop.clone(),
                    }) as Box<dyn System>
                })
                .collect();
            systems.push(Box::new(KernelChain {
                kind: KERNEL_LIMIT,
                hops,
                packet: packet.clone(),
                rate,
                duration: plan.duration,
                stop: stop.clone(),
            }));
            let comparison = Comparison {
                title: format!("{hops} hop(s), offered {rate}"),
                metric: super::limit::FORWARDED,
                systems,
            };
            sweep.push((rate, runner::run(comparison, plan.repetitions, stop)));
        }
        sweep_points.extend(super::sweep_points(&sweep, Some(hops)));
        for (engine, chain) in chains {
            saturation.extend(saturation_point(engine, hops, &sweep));
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
            "kernel_limit": KERNEL_LIMIT.name(),
            "address": "127.0.0.1",
        }),
        comparisons,
        summary: json!({ "saturation": saturation, "sweep": sweep_points }),
    })
}

/// The point of the sweep where `engine` delivered the most, with the loss there and the
/// kernel chain's figure at the same offered load.
fn saturation_point(
    engine: Engine,
    hops: usize,
    sweep: &[(Rate, ComparisonResult)],
) -> Option<serde_json::Value> {
    let (rate, comparison, row) = super::saturation(sweep, engine.name())?;
    let kernel = comparison.system(KERNEL_LIMIT.name()).map(|k| k.median);
    Some(json!({
        "hops": hops,
        "engine": engine.name(),
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
        "\n== saturation: the highest delivered rate over the sweep, beside {} at the same load ==",
        KERNEL_LIMIT.name()
    );
    println!(
        "{:>4} {:<10} {:>14} {:>9} {:>7} {:>14} {:>14} {:>7}",
        "hops", "engine", "delivered", "Gbit/s", "loss", "offered", "kernel", "share"
    );
    let number = |v: &serde_json::Value| v.as_f64().unwrap_or(f64::NAN);
    for p in points {
        println!(
            "{:>4} {:<10} {:>14} {:>9.3} {:>6.1}% {:>14} {:>14} {:>6.0}%",
            p["hops"].as_u64().unwrap_or(0),
            p["engine"].as_str().unwrap_or(""),
            crate::report::si(number(&p["delivered_pkt_per_s"]), "pkt/s"),
            number(&p["delivered_gbit_per_s"]),
            number(&p["loss"]) * 100.0,
            p["offered"].as_str().unwrap_or(""),
            crate::report::si(number(&p["kernel_limit_pkt_per_s"]), "pkt/s"),
            number(&p["share_of_kernel_limit"]) * 100.0,
        );
    }
}
