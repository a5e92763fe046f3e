//! A hostile network cannot crash, stall, exhaust or take over a node (issue 7): while a file
//! goes from node 1 to the four leaves of a 7-node tree, sealed hostile packets of every
//! protocol and message type ([`dataplane::sim::hostile`]) are injected into the nodes, over
//! links from their real neighbours, at a steady rate. Every run checks that nothing panics,
//! that every table stays within its capacity and names only real neighbours, that the heap
//! stays bounded, and that the transfer completes with every copy verified, or, where the
//! injected packets may legitimately end it (forged DATA of the live tree, which no check can
//! tell from the real one), that a receiver that did not verify failed with a named reason.
//!
//! A failure prints the seed and the command that replays it. `HOSTILE_SEEDS=1..200` (or
//! `HOSTILE_SEEDS=17,18`) runs other seeds than the built-in ones; `HOSTILE_KINDS=Spm,Nack`
//! injects only those kinds of what a test injects, to find the one that breaks it.

use control::NodeAddr;
use control::rng::Rng;
use control::topology::{Topology, build};
use dataplane::node::{NodeEvent, RmtpOptions, TransferEvent};
use dataplane::sim::hostile::{Kind, Knowledge, generate_any};
use dataplane::sim::scenario::{Scenario, content, group, n};
use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

// ---- heap accounting: live bytes of this thread (each test runs its simulator on one) ----

struct Counting;

thread_local! {
    static LIVE: Cell<i64> = const { Cell::new(0) };
    static PEAK: Cell<i64> = const { Cell::new(0) };
}

fn account(delta: i64) {
    let _ = LIVE.try_with(|live| {
        let now = live.get() + delta;
        live.set(now);
        let _ = PEAK.try_with(|peak| peak.set(peak.get().max(now)));
    });
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        account(layout.size() as i64);
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        account(-(layout.size() as i64));
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        account(new_size as i64 - layout.size() as i64);
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

/// Starts measuring the peak from the current live bytes; returns them.
fn reset_peak() -> i64 {
    let live = LIVE.with(Cell::get);
    PEAK.with(|p| p.set(live));
    live
}

// ---- the attack ---------------------------------------------------------------------------

const LEAVES: [u16; 4] = [4, 5, 6, 7];
const FILE_BYTES: usize = 4 << 20;
/// One hostile packet per this much virtual time, to one node chosen at random.
const INJECT_EVERY: Duration = Duration::from_millis(1);
/// Injection stops after this long (if the transfer has not ended before); the network then
/// has the rest of the time limit, quiet, to finish.
const ATTACK_SPAN: Duration = Duration::from_secs(8);
const TIME_LIMIT: Duration = Duration::from_secs(40);
/// Tables are checked every this many injected packets, and once at the end.
const CHECK_EVERY: u64 = 64;
/// Every link's latency: the file takes about 0.35 s of the attack (window-bound).
const LINK_DELAY: Duration = Duration::from_millis(5);

/// Capacities the tables must stay within whatever arrives. Generous: they catch growth per
/// hostile packet (thousands are injected), not the cores' own limits.
const MAX_LSDB: usize = 1024;
const MAX_ROUTES: usize = 1024;
const MAX_TREES: usize = 1024;
const MAX_RAP_PENDING: usize = 1024;
const MAX_RAP_OUTSTANDING: usize = 16;
/// Heap growth allowed over the live bytes at the start of the transfer (the 1 MiB file, the
/// relays' 1 MiB repair caches and the packets in flight are already counted then).
const MAX_HEAP_GROWTH: i64 = 48 << 20;

const SEEDS: [u64; 4] = [1, 2, 3, 4];
/// Labels the attacker's random stream, apart from the simulator's own.
const HOSTILE_STREAM: u64 = 0x0405_711E;

/// What happened to one run.
#[derive(Debug, Default)]
struct Outcome {
    verified: BTreeSet<NodeAddr>,
    /// Receivers that failed, with the reason they gave.
    failed: BTreeMap<NodeAddr, String>,
    /// Why the sender gave up, if it did.
    sender_failed: Option<String>,
    /// Virtual time from the start of the transfer to the sender's report that every receiver
    /// holds everything, if it made one.
    sent: Option<Duration>,
    injected: BTreeMap<Kind, u64>,
    /// Virtual time from the start of the transfer to the last receiver's verification.
    took: Option<Duration>,
    peak_heap_growth: i64,
    /// Over every relay: peers pruned before they claimed the whole transfer, completion
    /// claims held for a second report, MABs from peers out of the tree entry.
    prunes_unfinished: u64,
    completions_held: u64,
    mabs_out_of_tree: u64,
}

impl Outcome {
    /// The sender reported every receiver complete before the last leaf that verified did.
    fn completed_early(&self) -> bool {
        self.sent
            .zip(self.took)
            .is_some_and(|(sent, took)| sent < took)
    }
}

fn seeds() -> Vec<u64> {
    let Ok(spec) = std::env::var("HOSTILE_SEEDS") else {
        return SEEDS.to_vec();
    };
    match spec.split_once("..") {
        Some((a, b)) => {
            let (a, b): (u64, u64) = (a.parse().expect("a seed"), b.parse().expect("a seed"));
            (a..b).collect()
        }
        None => spec
            .split(',')
            .map(|s| s.parse().expect("a seed"))
            .collect(),
    }
}

/// Checks every node's tables against the capacities and the topology; `Err` says what broke.
fn check_tables(s: &Scenario) -> Result<(), String> {
    for (addr, node) in s.sim.nodes() {
        let neighbours: BTreeSet<NodeAddr> = s.topology.neighbours(addr).into_iter().collect();
        let within = |what: &str, len: usize, cap: usize| {
            if len <= cap {
                Ok(())
            } else {
                Err(format!(
                    "node {addr}: {what} holds {len} entries, more than {cap}"
                ))
            }
        };
        within("the LSDB", node.drp().lsdb().len(), MAX_LSDB)?;
        within("the routing table", node.routes().len(), MAX_ROUTES)?;
        within(
            "the multicast table",
            node.multicast().entries().len(),
            MAX_TREES,
        )?;
        within(
            "the RAP server",
            node.rap_server().pending(),
            MAX_RAP_PENDING,
        )?;
        within(
            "the RAP client",
            node.rap_client().outstanding(),
            MAX_RAP_OUTSTANDING,
        )?;
        for live in node.drp().neighbours() {
            if !neighbours.contains(&live) {
                return Err(format!(
                    "node {addr}: DRP neighbour {live} has no link to it"
                ));
            }
        }
        for route in node.routes().routes() {
            if !neighbours.contains(&route.next_hop) {
                return Err(format!(
                    "node {addr}: route to {} via {}, which has no link to it",
                    route.dst, route.next_hop
                ));
            }
        }
        for tree in node.multicast().entries() {
            let hops = tree.upstream.iter().chain(&tree.downstream);
            if let Some(stranger) = hops.into_iter().find(|h| !neighbours.contains(h)) {
                return Err(format!(
                    "node {addr}: tree ({}, {}) names {stranger}, which has no link to it",
                    tree.group.get(),
                    tree.sender
                ));
            }
        }
    }
    Ok(())
}

/// Sends a 1 MiB file from node 1 to the leaves of a 7-node tree while injecting hostile
/// packets of `kinds` (every kind when empty); `Err` when an invariant broke.
fn attack(seed: u64, kinds: &[Kind]) -> Result<Outcome, String> {
    let mut topology: Topology = build::binary_tree(3, 7001);
    // Links of zero delay carry the whole file in no virtual time, before the first
    // injection: the transfer must span the attack.
    for link in &mut topology.links {
        link.faults.delay = LINK_DELAY;
    }
    let leaves: Vec<NodeAddr> = LEAVES.map(n).to_vec();
    let data = content(FILE_BYTES, seed);
    let mut s = Scenario::start(topology, seed, RmtpOptions::default(), n(1), &leaves, data)?;
    let nodes: Vec<NodeAddr> = s.sim.addrs().collect();
    let mut knowledge = Knowledge::new(s.sim.mtu(), nodes.clone(), group(), n(1));
    let mut rng = Rng::new(seed).fork(HOSTILE_STREAM);
    let mut out = Outcome::default();
    let start = s.sim.now();
    let heap_at_start = reset_peak();
    let mut count = 0u64;
    while s.sim.now() < start + TIME_LIMIT {
        let attacking = s.sim.now() < start + ATTACK_SPAN;
        s.sim.run_for(if attacking {
            INJECT_EVERY
        } else {
            Duration::from_millis(50)
        });
        collect(&mut s, &mut out, start);
        if out.verified.len() + out.failed.len() == leaves.len() {
            break;
        }
        if !attacking {
            continue;
        }
        refresh_numbers(&s, &mut knowledge);
        let to = nodes[rng.below(nodes.len() as u64) as usize];
        let neighbours: Vec<NodeAddr> = s.sim.neighbours(to).collect();
        let from = neighbours[rng.below(neighbours.len() as u64) as usize];
        let hostile = generate_any(&mut rng, &knowledge, kinds, to, from);
        *out.injected.entry(hostile.kind).or_default() += 1;
        let mut node = s.sim.node_mut(to).ok_or("a node went down")?;
        let now = node.now();
        node.handle_datagram(now, from, &hostile.packet);
        drop(node);
        count += 1;
        if count.is_multiple_of(CHECK_EVERY) {
            check_tables(&s)?;
        }
    }
    check_tables(&s)?;
    out.peak_heap_growth = PEAK.with(Cell::get) - heap_at_start;
    if out.peak_heap_growth > MAX_HEAP_GROWTH {
        return Err(format!(
            "the heap grew by {} bytes, more than {MAX_HEAP_GROWTH}",
            out.peak_heap_growth
        ));
    }
    for r in &leaves {
        if s.verified(*r) {
            out.verified.insert(*r);
        }
    }
    for (_, node) in s.sim.nodes() {
        let relay = node.transfers().relay_stats();
        out.prunes_unfinished += relay.prunes_unfinished;
        out.completions_held += relay.mab_completions_held;
        out.mabs_out_of_tree += relay.mabs_out_of_tree;
    }
    Ok(out)
}

/// Sequence numbers and offsets near the live transfer's, so that forged ones land near it.
fn refresh_numbers(s: &Scenario, k: &mut Knowledge) {
    let Some(sender) = s
        .sim
        .node(n(1))
        .and_then(|node| node.transfers().sender(group()))
    else {
        return;
    };
    let segment = sender.segment_size().max(1);
    k.numbers = vec![
        sender.leading_edge(),
        sender.trailing_edge(),
        sender.sent_offset(),
        sender.window_end(),
        sender.total(),
        sender.total() / segment,
    ];
}

/// Records which receivers verified or failed (and why).
fn collect(s: &mut Scenario, out: &mut Outcome, start: control::Instant) {
    if let Some(mut node) = s.sim.node_mut(n(1)) {
        while let Some(event) = node.poll_event() {
            match event {
                NodeEvent::Transfer(TransferEvent::SendFailed { reason, .. }) => {
                    out.sender_failed = Some(reason);
                }
                NodeEvent::Transfer(TransferEvent::Sent { at, .. }) => {
                    out.sent = Some(at.saturating_since(start));
                }
                _ => {}
            }
        }
    }
    for r in LEAVES.map(n) {
        let Some(mut node) = s.sim.node_mut(r) else {
            continue;
        };
        while let Some(event) = node.poll_event() {
            match event {
                NodeEvent::Transfer(TransferEvent::Received { at, .. }) => {
                    out.verified.insert(r);
                    let took = at.saturating_since(start);
                    out.took = Some(out.took.map_or(took, |t| t.max(took)));
                }
                NodeEvent::Transfer(TransferEvent::ReceiveFailed { reason, .. }) => {
                    out.failed.insert(r, reason);
                }
                _ => {}
            }
        }
    }
}

fn repro(test: &str, seed: u64) -> String {
    format!(
        "repro: HOSTILE_SEEDS={seed} cargo test -p dataplane --test hostile_sim -- --exact {test}"
    )
}

/// The kinds a test injects, narrowed by `HOSTILE_KINDS=Spm,Nack` (to find which one breaks).
fn narrowed(kinds: &[Kind]) -> Vec<Kind> {
    let kinds = if kinds.is_empty() {
        &Kind::ALL[..]
    } else {
        kinds
    };
    match std::env::var("HOSTILE_KINDS") {
        Ok(only) => kinds
            .iter()
            .copied()
            .filter(|k| only.split(',').any(|name| name == format!("{k:?}")))
            .collect(),
        Err(_) => kinds.to_vec(),
    }
}

/// One run, a panic turned into an `Err` so that every seed is tried and reported.
fn attack_caught(seed: u64, kinds: &[Kind]) -> Result<Outcome, String> {
    let kinds = narrowed(kinds);
    std::panic::catch_unwind(|| attack(seed, &kinds)).unwrap_or_else(|panic| {
        let message = panic
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_default();
        Err(format!("panicked: {message}"))
    })
}

/// Runs every seed, checking the invariants and then `judge` on the outcome (`Some(why)`: the
/// seed failed); fails the test with every failing seed and the command that replays it.
fn for_every_seed(test: &str, kinds: &[Kind], judge: impl Fn(&Outcome) -> Option<String>) {
    if narrowed(kinds).is_empty() {
        return; // HOSTILE_KINDS named none of this test's kinds
    }
    let mut failures = Vec::new();
    let (mut early, mut failed) = (Vec::new(), Vec::new());
    let seeds = seeds();
    for &seed in &seeds {
        let verdict = attack_caught(seed, kinds).and_then(|out| {
            println!("{test} seed {seed}: {out:?}");
            if out.completed_early() {
                early.push(seed);
            }
            if !out.failed.is_empty() {
                failed.push(seed);
            }
            judge(&out).map_or(Ok(()), Err)
        });
        if let Err(e) = verdict {
            failures.push(format!("seed {seed}: {e}; {}", repro(test, seed)));
        }
    }
    println!(
        "{test}: {} seeds; the sender reported completion before the last leaf verified in \
         seeds {early:?}; a leaf failed (with a reason) in seeds {failed:?}",
        seeds.len()
    );
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// Every seed: the invariants hold and every leaf verified its copy.
fn must_complete(test: &str, kinds: &[Kind]) {
    for_every_seed(test, kinds, |out| {
        (out.verified.len() != LEAVES.len())
            .then(|| format!("only {:?} verified, failed {:?}", out.verified, out.failed))
    });
}

/// Every seed: the invariants hold and every leaf verified its copy or failed with a reason.
fn completes_or_fails_cleanly(test: &str, kinds: &[Kind]) {
    for_every_seed(test, kinds, |out| {
        let unexplained: Vec<_> = LEAVES
            .map(n)
            .into_iter()
            .filter(|r| !out.verified.contains(r) && !out.failed.contains_key(r))
            .collect();
        (!unexplained.is_empty()).then(|| format!("{unexplained:?} neither verified nor failed"))
    });
}

#[test]
fn forged_drp_does_not_stop_a_transfer() {
    must_complete(
        "forged_drp_does_not_stop_a_transfer",
        &[Kind::Hello, Kind::Terminate, Kind::Lsp, Kind::LspAck],
    );
}

#[test]
fn forged_gmp_and_rap_do_not_stop_a_transfer() {
    must_complete(
        "forged_gmp_and_rap_do_not_stop_a_transfer",
        &[
            Kind::Join,
            Kind::Leave,
            Kind::Request,
            Kind::Provide,
            Kind::Ack,
        ],
    );
}

#[test]
fn forged_rmtp_control_does_not_stop_a_transfer() {
    must_complete(
        "forged_rmtp_control_does_not_stop_a_transfer",
        &[Kind::Nack, Kind::Ncf, Kind::Mab, Kind::Spm],
    );
}

/// Forged DATA of the live tree with a correct CRC is indistinguishable from the sender's: it
/// may legitimately make a copy fail its hash, but never silently.
#[test]
fn every_kind_at_once_ends_every_receiver_cleanly() {
    completes_or_fails_cleanly("every_kind_at_once_ends_every_receiver_cleanly", &[]);
}
