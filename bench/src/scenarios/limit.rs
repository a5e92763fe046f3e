//! `limit`: the kernel's ceiling on 127.0.0.1 with no protocol at all. A source thread offers
//! 1024-byte datagrams (GSO sends) at a sweep of fixed rates and as fast as it can to a one-hop
//! forwarder thread, which sends them on to a sink thread; the forwarder uses each kernel
//! interface in turn, and its ceiling is the most it delivered over the sweep. Then the round
//! trip of a bare ping-pong, sleeping in `recv` or busy polling.

use super::{Outcome, PACKET_LEN, Sweep, dnp_packet, kernel_chain::KernelChain};
use crate::forwarders::Kind;
use crate::pingpong::{PingPong, Wait};
use crate::runner::{self, Comparison, Metric, Stop, System};
use crate::traffic::Rate;
use control::NodeAddr;
use serde_json::json;
use std::io;
use std::time::Duration;

pub const FORWARDED: Metric = Metric {
    name: "forwarded datagrams",
    unit: "pkt/s",
    higher_is_better: true,
};

const ROUND_TRIP: Metric = Metric {
    name: "median round trip",
    unit: "us",
    higher_is_better: false,
};

/// The loads offered to every forwarder: a source at full speed takes CPU from the forwarder
/// on a small machine, so a forwarder's ceiling is the most it delivers over these.
pub(super) fn offered_loads(quick: bool) -> Vec<Rate> {
    let paced: &[f64] = if quick {
        &[200e3]
    } else {
        &[100e3, 200e3, 400e3, 800e3, 1.6e6]
    };
    paced
        .iter()
        .map(|&r| Rate::PerSecond(r))
        .chain([Rate::Max])
        .collect()
}

pub fn run(quick: bool, stop: &Stop) -> io::Result<Outcome> {
    let (duration, repetitions) = if quick {
        (Duration::from_millis(250), 1)
    } else {
        (Duration::from_secs(1), 3)
    };
    let node = |n| NodeAddr::new(n).expect("a node address");
    let packet = dnp_packet(node(3), node(1), PACKET_LEN);
    let loads = offered_loads(quick);
    let mut sweep: Sweep = Vec::new();
    for &rate in &loads {
        if stop.requested() {
            break;
        }
        let forwarders: Vec<Box<dyn System>> = Kind::ALL
            .into_iter()
            .map(|kind| {
                Box::new(KernelChain {
                    kind,
                    hops: 1,
                    packet: packet.clone(),
                    rate,
                    duration,
                    stop: stop.clone(),
                }) as Box<dyn System>
            })
            .collect();
        let comparison = Comparison {
            title: format!("one-hop forwarder, offered {rate}"),
            metric: FORWARDED,
            systems: forwarders,
        };
        sweep.push((rate, runner::run(comparison, repetitions, stop)));
    }
    let ceilings: Vec<serde_json::Value> = Kind::ALL
        .into_iter()
        .filter_map(|kind| {
            let (rate, _, row) = super::saturation(&sweep, kind.name())?;
            Some(json!({
                "system": kind.name(),
                "offered": rate.to_string(),
                "delivered_pkt_per_s": row.median,
                "delivered_gbit_per_s": row.details.get("delivered_gbit_per_s"),
                "loss": row.details.get("loss"),
                "limited_by": row.limited_by,
            }))
        })
        .collect();
    print_ceilings(&ceilings);
    let sweep_points = super::sweep_points(&sweep, None);
    let ping_pongs: Vec<Box<dyn System>> = [Wait::Sleep, Wait::BusyPoll]
        .into_iter()
        .map(|wait| {
            Box::new(PingPong {
                wait,
                packet_len: PACKET_LEN,
                duration,
                stop: stop.clone(),
            }) as Box<dyn System>
        })
        .collect();
    let latency = runner::run(
        Comparison {
            title: format!("ping-pong, {PACKET_LEN}-byte datagrams"),
            metric: ROUND_TRIP,
            systems: ping_pongs,
        },
        repetitions,
        stop,
    );
    Ok(Outcome {
        settings: json!({
            "packet_bytes": PACKET_LEN,
            "seconds_per_measurement": duration.as_secs_f64(),
            "offered_pkt_per_s": loads.iter().map(|r| match r {
                Rate::Max => json!("max"),
                Rate::PerSecond(r) => json!(r),
            }).collect::<Vec<_>>(),
            "repetitions": repetitions,
            "address": "127.0.0.1",
        }),
        comparisons: sweep.into_iter().map(|(_, c)| c).chain([latency]).collect(),
        summary: json!({ "forwarder_ceilings": ceilings, "sweep": sweep_points }),
    })
}

fn print_ceilings(ceilings: &[serde_json::Value]) {
    println!(
        "\n== the kernel's ceiling: each forwarder's highest delivered rate over the loads =="
    );
    println!(
        "{:<28} {:>14} {:>9} {:>7} {:>14}",
        "forwarder", "delivered", "Gbit/s", "loss", "offered"
    );
    let number = |v: &serde_json::Value| v.as_f64().unwrap_or(f64::NAN);
    for c in ceilings {
        println!(
            "{:<28} {:>14} {:>9.3} {:>6.1}% {:>14}",
            c["system"].as_str().unwrap_or(""),
            crate::report::si(number(&c["delivered_pkt_per_s"]), "pkt/s"),
            number(&c["delivered_gbit_per_s"]),
            number(&c["loss"]) * 100.0,
            c["offered"].as_str().unwrap_or(""),
        );
    }
}
