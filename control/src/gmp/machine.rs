//! The GMP state machine of one node.

use super::table::MulticastTable;
use super::tree::Tree;
use super::{GmpError, GmpEvent, GmpOptions, GmpStats};
use crate::Transmit;
use crate::addr::{GroupAddr, NodeAddr};
use crate::drp::RoutingTable;
use crate::time::Instant;
use crate::topology::Timers;
use crate::wire::BodyError;
use crate::wire::gmp::{GmpKind, GmpMessage};
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::Arc;
use std::time::Duration;

type Key = (GroupAddr, NodeAddr);

/// What GMP holds, for status output and flood tests.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GmpMemory {
    /// (group, sender) trees.
    pub trees: usize,
    /// Approximate heap bytes of the trees and the published table (map nodes' own overhead
    /// left out).
    pub approx_bytes: usize,
}

/// GMP on one node. Feed it local subscriptions, received bodies, route changes and timeouts;
/// drain joins/leaves with [`Gmp::poll_transmit`], events with [`Gmp::poll_event`], and read
/// the published [`MulticastTable`] with [`Gmp::table`].
#[derive(Debug)]
pub struct Gmp {
    me: NodeAddr,
    refresh: Duration,
    expire: Duration,
    options: GmpOptions,
    trees: BTreeMap<Key, Tree>,
    transmits: VecDeque<Transmit>,
    events: VecDeque<GmpEvent>,
    /// Trees changed during the current call, reported once each when it returns.
    changed: BTreeSet<Key>,
    /// The last table built; rebuilt by [`Gmp::table`] only when `table_stale`, so a batch of
    /// joins costs one rebuild, not one each.
    table: Arc<MulticastTable>,
    table_stale: bool,
    stats: GmpStats,
}

impl Gmp {
    pub fn new(me: NodeAddr, timers: &Timers) -> Gmp {
        Gmp::with_options(me, timers, GmpOptions::default())
    }

    pub fn with_options(me: NodeAddr, timers: &Timers, options: GmpOptions) -> Gmp {
        Gmp {
            me,
            refresh: timers.gmp_refresh,
            expire: timers.gmp_expire,
            options,
            trees: BTreeMap::new(),
            transmits: VecDeque::new(),
            events: VecDeque::new(),
            changed: BTreeSet::new(),
            table: Arc::new(MulticastTable::default()),
            table_stale: false,
            stats: GmpStats::default(),
        }
    }

    pub fn me(&self) -> NodeAddr {
        self.me
    }

    /// A local client joins (group, sender). The first member of a tree joins upstream at once.
    pub fn subscribe(
        &mut self,
        now: Instant,
        group: GroupAddr,
        sender: NodeAddr,
        service_id: u16,
        routes: &RoutingTable,
    ) -> Result<(), GmpError> {
        let key = (group, sender);
        match self.trees.get_mut(&key) {
            Some(tree) => {
                if !tree.local.insert(service_id) {
                    return Err(GmpError::AlreadyMember);
                }
            }
            None => {
                let upstream = self.upstream_for(sender, routes);
                let mut tree = self.create(now, key, upstream);
                tree.local.insert(service_id);
                self.trees.insert(key, tree);
            }
        }
        self.changed.insert(key);
        self.publish();
        Ok(())
    }

    /// A local client leaves; the tree's last member leaving sends a leave upstream.
    pub fn unsubscribe(
        &mut self,
        _now: Instant,
        group: GroupAddr,
        sender: NodeAddr,
        service_id: u16,
        _routes: &RoutingTable,
    ) -> Result<(), GmpError> {
        let key = (group, sender);
        let removed = self
            .trees
            .get_mut(&key)
            .is_some_and(|tree| tree.local.remove(&service_id));
        if !removed {
            return Err(GmpError::NotMember);
        }
        self.changed.insert(key);
        self.remove_if_empty(key);
        self.publish();
        Ok(())
    }

    /// A GMP body as received from the neighbour `from`: parsed, then handled; malformed bodies
    /// are counted and returned.
    pub fn handle_body(
        &mut self,
        now: Instant,
        from: NodeAddr,
        body: &[u8],
        routes: &RoutingTable,
    ) -> Result<(), BodyError> {
        match GmpMessage::parse(body) {
            Ok(msg) => {
                self.handle_packet(now, from, msg, routes);
                Ok(())
            }
            Err(e) => {
                self.stats.malformed += 1;
                Err(e)
            }
        }
    }

    /// A join or leave from the neighbour `from`.
    pub fn handle_packet(
        &mut self,
        now: Instant,
        from: NodeAddr,
        msg: GmpMessage,
        routes: &RoutingTable,
    ) {
        match msg.kind {
            GmpKind::Join => {
                self.stats.joins_received += 1;
                self.on_join(now, from, (msg.group, msg.sender), routes);
            }
            GmpKind::Leave => {
                self.stats.leaves_received += 1;
                self.on_leave(from, (msg.group, msg.sender));
            }
        }
        self.publish();
    }

    fn on_join(&mut self, now: Instant, from: NodeAddr, key: Key, routes: &RoutingTable) {
        if from == self.me {
            self.stats.ignored += 1;
            return;
        }
        let expires = now + self.expire;
        if let Some(tree) = self.trees.get_mut(&key) {
            if tree.upstream == Some(from) {
                self.stats.ignored += 1;
                self.stats.loop_guarded += 1;
                return;
            }
            if tree.downstream.insert(from, expires).is_none() {
                self.changed.insert(key);
            }
            return;
        }
        let upstream = self.upstream_for(key.1, routes);
        if upstream == Some(from) {
            self.stats.ignored += 1;
            self.stats.loop_guarded += 1;
            return;
        }
        if self.trees.len() >= self.options.max_trees {
            self.stats.trees_refused += 1;
            return;
        }
        let mut tree = self.create(now, key, upstream);
        tree.downstream.insert(from, expires);
        self.trees.insert(key, tree);
        self.changed.insert(key);
    }

    fn on_leave(&mut self, from: NodeAddr, key: Key) {
        let removed = self
            .trees
            .get_mut(&key)
            .is_some_and(|tree| tree.downstream.remove(&from).is_some());
        if !removed {
            self.stats.ignored += 1;
            return;
        }
        self.changed.insert(key);
        self.remove_if_empty(key);
    }

    /// Routing changed: every tree re-forms toward its sender's new next hop at once (leave to
    /// the old upstream, join to the new one), a neighbour that is now our upstream stops being
    /// downstream of us, and a downstream neighbour that is no longer adjacent (its link died)
    /// is dropped at once instead of after the expiry: it re-joins through its new upstream.
    pub fn routes_changed(&mut self, now: Instant, routes: &RoutingTable) {
        let keys: Vec<Key> = self.trees.keys().copied().collect();
        for key in keys {
            let Some(tree) = self.trees.get_mut(&key) else {
                continue;
            };
            let before = tree.downstream.len();
            tree.downstream
                .retain(|&d, _| routes.next_hop(d) == Some(d));
            let detached = before - tree.downstream.len();
            if detached > 0 {
                self.stats.detached += detached as u64;
                self.changed.insert(key);
                if self.remove_if_empty(key) {
                    continue;
                }
            }
            if key.1 != self.me {
                self.reroute(now, key, routes, false);
            }
        }
        self.publish();
    }

    /// Expires silent downstream neighbours and sends the periodic joins that are due.
    pub fn handle_timeout(&mut self, now: Instant, routes: &RoutingTable) {
        let keys: Vec<Key> = self.trees.keys().copied().collect();
        for key in keys {
            let Some(tree) = self.trees.get_mut(&key) else {
                continue;
            };
            let expired: Vec<NodeAddr> = tree
                .downstream
                .iter()
                .filter(|&(_, &at)| at <= now)
                .map(|(&n, _)| n)
                .collect();
            for neighbour in &expired {
                tree.downstream.remove(neighbour);
            }
            let refresh_due = tree.next_refresh.is_some_and(|at| at <= now);
            for neighbour in expired {
                self.stats.expiries += 1;
                self.changed.insert(key);
                self.events.push_back(GmpEvent::DownstreamExpired {
                    group: key.0,
                    sender: key.1,
                    neighbour,
                });
            }
            if self.remove_if_empty(key) {
                continue;
            }
            if refresh_due {
                self.reroute(now, key, routes, true);
            }
        }
        self.publish();
    }

    /// The earliest expiry or refresh of any tree.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.trees.values().filter_map(Tree::deadline).min()
    }

    /// The next join or leave to send; `to` is the upstream neighbour.
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.transmits.pop_front()
    }

    pub fn poll_event(&mut self) -> Option<GmpEvent> {
        self.events.pop_front()
    }

    /// The current snapshot; the same `Arc` until something in it changes. Built here, at most
    /// once per change: an engine reads it once per batch of input.
    pub fn table(&mut self) -> Arc<MulticastTable> {
        if self.table_stale {
            self.table_stale = false;
            self.stats.table_rebuilds += 1;
            let entries = self
                .trees
                .iter()
                .map(|(&(group, sender), tree)| tree.entry(group, sender))
                .collect();
            let table = MulticastTable::new(entries);
            if *self.table != table {
                self.table = Arc::new(table);
            }
        }
        Arc::clone(&self.table)
    }

    pub fn stats(&self) -> &GmpStats {
        &self.stats
    }

    pub fn options(&self) -> &GmpOptions {
        &self.options
    }

    pub fn memory(&self) -> GmpMemory {
        let trees: usize = self
            .trees
            .values()
            .map(|t| {
                size_of::<(Key, Tree)>()
                    + t.downstream.len() * size_of::<(NodeAddr, Instant)>()
                    + t.local.len() * size_of::<u16>()
            })
            .sum();
        let table: usize = self
            .table
            .entries()
            .iter()
            .map(|e| {
                size_of::<super::TreeEntry>()
                    + e.downstream.len() * size_of::<NodeAddr>()
                    + e.local_members.len() * size_of::<u16>()
            })
            .sum();
        GmpMemory {
            trees: self.trees.len(),
            approx_bytes: trees + table,
        }
    }

    fn upstream_for(&self, sender: NodeAddr, routes: &RoutingTable) -> Option<NodeAddr> {
        if sender == self.me {
            None
        } else {
            routes.next_hop(sender)
        }
    }

    /// A new tree: joins at once if it has an upstream, and refreshes from now on unless this
    /// is the sender's own node.
    fn create(&mut self, now: Instant, key: Key, upstream: Option<NodeAddr>) -> Tree {
        let next_refresh = (key.1 != self.me).then(|| now + self.refresh);
        if let Some(up) = upstream {
            self.send(up, GmpMessage::join(key.0, key.1));
        }
        Tree::new(upstream, next_refresh)
    }

    /// Re-evaluates a tree's upstream against `routes`. A change leaves the old upstream and
    /// joins the new one at once; otherwise a `periodic` call sends the refresh join.
    fn reroute(&mut self, now: Instant, key: Key, routes: &RoutingTable, periodic: bool) {
        let new_up = self.upstream_for(key.1, routes);
        let Some(tree) = self.trees.get_mut(&key) else {
            return;
        };
        // A neighbour cannot be both: packets would bounce between the two of us.
        if let Some(up) = new_up
            && tree.downstream.remove(&up).is_some()
        {
            self.changed.insert(key);
        }
        if tree.is_empty() {
            self.remove_if_empty(key);
            return;
        }
        let old_up = tree.upstream;
        if new_up != old_up {
            tree.upstream = new_up;
            tree.next_refresh = Some(now + self.refresh);
            self.stats.upstream_changes += 1;
            self.changed.insert(key);
            if let Some(old) = old_up {
                self.send(old, GmpMessage::leave(key.0, key.1));
            }
            if let Some(new) = new_up {
                self.send(new, GmpMessage::join(key.0, key.1));
            }
        } else if periodic {
            tree.next_refresh = Some(now + self.refresh);
            match new_up {
                Some(up) => {
                    self.stats.refreshes += 1;
                    self.send(up, GmpMessage::join(key.0, key.1));
                }
                None => self.stats.unroutable += 1,
            }
        }
    }

    /// Removes a tree nobody needs any more, leaving upstream. Returns whether it was removed.
    fn remove_if_empty(&mut self, key: Key) -> bool {
        if !self.trees.get(&key).is_some_and(Tree::is_empty) {
            return false;
        }
        if let Some(up) = self.trees.remove(&key).and_then(|t| t.upstream) {
            self.send(up, GmpMessage::leave(key.0, key.1));
        }
        self.changed.insert(key);
        true
    }

    fn send(&mut self, to: NodeAddr, msg: GmpMessage) {
        match msg.kind {
            GmpKind::Join => self.stats.joins_sent += 1,
            GmpKind::Leave => self.stats.leaves_sent += 1,
        }
        self.transmits.push_back(Transmit {
            to,
            packet: msg.packet(to, self.me),
        });
    }

    /// Reports the trees changed by this call; the table is rebuilt when next read.
    fn publish(&mut self) {
        if self.changed.is_empty() {
            return;
        }
        self.table_stale = true;
        for (group, sender) in std::mem::take(&mut self.changed) {
            self.events
                .push_back(GmpEvent::TreeChanged { group, sender });
        }
    }
}
