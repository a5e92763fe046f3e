//! `limit`: the kernel's ceiling on 127.0.0.1 with no protocol at all. A source thread offers
//! 1024-byte datagrams as fast as it can (GSO sends) to a one-hop forwarder thread, which sends
//! them on to a sink thread; the forwarder uses each kernel interface in turn. Then the round
//! trip of a bare ping-pong, sleeping in `recv` or busy polling.

use super::{Outcome, PACKET_LEN, dnp_packet, kernel_chain::KernelChain};
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

pub fn run(quick: bool, stop: &Stop) -> io::Result<Outcome> {
    let (duration, repetitions) = if quick {
        (Duration::from_millis(250), 1)
    } else {
        (Duration::from_secs(2), 5)
    };
    let node = |n| NodeAddr::new(n).expect("a node address");
    let packet = dnp_packet(node(3), node(1), PACKET_LEN);
    let forwarders: Vec<Box<dyn System>> = Kind::ALL
        .into_iter()
        .map(|kind| {
            Box::new(KernelChain {
                kind,
                hops: 1,
                packet: packet.clone(),
                rate: Rate::Max,
                duration,
                stop: stop.clone(),
            }) as Box<dyn System>
        })
        .collect();
    let forwarding = runner::run(
        Comparison {
            title: format!("one-hop forwarder, {PACKET_LEN}-byte datagrams"),
            metric: FORWARDED,
            systems: forwarders,
        },
        repetitions,
        stop,
    );
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
    let best = forwarding
        .systems
        .iter()
        .max_by(|a, b| a.median.total_cmp(&b.median))
        .map(|s| json!({ "system": s.name, "pkt_per_s": s.median }));
    Ok(Outcome {
        settings: json!({
            "packet_bytes": PACKET_LEN,
            "seconds_per_measurement": duration.as_secs_f64(),
            "repetitions": repetitions,
            "address": "127.0.0.1",
        }),
        comparisons: vec![forwarding, latency],
        summary: json!({ "best_forwarder": best }),
    })
}
