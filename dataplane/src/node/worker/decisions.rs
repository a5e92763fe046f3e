//! Carrying out the relay's decisions, written once for every engine. The relay says who gets a
//! packet ([`RelayAction`] for a packet it was shown, [`RelayTransmit`] for one it built); this
//! module says what that means: the bytes unchanged to each neighbour named, the packet to the
//! local receivers of its tree, a NACK or MAB that reached the root to the local sender. The
//! engine says how, through a [`DecisionSink`]: the worker hands packets straight to its own
//! cores, the threaded engine pushes a reference-counted buffer into a client or server thread's
//! buffer.

use crate::rmtp::{Hop, RelayAction, RelayTransmit};
use control::wire::dnp::{Flag, Packet};
use control::{Addr, GroupAddr, NodeAddr};

/// The header fields a decision needs from a packet, however the engine holds it.
pub trait RmtpPacket {
    /// The whole DNP packet, header included: what goes to a neighbour unchanged.
    fn bytes(&self) -> &[u8];
    fn flag(&self) -> Flag;
    fn dst(&self) -> Addr;
    fn src(&self) -> Addr;
}

impl RmtpPacket for Packet<'_> {
    fn bytes(&self) -> &[u8] {
        Packet::bytes(self)
    }
    fn flag(&self) -> Flag {
        Packet::flag(self)
    }
    fn dst(&self) -> Addr {
        Packet::dst(self)
    }
    fn src(&self) -> Addr {
        Packet::src(self)
    }
}

/// How an engine reaches a neighbour and this node's own transfers. `P` is how it holds a
/// packet for them: a borrowed view where they live in the same thread, a reference-counted
/// buffer where they run in threads of their own.
pub trait DecisionSink<P: ?Sized> {
    /// Sends `bytes`, one whole DNP packet, to neighbour `to`.
    fn to_neighbour(&mut self, to: NodeAddr, bytes: &[u8]);
    /// Hands a DATA, RETRANSMIT, SPM or NCF of the tree (`group`, `sender`) to every local
    /// receiver of that tree.
    fn to_receivers(&mut self, group: GroupAddr, sender: NodeAddr, packet: &P);
    /// Hands a NACK or MAB of a tree this node roots to its local sender to `group`.
    fn to_sender(&mut self, group: GroupAddr, packet: &P);
}

/// Carries out the relay's decision on a packet it was shown (from the network, or built by a
/// local sender): the packet's bytes to each neighbour named, then the packet itself to the
/// local receivers of its tree (group = DNP destination, sender = DNP source).
pub fn carry_out<P, S>(sink: &mut S, action: RelayAction, packet: &P)
where
    P: RmtpPacket + ?Sized,
    S: DecisionSink<P> + ?Sized,
{
    let RelayAction::Forward { to, deliver_local } = action else {
        return;
    };
    for neighbour in to.iter() {
        sink.to_neighbour(neighbour, packet.bytes());
    }
    if deliver_local && let (Addr::Group(group), Addr::Node(sender)) = (packet.dst(), packet.src())
    {
        sink.to_receivers(group, sender, packet);
    }
}

/// Sends a packet the relay built (`bytes`, as `poll_transmit` described it in `t`) where it
/// goes: to a neighbour as it is, or, for this node (`me`), held the engine's way by `hold` and
/// handed to the tree's local sender (NACK, MAB: only a root's relay sends them here) or local
/// receivers (cache repairs, NCFs). `hold` returning `None` drops the packet (the engine counts
/// why).
pub fn carry_out_built<B, P, S>(
    sink: &mut S,
    me: NodeAddr,
    t: RelayTransmit,
    bytes: B,
    hold: impl FnOnce(B) -> Option<P>,
) where
    B: AsRef<[u8]>,
    P: RmtpPacket,
    S: DecisionSink<P> + ?Sized,
{
    match t.to {
        Hop::Neighbour(neighbour) => sink.to_neighbour(neighbour, bytes.as_ref()),
        Hop::Local => {
            let Some(packet) = hold(bytes) else {
                return;
            };
            match packet.flag() {
                Flag::RmtpNack | Flag::RmtpMab if t.sender == me => {
                    sink.to_sender(t.group, &packet)
                }
                // Upward packets of someone else's tree have no local end here.
                Flag::RmtpNack | Flag::RmtpMab => {}
                _ => sink.to_receivers(t.group, t.sender, &packet),
            }
        }
    }
}
