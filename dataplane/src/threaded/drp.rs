//! The three DRP threads of seed §3.2 around one `Drp` state machine behind a mutex:
//!
//! - the **receiver** takes DRP packets from its impatient buffer and feeds `handle_packet`;
//!   when that moves the core's next deadline earlier (a new neighbour, a new LSP to flood,
//!   routes to recompute) it alerts the LSP thread, as the seed's receiver "notifies the link
//!   state packet thread that the topology has been changed";
//! - the **hello** thread wakes every hello interval (its condition variable is the seed's
//!   `DRP_emergency`, never signalled) and runs the core's timers: hellos, dead neighbours,
//!   former-neighbour probes;
//! - the **LSP** thread waits for an alert or for the core's next deadline (at most one LSP
//!   retransmit interval) and runs the core's timers: flooding, retransmission, SPF.
//!
//! The core keeps every DRP timer itself, so whichever thread runs `handle_timeout` does all
//! that is due; the split is the seed's, in who wakes when. After every call the caller drains
//! the core's packets (sent after the lock is released) and events; a new routing table is
//! published under the lock (so two threads never publish out of order), then GMP and the RAP
//! client are told.

use super::node::Node;
use super::signal::Wake;
use crate::sync::lock;
use control::drp::{Drp, DrpEvent};
use control::wire::drp::DrpMessage;
use std::sync::MutexGuard;

pub(crate) fn receiver(node: &Node) {
    while let Some(r) = node.dnp.drp_in().pop() {
        let msg = match DrpMessage::parse(r.body()) {
            Ok(msg) => msg,
            Err(_) => {
                super::counters::DnpCounters::bump(&node.dnp.counters().drp_malformed);
                continue;
            }
        };
        let now = node.clock.now();
        let mut drp = lock(&node.drp);
        let before = drp.poll_timeout();
        drp.handle_packet(now, r.from, msg);
        let after = drp.poll_timeout();
        drain(node, drp);
        if after.is_some() && (before.is_none() || after < before) {
            node.lsp_wake.signal();
        }
    }
}

pub(crate) fn hello(node: &Node) {
    let every = node
        .timers
        .hello_interval
        .max(std::time::Duration::from_millis(1));
    let mut next = std::time::Instant::now() + every;
    loop {
        if node.hello_wake.wait_until(Some(next)) == Wake::Stopped {
            return;
        }
        run_timers(node);
        expire_learned_peers(node);
        let now = std::time::Instant::now();
        next += every;
        if next <= now {
            next = now + every;
        }
    }
}

pub(crate) fn lsp(node: &Node) {
    let cap = node
        .timers
        .lsp_retransmit
        .max(std::time::Duration::from_millis(1));
    loop {
        let deadline = lock(&node.drp)
            .poll_timeout()
            .and_then(|t| node.clock.to_std(t));
        let latest = std::time::Instant::now() + cap;
        let wake_at = deadline.map_or(latest, |d| d.min(latest));
        if node.lsp_wake.wait_until(Some(wake_at)) == Wake::Stopped {
            return;
        }
        run_timers(node);
    }
}

/// Runs the core's timers if any is due.
fn run_timers(node: &Node) {
    let now = node.clock.now();
    let mut drp = lock(&node.drp);
    if drp.poll_timeout().is_some_and(|t| t <= now) {
        drp.handle_timeout(now);
    }
    drain(node, drp);
}

/// Forgets peers learnt from their packets that DRP has not had as live neighbours for a dead
/// interval. Under the DRP mutex, so that no neighbour can come up between the look and the
/// forgetting.
fn expire_learned_peers(node: &Node) {
    let drp = lock(&node.drp);
    node.dnp
        .expire_learned(&drp.neighbours(), node.timers.dead_interval());
}

/// Sends what the core queued and publishes a new routing table if there is one. A neighbour
/// declared dead takes its learnt address with it, under the mutex (in the order DRP decided).
pub(crate) fn drain(node: &Node, mut drp: MutexGuard<'_, Drp>) {
    let mut out = Vec::new();
    while let Some(t) = drp.poll_transmit() {
        out.push(t);
    }
    let mut routes_changed = false;
    while let Some(ev) = drp.poll_event() {
        match ev {
            DrpEvent::RoutesChanged => routes_changed = true,
            DrpEvent::NeighbourDown(n) => node.dnp.neighbour_down(n),
            DrpEvent::NeighbourUp(_) => {}
        }
    }
    if routes_changed {
        node.dnp.publish_routes(drp.routes());
    }
    drop(drp);
    for t in out {
        // Failures are counted by DNP; DRP repeats itself on its timers.
        let _ = node.dnp.send_to_neighbour(t.to, &t.packet);
    }
    if routes_changed {
        node.routes_changed();
    }
}

/// At shutdown, after `terminate`: sends the terminates and nothing else (the other protocol
/// threads are stopped, so nothing may be told of route changes any more).
pub(crate) fn drain_final(node: &Node, mut drp: MutexGuard<'_, Drp>) {
    let mut out = Vec::new();
    while let Some(t) = drp.poll_transmit() {
        out.push(t);
    }
    drop(drp);
    for t in out {
        let _ = node.dnp.send_to_neighbour(t.to, &t.packet);
    }
}
