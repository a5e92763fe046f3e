//! One forged SPM (a 1-byte segment size, a far leading edge) opens a gap as wide as a local
//! receiver's missing table. The receiver NACKs what it tracks, through its own node's relay;
//! the work this costs the node must stay within what that relay can hold, not grow with the
//! gap the network claims.

use control::drp::{Route, RoutingTable};
use control::gmp::{MulticastTable, TreeEntry};
use control::wire::DEFAULT_MTU;
use control::wire::rmtp::{self, SpmFields, TOTAL_UNKNOWN};
use control::{GroupAddr, Instant, NodeAddr};
use dataplane::node::{Ctx, Outbox, RmtpOptions, Transfers};
use dataplane::rmtp::MemSink;
use std::time::Duration;

const MEMBER: u16 = 100;

fn n(v: u16) -> NodeAddr {
    NodeAddr::new(v).expect("a node address")
}

/// Node 2 of a tree rooted at node 1, one neighbour below (3), one local member.
fn tables(group: GroupAddr) -> (MulticastTable, RoutingTable) {
    let entry = TreeEntry {
        group,
        sender: n(1),
        upstream: Some(n(1)),
        downstream: vec![n(3)],
        local_members: vec![MEMBER],
    };
    let routes = [1, 3]
        .iter()
        .map(|&d| Route {
            dst: n(d),
            next_hop: n(d),
            hops: 1,
        })
        .collect();
    (
        MulticastTable::new(vec![entry]),
        RoutingTable::new(n(2), routes),
    )
}

#[test]
fn a_forged_gap_costs_no_more_nack_work_than_the_relay_holds() {
    let group = GroupAddr::from_index(1).expect("a group");
    let (mcast, routes) = tables(group);
    let mut out = Outbox::new(DEFAULT_MTU);
    let options = RmtpOptions::default();
    let mut transfers = Transfers::new(n(2), DEFAULT_MTU, options.clone());
    let t0 = Instant::ZERO;
    assert!(transfers.add_receiver(t0, MEMBER, group, n(1), Box::new(MemSink::new())));

    let forged = SpmFields {
        spm_sequence: 1,
        trailing: 0,
        leading: 1 << 20,
        segment_size: 1,
        total: TOTAL_UNKNOWN,
        finished: false,
        hash: [0; 32],
    };
    let mut buf = vec![0u8; DEFAULT_MTU];
    let len = rmtp::build_spm(&mut buf, group, n(1), &forged).expect("an SPM fits");
    let packet = control::wire::dnp::Packet::parse(&buf[..len], DEFAULT_MTU).expect("sealed");
    let ctx = Ctx {
        mcast: &mcast,
        routes: &routes,
        out: &mut out,
    };
    transfers.handle_packet(t0, n(1), &packet, ctx);

    // Four seconds with nothing repaired: every tracked sequence is NACKed again and again,
    // three retries after `nack_retry` (10 ms; `nack_retries_undoubled` is 2), then with a
    // back-off that doubles to `nack_retry_max` (200 ms): at most 26 times each in that time.
    let end = t0 + Duration::from_secs(4);
    while let Some(due) = transfers.poll_timeout().filter(|&t| t <= end) {
        let ctx = Ctx {
            mcast: &mcast,
            routes: &routes,
            out: &mut out,
        };
        transfers.handle_timeout(due.max(t0), ctx);
        out.clear();
    }

    let capacity = options.nack_entries as u64;
    let receiver = transfers.receiver_stats(MEMBER).expect("the receiver");
    let relay = transfers.relay_stats();
    println!(
        "sequences NACKed {}, refused by the relay's full table {}",
        receiver.sequences_nacked, relay.nack_table_full
    );
    assert!(receiver.missing_full > 0, "the forged gap filled the table");
    assert_eq!(
        relay.nack_table_full, 0,
        "the local receiver asked its own relay for more than it can hold"
    );
    assert!(
        receiver.sequences_nacked <= capacity * 26,
        "{} sequences NACKed in 4 s, for a relay that holds {capacity}",
        receiver.sequences_nacked
    );
}
