//! The GMP thread (seed §4): sleeps on its buffer's condition variable until a join or leave
//! arrives or the next refresh or expiry is due, and runs the `Gmp` core behind a mutex. Local
//! clients subscribe and unsubscribe through the same mutex (the seed's
//! `local_client_subscribe_to_multicast`), and DRP calls in when routes change. Every caller
//! publishes the multicast table under the lock, sends the joins and leaves after it, and kicks
//! the thread so it re-reads its deadline. Received messages are handled in batches, the table
//! published once per batch.

use super::buffer::Pop;
use super::node::Node;
use crate::sync::lock;
use control::gmp::{Gmp, GmpError};
use control::{GroupAddr, NodeAddr};
use std::sync::MutexGuard;

use control::settings::threaded::BATCH;

pub(crate) fn thread(node: &Node) {
    let inbox = node.dnp.gmp_in();
    loop {
        let deadline = lock(&node.gmp)
            .poll_timeout()
            .and_then(|t| node.clock.to_std(t));
        match inbox.pop_until(deadline) {
            Pop::Item(first) => {
                let routes = node.dnp.routes();
                let now = node.clock.now();
                let mut gmp = lock(&node.gmp);
                // What else is waiting joins the batch: one table publish for all of it, so a
                // join flood costs a rebuild per batch, not per join.
                let waiting = std::iter::from_fn(|| inbox.try_pop()).take(BATCH - 1);
                for r in std::iter::once(first).chain(waiting) {
                    // Malformed bodies are counted by the core.
                    let _ = gmp.handle_body(now, r.from, r.body(), &routes);
                }
                drain(node, gmp);
            }
            Pop::Timeout | Pop::Kicked => {}
            Pop::Closed => return,
        }
        let now = node.clock.now();
        let mut gmp = lock(&node.gmp);
        if gmp.poll_timeout().is_some_and(|t| t <= now) {
            let routes = node.dnp.routes();
            gmp.handle_timeout(now, &routes);
        }
        drain(node, gmp);
    }
}

pub(crate) fn subscribe(
    node: &Node,
    group: GroupAddr,
    sender: NodeAddr,
    service_id: u16,
    join: bool,
) -> Result<(), GmpError> {
    let routes = node.dnp.routes();
    let now = node.clock.now();
    let mut gmp = lock(&node.gmp);
    let result = if join {
        gmp.subscribe(now, group, sender, service_id, &routes)
    } else {
        gmp.unsubscribe(now, group, sender, service_id, &routes)
    };
    drain(node, gmp);
    node.dnp.gmp_in().kick();
    result
}

pub(crate) fn routes_changed(node: &Node) {
    let routes = node.dnp.routes();
    let now = node.clock.now();
    let mut gmp = lock(&node.gmp);
    gmp.routes_changed(now, &routes);
    drain(node, gmp);
    node.dnp.gmp_in().kick();
}

fn drain(node: &Node, mut gmp: MutexGuard<'_, Gmp>) {
    let mut out = Vec::new();
    while let Some(t) = gmp.poll_transmit() {
        out.push(t);
    }
    // Events only say which trees changed; the table says how, and the core counts expiries.
    while gmp.poll_event().is_some() {}
    let changed = node.dnp.publish_multicast(gmp.table());
    drop(gmp);
    for t in out {
        let _ = node.dnp.send_to_neighbour(t.to, &t.packet);
    }
    if changed {
        node.tables_changed();
    }
}
