//! GMP on real sockets: a subscription far from the sender builds the tree hop by hop back to
//! the sender's node, and unsubscribing (or stopping) takes it down again.

mod threaded_common;

use control::NodeAddr;
use control::topology::build;
use threaded_common::*;

/// Whether every node on the path from `member` to `sender` has the tree, pointing the right
/// way: upstream = its next hop toward the sender, downstream = the node before it.
fn tree_reaches_sender(net: &Net, member: NodeAddr, sender: NodeAddr) -> bool {
    let group = g(1);
    let mut prev: Option<NodeAddr> = None;
    let mut at = member;
    loop {
        let node = &net.nodes[&at];
        let table = node.multicast();
        let Some(entry) = table.lookup(group, sender) else {
            return false;
        };
        let up = if at == sender {
            None
        } else {
            node.next_hop(sender)
        };
        if entry.upstream != up {
            return false;
        }
        match prev {
            None => {
                if entry.local_members != [7] {
                    return false;
                }
            }
            Some(p) => {
                if !entry.downstream.contains(&p) {
                    return false;
                }
            }
        }
        match up {
            None => return at == sender,
            Some(next) => {
                prev = Some(at);
                at = next;
            }
        }
    }
}

#[test]
fn joins_reach_the_senders_node_and_leaves_undo_them() {
    let net = Net::start(build::grid(3, 3, 7001));
    net.converge();

    let (member, sender) = (n(9), n(1));
    net.nodes[&member].subscribe(g(1), sender, 7).unwrap();
    assert!(
        net.nodes[&member].subscribe(g(1), sender, 7).is_err(),
        "second subscribe refused"
    );
    let took = wait_until(LIMIT, || tree_reaches_sender(&net, member, sender));
    assert!(
        took.is_some(),
        "tree incomplete: {:?}",
        net.nodes
            .values()
            .map(|n| n.multicast())
            .collect::<Vec<_>>()
    );
    println!("tree from 9 to 1 formed in {:?}", took.unwrap());
    let root = net.node(1).multicast();
    let at_sender = root.lookup(g(1), sender).unwrap();
    assert_eq!(at_sender.upstream, None);
    assert_eq!(
        at_sender.downstream,
        [net.node(1).next_hop(member).unwrap()]
    );
    assert!(at_sender.local_members.is_empty());
    // Refreshes keep it alive past the expiry time. Letting that time pass is the subject, so
    // this sleep stays: there is no event to wait for, only the absence of one.
    let refreshes =
        |net: &Net| -> u64 { net.nodes.values().map(|n| n.stats().gmp.refreshes).sum() };
    let before = refreshes(&net);
    std::thread::sleep(fast_timers().gmp_expire + fast_timers().gmp_refresh);
    assert!(tree_reaches_sender(&net, member, sender));
    assert!(refreshes(&net) > before, "kept alive by refreshes");
    for node in net.nodes.values() {
        assert_eq!(node.stats().gmp.expiries, 0, "node {}", node.addr());
    }

    net.nodes[&member].unsubscribe(g(1), sender, 7).unwrap();
    let gone = wait_until(LIMIT, || {
        net.nodes
            .values()
            .all(|node| node.multicast().entries().is_empty())
    });
    assert!(gone.is_some(), "tree not removed");
    assert!(net.node(1).stats().gmp.leaves_received >= 1);
    net.stop();
}

#[test]
fn a_member_node_that_stops_leaves_at_once() {
    let mut net = Net::start(build::line(3, 7001));
    net.converge();
    net.node(3).subscribe(g(1), n(1), 7).unwrap();
    assert!(wait_until(LIMIT, || tree_reaches_sender(&net, n(3), n(1))).is_some());
    // Counted from here: on a loaded machine a late hello can move node 3's tree (a leave to
    // its old upstream) before the stop, and a count that passed 1 before the first look
    // would never be seen equal to it.
    let leaves = net.node(2).stats().gmp.leaves_received;
    net.nodes.remove(&n(3)).unwrap().stop();
    // Node 2 hears the leave (not just the expiry, which would take gmp_expire).
    assert!(wait_until(LIMIT, || net.node(2).stats().gmp.leaves_received > leaves).is_some());
    assert!(wait_until(LIMIT, || net.node(1).multicast().entries().is_empty()).is_some());
    assert_eq!(net.node(2).stats().gmp.expiries, 0);
    net.stop();
}
