//! RAP on real sockets: a client learns a server's services across two hops of lossy links (the
//! packets are forwarded by `next_hop` at the middle node), and a client on the server's own
//! node gets its answer without the network.

mod threaded_common;

use control::rap::ServiceEntry;
use control::topology::build;
use dataplane::threaded::{RapRequestError, RapServerConfig, ThreadedOptions};
use std::time::Duration;
use threaded_common::*;

fn services() -> Vec<ServiceEntry> {
    (0..3u8)
        .map(|i| ServiceEntry {
            group: g(u16::from(i)),
            sender: n(3),
            size: 1_000_000 + u64::from(i),
            hash: [i; 32],
            segment_size: 1000,
            name: format!("file-{i}.bin"),
        })
        .collect()
}

/// The RAP servers of node `addr`: service id 10 offering [`services`] if it is `server`.
fn server_at(server: control::NodeAddr, addr: control::NodeAddr) -> Vec<RapServerConfig> {
    if addr == server {
        vec![RapServerConfig {
            sid: 10,
            services: services(),
        }]
    } else {
        Vec::new()
    }
}

fn options(addr: control::NodeAddr) -> ThreadedOptions {
    ThreadedOptions {
        seed: 0xC0FFEE + u64::from(addr.get()),
        rap_servers: server_at(n(3), addr),
        ..ThreadedOptions::default()
    }
}

#[test]
fn client_learns_services_across_two_lossy_hops() {
    let mut topology = build::line(3, 7001);
    for link in &mut topology.links {
        link.faults.loss = 0.2;
    }
    let net = Net::start_with(topology, options, |_, t| t.clone());
    // Several exchanges in a row, so that the loss hits some of them.
    for round in 0..5 {
        let list = net
            .node(1)
            .request_services(n(3), 10, LIMIT)
            .unwrap_or_else(|e| panic!("round {round}: {e}"));
        assert_eq!(list, services());
    }

    let (s1, s2, s3) = (
        net.node(1).stats(),
        net.node(2).stats(),
        net.node(3).stats(),
    );
    let server = s3.rap_servers[0].1;
    let lost: u64 = net
        .nodes
        .values()
        .flat_map(|node| node.stats().garbler)
        .map(|(_, s)| s.lost)
        .sum();
    println!(
        "5 exchanges: client sent {} requests ({} retries), got {} provides ({} duplicates); \
         node 2 forwarded {}; server got {} requests, sent {} provides ({} re-sends), {} acks; \
         garbler lost {lost} packets in all",
        s1.rap_client.requests_sent,
        s1.rap_client.retries,
        s1.rap_client.provides_received,
        s1.rap_client.duplicate_provides,
        s2.dnp.forwarded,
        server.requests_received,
        server.provides_sent,
        server.resends,
        server.acks_received,
    );
    assert_eq!(
        s1.rap_client.provides_received, 5,
        "one answer per exchange"
    );
    // A provide re-sent for an earlier exchange (its ack lost) may answer the next request
    // before that request arrives, so the server may see fewer than five; each answer crossed
    // node 2, and so did at least the first request.
    assert!(server.requests_received >= 1);
    assert!(
        s2.dnp.forwarded >= 6,
        "provides and requests crossed node 2"
    );
    assert!(lost > 0, "the links really were lossy");
    net.stop();
}

#[test]
fn local_server_unknown_server_and_stop() {
    let net = Net::start_with(
        build::line(2, 7001),
        |a| ThreadedOptions {
            rap_servers: server_at(n(2), a),
            ..ThreadedOptions::default()
        },
        |_, t| t.clone(),
    );
    // A client on the server's own node: delivered locally both ways.
    let list = net.node(2).request_services(n(2), 10, LIMIT).unwrap();
    assert_eq!(list, services());
    assert!(
        net.node(2).stats().dnp.local_deliveries >= 3,
        "request, provide and ack"
    );

    // No server with that id: the server node counts the requests, the client times out.
    let err = net
        .node(1)
        .request_services(n(2), 99, Duration::from_millis(600))
        .unwrap_err();
    assert_eq!(err, RapRequestError::TimedOut);
    assert!(net.node(2).stats().dnp.rap_no_endpoint >= 1);

    // Servers can be added while the node runs; ids are unique.
    net.node(1).add_rap_server(20, services()).unwrap();
    assert!(net.node(1).add_rap_server(20, services()).is_err());
    assert_eq!(
        net.node(2).request_services(n(1), 20, LIMIT).unwrap(),
        services()
    );
    net.stop();
}
