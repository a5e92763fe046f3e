//! The RAP server: answers requests with its service list until each answer is acknowledged.
//!
//! A request's DNP source is not verified, so the server never sends a client more bytes than
//! that client's requests brought: each request credits its packet size to the client, each
//! provide (first answer, duplicate answer or timer re-send) spends its own, and one that the
//! credit does not cover is withheld. A client pads its requests to the MTU, so one request pays
//! for its answer; a request from a new client that cannot pay for one is refused without a
//! trace, so a spoofed request buys at most its own size toward its claimed source, and
//! filling the pending table costs an attacker a full MTU per entry.

use super::RapError;
use crate::addr::NodeAddr;
use crate::settings::rap as settings;
use crate::time::Instant;
use crate::wire::rap::{self as wire, RapBody, RapMessage, ServiceEntry};
use crate::wire::{BodyError, DEFAULT_MTU};
use std::collections::{BTreeMap, VecDeque};
use std::time::Duration;

/// How a server sizes and repeats its answers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RapServerOptions {
    /// Largest packet the network carries; the service list must fit one provide.
    pub mtu: usize,
    /// Period of re-sending an unacknowledged provide.
    pub resend_interval: Duration,
    /// Re-sends after the first provide before the server gives up on a client.
    pub max_resends: u32,
    /// Most clients with an unacknowledged answer held at once; see
    /// `RapServerStats::pending_table_full` for what a request beyond it gets.
    pub max_pending: usize,
}

impl Default for RapServerOptions {
    fn default() -> Self {
        RapServerOptions {
            mtu: DEFAULT_MTU,
            resend_interval: settings::RESEND_INTERVAL,
            max_resends: settings::MAX_RESENDS,
            max_pending: settings::MAX_PENDING,
        }
    }
}

crate::counters! {
    #[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
    pub struct RapServerStats {
        pub requests_received: u64,
        /// Requests from a client whose earlier request was still unacknowledged (same id reused).
        pub duplicate_requests: u64,
        /// Every provide sent (first answers, answers to duplicates and timer re-sends).
        pub provides_sent: u64,
        /// Provides re-sent by the timer (a subset of `provides_sent`).
        pub resends: u64,
        pub acks_received: u64,
        /// Acks for no pending request or for another id.
        pub stale_acks: u64,
        /// Pending requests dropped after `max_resends` unanswered re-sends.
        pub gave_up: u64,
        /// Packets for another service id, or of a kind a server does not take (provide).
        pub ignored: u64,
        pub malformed: u64,
        /// Requests from a new client too small to pay for a provide (see `provides_withheld`):
        /// not answered, nothing remembered.
        pub requests_too_small: u64,
        /// Requests from a new client while `max_pending` clients were pending: answered once,
        /// never re-sent, no state kept.
        pub pending_table_full: u64,
        /// Provides not sent because they would have been larger than the request bytes the client
        /// sent and has not yet been answered for (no amplification toward a spoofed source).
        pub provides_withheld: u64,
        /// Whole packets, DNP header included: what requests brought in and provides sent out.
        pub request_bytes_received: u64,
        pub provide_bytes_sent: u64,
        /// Provides not sent because the list did not encode (cannot happen: lists are checked
        /// when set; counted rather than assumed).
        pub encode_failures: u64,
    }
}

/// One unacknowledged answer.
#[derive(Clone, Copy, Debug)]
struct Pending {
    rap_id: u16,
    next_send: Instant,
    resends_left: u32,
    /// Request bytes received from this client not yet spent on provides.
    credit: usize,
}

/// The RAP server of one service on one node.
#[derive(Debug)]
pub struct RapServer {
    me: NodeAddr,
    service_id: u16,
    services: Vec<ServiceEntry>,
    options: RapServerOptions,
    /// The next id to hand out; never 0 (that is what a request carries).
    next_id: u16,
    /// Keyed by client (node, service id).
    pending: BTreeMap<(NodeAddr, u16), Pending>,
    out: VecDeque<Vec<u8>>,
    stats: RapServerStats,
}

impl RapServer {
    /// A server with the default options (the seed's 1024-byte MTU).
    pub fn new(
        me: NodeAddr,
        service_id: u16,
        services: Vec<ServiceEntry>,
    ) -> Result<Self, RapError> {
        Self::with_options(me, service_id, services, RapServerOptions::default())
    }

    /// Fails if `services` cannot be sent in one provide under `options.mtu`.
    pub fn with_options(
        me: NodeAddr,
        service_id: u16,
        services: Vec<ServiceEntry>,
        options: RapServerOptions,
    ) -> Result<Self, RapError> {
        wire::check_list(&services, options.mtu)?;
        Ok(RapServer {
            me,
            service_id,
            services,
            options,
            next_id: 1,
            pending: BTreeMap::new(),
            out: VecDeque::new(),
            stats: RapServerStats::default(),
        })
    }

    pub fn service_id(&self) -> u16 {
        self.service_id
    }

    pub fn services(&self) -> &[ServiceEntry] {
        &self.services
    }

    /// Replaces the list; on error the old list stays. Answers still pending carry the new list
    /// from their next re-send on.
    pub fn set_services(&mut self, services: Vec<ServiceEntry>) -> Result<(), RapError> {
        wire::check_list(&services, self.options.mtu)?;
        self.services = services;
        Ok(())
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

    pub fn handle_packet(&mut self, now: Instant, src: NodeAddr, msg: RapMessage<'_>) {
        if msg.dst_sid != self.service_id {
            self.stats.ignored += 1;
            return;
        }
        let client = (src, msg.src_sid);
        match msg.body {
            RapBody::Request { padding } => {
                let size = wire::request_packet_len(padding);
                self.stats.requests_received += 1;
                self.stats.request_bytes_received = self
                    .stats
                    .request_bytes_received
                    .saturating_add(size as u64);
                let (rap_id, credit) = match self.pending.get(&client) {
                    Some(p) => {
                        self.stats.duplicate_requests += 1;
                        (p.rap_id, p.credit.saturating_add(size))
                    }
                    None if size < wire::provide_packet_len(&self.services) => {
                        // Too small to pay for an answer: a real client pads to the MTU, so
                        // this one is refused and nothing is remembered.
                        self.stats.requests_too_small += 1;
                        return;
                    }
                    None if self.pending.len() >= self.options.max_pending => {
                        // No room to remember this client: answered once and forgotten; the
                        // clients already pending keep their state.
                        self.stats.pending_table_full += 1;
                        let rap_id = self.fresh_id();
                        let mut credit = size;
                        self.send_provide(client, rap_id, &mut credit);
                        return;
                    }
                    None => (self.fresh_id(), size),
                };
                // The client is still asking, so it is worth the full run of re-sends again.
                let mut pending = Pending {
                    rap_id,
                    next_send: now + self.options.resend_interval,
                    resends_left: self.options.max_resends,
                    credit,
                };
                self.send_provide(client, rap_id, &mut pending.credit);
                self.pending.insert(client, pending);
            }
            RapBody::Ack => match self.pending.get(&client) {
                Some(p) if p.rap_id == msg.rap_id => {
                    self.stats.acks_received += 1;
                    self.pending.remove(&client);
                }
                _ => self.stats.stale_acks += 1,
            },
            RapBody::Provide(_) => self.stats.ignored += 1,
        }
    }

    /// Re-sends due provides; drops requests that ran out of re-sends.
    pub fn handle_timeout(&mut self, now: Instant) {
        let due: Vec<(NodeAddr, u16)> = self
            .pending
            .iter()
            .filter(|(_, p)| p.next_send <= now)
            .map(|(&k, _)| k)
            .collect();
        for client in due {
            let Some(p) = self.pending.get_mut(&client) else {
                continue;
            };
            if p.resends_left == 0 {
                self.pending.remove(&client);
                self.stats.gave_up += 1;
                continue;
            }
            p.resends_left -= 1;
            p.next_send = now + self.options.resend_interval;
            let (rap_id, mut credit) = (p.rap_id, p.credit);
            if self.send_provide(client, rap_id, &mut credit) {
                self.stats.resends += 1;
            }
            if let Some(p) = self.pending.get_mut(&client) {
                p.credit = credit;
            }
        }
    }

    pub fn poll_timeout(&self) -> Option<Instant> {
        self.pending.values().map(|p| p.next_send).min()
    }

    /// The next sealed DNP packet; its destination is the client node, to be routed by
    /// `next_hop`.
    pub fn poll_transmit(&mut self) -> Option<Vec<u8>> {
        self.out.pop_front()
    }

    /// Requests answered but not yet acknowledged.
    pub fn pending(&self) -> usize {
        self.pending.len()
    }

    pub fn stats(&self) -> &RapServerStats {
        &self.stats
    }

    /// Approximate heap bytes of the pending answers (the map's own node overhead left out).
    pub fn approx_bytes(&self) -> usize {
        self.pending.len() * size_of::<((NodeAddr, u16), Pending)>()
    }

    /// The next id, never 0. Ids only need to differ between one client's successive
    /// requests (acks are matched per client), so a counter does, in constant time.
    fn fresh_id(&mut self) -> u16 {
        let id = self.next_id;
        self.next_id = self.next_id.checked_add(1).unwrap_or(1);
        id
    }

    /// Sends a provide to the client if `credit` (request bytes it sent, not yet answered)
    /// covers the whole packet, and spends it; returns whether it was sent.
    fn send_provide(
        &mut self,
        (node, sid): (NodeAddr, u16),
        rap_id: u16,
        credit: &mut usize,
    ) -> bool {
        let Some(left) = credit.checked_sub(wire::provide_packet_len(&self.services)) else {
            self.stats.provides_withheld += 1;
            return false;
        };
        // The list was checked against the MTU when it was set, so this cannot fail; if it
        // did, nothing is sent rather than a packet that breaks the MTU.
        match wire::provide(
            sid,
            self.service_id,
            rap_id,
            &self.services,
            self.options.mtu,
        ) {
            Ok(body) => {
                let packet = wire::packet(node, self.me, &body);
                *credit = left;
                self.stats.provides_sent += 1;
                self.stats.provide_bytes_sent = self
                    .stats
                    .provide_bytes_sent
                    .saturating_add(packet.len() as u64);
                self.out.push_back(packet);
                true
            }
            Err(_) => {
                self.stats.encode_failures += 1;
                false
            }
        }
    }
}
