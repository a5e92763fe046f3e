//! Garbage at a node's port: every datagram DNP refuses is counted under its `DnpError` name,
//! valid packets from strangers are counted and dropped, and none of it changes the node's
//! routes, neighbours or peers.

mod threaded_common;

use control::rng::Rng;
use control::topology::build;
use control::wire::gmp::GmpMessage;
use control::wire::{DEFAULT_MTU, Flag, Packet, checksum, dnp, drp};
use control::{Addr, GroupAddr};
use dataplane::threaded::ERROR_NAMES;
use std::collections::BTreeMap;
use std::net::UdpSocket;
use threaded_common::*;

fn node_addr(v: u16) -> Addr {
    Addr::Node(n(v))
}

/// The datagrams to throw, each with the counter it must land in.
fn garbage(rng: &mut Rng) -> Vec<(Vec<u8>, &'static str)> {
    let hello = dnp::frame(node_addr(1), node_addr(2), Flag::Drp, &drp::hello());
    let mut out = vec![
        (vec![], "too_short"),
        (vec![1, 2, 3, 4, 5], "too_short"),
        (vec![0x55; DEFAULT_MTU + 1], "too_long"),
        (vec![0; 60_000], "too_long"),
        (hello[..hello.len() - 1].to_vec(), "length_mismatch"),
    ];
    let mut padded = hello.clone();
    padded.push(0);
    out.push((padded, "length_mismatch"));
    let mut flipped = hello.clone();
    flipped[11] ^= 0x10;
    out.push((flipped, "bad_checksum"));
    let mut zero_sum = hello.clone();
    zero_sum[0] = 0;
    zero_sum[1] = 0;
    out.push((zero_sum, "bad_checksum"));
    let mut unknown = hello.clone();
    unknown[6..8].copy_from_slice(&0x0099u16.to_be_bytes());
    unknown[..2].copy_from_slice(&[0, 0]);
    let sum = checksum::checksum(&unknown);
    unknown[..2].copy_from_slice(&sum.to_be_bytes());
    out.push((unknown, "unknown_flag"));
    // Random bytes of random sizes: what they are is whatever DNP parsing says.
    for _ in 0..200 {
        let len = rng.below(64) as usize;
        let bytes: Vec<u8> = (0..len).map(|_| rng.next_u64() as u8).collect();
        let name = match Packet::parse(&bytes, DEFAULT_MTU) {
            Err(e) => e.name(),
            Ok(_) => "valid",
        };
        out.push((bytes, name));
    }
    // Random bytes with a correct length field: they get as far as the checksum.
    for _ in 0..100 {
        let len = 10 + rng.below(100) as usize;
        let mut bytes: Vec<u8> = (0..len).map(|_| rng.next_u64() as u8).collect();
        bytes[8..10].copy_from_slice(&(len as u16).to_be_bytes());
        let name = match Packet::parse(&bytes, DEFAULT_MTU) {
            Err(e) => e.name(),
            Ok(_) => "valid",
        };
        out.push((bytes, name));
    }
    // Well-formed packets from a socket that is no node: counted as an unknown peer. A DRP
    // hello claiming to come from the node itself, a GMP join, data for a group.
    out.push((
        dnp::frame(node_addr(1), node_addr(1), Flag::Drp, &drp::hello()),
        "unknown_peer",
    ));
    let join = dnp::frame(
        node_addr(1),
        node_addr(2),
        Flag::Gmp,
        &GmpMessage::join(GroupAddr::from_index(0).unwrap(), n(2)).encode(),
    );
    out.push((join, "unknown_peer"));
    let group = Addr::Group(GroupAddr::from_index(0).unwrap());
    out.push((
        dnp::frame(group, node_addr(2), Flag::RmtpData, &[1; 40]),
        "unknown_peer",
    ));
    out
}

#[test]
fn garbage_is_counted_by_kind_and_changes_nothing() {
    let net = Net::start(build::line(2, 7001));
    let links = net.converge();
    let target = net.node(1);
    let routes = target.routes();
    let neighbours = target.neighbours();
    let peers = target.peers();
    let before = target.stats();

    let mut rng = Rng::new(2001);
    let datagrams = garbage(&mut rng);
    let mut expected: BTreeMap<&str, u64> = BTreeMap::new();
    for (_, name) in &datagrams {
        *expected.entry(name).or_default() += 1;
    }
    assert_eq!(
        expected.get("valid"),
        None,
        "random bytes never make a valid packet"
    );
    let attacker = UdpSocket::bind("127.0.0.1:0").unwrap();
    // Everything the attacker sends lands in an error counter or in `rx_unknown_peer` (the
    // neighbour's packets are all valid), so that sum tells how many have arrived. Sent in
    // batches it keeps up with: a burst larger than the kernel's receive buffer is lost before
    // DNP sees it.
    let landed = |s: &dataplane::threaded::NodeStats| {
        s.dnp.rx_errors.iter().sum::<u64>() + s.dnp.rx_unknown_peer
            - before.dnp.rx_errors.iter().sum::<u64>()
            - before.dnp.rx_unknown_peer
    };
    for (i, batch) in datagrams.chunks(20).enumerate() {
        for (bytes, _) in batch {
            attacker.send_to(bytes, target.local_addr()).unwrap();
        }
        let sent = (i * 20 + batch.len()) as u64;
        let arrived = wait_until(LIMIT, || landed(&target.stats()) >= sent);
        assert!(
            arrived.is_some(),
            "only {} of {sent} arrived",
            landed(&target.stats())
        );
    }
    let after = target.stats();
    for (i, name) in ERROR_NAMES.iter().enumerate() {
        let got = after.dnp.rx_errors[i] - before.dnp.rx_errors[i];
        let want = expected.get(name).copied().unwrap_or(0);
        assert_eq!(got, want, "{name}");
        assert_eq!(
            after.get(&format!("dnp.rx_error_{name}")),
            Some(after.dnp.rx_errors[i])
        );
    }
    println!("counted: {expected:?}");
    assert_eq!(
        after.dnp.rx_unknown_peer - before.dnp.rx_unknown_peer,
        expected["unknown_peer"]
    );
    assert_eq!(after.dnp.peers_learned, 0);
    assert_eq!(after.drp.bad_messages, 0, "nothing reached DRP");
    assert_eq!(after.gmp.joins_received, before.gmp.joins_received);

    assert_eq!(*target.routes(), *routes);
    assert_eq!(target.neighbours(), neighbours);
    assert_eq!(target.peers(), peers);
    assert!(target.multicast().entries().is_empty());
    // Still working: the neighbour keeps hearing hellos, routes stay put.
    let hellos = net.node(2).stats().drp.hellos_recv;
    assert!(wait_until(LIMIT, || net.node(2).stats().drp.hellos_recv > hellos + 2).is_some());
    assert!(net.routes_are(&links));
    net.stop();
}
