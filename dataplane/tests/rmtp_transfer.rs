//! End-to-end RMTP over hand-made trees: sender, relays, receivers, seeded loss.

mod common;

use common::*;
use std::time::Duration;

const EDGES: &[(u16, u16)] = &[(1, 2), (2, 3), (2, 4), (3, 5)];
const MEMBERS: &[(u16, u16)] = &[(2, 1), (3, 1), (4, 2), (5, 1)];

fn assert_all_identical(net: &Net, data: &[u8]) {
    let want = blake3::hash(data);
    for (id, m, r) in net.receivers() {
        assert!(
            r.is_complete(),
            "receiver {id}/{m} incomplete: {:?}",
            r.stats()
        );
        assert_eq!(r.sink().data.len(), data.len());
        assert_eq!(blake3::hash(&r.sink().data), want, "receiver {id}/{m}");
        assert_eq!(r.sink().verified, Some(true));
    }
}

#[test]
fn multi_mib_with_ten_percent_loss_arrives_identical() {
    let data = content(4 << 20, 7);
    let mut spec = Spec::new(EDGES, MEMBERS, data.clone());
    spec.seed = 42;
    let mut net = Net::new(spec);
    net.loss = 0.10;
    let took = net.run(Duration::from_secs(120), |_| {});
    assert_all_identical(&net, &data);
    let s = net.sender().stats().clone();
    let relays = net.relay_totals();
    let receiver_nacks: u64 = net.receivers().map(|(_, _, r)| r.stats().nacks_sent).sum();
    println!(
        "4 MiB, 10% loss per link, {} receivers: {:.2}s virtual; data {} retransmissions {} \
         ({:.1}%); link packets {} lost {}",
        net.receivers().count(),
        took.as_secs_f64(),
        s.data_sent,
        s.retransmissions,
        100.0 * s.retransmissions as f64 / s.data_sent as f64,
        net.links.sent,
        net.links.lost,
    );
    println!(
        "NACKs: receivers sent {receiver_nacks}, relays received {}, relays sent upstream {}, \
         sender received {} (receiver:sender ratio {:.1}); repairs from cache {}",
        relays.nacks_received,
        relays.nacks_sent_upstream,
        s.nacks_received,
        receiver_nacks as f64 / s.nacks_received.max(1) as f64,
        relays.repairs_from_cache,
    );
    assert!(s.retransmissions > 0);
    // The final MABs climb the tree (a relay counts a completion from a peer's second report
    // in a row); then the sender knows everyone holds everything.
    let deadline = net.now + Duration::from_secs(1);
    while !net.sender().is_complete() && net.now < deadline {
        net.step();
    }
    assert!(net.sender().is_complete(), "sender saw everyone finish");
    assert_eq!(net.sender().stats().bytes_acked, data.len() as u64);
}
