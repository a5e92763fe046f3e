//! The composed [`Node`] as the simulator drives it, and the helpers tests and the CLI use to
//! run a whole topology of them.

use super::{Boot, Sim, SimNode};
use crate::node::{Node, Received};
use control::topology::Topology;
use control::{Instant, NodeAddr, Transmit};

impl SimNode for Node {
    fn handle_datagram(&mut self, now: Instant, from: NodeAddr, datagram: &[u8]) {
        Node::handle_datagram(self, now, from, datagram)
    }

    fn handle_batch(&mut self, now: Instant, from: NodeAddr, payload: &[u8], segment: usize) {
        let batch = Received {
            segment,
            ..Received::one(from, payload)
        };
        Node::handle_batch(self, now, batch)
    }

    fn poll_transmit(&mut self) -> Option<Transmit> {
        Node::poll_transmit(self)
    }

    fn poll_timeout(&self) -> Option<Instant> {
        Node::poll_timeout(self)
    }

    fn handle_timeout(&mut self, now: Instant) {
        Node::handle_timeout(self, now)
    }
}

/// True when every up node's routing table equals the true shortest paths
/// ([`Topology::expected_routes`]) over the links that are up in `sim`.
pub fn routes_converged(sim: &Sim<Node>, topology: &Topology) -> bool {
    let expected =
        topology.expected_routes(|a, b| sim.is_link_up(a, b) && sim.is_up(a) && sim.is_up(b));
    topology.nodes.iter().zip(&expected).all(|(spec, want)| {
        !sim.is_up(spec.addr)
            || sim
                .node(spec.addr)
                .is_some_and(|node| node.routes().routes() == want.routes())
    })
}

/// The `make_node` function the simulator needs: every node built from the same topology.
pub fn sim_factory(topology: &Topology) -> impl FnMut(Boot) -> Node + 'static {
    let topology = topology.clone();
    move |boot: Boot| Node::new(boot.addr, &topology, boot.now)
}
