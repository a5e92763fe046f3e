//! Whatever bytes arrive, a node never panics, counts what it drops, and changes nothing.

use control::topology::build;
use control::wire::dnp::{self, Flag};
use control::wire::drp;
use control::{Addr, Instant, NodeAddr};
use dataplane::node::Node;
use proptest::prelude::*;

fn n(v: u16) -> NodeAddr {
    NodeAddr::new(v).unwrap()
}

fn fresh_node() -> Node {
    Node::new(n(1), &build::line(3, 7001), Instant::ZERO)
}

proptest! {
    #[test]
    fn arbitrary_datagrams_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..1100)) {
        let mut node = fresh_node();
        node.handle_datagram(Instant::from_millis(1), n(2), &bytes);
        let s = node.stats();
        prop_assert_eq!(s.rx_accepted + s.rejected(), 1);
    }

    /// Valid DNP framing around arbitrary bodies reaches every protocol's body parser.
    #[test]
    fn arbitrary_bodies_never_panic(flag in 0usize..9, dst in any::<u16>(), src in any::<u16>(),
                                    body in proptest::collection::vec(any::<u8>(), 0..1014)) {
        let mut node = fresh_node();
        let packet = dnp::frame(Addr::from_raw(dst), Addr::from_raw(src), Flag::ALL[flag], &body);
        node.handle_datagram(Instant::from_millis(1), n(2), &packet);
        node.handle_timeout(Instant::from_millis(2));
        while node.poll_transmit().is_some() {}
        prop_assert_eq!(node.stats().rx_accepted, 1);
    }
}

#[test]
fn each_kind_of_garbage_is_counted_under_its_name() {
    let mut node = fresh_node();
    let good = dnp::frame(
        Addr::from_raw(1),
        Addr::from_raw(2),
        Flag::Drp,
        &drp::hello(),
    );
    let now = Instant::from_millis(1);
    node.handle_datagram(now, n(2), &good[..5]);
    node.handle_datagram(now, n(2), &vec![0u8; 2000]);
    node.handle_datagram(now, n(2), &good[..11]);
    let mut flipped = good.clone();
    flipped[11] ^= 1;
    node.handle_datagram(now, n(2), &flipped);
    let mut unknown = good.clone();
    unknown[6] = 0x7f;
    let sum = !control::wire::checksum::ones_complement_sum(&{
        let mut z = unknown.clone();
        z[0] = 0;
        z[1] = 0;
        z
    });
    unknown[..2].copy_from_slice(&sum.to_be_bytes());
    node.handle_datagram(now, n(2), &unknown);
    let s = node.stats();
    assert_eq!(
        (
            s.rx_error_too_short,
            s.rx_error_too_long,
            s.rx_error_length_mismatch,
            s.rx_error_bad_checksum,
            s.rx_error_unknown_flag
        ),
        (1, 1, 1, 1, 1)
    );
    assert_eq!(s.rx_accepted, 0);
    assert_eq!(node.drp().stats().hellos_recv, 0, "nothing reached DRP");
}

/// One flipped body bit under a correct DNP checksum (what a weak checksum lets through): the
/// CRC-32C trailer refuses the body, the node counts it as malformed, and no protocol acts on
/// it. The same body unflipped is acted upon, so the counters below can move.
#[test]
fn a_flipped_body_bit_is_a_bad_crc_counted_and_not_acted_upon() {
    use control::GroupAddr;
    use control::wire::BodyError;
    use control::wire::drp::DrpMessage;
    use control::wire::gmp::GmpMessage;
    use control::wire::rap::{self, RapMessage};
    use dataplane::node::{RAP_CLIENT_SID, RAP_SERVER_SID};

    let now = Instant::from_millis(1);
    let me = Addr::Node(n(1));
    let peer = Addr::Node(n(2));
    let join = GmpMessage::join(GroupAddr::from_index(0).unwrap(), n(1));
    let cases = [
        (Flag::Drp, drp::hello()),
        (Flag::Gmp, join.encode().to_vec()),
        (Flag::Rap, rap::request(RAP_SERVER_SID, RAP_CLIENT_SID)),
    ];
    // What each protocol did with the packets it was given: hellos, joins, RAP requests.
    let acted = |node: &Node| {
        (
            node.drp().stats().hellos_recv,
            node.gmp().stats().joins_received,
            node.rap_server().stats().requests_received,
        )
    };
    for (i, (flag, body)) in cases.into_iter().enumerate() {
        let mut good = fresh_node();
        good.handle_datagram(now, n(2), &dnp::frame(me, peer, flag, &body));
        let mut want = [0u64; 3];
        want[i] = 1;
        let (h, j, r) = acted(&good);
        assert_eq!([h, j, r], want, "{flag:?} unflipped is acted upon");
        assert_eq!(good.stats().malformed_body, 0);

        for bit in 0..body.len() * 8 {
            let mut bad = body.clone();
            bad[bit / 8] ^= 1 << (bit % 8);
            let err = match flag {
                Flag::Drp => DrpMessage::parse(&bad).map(|_| ()),
                Flag::Gmp => GmpMessage::parse(&bad).map(|_| ()),
                _ => RapMessage::parse(&bad).map(|_| ()),
            };
            assert_eq!(err, Err(BodyError::BadCrc), "{flag:?} bit {bit}");
            let mut node = fresh_node();
            node.handle_datagram(now, n(2), &dnp::frame(me, peer, flag, &bad));
            assert_eq!(node.stats().rx_accepted, 1, "the DNP checksum is correct");
            assert_eq!(node.stats().malformed_body, 1, "{flag:?} bit {bit}");
            assert_eq!(acted(&node), (0, 0, 0), "{flag:?} bit {bit} was acted upon");
        }
    }
}

#[test]
fn without_the_rmtp_layer_rmtp_packets_take_the_dnp_path() {
    let options = dataplane::node::RmtpOptions {
        enabled: false,
        ..Default::default()
    };
    let mut node = Node::with_options(n(2), &build::line(3, 7001), Instant::ZERO, options);
    let now = Instant::from_millis(1);
    let to = |dst: u16| dnp::frame(Addr::from_raw(dst), Addr::from_raw(1), Flag::RmtpData, b"x");
    node.handle_datagram(now, n(1), &to(2));
    // No route to node 3 yet: DNP's refusal, not the relay's.
    node.handle_datagram(now, n(1), &to(3));
    let s = node.stats();
    assert_eq!(
        (s.rmtp_unclaimed, s.forward_no_route, s.rx_accepted),
        (1, 1, 2)
    );
    let relay = node.transfers().relay_stats();
    assert_eq!(relay, &Default::default(), "the relay saw nothing");
}

#[test]
fn a_rap_packet_for_a_service_this_node_lacks_is_counted_as_such_whatever_its_body() {
    let mut node = fresh_node();
    let now = Instant::from_millis(1);
    let rap = |body: &[u8]| dnp::frame(Addr::from_raw(1), Addr::from_raw(2), Flag::Rap, body);
    let sealed = |fields: &[u8]| {
        let mut body = fields.to_vec();
        control::wire::trailer::push(&mut body);
        body
    };
    // Intact, for service 0xBE0C, with fields no RAP message has.
    node.handle_datagram(now, n(2), &rap(&sealed(&[0xBE, 0x0C, 0xFF])));
    // Too short to name a service; and a trailer that does not match.
    node.handle_datagram(now, n(2), &rap(&sealed(&[0xBE])));
    node.handle_datagram(now, n(2), &rap(&[0xBE, 0x0C, 0, 0, 0, 0]));
    let s = node.stats();
    assert_eq!((s.rap_no_endpoint, s.malformed_body), (1, 2));
}
