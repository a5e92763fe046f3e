//! The hooks the RMTP threads will use (an attached RMTP buffer, registered buffers and threads,
//! table-change kicks, routed sends), the topology schedule applied by the garbler, and the
//! stats printout.

mod threaded_common;

use control::Addr;
use control::topology::{Action, ScheduledEvent, build};
use control::wire::{Flag, dnp};
use dataplane::threaded::{BufferHandle, Pop, ThreadedOptions};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use threaded_common::*;

#[test]
fn an_rmtp_layer_attaches_registers_and_is_joined_at_stop() {
    let net = Net::start_without_rmtp(build::line(3, 7001));
    net.converge();
    let node1 = net.node(1);

    // A stand-in for the middle-layer thread: counts packets and table kicks until closed.
    let inbox = node1.attach_rmtp();
    node1.watch_tables(Arc::clone(&inbox) as Arc<dyn BufferHandle>);
    let clients = node1.new_buffer::<u32>("rmtp-client.1");
    let (packets, kicks) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    {
        let (inbox, packets, kicks) =
            (Arc::clone(&inbox), Arc::clone(&packets), Arc::clone(&kicks));
        node1
            .spawn("rmtp-middle", move || {
                loop {
                    match inbox.pop_until(None) {
                        Pop::Item(r) => {
                            assert_eq!(r.flag, Flag::RmtpNack);
                            assert_eq!(r.from, n(2), "forwarded by node 2");
                            packets.fetch_add(1, Ordering::SeqCst);
                        }
                        Pop::Kicked => {
                            kicks.fetch_add(1, Ordering::SeqCst);
                        }
                        Pop::Timeout => {}
                        Pop::Closed => return,
                    }
                }
            })
            .unwrap();
    }

    // A unicast RMTP packet from node 3: node 2 has no RMTP layer and forwards it by next_hop.
    let nack = dnp::frame(Addr::Node(n(1)), Addr::Node(n(3)), Flag::RmtpNack, &[0; 12]);
    for _ in 0..5 {
        net.node(3).dnp().send_routed(&nack).unwrap();
    }
    assert!(wait_until(LIMIT, || packets.load(Ordering::SeqCst) == 5).is_some());
    assert_eq!(net.node(2).stats().dnp.forwarded, 5);

    // A subscription reaching node 1 changes its multicast table: the watcher is kicked.
    net.node(3).subscribe(g(0), n(1), 1).unwrap();
    assert!(wait_until(LIMIT, || kicks.load(Ordering::SeqCst) > 0).is_some());

    let s = node1.stats();
    assert!(s.buffers.iter().any(|(name, _)| name == "rmtp"));
    assert!(s.buffers.iter().any(|(name, _)| name == "rmtp-client.1"));
    let mut net = net;
    net.nodes.remove(&n(1)).unwrap().stop();
    // Stopping closed the registered buffers and joined the registered thread.
    assert!(inbox.is_closed() && clients.is_closed());
    assert_eq!(Arc::strong_count(&packets), 1, "the thread has ended");
    net.stop();
}

/// The unicast loop guard (the sans-IO node's `NodeStats::looped`): an end-to-end packet whose
/// next hop is the neighbour it came from is dropped and counted (`dnp.forward_loop`), not
/// bounced back.
#[test]
fn a_packet_whose_next_hop_is_where_it_came_from_is_dropped_and_counted() {
    let net = Net::start_without_rmtp(build::line(3, 7001));
    net.converge();
    let before = net.node(2).stats();
    // From node 1 to its neighbour 2, for node 1: node 2's route to 1 goes back to 1.
    let looping = dnp::frame(Addr::Node(n(1)), Addr::Node(n(1)), Flag::RmtpNack, &[0; 12]);
    // For node 3 through node 2: forwarded, and so a sign that the looping ones have arrived.
    let onward = dnp::frame(Addr::Node(n(3)), Addr::Node(n(1)), Flag::RmtpNack, &[0; 12]);
    let dnp1 = net.node(1).dnp();
    for _ in 0..5 {
        dnp1.send_to_neighbour(n(2), &looping).unwrap();
    }
    dnp1.send_to_neighbour(n(2), &onward).unwrap();
    let counted = wait_until(LIMIT, || {
        net.node(2).stats().get("dnp.forward_loop") == Some(before.dnp.forward_loop + 5)
    });
    assert!(counted.is_some(), "{:?}", net.node(2).stats().dnp);
    assert!(
        wait_until(LIMIT, || {
            net.node(2).stats().dnp.forwarded == before.dnp.forwarded + 1
        })
        .is_some(),
        "only the packet for node 3 is forwarded"
    );
    net.stop();
}

#[test]
fn the_topology_schedule_takes_a_link_down_and_up() {
    let mut topology = build::line(2, 7001);
    topology.schedule = vec![
        ScheduledEvent {
            at: Duration::from_millis(300),
            action: Action::LinkDown(n(1), n(2)),
        },
        ScheduledEvent {
            at: Duration::from_millis(1_500),
            action: Action::LinkUp(n(2), n(1)),
        },
    ];
    let net = Net::start_with(
        topology,
        |_| ThreadedOptions {
            apply_schedule: true,
            ..ThreadedOptions::default()
        },
        |_, t| t.clone(),
    );
    let both = |up: bool| {
        net.node(1).neighbours().contains(&n(2)) == up
            && net.node(2).neighbours().contains(&n(1)) == up
    };
    assert!(wait_until(LIMIT, || both(true)).is_some());
    assert!(
        wait_until(LIMIT, || both(false)).is_some(),
        "the link never went down"
    );
    assert!(net.node(1).faults(n(2)).unwrap().down);
    assert!(
        wait_until(LIMIT, || both(true)).is_some(),
        "the link never came back"
    );
    assert!(!net.node(2).faults(n(1)).unwrap().down);
    net.stop();
}

#[test]
fn stats_print_as_name_value_lines() {
    let net = Net::start(build::line(2, 7001));
    let links = links_of(&net.topology);
    assert!(wait_until(LIMIT, || net.routes_are(&links)).is_some());
    let s = net.node(1).stats();
    let text = s.to_string();
    println!("{text}");
    for line in text.lines() {
        let (name, value) = line.split_once(' ').expect("name value");
        assert!(!name.is_empty() && value.parse::<u64>().is_ok(), "{line}");
        assert_eq!(s.get(name), value.parse().ok());
    }
    for name in [
        "dnp.rx_error_too_short",
        "dnp.rx_error_bad_checksum",
        "dnp.rx_drp",
        "dnp.tx_drp",
        "buffer.drp.dropped",
        "buffer.gmp.pushed",
        "drp.hellos_sent",
        "gmp.joins_sent",
        "rap_client.requests_sent",
        "garbler.delay.pending",
    ] {
        assert!(s.get(name).is_some(), "{name} missing");
    }
    assert!(s.get("dnp.rx_drp").unwrap() > 0 && s.get("dnp.tx_drp").unwrap() > 0);
    assert_eq!(s.get("node.addr"), Some(1));
    net.stop();
}
