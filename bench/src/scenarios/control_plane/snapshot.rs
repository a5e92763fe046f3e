//! Publishing a table snapshot while a worker forwards. The node's tables are immutable
//! snapshots behind an RCU-style pointer (`arc_swap::ArcSwap`): the worker loads the current one
//! per lookup, the control thread builds a fresh table and stores it. Measured with the real
//! `control::drp::RoutingTable` (a binary search per lookup) holding a real SPF result:
//!
//! - the worker's lookups per second with no publishing, and with a table published every few
//!   milliseconds (the ratio is the worker's slowdown: the cost of the pointer swap, the cache
//!   lines the new table brings in, and on a small machine the CPU the publisher takes);
//! - the publish latency, build (`RoutingTable::new`: sort and dedup of the routes) plus store
//!   (the swap, and freeing the old table once no reader holds it), by table size.
//!
//! Beside `ArcSwap`, the worker also runs on the threaded engine's way, `RwLock<Arc<_>>` (a
//! reader lock held for the lookup, the writer lock to swap): the pointer chosen is compared
//! with the one it replaces, in the same run.

use super::shapes::Shape;
use crate::runner::{Metric, Sample, Stop, System};
use arc_swap::ArcSwap;
use control::NodeAddr;
use control::drp::{Lsdb, Route, RoutingTable, spf};
use control::rng::Rng;
use std::collections::BTreeMap;
use std::hint::black_box;
use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::{Duration, Instant};

pub const LOOKUPS: Metric = Metric {
    name: "worker lookups (load snapshot + route lookup)",
    unit: "lookup/s",
    higher_is_better: true,
};

pub const PUBLISH: Metric = Metric {
    name: "publish latency (build + store)",
    unit: "us",
    higher_is_better: false,
};

/// How often the control thread wakes when it publishes nothing: as often as the fastest
/// publisher, so that the rows differ by the publishing alone and not by how often a thread
/// wakes up beside the worker (which, on a small shared machine, moves the worker's speed too).
pub const IDLE_TICK: Duration = Duration::from_millis(1);

/// Lookups between two looks at the stop flag.
const BATCH: usize = 1024;

/// A node's table of exactly `routes` routes: DRP's SPF from node 1 over a random graph of
/// `routes + 1` nodes.
pub fn spf_routes(routes: usize) -> (NodeAddr, Vec<Route>) {
    let topology = Shape::Random.build(routes + 1, routes as u64);
    let max_listed = control::wire::drp::max_lsp_neighbours(topology.network.mtu);
    let (lsdb, _): (Lsdb, u64) = Lsdb::from_topology(&topology, max_listed);
    let me = topology.nodes[0].addr;
    let live = topology.neighbours(me);
    (me, spf::shortest_paths(me, &live, &lsdb))
}

/// Destinations of `routes` in a seeded random order, as many as the worker cycles through.
fn lookup_order(routes: &[Route]) -> Vec<NodeAddr> {
    let mut rng = Rng::new(7);
    (0..BATCH * 4)
        .map(|_| routes[rng.below(routes.len() as u64) as usize].dst)
        .collect()
}

/// How the current table is published to the worker.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pointer {
    ArcSwap,
    RwLock,
}

impl Pointer {
    fn name(self) -> &'static str {
        match self {
            Pointer::ArcSwap => "arc-swap",
            Pointer::RwLock => "rwlock",
        }
    }
}

/// The current table behind one of the pointers.
enum Published {
    Swap(ArcSwap<RoutingTable>),
    Locked(RwLock<Arc<RoutingTable>>),
}

impl Published {
    fn new(pointer: Pointer, table: RoutingTable) -> Published {
        match pointer {
            Pointer::ArcSwap => Published::Swap(ArcSwap::from_pointee(table)),
            Pointer::RwLock => Published::Locked(RwLock::new(Arc::new(table))),
        }
    }

    fn next_hop(&self, dst: NodeAddr) -> Option<NodeAddr> {
        match self {
            Published::Swap(swap) => swap.load().next_hop(dst),
            Published::Locked(lock) => lock
                .read()
                .unwrap_or_else(PoisonError::into_inner)
                .next_hop(dst),
        }
    }

    fn publish(&self, table: RoutingTable) {
        let table = Arc::new(table);
        match self {
            Published::Swap(swap) => swap.store(table),
            Published::Locked(lock) => {
                // The old table is freed after the writer lock is released.
                let old = std::mem::replace(
                    &mut *lock.write().unwrap_or_else(PoisonError::into_inner),
                    table,
                );
                drop(old);
            }
        }
    }
}

/// A worker looking routes up on the current snapshot for `duration`, while this thread
/// publishes a fresh table every `publish_every` (or never).
pub struct WorkerUnderPublish {
    pointer: Pointer,
    publish_every: Option<Duration>,
    me: NodeAddr,
    routes: Vec<Route>,
    order: Vec<NodeAddr>,
    duration: Duration,
    stop: Stop,
}

impl WorkerUnderPublish {
    pub fn new(
        pointer: Pointer,
        table_routes: usize,
        publish_every: Option<Duration>,
        duration: Duration,
        stop: &Stop,
    ) -> Self {
        let (me, routes) = spf_routes(table_routes);
        let order = lookup_order(&routes);
        WorkerUnderPublish {
            pointer,
            publish_every,
            me,
            routes,
            order,
            duration,
            stop: stop.clone(),
        }
    }
}

/// What the worker did: lookups, those that found no route (must be none), seconds.
struct WorkerTally {
    lookups: u64,
    misses: u64,
    seconds: f64,
}

fn work(table: &Published, order: &[NodeAddr], done: &AtomicBool) -> WorkerTally {
    let start = Instant::now();
    let (mut lookups, mut misses) = (0u64, 0u64);
    while !done.load(Ordering::Relaxed) {
        // `order` holds a whole number of batches.
        let at = lookups as usize % order.len();
        for &dst in &order[at..at + BATCH] {
            misses += u64::from(black_box(table.next_hop(dst)).is_none());
        }
        lookups += BATCH as u64;
    }
    WorkerTally {
        lookups,
        misses,
        seconds: start.elapsed().as_secs_f64(),
    }
}

impl System for WorkerUnderPublish {
    fn name(&self) -> String {
        let pointer = self.pointer.name();
        match self.publish_every {
            None => format!("{pointer}, no publishing"),
            Some(every) => format!("{pointer}, publish every {} ms", every.as_millis()),
        }
    }

    fn measure(&mut self) -> io::Result<Sample> {
        let table = Published::new(
            self.pointer,
            RoutingTable::new(self.me, self.routes.clone()),
        );
        let done = AtomicBool::new(false);
        let mut published = 0u64;
        let mut publish_time = Duration::ZERO;
        let tally = std::thread::scope(|s| {
            let worker = s.spawn(|| work(&table, &self.order, &done));
            let start = Instant::now();
            let mut next = start;
            while start.elapsed() < self.duration && !self.stop.requested() {
                next += self.publish_every.unwrap_or(IDLE_TICK);
                if let Some(wait) = next.checked_duration_since(Instant::now()) {
                    std::thread::sleep(wait);
                }
                if self.publish_every.is_none() {
                    continue;
                }
                let t0 = Instant::now();
                table.publish(RoutingTable::new(self.me, self.routes.clone()));
                publish_time += t0.elapsed();
                published += 1;
            }
            done.store(true, Ordering::Relaxed);
            worker.join()
        })
        .map_err(|_| io::Error::other("the worker thread panicked"))?;
        let seconds = tally.seconds;
        let mut details = BTreeMap::from([
            ("table_routes".to_string(), self.routes.len() as f64),
            ("lookups".to_string(), tally.lookups as f64),
            ("misses".to_string(), tally.misses as f64),
            ("publishes_per_s".to_string(), published as f64 / seconds),
        ]);
        if published > 0 {
            details.insert(
                "publish_us".to_string(),
                publish_time.as_secs_f64() * 1e6 / published as f64,
            );
        }
        Ok(Sample {
            value: tally.lookups as f64 / seconds,
            details,
            limited_by: None,
        })
    }
}

/// Builds and stores a table of a given size over and over, alone, for at least `budget`.
pub struct PublishLatency {
    me: NodeAddr,
    routes: Vec<Route>,
    budget: Duration,
}

impl PublishLatency {
    pub fn new(table_routes: usize, budget: Duration) -> Self {
        let (me, routes) = spf_routes(table_routes);
        PublishLatency { me, routes, budget }
    }
}

impl System for PublishLatency {
    fn name(&self) -> String {
        format!("{} routes", self.routes.len())
    }

    fn measure(&mut self) -> io::Result<Sample> {
        let swap = ArcSwap::from_pointee(RoutingTable::empty(self.me));
        let start = Instant::now();
        let (mut build, mut store) = (Duration::ZERO, Duration::ZERO);
        let mut publishes = 0u64;
        while publishes < 3 || start.elapsed() < self.budget {
            let t0 = Instant::now();
            let table = Arc::new(RoutingTable::new(self.me, self.routes.clone()));
            let t1 = Instant::now();
            swap.store(table);
            store += t1.elapsed();
            build += t1 - t0;
            publishes += 1;
        }
        let us = |d: Duration| d.as_secs_f64() * 1e6 / publishes as f64;
        let details = BTreeMap::from([
            ("table_routes".to_string(), self.routes.len() as f64),
            ("build_us".to_string(), us(build)),
            ("store_us".to_string(), us(store)),
            ("publishes".to_string(), publishes as f64),
        ]);
        Ok(Sample {
            value: us(build + store),
            details,
            limited_by: None,
        })
    }
}
