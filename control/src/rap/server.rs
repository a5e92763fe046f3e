//! The RAP server: answers requests with its service list until each answer is acknowledged.

use super::RapError;
use crate::addr::NodeAddr;
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
}

impl Default for RapServerOptions {
    fn default() -> Self {
        RapServerOptions {
            mtu: DEFAULT_MTU,
            resend_interval: Duration::from_secs(1),
            max_resends: 5,
        }
    }
}

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
    /// Provides not sent because the list did not encode (cannot happen: lists are checked
    /// when set; counted rather than assumed).
    pub encode_failures: u64,
}

/// One unacknowledged answer.
#[derive(Clone, Copy, Debug)]
struct Pending {
    rap_id: u16,
    next_send: Instant,
    resends_left: u32,
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
            RapBody::Request => {
                self.stats.requests_received += 1;
                let rap_id = match self.pending.get(&client) {
                    Some(p) => {
                        self.stats.duplicate_requests += 1;
                        p.rap_id
                    }
                    None => self.fresh_id(),
                };
                // The client is still asking, so it is worth the full run of re-sends again.
                self.pending.insert(
                    client,
                    Pending {
                        rap_id,
                        next_send: now + self.options.resend_interval,
                        resends_left: self.options.max_resends,
                    },
                );
                self.send_provide(client, rap_id);
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
            let rap_id = p.rap_id;
            self.stats.resends += 1;
            self.send_provide(client, rap_id);
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

    /// An id no pending request holds, never 0.
    fn fresh_id(&mut self) -> u16 {
        let first = self.next_id;
        for _ in 0..u16::MAX {
            let id = self.next_id;
            self.next_id = self.next_id.checked_add(1).unwrap_or(1);
            if !self.pending.values().any(|p| p.rap_id == id) {
                return id;
            }
        }
        // Every id is pending (65535 clients at once): ids are per client, so sharing one is
        // still unambiguous.
        first
    }

    fn send_provide(&mut self, (node, sid): (NodeAddr, u16), rap_id: u16) {
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
                self.stats.provides_sent += 1;
                self.out.push_back(wire::packet(node, self.me, &body));
            }
            Err(_) => self.stats.encode_failures += 1,
        }
    }
}
