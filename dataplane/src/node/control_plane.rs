//! A node's control plane: DRP, GMP, a RAP server (service id 1) announcing this node's
//! transfers and a RAP client (service id 2). It takes the DRP, GMP and RAP packets the node's
//! DNP dispatch hands it, runs their timers, passes route changes on to GMP and RAP, and
//! publishes the tables the data path reads ([`SharedTables`]) whenever one of them changes.
//! It knows no engine: packets go to the queue the caller passes in.

use super::outbox::Outbox;
use super::stats::NodeStats;
use super::tables::{NeighbourTable, SharedTables, Tables};
use control::drp::{Drp, DrpEvent, RoutingTable};
use control::gmp::{Gmp, GmpError, MulticastTable};
use control::rap::{RapClient, RapError, RapEvent, RapServer, RapServerOptions};
use control::topology::Topology;
use control::wire::dnp::{Flag, Packet};
use control::wire::rap::{RapMessage, ServiceEntry};
use control::wire::trailer;
use control::{Addr, GroupAddr, Instant, NodeAddr, Transmit};
use std::collections::VecDeque;
use std::sync::Arc;

/// Service id of every node's RAP server.
pub const RAP_SERVER_SID: u16 = 1;
/// Service id of every node's RAP client.
pub const RAP_CLIENT_SID: u16 = 2;

/// What the control plane tells the node's user.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ControlEvent {
    /// A RAP server answered our request.
    Services {
        server: NodeAddr,
        list: Vec<ServiceEntry>,
    },
}

pub struct ControlPlane {
    me: NodeAddr,
    drp: Drp,
    gmp: Gmp,
    rap_server: RapServer,
    rap_client: RapClient,
    /// The tables as last published; the control plane's own lookups use them directly.
    routes: Arc<RoutingTable>,
    mcast: Arc<MulticastTable>,
    neighbours: Arc<NeighbourTable>,
    shared: SharedTables,
    events: VecDeque<ControlEvent>,
}

impl ControlPlane {
    pub fn new(me: NodeAddr, topology: &Topology, now: Instant) -> Self {
        let timers = &topology.network.timers;
        let mtu = topology.network.mtu;
        let drp = Drp::new(me, topology, now);
        let routes = drp.routes();
        let mut gmp = Gmp::new(me, timers);
        let mcast = gmp.table();
        let neighbours = Arc::new(NeighbourTable::from_topology(me, topology));
        let rap_server = RapServer::with_options(
            me,
            RAP_SERVER_SID,
            Vec::new(),
            RapServerOptions {
                mtu,
                ..Default::default()
            },
        )
        .expect("an empty service list always fits");
        let shared = SharedTables::new(Tables {
            routes: Arc::clone(&routes),
            multicast: Arc::clone(&mcast),
            neighbours: Arc::clone(&neighbours),
        });
        ControlPlane {
            me,
            drp,
            gmp,
            rap_server,
            rap_client: RapClient::with_mtu(me, RAP_CLIENT_SID, timers, mtu),
            routes,
            mcast,
            neighbours,
            shared,
            events: VecDeque::new(),
        }
    }

    pub fn me(&self) -> NodeAddr {
        self.me
    }

    pub fn routes(&self) -> &Arc<RoutingTable> {
        &self.routes
    }

    pub fn multicast(&self) -> &Arc<MulticastTable> {
        &self.mcast
    }

    pub fn neighbours(&self) -> &Arc<NeighbourTable> {
        &self.neighbours
    }

    /// The published snapshots, for workers (clone it into another thread as needed).
    pub fn shared_tables(&self) -> &SharedTables {
        &self.shared
    }

    pub fn drp(&self) -> &Drp {
        &self.drp
    }

    pub fn gmp(&self) -> &Gmp {
        &self.gmp
    }

    pub fn rap_server(&self) -> &RapServer {
        &self.rap_server
    }

    pub fn rap_client(&self) -> &RapClient {
        &self.rap_client
    }

    pub fn poll_event(&mut self) -> Option<ControlEvent> {
        self.events.pop_front()
    }

    /// A DRP, GMP or RAP packet from neighbour `from`, already validated by DNP.
    pub fn handle_packet(
        &mut self,
        now: Instant,
        from: NodeAddr,
        packet: &Packet<'_>,
        stats: &mut NodeStats,
    ) {
        let malformed = match packet.flag() {
            Flag::Drp => self.drp.handle_body(now, from, packet.body()).is_err(),
            Flag::Gmp => self
                .gmp
                .handle_body(now, from, packet.body(), &self.routes)
                .is_err(),
            Flag::Rap => {
                self.handle_rap(now, packet, stats);
                false
            }
            // RMTP is the worker's; the node never hands it here.
            _ => false,
        };
        if malformed {
            stats.malformed_body += 1;
        }
    }

    fn handle_rap(&mut self, now: Instant, packet: &Packet<'_>, stats: &mut NodeStats) {
        match packet.dst() {
            Addr::Node(dst) if dst == self.me => {}
            // The data plane passes RAP for other nodes on and never hands it here.
            _ => {
                stats.rx_bad_address += 1;
                return;
            }
        }
        let Addr::Node(src) = packet.src() else {
            stats.rx_bad_address += 1;
            return;
        };
        // The trailer, then the service id: an intact packet for a service this node does not
        // run is counted as such whatever its fields (as the threaded engine's DNP does).
        let Some(&[hi, lo]) = trailer::checked(packet.body())
            .ok()
            .and_then(|fields| fields.first_chunk::<2>())
        else {
            stats.malformed_body += 1;
            return;
        };
        let sid = u16::from_be_bytes([hi, lo]);
        if sid != RAP_SERVER_SID && sid != RAP_CLIENT_SID {
            stats.rap_no_endpoint += 1;
            return;
        }
        match RapMessage::parse(packet.body()) {
            Ok(msg) if msg.dst_sid == RAP_SERVER_SID => {
                self.rap_server.handle_packet(now, src, msg)
            }
            Ok(msg) => self.rap_client.handle_packet(now, src, msg),
            Err(_) => stats.malformed_body += 1,
        }
    }

    /// Runs the timers that are due, then moves what they produced (as [`ControlPlane::sync`]).
    pub fn handle_timeout(&mut self, now: Instant, out: &mut Outbox, stats: &mut NodeStats) {
        if self.drp.poll_timeout().is_some_and(|t| t <= now) {
            self.drp.handle_timeout(now);
        }
        // Routes may have just changed: let GMP and RAP see the new table before their timers.
        self.sync(now, out, stats);
        if self.gmp.poll_timeout().is_some_and(|t| t <= now) {
            self.gmp.handle_timeout(now, &self.routes);
        }
        if self.rap_server.poll_timeout().is_some_and(|t| t <= now) {
            self.rap_server.handle_timeout(now);
        }
        if self.rap_client.poll_timeout().is_some_and(|t| t <= now) {
            self.rap_client.handle_timeout(now, &self.routes);
        }
        self.sync(now, out, stats);
    }

    pub fn poll_timeout(&self) -> Option<Instant> {
        [
            self.drp.poll_timeout(),
            self.gmp.poll_timeout(),
            self.rap_server.poll_timeout(),
            self.rap_client.poll_timeout(),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// Subscribes local client `sid` to the tree of (`group`, `sender`).
    pub fn subscribe(
        &mut self,
        now: Instant,
        group: GroupAddr,
        sender: NodeAddr,
        sid: u16,
    ) -> Result<(), GmpError> {
        self.gmp.subscribe(now, group, sender, sid, &self.routes)
    }

    pub fn unsubscribe(
        &mut self,
        now: Instant,
        group: GroupAddr,
        sender: NodeAddr,
        sid: u16,
    ) -> Result<(), GmpError> {
        self.gmp.unsubscribe(now, group, sender, sid, &self.routes)
    }

    /// Asks `server`'s RAP server for its services; the answer comes as
    /// [`ControlEvent::Services`].
    pub fn request_services(&mut self, now: Instant, server: NodeAddr) {
        self.rap_client.request(now, server, RAP_SERVER_SID);
        self.rap_client.handle_timeout(now, &self.routes);
    }

    /// Replaces what this node's RAP server announces.
    pub fn set_services(&mut self, services: Vec<ServiceEntry>) -> Result<(), RapError> {
        self.rap_server.set_services(services)
    }

    /// Adds one entry to what this node's RAP server announces.
    pub fn announce(&mut self, entry: ServiceEntry) -> Result<(), RapError> {
        let mut services = self.rap_server.services().to_vec();
        services.push(entry);
        self.rap_server.set_services(services)
    }

    /// Leaves the network cleanly: terminate packets to every neighbour.
    pub fn terminate(&mut self, now: Instant) {
        self.drp.terminate(now);
    }

    /// Moves what the cores produced to where it goes: route changes to GMP and RAP, tables to
    /// their published snapshot, packets to `out`, RAP answers to the events.
    pub fn sync(&mut self, now: Instant, out: &mut Outbox, stats: &mut NodeStats) {
        let mut changed = false;
        while let Some(event) = self.drp.poll_event() {
            match event {
                DrpEvent::RoutesChanged => {
                    self.routes = self.drp.routes();
                    self.gmp.routes_changed(now, &self.routes);
                    self.rap_client.routes_changed(now, &self.routes);
                    changed = true;
                }
                DrpEvent::NeighbourUp(n) => changed |= self.set_live(n, true),
                DrpEvent::NeighbourDown(n) => changed |= self.set_live(n, false),
            }
        }
        while let Some(t) = self.drp.poll_transmit() {
            out.push_back(t);
        }
        while let Some(t) = self.gmp.poll_transmit() {
            out.push_back(t);
        }
        while self.gmp.poll_event().is_some() {}
        let mcast = self.gmp.table();
        if !Arc::ptr_eq(&mcast, &self.mcast) {
            self.mcast = mcast;
            changed = true;
        }
        if changed {
            self.shared.publish(Tables {
                routes: Arc::clone(&self.routes),
                multicast: Arc::clone(&self.mcast),
                neighbours: Arc::clone(&self.neighbours),
            });
        }
        while let Some(packet) = self.rap_server.poll_transmit() {
            self.send_routed(packet, out, stats);
        }
        while let Some(packet) = self.rap_client.poll_transmit() {
            self.send_routed(packet, out, stats);
        }
        while let Some(RapEvent::Services { server, list, .. }) = self.rap_client.poll_event() {
            self.events
                .push_back(ControlEvent::Services { server, list });
        }
    }

    fn set_live(&mut self, n: NodeAddr, live: bool) -> bool {
        match self.neighbours.with_liveness(n, live) {
            Some(next) => {
                self.neighbours = Arc::new(next);
                true
            }
            None => false,
        }
    }

    /// Sends a sealed packet toward its DNP destination.
    fn send_routed(&self, packet: Vec<u8>, out: &mut Outbox, stats: &mut NodeStats) {
        let dst = u16::from_be_bytes([packet[2], packet[3]]);
        match NodeAddr::new(dst).and_then(|d| self.routes.next_hop(d)) {
            Some(to) => out.push_back(Transmit { to, packet }),
            None => stats.forward_no_route += 1,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use control::topology::build;
    use std::time::Duration;

    fn n(v: u16) -> NodeAddr {
        NodeAddr::new(v).expect("a node address")
    }

    /// Two control planes of a line 1–2 exchange what they send for `run`, 10 ms at a time.
    fn run(
        planes: &mut [ControlPlane; 2],
        stats: &mut NodeStats,
        now: &mut Instant,
        run: Duration,
    ) {
        let mtu = control::wire::DEFAULT_MTU;
        let end = *now + run;
        let mut out = Outbox::new(mtu);
        while *now < end {
            for plane in planes.iter_mut() {
                if plane.poll_timeout().is_some_and(|t| t <= *now) {
                    plane.handle_timeout(*now, &mut out, stats);
                }
            }
            for _ in 0..8 {
                let Some(t) = out.pop_transmit() else { break };
                let from = if t.to == n(1) { n(2) } else { n(1) };
                let plane = &mut planes[usize::from(t.to.get() - 1)];
                let packet = Packet::parse(&t.packet, mtu).expect("a valid packet");
                plane.handle_packet(*now, from, &packet, stats);
                plane.sync(*now, &mut out, stats);
            }
            *now += Duration::from_millis(10);
        }
    }

    #[test]
    fn tables_are_published_whole_and_readers_keep_theirs() {
        let topology = build::line(2, 48_000);
        let mut now = Instant::ZERO;
        let mut planes = [
            ControlPlane::new(n(1), &topology, now),
            ControlPlane::new(n(2), &topology, now),
        ];
        let shared = planes[0].shared_tables().clone();
        let before = shared.load_full();
        assert!(before.routes.next_hop(n(2)).is_none());
        let neighbour = before.neighbours.index(n(2)).expect("the file's neighbour");
        assert!(!before.neighbours.get(neighbour).expect("listed").live);

        let mut stats = NodeStats::default();
        run(&mut planes, &mut stats, &mut now, Duration::from_secs(5));

        let after = shared.load();
        assert_eq!(after.routes.next_hop(n(2)), Some(n(2)));
        assert!(Arc::ptr_eq(&after.routes, planes[0].routes()));
        assert_eq!(
            after.neighbours.index(n(2)),
            Some(neighbour),
            "the index stays"
        );
        assert!(after.neighbours.get(neighbour).expect("listed").live);
        // The snapshot loaded before is untouched.
        assert!(before.routes.next_hop(n(2)).is_none());
    }
}
