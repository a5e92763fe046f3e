//! The RAP client: asks servers for their services until answered, while a route exists.

use crate::addr::NodeAddr;
use crate::drp::RoutingTable;
use crate::time::Instant;
use crate::topology::Timers;
use crate::wire::rap::{self as wire, RapBody, RapMessage, ServiceEntry};
use crate::wire::{BodyError, DEFAULT_MTU};
use std::collections::{BTreeMap, VecDeque};
use std::time::Duration;

/// What the client tells the layer above.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RapEvent {
    /// A server answered a request: emitted once per request, duplicates are not repeated.
    Services {
        server: NodeAddr,
        server_sid: u16,
        rap_id: u16,
        list: Vec<ServiceEntry>,
    },
}

crate::counters! {
    #[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
    pub struct RapClientStats {
        /// Every request sent, first tries and retries.
        pub requests_sent: u64,
        /// Requests sent again for want of an answer (a subset of `requests_sent`).
        pub retries: u64,
        /// Due requests held back because the server had no route.
        pub paused: u64,
        /// Provides that answered an outstanding request.
        pub provides_received: u64,
        /// Provides repeating an id already answered (acknowledged again, not re-emitted).
        pub duplicate_provides: u64,
        /// Provides for no request of ours and no id we know (acknowledged, not emitted).
        pub unsolicited_provides: u64,
        pub acks_sent: u64,
        /// Packets for another service id, or of a kind a client does not take.
        pub ignored: u64,
        pub malformed: u64,
    }
}

/// A request not yet answered.
#[derive(Clone, Copy, Debug)]
struct Query {
    next_send: Instant,
    sent: bool,
    paused: bool,
}

/// The RAP client of one service on one node.
#[derive(Debug)]
pub struct RapClient {
    me: NodeAddr,
    service_id: u16,
    retry: Duration,
    /// Requests are padded to this many bytes, the network MTU: the most a server answers.
    mtu: usize,
    /// Outstanding requests, keyed by server (node, service id).
    queries: BTreeMap<(NodeAddr, u16), Query>,
    /// The last id each server answered with, to recognise its duplicate provides.
    answered: BTreeMap<(NodeAddr, u16), u16>,
    out: VecDeque<Vec<u8>>,
    events: VecDeque<RapEvent>,
    stats: RapClientStats,
}

impl RapClient {
    /// A client on a network with the default MTU.
    pub fn new(me: NodeAddr, service_id: u16, timers: &Timers) -> Self {
        Self::with_mtu(me, service_id, timers, DEFAULT_MTU)
    }

    /// A client whose requests take `mtu` bytes each, enough to pay for any answer a server
    /// on that network can send (a server answers with no more bytes than it was sent).
    pub fn with_mtu(me: NodeAddr, service_id: u16, timers: &Timers, mtu: usize) -> Self {
        RapClient {
            me,
            service_id,
            retry: timers.rap_retry,
            mtu,
            queries: BTreeMap::new(),
            answered: BTreeMap::new(),
            out: VecDeque::new(),
            events: VecDeque::new(),
            stats: RapClientStats::default(),
        }
    }

    pub fn service_id(&self) -> u16 {
        self.service_id
    }

    /// Asks `server` for its services. The request goes out on the next `handle_timeout`
    /// (`poll_timeout` returns `now`), which is where reachability is known; asking again
    /// while a request is outstanding changes nothing.
    pub fn request(&mut self, now: Instant, server: NodeAddr, server_sid: u16) {
        self.queries.entry((server, server_sid)).or_insert(Query {
            next_send: now,
            sent: false,
            paused: false,
        });
    }

    /// Requests not yet answered.
    pub fn outstanding(&self) -> usize {
        self.queries.len()
    }

    /// A RAP body received from node `src`: parsed, then handled; malformed ones are counted.
    pub fn handle_body(
        &mut self,
        now: Instant,
        src: NodeAddr,
        body: &[u8],
    ) -> Result<(), BodyError> {
        let msg = super::parse_counted(body, &mut self.stats.malformed)?;
        self.handle_packet(now, src, msg);
        Ok(())
    }

    pub fn handle_packet(&mut self, _now: Instant, src: NodeAddr, msg: RapMessage<'_>) {
        let RapBody::Provide(list) = msg.body else {
            self.stats.ignored += 1;
            return;
        };
        if msg.dst_sid != self.service_id {
            self.stats.ignored += 1;
            return;
        }
        let server = (src, msg.src_sid);
        if self.queries.remove(&server).is_some() {
            self.stats.provides_received += 1;
            self.answered.insert(server, msg.rap_id);
            self.events.push_back(RapEvent::Services {
                server: src,
                server_sid: msg.src_sid,
                rap_id: msg.rap_id,
                list: list.to_entries(),
            });
        } else if self.answered.get(&server) == Some(&msg.rap_id) {
            self.stats.duplicate_provides += 1;
        } else {
            self.stats.unsolicited_provides += 1;
        }
        // Always: the server holds state for this id until it hears this.
        self.stats.acks_sent += 1;
        let body = wire::ack(msg.src_sid, self.service_id, msg.rap_id);
        self.out.push_back(wire::packet(src, self.me, &body));
    }

    /// Sends the requests that are due to reachable servers; holds the others back.
    pub fn handle_timeout(&mut self, now: Instant, routes: &RoutingTable) {
        let due: Vec<(NodeAddr, u16)> = self
            .queries
            .iter()
            .filter(|(_, q)| q.next_send <= now)
            .map(|(&k, _)| k)
            .collect();
        for server in due {
            if routes.is_reachable(server.0) {
                self.send_request(now, server);
            } else if let Some(q) = self.queries.get_mut(&server) {
                // Look again a period later; `routes_changed` resumes sooner.
                q.paused = true;
                q.next_send = now + self.retry;
                self.stats.paused += 1;
            }
        }
    }

    /// A paused request whose server became reachable goes out at once.
    pub fn routes_changed(&mut self, now: Instant, routes: &RoutingTable) {
        let resumable: Vec<(NodeAddr, u16)> = self
            .queries
            .iter()
            .filter(|(k, q)| q.paused && routes.is_reachable(k.0))
            .map(|(&k, _)| k)
            .collect();
        for server in resumable {
            self.send_request(now, server);
        }
    }

    pub fn poll_timeout(&self) -> Option<Instant> {
        self.queries.values().map(|q| q.next_send).min()
    }

    /// The next sealed DNP packet; its destination is the server node, to be routed by
    /// `next_hop`.
    pub fn poll_transmit(&mut self) -> Option<Vec<u8>> {
        self.out.pop_front()
    }

    pub fn poll_event(&mut self) -> Option<RapEvent> {
        self.events.pop_front()
    }

    pub fn stats(&self) -> &RapClientStats {
        &self.stats
    }

    fn send_request(&mut self, now: Instant, server: (NodeAddr, u16)) {
        let Some(q) = self.queries.get_mut(&server) else {
            return;
        };
        if q.sent {
            self.stats.retries += 1;
        }
        q.sent = true;
        q.paused = false;
        q.next_send = now + self.retry;
        self.stats.requests_sent += 1;
        let body = wire::padded_request(server.1, self.service_id, self.mtu);
        self.out.push_back(wire::packet(server.0, self.me, &body));
    }
}
