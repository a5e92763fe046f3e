//! RAP (seed §5): one thread per RAP server, each with its own impatient buffer and `RapServer`
//! core, and one RAP client endpoint per node whose thread retries requests while routes exist.
//! DNP hands a RAP packet for this node to the endpoint its destination service id names.
//! Answers reach callers of [`request_services`] through a condition variable.

use super::buffer::{ImpatientBuffer, Pop};
use super::counters::DnpCounters;
use super::node::Node;
use super::packet::Received;
use crate::sync::{lock, wait_until};
use control::rap::{RapClient, RapEvent, RapServer, ServiceEntry};
use control::{Addr, NodeAddr};
use std::collections::BTreeMap;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant as StdInstant};

pub use crate::host::RapRequestError;

pub(crate) struct ServerSlot {
    pub server: Mutex<RapServer>,
    pub inbox: Arc<ImpatientBuffer<Received>>,
}

#[derive(Default)]
struct Answers {
    /// The last list each server (node, service id) answered with, and how many answers came.
    by_server: BTreeMap<(NodeAddr, u16), (u64, Vec<ServiceEntry>)>,
    stopped: bool,
}

pub(crate) struct ClientSlot {
    pub sid: u16,
    pub client: Mutex<RapClient>,
    pub inbox: Arc<ImpatientBuffer<Received>>,
    answers: Mutex<Answers>,
    answered: Condvar,
}

impl ClientSlot {
    pub fn new(client: RapClient, inbox: Arc<ImpatientBuffer<Received>>) -> Self {
        ClientSlot {
            sid: client.service_id(),
            client: Mutex::new(client),
            inbox,
            answers: Mutex::new(Answers::default()),
            answered: Condvar::new(),
        }
    }

    /// Wakes every waiting caller with [`RapRequestError::Stopped`].
    pub fn stop(&self) {
        lock(&self.answers).stopped = true;
        self.answered.notify_all();
    }
}

/// The DNP source of a RAP packet: the client or server node at the other end.
fn source(node: &Node, r: &Received) -> Option<NodeAddr> {
    match r.src {
        Addr::Node(n) => Some(n),
        _ => {
            DnpCounters::bump(&node.dnp.counters().rx_bad_address);
            None
        }
    }
}

/// Waits for a packet in `inbox` until the core's `deadline` and hands its source and body to
/// `handle`; false once the inbox is closed (the thread ends).
fn receive(
    node: &Node,
    inbox: &ImpatientBuffer<Received>,
    deadline: Option<control::Instant>,
    handle: impl FnOnce(control::Instant, NodeAddr, &[u8]),
) -> bool {
    match inbox.pop_until(deadline.and_then(|t| node.clock.to_std(t))) {
        Pop::Item(r) => {
            if let Some(src) = source(node, &r) {
                handle(node.clock.now(), src, r.body());
            }
            true
        }
        Pop::Timeout | Pop::Kicked => true,
        Pop::Closed => false,
    }
}

pub(crate) fn server_thread(node: &Node, slot: &ServerSlot) {
    loop {
        let deadline = lock(&slot.server).poll_timeout();
        let open = receive(node, &slot.inbox, deadline, |now, src, body| {
            // Malformed bodies are counted by the core.
            let _ = lock(&slot.server).handle_body(now, src, body);
        });
        if !open {
            return;
        }
        let now = node.clock.now();
        let mut server = lock(&slot.server);
        if server.poll_timeout().is_some_and(|t| t <= now) {
            server.handle_timeout(now);
        }
        let mut out = Vec::new();
        while let Some(p) = server.poll_transmit() {
            out.push(p);
        }
        drop(server);
        for p in out {
            // No route: counted by DNP; the server re-sends, and the client retries.
            let _ = node.dnp.send_routed(&p);
        }
    }
}

pub(crate) fn client_thread(node: &Node) {
    let slot = &node.rap_client;
    loop {
        let deadline = lock(&slot.client).poll_timeout();
        let open = receive(node, &slot.inbox, deadline, |now, src, body| {
            let _ = lock(&slot.client).handle_body(now, src, body);
        });
        if !open {
            return;
        }
        let now = node.clock.now();
        let routes = node.dnp.routes();
        let mut client = lock(&slot.client);
        if client.poll_timeout().is_some_and(|t| t <= now) {
            client.handle_timeout(now, &routes);
        }
        drain_client(node, client);
    }
}

pub(crate) fn routes_changed(node: &Node) {
    let routes = node.dnp.routes();
    let now = node.clock.now();
    let mut client = lock(&node.rap_client.client);
    client.routes_changed(now, &routes);
    drain_client(node, client);
    node.rap_client.inbox.kick();
}

fn drain_client(node: &Node, mut client: std::sync::MutexGuard<'_, RapClient>) {
    let slot = &node.rap_client;
    let mut out = Vec::new();
    while let Some(p) = client.poll_transmit() {
        out.push(p);
    }
    let mut events = Vec::new();
    while let Some(e) = client.poll_event() {
        events.push(e);
    }
    drop(client);
    for p in out {
        let _ = node.dnp.send_routed(&p);
    }
    if events.is_empty() {
        return;
    }
    let mut answers = lock(&slot.answers);
    for RapEvent::Services {
        server,
        server_sid,
        list,
        ..
    } in events
    {
        let entry = answers
            .by_server
            .entry((server, server_sid))
            .or_insert((0, Vec::new()));
        entry.0 += 1;
        entry.1 = list;
    }
    drop(answers);
    slot.answered.notify_all();
}

/// Asks `server`'s RAP service `server_sid` for its list and waits for the answer.
pub(crate) fn request_services(
    node: &Node,
    server: NodeAddr,
    server_sid: u16,
    timeout: Duration,
) -> Result<Vec<ServiceEntry>, RapRequestError> {
    let slot = &node.rap_client;
    let key = (server, server_sid);
    let deadline = StdInstant::now() + timeout;
    let seen = lock(&slot.answers).by_server.get(&key).map_or(0, |a| a.0);
    lock(&slot.client).request(node.clock.now(), server, server_sid);
    // The request is due now: the client thread sends it (it knows whether a route exists).
    slot.inbox.kick();
    let mut answers = lock(&slot.answers);
    loop {
        if let Some((n, list)) = answers.by_server.get(&key)
            && *n > seen
        {
            return Ok(list.clone());
        }
        if answers.stopped {
            return Err(RapRequestError::Stopped);
        }
        if StdInstant::now() >= deadline {
            return Err(RapRequestError::TimedOut);
        }
        answers = wait_until(&slot.answered, answers, Some(deadline));
    }
}
