//! The receiver's route watch, in the RMTP worker on virtual time: a local receiver whose
//! sender has no route fails after `sender_timeout` with "sender unreachable", even while SPMs
//! that pass for the sender's keep arriving along a tree that still stands (replayed ones here;
//! the silence watch alone would keep the transfer alive as long as they come). The rule is the
//! receiver core's; the worker tells it what the routing table says, as the threaded engine's
//! client thread does.

use control::drp::{Route, RoutingTable};
use control::gmp::{MulticastTable, TreeEntry};
use control::settings::receiver::SENDER_TIMEOUT;
use control::wire::DEFAULT_MTU;
use control::wire::dnp::Packet;
use control::wire::rmtp::{self, SpmFields};
use control::{GroupAddr, Instant, NodeAddr};
use dataplane::node::{Ctx, Outbox, RmtpOptions, TransferEvent, Transfers};
use dataplane::rmtp::MemSink;
use std::time::Duration;

const MEMBER: u16 = 100;

fn n(v: u16) -> NodeAddr {
    NodeAddr::new(v).expect("a node address")
}

/// Node 2, one hop below the sender (node 1), with a local member of its tree; `routed`: the
/// routing table still has the sender.
fn tables(group: GroupAddr, routed: bool) -> (MulticastTable, RoutingTable) {
    let entry = TreeEntry {
        group,
        sender: n(1),
        upstream: Some(n(1)),
        downstream: vec![],
        local_members: vec![MEMBER],
    };
    let routes = routed
        .then(|| Route {
            dst: n(1),
            next_hop: n(1),
            hops: 1,
        })
        .into_iter()
        .collect();
    (
        MulticastTable::new(vec![entry]),
        RoutingTable::new(n(2), routes),
    )
}

/// Replays one plausible SPM every 100 ms for `run`, with or without a route to the sender;
/// the receiver's failure, if any, and when.
fn replayed_spms(routed: bool, run: Duration) -> Option<(Duration, String)> {
    let group = GroupAddr::from_index(1).expect("a group");
    let (mcast, routes) = tables(group, routed);
    let mut out = Outbox::new(DEFAULT_MTU);
    let mut transfers = Transfers::new(n(2), DEFAULT_MTU, RmtpOptions::default());
    let t0 = Instant::ZERO;
    assert!(transfers.add_receiver(t0, MEMBER, group, n(1), Box::new(MemSink::new())));
    let spm = SpmFields {
        spm_sequence: 1,
        trailing: 0,
        leading: 0,
        segment_size: 1000,
        total: 1 << 20,
        finished: false,
        hash: [0; 32],
    };
    let mut buf = vec![0u8; DEFAULT_MTU];
    let len = rmtp::build_spm(&mut buf, group, n(1), &spm).expect("an SPM fits");
    let packet = Packet::parse(&buf[..len], DEFAULT_MTU).expect("sealed");

    let mut now = t0;
    let mut next_spm = t0;
    let end = t0 + run;
    while now < end {
        if now >= next_spm {
            let ctx = Ctx {
                mcast: &mcast,
                routes: &routes,
                out: &mut out,
            };
            transfers.handle_packet(now, n(1), &packet, ctx);
            next_spm = now + Duration::from_millis(100);
        }
        if transfers.poll_timeout().is_some_and(|t| t <= now) {
            let ctx = Ctx {
                mcast: &mcast,
                routes: &routes,
                out: &mut out,
            };
            transfers.handle_timeout(now, ctx);
        }
        out.clear();
        while let Some(event) = transfers.poll_event() {
            if let TransferEvent::ReceiveFailed { reason, .. } = event {
                return Some((now.saturating_since(t0), reason));
            }
        }
        let next = transfers.poll_timeout().unwrap_or(end).min(next_spm);
        now = next.max(now + Duration::from_millis(1));
    }
    None
}

#[test]
fn a_sender_without_a_route_fails_its_receiver_though_spms_keep_coming() {
    let run = SENDER_TIMEOUT * 2;
    assert_eq!(
        replayed_spms(true, run),
        None,
        "with a route, the replayed SPMs keep the transfer alive"
    );
    let (after, reason) =
        replayed_spms(false, run).expect("the receiver fails without a route to its sender");
    assert_eq!(reason, "sender unreachable (no route for 10s)");
    assert!(
        after >= SENDER_TIMEOUT && after <= SENDER_TIMEOUT + Duration::from_millis(200),
        "failed {after:?} after the start"
    );
}
