//! The bytes a threaded node puts on the wire are the protocol cores' bytes: a test socket
//! standing in for a neighbour sees the golden hello of docs/PROTOCOL.md, and a terminate when
//! the node stops.

mod threaded_common;

use control::Addr;
use control::topology::build;
use control::wire::{DEFAULT_MTU, Flag, Packet, dnp, drp};
use dataplane::threaded::{ThreadedNode, ThreadedOptions};
use std::time::Duration;
use threaded_common::*;

#[test]
fn hello_and_terminate_are_the_golden_bytes() {
    let mut topology = build::line(2, 7001);
    topology.network.timers = fast_timers();
    let mut sockets = bind_all(&mut topology);
    let peer = sockets.remove(&n(2)).unwrap();
    peer.set_read_timeout(Some(LIMIT)).unwrap();
    let node = ThreadedNode::start_with_socket(
        &topology,
        n(1),
        sockets.remove(&n(1)).unwrap(),
        ThreadedOptions::default(),
    )
    .unwrap();

    let mut buf = [0u8; 2048];
    let (len, from) = peer.recv_from(&mut buf).expect("a hello");
    assert_eq!(from, node.local_addr());
    assert_eq!(
        &buf[..len],
        [
            0x08, 0x0f, 0, 2, 0, 1, 0, 1, 0, 0x10, 0, 1, 0x03, 0x0a, 0xf4, 0xd1
        ],
        "PROTOCOL.md golden hello"
    );

    // Answer like a neighbour would; node 1 then counts us as live.
    let hello = dnp::frame(Addr::Node(n(1)), Addr::Node(n(2)), Flag::Drp, &drp::hello());
    peer.send_to(&hello, node.local_addr()).unwrap();
    assert!(wait_until(LIMIT, || node.neighbours() == [n(2)]).is_some());

    node.stop();
    let terminate = dnp::frame(
        Addr::Node(n(2)),
        Addr::Node(n(1)),
        Flag::Drp,
        &drp::terminate(),
    );
    peer.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut seen = 0;
    loop {
        let (len, _) = peer
            .recv_from(&mut buf)
            .expect("a terminate before silence");
        let p = Packet::parse(&buf[..len], DEFAULT_MTU).expect("only valid packets");
        assert_eq!(p.src(), Addr::Node(n(1)));
        seen += 1;
        if buf[..len] == terminate[..] {
            break;
        }
    }
    println!("terminate after {seen} packets");
}
