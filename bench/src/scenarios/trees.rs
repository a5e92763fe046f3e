//! `scale`'s tree rows: how a node's workers get the datagrams of their multicast trees, the
//! two ways issue 10 names, measured side by side. Three uring nodes in a line (sender, relay,
//! receiver), each with N workers; the sender multicasts N files at once on N groups (one per
//! worker) to local receivers on the last node. The relay's received datagrams per second and
//! per worker are the figure, from the first send to the last receiver's verified copy.
//!
//! - `steered`: the classic-BPF reuseport program delivers each datagram to its tree's worker.
//! - `hand-off`: no program; the kernel hashes addresses and ports, so a neighbour's datagrams
//!   (its workers all send from the node's one port) reach one worker, which copies those of
//!   the other workers' trees into their lock-free queues (`uring.hand_off`).

use super::node_chain::line_on_loopback;
use crate::runner::{Sample, System};
use control::{GroupAddr, NodeAddr};
use dataplane::host::{
    Engine, EngineOptions, ReceiveOptions, ReceiveState, RunningNode, SendOptions, counter,
};
use dataplane::rmtp::{MemSink, MemSource};
use std::io;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How long routes, trees and transfers may take before a run gives up (a safety net, not a
/// measurement).
const LIMIT: Duration = Duration::from_secs(120);

/// How a node's workers get their trees' datagrams.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Steering {
    /// The steering program (the default, `uring.hand_off` off).
    Program,
    /// The kernel's hash and a hand-off between workers (`uring.hand_off` on).
    HandOff,
}

impl Steering {
    pub const ALL: [Steering; 2] = [Steering::Program, Steering::HandOff];

    pub fn name(self) -> &'static str {
        match self {
            Steering::Program => "steered",
            Steering::HandOff => "hand-off",
        }
    }
}

/// The row name of `workers` trees through a relay of `workers` workers, steered so.
pub fn row(steering: Steering, workers: usize) -> String {
    format!("uring-{} x{workers} tree(s)", steering.name())
}

/// One measurement: `workers` trees of `bytes` each through a relay of `workers` workers.
pub struct Trees {
    pub steering: Steering,
    pub workers: usize,
    pub bytes: usize,
}

fn node(n: usize) -> NodeAddr {
    NodeAddr::new(n as u16).expect("a small node address")
}

fn timed_out(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::TimedOut, what.to_string())
}

/// Polls `done` every few milliseconds until it holds or `LIMIT` passes.
fn wait_for(what: &str, done: impl Fn() -> bool) -> io::Result<()> {
    let start = Instant::now();
    while !done() {
        if start.elapsed() > LIMIT {
            return Err(timed_out(what));
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    Ok(())
}

impl System for Trees {
    fn name(&self) -> String {
        row(self.steering, self.workers)
    }

    fn measure(&mut self) -> io::Result<Sample> {
        let (topology, sockets) = line_on_loopback(1)?;
        let mut nodes: Vec<Arc<dyn RunningNode>> = Vec::new();
        for (i, socket) in sockets.into_iter().enumerate() {
            let options = EngineOptions {
                seed: i as u64 + 1,
                workers: self.workers,
                hand_off: self.steering == Steering::HandOff,
                socket: Some(socket),
                ..EngineOptions::default()
            };
            match Engine::Uring.start(&topology, node(i + 1), options) {
                Ok(n) => nodes.push(n),
                Err(e) => {
                    nodes.iter().for_each(|n| n.stop());
                    return Err(e);
                }
            }
        }
        let result = self.transfer(&nodes);
        for n in &nodes {
            n.stop();
        }
        result
    }
}

impl Trees {
    fn transfer(&self, nodes: &[Arc<dyn RunningNode>]) -> io::Result<Sample> {
        let (sender, relay, receiver) = (&nodes[0], &nodes[1], &nodes[2]);
        let (one, two, three) = (node(1), node(2), node(3));
        wait_for("the routes", || {
            sender.routes().next_hop(three) == Some(two)
                && receiver.routes().next_hop(one) == Some(two)
        })?;
        // Groups 1..=N: one per worker (group index mod N).
        let groups: Vec<GroupAddr> = (1..=self.workers)
            .map(|i| GroupAddr::new(control::addr::GROUP_BASE + i as u16).expect("a group"))
            .collect();
        let receives = groups
            .iter()
            .enumerate()
            .map(|(i, &group)| {
                let sink = Box::new(MemSink::new());
                receiver
                    .receive(group, one, 100 + i as u16, sink, ReceiveOptions::default())
                    .map_err(|e| io::Error::other(format!("a receiver: {e:?}")))
            })
            .collect::<io::Result<Vec<_>>>()?;
        wait_for("the trees", || {
            groups.iter().all(|&g| {
                let down = |n: &Arc<dyn RunningNode>, to| {
                    n.multicast()
                        .lookup(g, one)
                        .is_some_and(|e| e.downstream.contains(&to))
                };
                down(sender, two) && down(relay, three)
            })
        })?;
        let data: Vec<u8> = (0..self.bytes).map(|i| (i * 7 + i / 997) as u8).collect();
        let relayed = || counter(&relay.stats(), "dnp.rx_datagrams").unwrap_or(0);
        let before = relayed();
        let start = Instant::now();
        let sends = groups
            .iter()
            .map(|&group| {
                let source = Box::new(MemSource::new(data.clone()));
                sender
                    .send(group, "scale", source, SendOptions::default())
                    .map_err(|e| io::Error::other(format!("a sender: {e:?}")))
            })
            .collect::<io::Result<Vec<_>>>()?;
        for r in &receives {
            match r.wait(LIMIT) {
                ReceiveState::Complete => {}
                other => {
                    return Err(io::Error::other(format!(
                        "a receiver ended {other:?}: {:?}",
                        r.progress()
                    )));
                }
            }
        }
        let elapsed = start.elapsed().as_secs_f64().max(1e-9);
        let relayed = relayed() - before;
        let stats = relay.stats();
        for s in &sends {
            s.wait(Duration::from_secs(5));
        }
        let n = self.workers as f64;
        let total = relayed as f64 / elapsed;
        let mut details = std::collections::BTreeMap::new();
        details.insert("total_pkt_per_s".into(), total);
        details.insert("cores".into(), n);
        details.insert(
            "goodput_mb_per_s".into(),
            (self.bytes * self.workers) as f64 / elapsed / 1e6,
        );
        for name in ["handed_over", "hand_off_full", "rx_other_worker"] {
            let value = counter(&stats, &format!("engine.{name}")).unwrap_or(0);
            details.insert(format!("relay_{name}"), value as f64);
        }
        Ok(Sample {
            value: total / n,
            details,
            limited_by: None,
        })
    }
}
