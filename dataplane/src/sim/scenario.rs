//! One multicast transfer through a simulated network of full nodes: boot, converge, subscribe
//! the receivers, send, and report per-receiver completion and the counters a user asks about.
//! Used by the simulator tests and by `burghers sim --send`.

use super::{Boot, Sim};
use crate::node::{Node, NodeEvent, RmtpOptions, TransferEvent};
use crate::rmtp::{Finished, MemSource, Sink, SinkError};
use control::rng::Rng;
use control::topology::{Faults, Topology};
use control::{GroupAddr, Instant, NodeAddr};
use std::cell::RefCell;
use std::collections::BTreeMap;
use std::rc::Rc;
use std::time::Duration;

/// The client id every scenario receiver subscribes with.
pub const SID: u16 = 100;

/// A node address; panics on 0 or a group address (for tests and literals).
pub fn n(v: u16) -> NodeAddr {
    NodeAddr::new(v).expect("a node address")
}

/// The group every scenario sends to.
pub fn group() -> GroupAddr {
    GroupAddr::from_index(1).expect("group 1 exists")
}

/// Deterministic pseudo-random content.
pub fn content(len: usize, seed: u64) -> Vec<u8> {
    let mut rng = Rng::new(seed);
    let mut data = Vec::with_capacity(len + 8);
    while data.len() < len {
        data.extend_from_slice(&rng.next_u64().to_le_bytes());
    }
    data.truncate(len);
    data
}

/// What a checking sink saw.
#[derive(Debug, Default)]
pub struct Outcome {
    pub written: u64,
    pub hash: Option<[u8; 32]>,
    /// `Some(true)` once the sender's hash matched, `Some(false)` on mismatch or abort.
    pub verified: Option<bool>,
}

/// A sink that keeps no bytes: it hashes them and records the outcome where the test sees it.
pub struct CheckSink {
    hasher: blake3::Hasher,
    outcome: Rc<RefCell<Outcome>>,
}

impl CheckSink {
    /// A sink and the handle through which its outcome is read.
    pub fn with_outcome() -> (Self, Rc<RefCell<Outcome>>) {
        let outcome = Rc::new(RefCell::new(Outcome::default()));
        (
            CheckSink {
                hasher: blake3::Hasher::new(),
                outcome: outcome.clone(),
            },
            outcome,
        )
    }
}

impl Sink for CheckSink {
    fn write_at(&mut self, offset: u64, data: &[u8]) -> Result<(), SinkError> {
        let mut o = self.outcome.borrow_mut();
        if offset != o.written {
            return Err(SinkError::OutOfOrder {
                expected: o.written,
                got: offset,
            });
        }
        o.written += data.len() as u64;
        self.hasher.update(data);
        Ok(())
    }

    fn finish(&mut self, hash: &[u8; 32]) -> Result<Finished, SinkError> {
        let actual = *self.hasher.finalize().as_bytes();
        let checked = SinkError::check_hash(hash, actual);
        let mut o = self.outcome.borrow_mut();
        o.hash = Some(actual);
        o.verified = Some(checked.is_ok());
        checked.map(|()| Finished::Done)
    }

    fn abort(&mut self) {
        self.outcome.borrow_mut().verified = Some(false);
    }
}

/// A simulated network of full nodes with one multicast transfer set up on it.
pub struct Scenario {
    pub sim: Sim<Node>,
    pub topology: Topology,
    pub sender: NodeAddr,
    pub receivers: Vec<NodeAddr>,
    pub outcomes: BTreeMap<NodeAddr, Rc<RefCell<Outcome>>>,
    pub completed_at: BTreeMap<NodeAddr, Instant>,
    pub data_hash: [u8; 32],
    pub data_len: u64,
    pub started_at: Instant,
}

/// Faults on every link of `topology`.
pub fn with_faults(mut topology: Topology, faults: Faults) -> Topology {
    for link in &mut topology.links {
        link.faults = faults;
    }
    topology
}

impl Scenario {
    /// Boots the network, lets routing converge, subscribes every receiver, waits for the tree
    /// to form, then starts the sender.
    pub fn start(
        topology: Topology,
        seed: u64,
        options: RmtpOptions,
        sender: NodeAddr,
        receivers: &[NodeAddr],
        data: Vec<u8>,
    ) -> Result<Scenario, String> {
        for &node in receivers.iter().chain([&sender]) {
            if topology.node(node).is_none() {
                return Err(format!("node {node} is not in the topology"));
            }
        }
        let file = topology.clone();
        let make =
            move |boot: Boot| Node::with_options(boot.addr, &file, boot.now, options.clone());
        let mut sim = Sim::new(&topology, seed, make).map_err(|e| e.to_string())?;
        sim.run_for(Duration::from_secs(2));
        let mut outcomes = BTreeMap::new();
        for &r in receivers {
            let (sink, outcome) = CheckSink::with_outcome();
            let now = sim.now();
            sim.node_mut(r)
                .ok_or_else(|| format!("node {r} is down"))?
                .start_receive(now, group(), sender, SID, Box::new(sink))
                .map_err(|e| format!("node {r} cannot receive: {e}"))?;
            outcomes.insert(r, outcome);
        }
        sim.run_for(Duration::from_secs(2));
        let data_hash = *blake3::hash(&data).as_bytes();
        let data_len = data.len() as u64;
        let now = sim.now();
        sim.node_mut(sender)
            .ok_or_else(|| format!("node {sender} is down"))?
            .start_send(now, group(), "payload.bin", Box::new(MemSource::new(data)))
            .map_err(|e| format!("node {sender} cannot send: {e}"))?;
        Ok(Scenario {
            sim,
            topology,
            sender,
            receivers: receivers.to_vec(),
            outcomes,
            completed_at: BTreeMap::new(),
            data_hash,
            data_len,
            started_at: now,
        })
    }

    /// Collects completion events from every node.
    pub fn collect(&mut self) {
        for &r in &self.receivers {
            if !self.sim.is_up(r) {
                continue;
            }
            let Some(mut node) = self.sim.node_mut(r) else {
                continue;
            };
            while let Some(e) = node.poll_event() {
                match e {
                    NodeEvent::Transfer(TransferEvent::Received { at, .. }) => {
                        self.completed_at.insert(r, at);
                    }
                    NodeEvent::Transfer(TransferEvent::ReceiveFailed { reason, .. }) => {
                        println!("  receiver {r} failed: {reason}");
                    }
                    _ => {}
                }
            }
        }
    }

    pub fn verified(&self, r: NodeAddr) -> bool {
        self.outcomes[&r].borrow().verified == Some(true)
    }

    /// Runs until every receiver in `who` verified its copy, or `within` passes.
    pub fn run_until_received(&mut self, who: &[NodeAddr], within: Duration) -> bool {
        let deadline = self.sim.now() + within;
        let outcomes: Vec<_> = who.iter().map(|r| self.outcomes[r].clone()).collect();
        self.sim.set_cond_interval(Duration::from_millis(10));
        let done = self
            .sim
            .run_until_cond(deadline, |_| {
                outcomes.iter().all(|o| o.borrow().verified == Some(true))
            })
            .is_some();
        self.collect();
        done
    }

    /// Asserts every listed receiver holds exactly the sender's bytes.
    pub fn assert_identical(&self, who: &[NodeAddr]) {
        for r in who {
            let o = self.outcomes[r].borrow();
            assert_eq!(o.verified, Some(true), "receiver {r} not verified: {o:?}");
            assert_eq!(o.written, self.data_len, "receiver {r} length");
            assert_eq!(o.hash, Some(self.data_hash), "receiver {r} content");
        }
    }

    /// One line per receiver, then the counters a user would ask about.
    pub fn report(&self, title: &str) {
        println!("== {title}");
        for r in &self.receivers {
            let took = self
                .completed_at
                .get(r)
                .map(|t| t.saturating_since(self.started_at));
            let goodput = took
                .map(|d| {
                    format!(
                        "{:.1} MB/s",
                        self.data_len as f64 / d.as_secs_f64().max(1e-9) / 1e6
                    )
                })
                .unwrap_or_else(|| "-".into());
            let took = took
                .map(|d| format!("{:.3}s", d.as_secs_f64()))
                .unwrap_or_else(|| "-".into());
            let stats = self
                .sim
                .node(*r)
                .and_then(|node| node.transfers().receiver_stats(SID).cloned());
            match stats {
                Some(s) => println!(
                    "  receiver {r:>3}: complete after {took:>8} ({goodput}), nacks {:>5}, repairs {:>5}, dup {:>5}, crc-fail {:>3}",
                    s.nacks_sent, s.repairs_received, s.duplicates, s.crc_failures
                ),
                None => println!("  receiver {r:>3}: down"),
            }
            let o = self.outcomes[r].borrow();
            if o.verified != Some(true) {
                let delivered = self
                    .sim
                    .node(*r)
                    .and_then(|node| node.transfers().delivered(SID));
                println!(
                    "      not verified: written {} of {}, delivered {delivered:?}, {:?}",
                    o.written, self.data_len, o.verified
                );
            }
        }
        let f = self.figures();
        println!(
            "  sender: data {} retransmissions {} nacks-in {} stalls {}; relays: forwarded {} nacks-up {} cache-repairs {} ncf {}; links: lost {} queue-dropped {} corrupted {} undetected {}",
            f.data_sent,
            f.sender_retransmissions,
            f.nacks_at_sender,
            f.window_stalls,
            f.forwarded,
            f.nacks_upstream,
            f.cache_repairs,
            f.ncfs_sent,
            f.lost,
            f.dropped_queue,
            f.corrupted,
            f.undetected
        );
        println!(
            "  NACKs: receivers sent {}, sender got {} (aggregation {:.1}:1); repairs from caches {:.0}%",
            f.receiver_nacks,
            f.nacks_at_sender,
            f.receiver_nacks as f64 / f.nacks_at_sender.max(1) as f64,
            100.0 * f.cache_share()
        );
        let engine = self.sim.engine_stats();
        println!(
            "  arrivals: {} handed in, {} batches of more than one",
            engine.arrivals, engine.arrival_batches
        );
    }

    pub fn figures(&self) -> Figures {
        let mut f = Figures::default();
        if let Some(s) = self
            .sim
            .node(self.sender)
            .and_then(|n| n.transfers().sender_stats(group()).cloned())
        {
            f.data_sent = s.data_sent;
            f.sender_retransmissions = s.retransmissions;
            f.nacks_at_sender = s.nacks_received;
            f.window_stalls = s.window_stalls;
        }
        for (_, node) in self.sim.nodes() {
            let r = node.transfers().relay_stats();
            f.forwarded += r.forwarded;
            f.nacks_upstream += r.nacks_sent_upstream;
            f.cache_repairs += r.repairs_from_cache;
            f.ncfs_sent += r.ncfs_sent;
            if let Some(s) = node.transfers().receiver_stats(SID) {
                f.receiver_nacks += s.nacks_sent;
            }
        }
        let t = self.sim.totals();
        f.lost = t.lost;
        f.dropped_queue = t.dropped_queue;
        f.corrupted = t.corrupted;
        f.undetected = t.corrupted_undetected;
        f
    }
}

#[derive(Clone, Copy, Debug, Default)]
pub struct Figures {
    pub data_sent: u64,
    pub sender_retransmissions: u64,
    pub nacks_at_sender: u64,
    pub window_stalls: u64,
    pub forwarded: u64,
    pub nacks_upstream: u64,
    pub cache_repairs: u64,
    pub ncfs_sent: u64,
    pub receiver_nacks: u64,
    pub lost: u64,
    /// Refused by full link queues.
    pub dropped_queue: u64,
    pub corrupted: u64,
    pub undetected: u64,
}

impl Figures {
    /// Share of all repairs that came from relay caches rather than the sender.
    pub fn cache_share(&self) -> f64 {
        let total = self.cache_repairs + self.sender_retransmissions;
        if total == 0 {
            0.0
        } else {
            self.cache_repairs as f64 / total as f64
        }
    }
}
