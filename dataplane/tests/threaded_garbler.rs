//! The garbler on real sockets: corruption caught by the receiver's checksum, counted exactly on
//! both sides; delay, jitter and reordering through the delay line, seen by a consumer attached
//! where the RMTP middle layer will sit.

mod threaded_common;

use control::topology::{Faults, build};
use control::wire::{DEFAULT_MTU, Flag, dnp};
use control::{Addr, GroupAddr};
use dataplane::threaded::Pop;
use std::time::Duration;
use threaded_common::*;

fn data(seq: u32) -> Vec<u8> {
    let group = Addr::Group(GroupAddr::from_index(0).unwrap());
    let mut body = seq.to_be_bytes().to_vec();
    body.resize(200, 0xAB);
    dnp::frame(group, Addr::Node(n(1)), Flag::RmtpData, &body)
}

#[test]
fn corruption_and_duplicates_are_caught_and_counted_on_both_sides() {
    let mut topology = build::line(2, 7001);
    topology.links[0].faults = Faults {
        corrupt: 0.3,
        duplicate: 0.2,
        ..Faults::default()
    };
    let net = Net::start_without_rmtp(topology);
    // DRP converges through the damage.
    net.converge();
    let dnp1 = net.node(1).dnp();
    // In batches the receiver keeps up with: a burst larger than the kernel's receive buffer
    // would lose datagrams before DNP ever sees them, and the books would not balance.
    for batch in 0..15 {
        for seq in batch * 20..(batch + 1) * 20 {
            dnp1.send_to_neighbour(n(2), &data(seq)).unwrap();
        }
        let caught_up = wait_until(LIMIT, || {
            net.node(2).stats().dnp.rx_datagrams >= dnp1.stats().tx_packets
        });
        assert!(caught_up.is_some());
    }
    // Clean from now on, so the sender's counts are final.
    net.node(1).set_faults(n(2), Faults::default()).unwrap();
    net.node(2).set_faults(n(1), Faults::default()).unwrap();
    let g = net.node(1).stats().garbler;
    let (_, s) = g.iter().find(|(to, _)| *to == n(2)).copied().unwrap();
    println!("1->2 garbler: {s:?}");
    assert!(
        s.offered >= 300 && s.corrupted > 50 && s.duplicated > 30,
        "{s:?}"
    );
    let caught = s.corrupted - s.corrupted_escaped;
    let settled = wait_until(LIMIT, || {
        net.node(2).stats().dnp.rx_errors.iter().sum::<u64>() == caught
    });
    let rx = net.node(2).stats().dnp;
    assert!(
        settled.is_some(),
        "receiver counted {:?}, sender caught {caught}",
        rx.rx_errors
    );
    // The length field is checked before the checksum, so flips there show as length errors.
    assert_eq!(
        rx.rx_error("bad_checksum").unwrap() + rx.rx_error("length_mismatch").unwrap(),
        caught
    );
    assert!(
        rx.rmtp_unclaimed >= 200,
        "data without an RMTP layer is counted: {rx:?}"
    );
    net.stop();
}

#[test]
fn delayed_jittered_and_reordered_packets_all_arrive_out_of_order() {
    let mut topology = build::line(2, 7001);
    topology.links[0].faults = Faults {
        delay: Duration::from_millis(20),
        jitter: Duration::from_millis(5),
        reorder: 0.5,
        ..Faults::default()
    };
    let net = Net::start_without_rmtp(topology);
    net.converge();
    let inbox = net.node(2).attach_rmtp();
    let dnp1 = net.node(1).dnp();
    for seq in 0..50 {
        dnp1.send_to_neighbour(n(2), &data(seq)).unwrap();
    }
    let mut got = Vec::new();
    while got.len() < 50 {
        match inbox.pop_timeout(LIMIT) {
            Pop::Item(r) => {
                assert_eq!(r.from, n(1));
                assert_eq!(r.flag, Flag::RmtpData);
                let view = r.view(DEFAULT_MTU).unwrap();
                got.push(u32::from_be_bytes(view.body()[..4].try_into().unwrap()));
            }
            other => panic!("after {} packets: {other:?}", got.len()),
        }
    }
    let mut sorted = got.clone();
    sorted.sort_unstable();
    assert_eq!(sorted, (0..50).collect::<Vec<_>>(), "each exactly once");
    assert_ne!(got, sorted, "some overtook others");
    let s = net.node(1).stats();
    let (_, g) = s
        .garbler
        .iter()
        .find(|(to, _)| *to == n(2))
        .copied()
        .unwrap();
    assert!(g.reordered > 0 && g.delayed == g.offered, "{g:?}");
    assert_eq!(s.delay_line.send_failed, 0);
    assert_eq!(inbox.stats().dropped, 0);
    println!("arrival order: {got:?}");
    net.stop();
}
