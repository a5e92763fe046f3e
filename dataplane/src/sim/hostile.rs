//! Hostile traffic: valid packets of every protocol and message type, built with the real
//! `control::wire` builders, with their fields pushed to the edges (near 0 and near the 2^16,
//! 2^32 and 2^64 wraps, off-by-one lengths and counts, real and random node and group addresses,
//! every flag bit), then re-sealed (CRC-32C trailer or DATA CRC, then the DNP checksum). Random
//! bytes almost never pass both integrity checks; these always do, so they reach the state
//! machines. The simulator tests inject them into running nodes; the fuzz targets in `fuzz/`
//! drive the same generator from the fuzzer's input bytes ([`ByteEntropy`]).

use crate::node::{RAP_CLIENT_SID, RAP_SERVER_SID};
use control::rng::Rng;
use control::wire::dnp::{self, DNP_HEADER_LEN, Flag};
use control::wire::gmp::GmpMessage;
use control::wire::rap::{self, ListError, MAX_NAME_LEN, ServiceEntry};
use control::wire::rmtp::{
    self, Mab, SeqRange, SpmFields, TOTAL_UNKNOWN, data_packet, max_nack_ranges, max_ncf_ranges,
    max_payload,
};
use control::wire::{drp, trailer};
use control::{Addr, GroupAddr, NodeAddr};

/// Why a builder cannot fail here: bodies are built into MTU-sized buffers, with counts bounded
/// by what the MTU holds, before they are mangled.
const FITS: &str = "an MTU-sized buffer holds the packet";

/// Where the generator's choices come from: a seeded [`Rng`] in the simulator, the fuzzer's
/// input in `fuzz/`.
pub trait Entropy {
    fn next_u64(&mut self) -> u64;
}

impl Entropy for Rng {
    fn next_u64(&mut self) -> u64 {
        Rng::next_u64(self)
    }
}

/// Choices read from a byte string, up to eight bytes each, most significant first, zeros once
/// it runs out: a fuzzer mutating its input changes the generator's choices one by one.
#[derive(Clone, Debug)]
pub struct ByteEntropy<'a> {
    bytes: &'a [u8],
}

impl<'a> ByteEntropy<'a> {
    pub fn new(bytes: &'a [u8]) -> Self {
        ByteEntropy { bytes }
    }

    /// True once every byte has been used.
    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }
}

impl Entropy for ByteEntropy<'_> {
    fn next_u64(&mut self) -> u64 {
        let take = self.bytes.len().min(8);
        let mut word = [0u8; 8];
        word[..take].copy_from_slice(&self.bytes[..take]);
        self.bytes = &self.bytes[take..];
        u64::from_be_bytes(word)
    }
}

/// The choices the generator makes, over any [`Entropy`].
trait Choose: Entropy {
    /// Uniform in `[0, n)`; `n` must be non-zero. The high bits decide, so a short fuzzer
    /// input still spreads over the whole range.
    fn below(&mut self, n: u64) -> u64 {
        ((u128::from(self.next_u64()) * u128::from(n)) >> 64) as u64
    }

    /// True `percent` times in a hundred.
    fn percent(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }

    fn pick<T: Copy>(&mut self, from: &[T]) -> Option<T> {
        if from.is_empty() {
            None
        } else {
            Some(from[self.below(from.len() as u64) as usize])
        }
    }

    /// `base` moved by -2..=2, wrapping: both sides of every edge.
    fn around(&mut self, base: u64) -> u64 {
        base.wrapping_add(self.below(5)).wrapping_sub(2)
    }

    /// Near 0, 2^16, 2^32, 2^63 or 2^64, near one of `near`, or anything.
    fn edge_u64(&mut self, near: &[u64]) -> u64 {
        let base = match self.below(8) {
            0 => 0,
            1 => u64::MAX,
            2 => 1 << 32,
            3 => 1 << 63,
            4 => 1 << 16,
            5 | 6 => match self.pick(near) {
                Some(v) => v,
                None => return self.next_u64(),
            },
            _ => return self.next_u64(),
        };
        self.around(base)
    }

    fn edge_u32(&mut self, near: &[u64]) -> u32 {
        match self.below(6) {
            0 => self.around(0) as u32,
            1 => self.around(u64::from(u32::MAX)) as u32,
            2 => self.around(1 << 16) as u32,
            3 => self.around(1 << 31) as u32,
            4 => self.edge_u64(near) as u32,
            _ => self.next_u64() as u32,
        }
    }

    fn edge_u16(&mut self, near: &[u16]) -> u16 {
        match self.below(7) {
            0 => self.around(0) as u16,
            1 => self.around(u64::from(u16::MAX)) as u16,
            2 => self.around(u64::from(control::addr::GROUP_BASE)) as u16,
            3 => self.around(1 << 15) as u16,
            4 | 5 => match self.pick(near) {
                Some(v) => v,
                None => self.next_u64() as u16,
            },
            _ => self.next_u64() as u16,
        }
    }

    fn bytes(&mut self, len: usize) -> Vec<u8> {
        (0..len).map(|_| self.next_u64() as u8).collect()
    }
}

impl<E: Entropy + ?Sized> Choose for E {}

/// Every message type of every protocol.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    Hello,
    Terminate,
    Lsp,
    LspAck,
    Join,
    Leave,
    Request,
    Provide,
    Ack,
    Data,
    Retransmit,
    Nack,
    Ncf,
    Mab,
    Spm,
}

impl Kind {
    pub const ALL: [Kind; 15] = [
        Kind::Hello,
        Kind::Terminate,
        Kind::Lsp,
        Kind::LspAck,
        Kind::Join,
        Kind::Leave,
        Kind::Request,
        Kind::Provide,
        Kind::Ack,
        Kind::Data,
        Kind::Retransmit,
        Kind::Nack,
        Kind::Ncf,
        Kind::Mab,
        Kind::Spm,
    ];

    /// The DNP flag this message type travels under.
    pub fn flag(self) -> Flag {
        match self {
            Kind::Hello | Kind::Terminate | Kind::Lsp | Kind::LspAck => Flag::Drp,
            Kind::Join | Kind::Leave => Flag::Gmp,
            Kind::Request | Kind::Provide | Kind::Ack => Flag::Rap,
            Kind::Data => Flag::RmtpData,
            Kind::Retransmit => Flag::RmtpRetransmit,
            Kind::Nack => Flag::RmtpNack,
            Kind::Ncf => Flag::RmtpNcf,
            Kind::Mab => Flag::RmtpMab,
            Kind::Spm => Flag::RmtpSpm,
        }
    }
}

/// What the generator knows of the network it attacks, so that most packets name real nodes,
/// groups and sequence numbers (and so get past the first "not for me" check).
#[derive(Clone, Debug)]
pub struct Knowledge {
    pub mtu: usize,
    /// Every node of the topology.
    pub nodes: Vec<NodeAddr>,
    /// Groups in use.
    pub groups: Vec<GroupAddr>,
    /// Nodes sending to those groups.
    pub senders: Vec<NodeAddr>,
    /// Sequence numbers and byte offsets near the live transfers' (their edges, their ends).
    pub numbers: Vec<u64>,
}

impl Knowledge {
    /// Every node of `nodes`, one sender and one group, no known numbers yet.
    pub fn new(mtu: usize, nodes: Vec<NodeAddr>, group: GroupAddr, sender: NodeAddr) -> Self {
        Knowledge {
            mtu,
            nodes,
            groups: vec![group],
            senders: vec![sender],
            numbers: Vec::new(),
        }
    }
}

/// One hostile packet for node `to`, arriving over the link from its neighbour `from`.
pub struct Hostile {
    pub kind: Kind,
    /// Whether a field was given a value its parser refuses, or the body was changed past what
    /// the builders allow (then re-sealed).
    pub mangled: bool,
    /// The whole datagram, both checksums correct.
    pub packet: Vec<u8>,
}

/// A sealed hostile packet of `kind` for node `to`, which receives it from neighbour `from`.
pub fn generate(
    e: &mut impl Entropy,
    k: &Knowledge,
    kind: Kind,
    to: NodeAddr,
    from: NodeAddr,
) -> Hostile {
    let mut g = Generator {
        e,
        k,
        to,
        from,
        broken: false,
    };
    g.packet(kind)
}

/// A sealed hostile packet of a kind chosen among `kinds` (every kind when empty).
pub fn generate_any(
    e: &mut impl Entropy,
    k: &Knowledge,
    kinds: &[Kind],
    to: NodeAddr,
    from: NodeAddr,
) -> Hostile {
    let kinds = if kinds.is_empty() {
        &Kind::ALL[..]
    } else {
        kinds
    };
    let kind = e.pick(kinds).expect("kinds is not empty");
    generate(e, k, kind, to, from)
}

struct Generator<'a, E: Entropy> {
    e: &'a mut E,
    k: &'a Knowledge,
    to: NodeAddr,
    from: NodeAddr,
    /// Set when a field was given a value its parser refuses.
    broken: bool,
}

impl<E: Entropy> Generator<'_, E> {
    fn packet(&mut self, kind: Kind) -> Hostile {
        let (body, default_dst, default_src) = match kind {
            Kind::Data | Kind::Retransmit => self.data(kind.flag()),
            _ => {
                let (fields, dst, src) = self.fields(kind);
                (fields, dst, src)
            }
        };
        let (mut body, mangled) = self.mangle(kind, body);
        // Keep the datagram within the MTU (DNP would drop it unread), trailer included.
        let room = self.k.mtu.saturating_sub(DNP_HEADER_LEN);
        if kind == Kind::Data || kind == Kind::Retransmit {
            if body.len() > room {
                body.truncate(room);
                self.reseal_data(&mut body);
            }
        } else {
            body.truncate(room.saturating_sub(trailer::CRC_LEN));
            trailer::push(&mut body);
        }
        let dst = self.header_addr(default_dst);
        let src = self.header_addr(default_src);
        Hostile {
            kind,
            mangled: mangled || self.broken,
            packet: dnp::frame(Addr::from_raw(dst), Addr::from_raw(src), kind.flag(), &body),
        }
    }

    /// The header address a well-formed packet would carry, replaced now and then by any value.
    fn header_addr(&mut self, usual: u16) -> u16 {
        if self.e.percent(10) {
            let near = self.real_raw();
            self.e.edge_u16(&near)
        } else {
            usual
        }
    }

    fn real_raw(&self) -> Vec<u16> {
        let nodes = self.k.nodes.iter().map(|n| n.get());
        nodes.chain(self.k.groups.iter().map(|g| g.get())).collect()
    }

    /// A node address: mostly a real one, else one near the edges of the node range.
    fn node(&mut self) -> NodeAddr {
        let real = [
            &self.k.nodes[..],
            &self.k.senders[..],
            &[self.to, self.from],
        ]
        .concat();
        if self.e.percent(80)
            && let Some(n) = self.e.pick(&real)
        {
            return n;
        }
        let raw = match self.e.below(3) {
            0 => 1 + self.e.below(3) as u16,
            1 => control::addr::GROUP_BASE - 1 - self.e.below(3) as u16,
            _ => self.e.next_u64() as u16,
        };
        NodeAddr::new(raw).unwrap_or(self.to)
    }

    fn group(&mut self) -> GroupAddr {
        if self.e.percent(80)
            && let Some(g) = self.e.pick(&self.k.groups)
        {
            return g;
        }
        let raw = match self.e.below(3) {
            0 => control::addr::GROUP_BASE + self.e.below(3) as u16,
            1 => u16::MAX - self.e.below(3) as u16,
            _ => self.e.next_u64() as u16,
        };
        GroupAddr::new(raw).unwrap_or(GroupAddr::from_index(0).expect("group 0"))
    }

    fn sender(&mut self) -> NodeAddr {
        match self.e.pick(&self.k.senders) {
            Some(s) if self.e.percent(80) => s,
            _ => self.node(),
        }
    }

    fn sid(&mut self) -> u16 {
        let known = [RAP_SERVER_SID, RAP_CLIENT_SID];
        self.e.edge_u16(&known)
    }

    fn u64(&mut self) -> u64 {
        self.e.edge_u64(&self.k.numbers)
    }

    fn u32(&mut self) -> u32 {
        self.e.edge_u32(&self.k.numbers)
    }

    /// How many of something, up to `max`: mostly few, sometimes exactly the limit or near it.
    fn count(&mut self, max: usize) -> usize {
        match self.e.below(4) {
            0 => max.saturating_sub(self.e.below(2) as usize),
            _ => self.e.below(4) as usize,
        }
    }

    /// A body without its trailer (every kind but DATA), with the usual DNP destination and
    /// source for that kind.
    fn fields(&mut self, kind: Kind) -> (Vec<u8>, u16, u16) {
        let (to, from) = (self.to.get(), self.from.get());
        let mut body = match kind {
            Kind::Hello => drp::hello(),
            Kind::Terminate => drp::terminate(),
            Kind::Lsp => {
                let originator = self.node();
                let sequence = self.u32();
                let count = self.count(drp::max_lsp_neighbours(self.k.mtu));
                let neighbours: Vec<NodeAddr> = (0..count).map(|_| self.node()).collect();
                drp::lsp(originator, sequence, &neighbours).expect(FITS)
            }
            Kind::LspAck => {
                let originator = self.node();
                let sequence = self.u32();
                drp::lsp_ack(originator, sequence)
            }
            Kind::Join | Kind::Leave => {
                let (group, sender) = (self.group(), self.sender());
                let msg = if kind == Kind::Join {
                    GmpMessage::join(group, sender)
                } else {
                    GmpMessage::leave(group, sender)
                };
                msg.encode().to_vec()
            }
            Kind::Request => {
                let (dst_sid, src_sid) = (self.sid(), self.sid());
                rap::request(dst_sid, src_sid)
            }
            Kind::Ack => {
                let (dst_sid, src_sid) = (self.sid(), self.sid());
                let rap_id = self.e.edge_u16(&[1, 2, 3]);
                rap::ack(dst_sid, src_sid, rap_id)
            }
            Kind::Provide => return self.provide(),
            Kind::Nack => {
                let (group, ranges) = (self.group(), self.ranges(max_nack_ranges(self.k.mtu)));
                let mut body = vec![0u8; self.k.mtu];
                let len = rmtp::write_nack(&mut body, group, &ranges).expect(FITS);
                body.truncate(len);
                let dst = self.sender().get();
                body.truncate(len - trailer::CRC_LEN);
                return (body, dst, from);
            }
            Kind::Ncf => {
                let (group, sender) = (self.group(), self.sender());
                let ranges = self.ranges(max_ncf_ranges(self.k.mtu));
                let mut body = vec![0u8; self.k.mtu];
                let len = rmtp::write_ncf(&mut body, group, sender, &ranges).expect(FITS);
                body.truncate(len);
                body.truncate(len - trailer::CRC_LEN);
                return (body, to, from);
            }
            Kind::Mab => {
                let mab = Mab {
                    group: self.group().get(),
                    mab: self.u64(),
                    received: self.u64(),
                };
                let mut body = vec![0u8; self.k.mtu];
                let len = mab.write(&mut body).expect(FITS);
                body.truncate(len - trailer::CRC_LEN);
                let dst = self.sender().get();
                return (body, dst, from);
            }
            Kind::Spm => {
                let (group, sender) = (self.group(), self.sender());
                let total = if self.e.percent(20) {
                    TOTAL_UNKNOWN
                } else {
                    self.u64()
                };
                let spm = SpmFields {
                    spm_sequence: self.u64(),
                    trailing: self.u64(),
                    leading: self.u64(),
                    segment_size: self.e.edge_u16(&[max_payload(self.k.mtu) as u16]),
                    total,
                    finished: self.e.percent(50),
                    hash: self.e.bytes(32).try_into().expect("32 bytes"),
                };
                let mut body = vec![0u8; self.k.mtu];
                let len = spm.write(&mut body).expect(FITS);
                body.truncate(len - trailer::CRC_LEN);
                if self.e.percent(5) {
                    // Reserved flag bits: the flags byte is the one before the hash.
                    let flags = len - trailer::CRC_LEN - 33;
                    body[flags] = self.e.next_u64() as u8;
                    self.broken = true;
                }
                return (body, group.get(), sender.get());
            }
            Kind::Data | Kind::Retransmit => unreachable!("data bodies are built by data()"),
        };
        // The body builders above seal their bodies; the caller re-seals after mangling.
        body.truncate(body.len() - trailer::CRC_LEN);
        let dst = match kind.flag() {
            Flag::Rap if self.e.percent(30) => self.node().get(),
            _ => to,
        };
        let src = match kind.flag() {
            Flag::Rap => self.node().get(),
            _ => from,
        };
        (body, dst, src)
    }

    fn provide(&mut self) -> (Vec<u8>, u16, u16) {
        let count = self.count(4);
        let mut entries: Vec<ServiceEntry> = (0..count)
            .map(|_| {
                let name_len = match self.e.below(4) {
                    0 => MAX_NAME_LEN - self.e.below(2) as usize,
                    _ => self.e.below(16) as usize,
                };
                let name: String = (0..name_len)
                    .map(|_| char::from(b'a' + self.e.below(26) as u8))
                    .collect();
                ServiceEntry {
                    group: self.group(),
                    sender: self.sender(),
                    size: self.u64(),
                    hash: self.e.bytes(32).try_into().expect("32 bytes"),
                    segment_size: self.e.edge_u16(&[max_payload(self.k.mtu) as u16]).max(1),
                    name,
                }
            })
            .collect();
        let (dst_sid, src_sid) = (self.sid(), self.sid());
        let rap_id = self.e.edge_u16(&[1, 2, 3]);
        let mut body = loop {
            match rap::provide(dst_sid, src_sid, rap_id, &entries, self.k.mtu) {
                Ok(body) => break body,
                Err(ListError::TooLarge { fits, .. }) => entries.truncate(fits),
                Err(_) => entries.clear(),
            }
        };
        body.truncate(body.len() - trailer::CRC_LEN);
        let dst = if self.e.percent(70) {
            self.to.get()
        } else {
            self.node().get()
        };
        (body, dst, self.node().get())
    }

    /// NACK/NCF ranges: mostly ones a parser accepts (non-empty, not past 2^64 - 1).
    fn ranges(&mut self, max: usize) -> Vec<SeqRange> {
        let count = self.count(max).max(1);
        (0..count)
            .map(|_| {
                let first = self.u64();
                let mut len = self.u32();
                if self.e.percent(90) {
                    let room = u64::MAX - first;
                    len = len.clamp(1, u32::try_from(room).unwrap_or(u32::MAX).max(1));
                }
                let first = if self.e.percent(90) && first == u64::MAX {
                    first - 1
                } else {
                    first
                };
                SeqRange { first, len }
            })
            .collect()
    }

    /// A DATA or RETRANSMIT body with a correct CRC, and its usual header addresses.
    fn data(&mut self, flag: Flag) -> (Vec<u8>, u16, u16) {
        let (group, sender) = (self.group(), self.sender());
        let room = max_payload(self.k.mtu);
        let len = match self.e.below(4) {
            0 => room - self.e.below(2) as usize,
            1 => self.e.below(3) as usize,
            _ => self.e.below(room as u64 + 1) as usize,
        };
        let sequence = self.u64();
        let offset = if self.e.percent(60) {
            sequence.wrapping_mul(room as u64)
        } else {
            self.u64()
        };
        let payload = self.e.bytes(len);
        let packet = data_packet(group, sender, flag, sequence, offset, &payload);
        (packet[DNP_HEADER_LEN..].to_vec(), group.get(), sender.get())
    }

    /// Now and then, a change no builder makes: a field overwritten with an edge value, a bit
    /// flipped, a byte too few or too many. The caller re-seals what comes out.
    fn mangle(&mut self, kind: Kind, mut body: Vec<u8>) -> (Vec<u8>, bool) {
        if !self.e.percent(30) {
            return (body, false);
        }
        let is_data = matches!(kind, Kind::Data | Kind::Retransmit);
        match self.e.below(5) {
            0 if !body.is_empty() => {
                let value = self.u64().to_be_bytes();
                let width = [2, 4, 8][self.e.below(3) as usize].min(body.len());
                let at = self.e.below((body.len() - width + 1) as u64) as usize;
                body[at..at + width].copy_from_slice(&value[8 - width..]);
            }
            1 if !body.is_empty() => {
                let bit = self.e.below(body.len() as u64 * 8) as usize;
                body[bit / 8] ^= 1 << (bit % 8);
            }
            2 => {
                let cut = 1 + self.e.below(2) as usize;
                body.truncate(body.len().saturating_sub(cut));
            }
            3 => {
                let extra = 1 + self.e.below(2) as usize;
                let bytes = self.e.bytes(extra);
                body.extend_from_slice(&bytes);
            }
            _ => {
                let raw = self.real_raw();
                let value = self.e.edge_u16(&raw).to_be_bytes();
                if body.len() >= 2 {
                    let at = self.e.below(body.len() as u64 - 1) as usize;
                    body[at..at + 2].copy_from_slice(&value);
                }
            }
        }
        if is_data {
            self.reseal_data(&mut body);
        }
        (body, true)
    }

    /// DATA carries its CRC in its header: recompute it over what the body now says, through
    /// the wire module's own sealer.
    fn reseal_data(&self, body: &mut Vec<u8>) {
        let Ok(data) = rmtp::Data::parse(body) else {
            return;
        };
        let (sequence, offset) = (data.sequence(), data.offset());
        let mut packet = vec![0u8; DNP_HEADER_LEN];
        packet.extend_from_slice(body);
        // The DNP header written here is thrown away: the caller frames the body itself.
        let group = GroupAddr::from_index(0).expect("group 0");
        if rmtp::seal_data(
            &mut packet,
            group,
            self.to,
            Flag::RmtpData,
            sequence,
            offset,
        )
        .is_err()
        {
            return;
        }
        body.clear();
        body.extend_from_slice(&packet[DNP_HEADER_LEN..]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use control::wire::Packet;
    use control::wire::drp::DrpMessage;
    use control::wire::rap::RapMessage;
    use control::wire::rmtp::RmtpMessage;

    fn n(v: u16) -> NodeAddr {
        NodeAddr::new(v).unwrap()
    }

    fn knowledge() -> Knowledge {
        let group = GroupAddr::from_index(1).unwrap();
        let mut k = Knowledge::new(1024, (1..=7).map(n).collect(), group, n(1));
        k.numbers = vec![0, 500, 4200];
        k
    }

    /// Parses the body the way the node does; `Ok` when every check passed.
    fn parses(packet: &Packet<'_>) -> bool {
        match packet.flag() {
            Flag::Drp => DrpMessage::parse(packet.body()).is_ok(),
            Flag::Gmp => GmpMessage::parse(packet.body()).is_ok(),
            Flag::Rap => RapMessage::parse(packet.body()).is_ok(),
            flag => match RmtpMessage::parse(flag, packet.body()) {
                Ok(RmtpMessage::Data(d) | RmtpMessage::Retransmit(d)) => d.crc_ok(),
                Ok(_) => true,
                Err(_) => false,
            },
        }
    }

    #[test]
    fn every_kind_passes_both_checks_and_unmangled_ones_parse() {
        let k = knowledge();
        let mut rng = Rng::new(5);
        for kind in Kind::ALL {
            let mut parsed = 0;
            for _ in 0..1000 {
                let h = generate(&mut rng, &k, kind, n(2), n(1));
                let p = Packet::parse(&h.packet, k.mtu).expect("passes the DNP checksum");
                assert_eq!(p.flag(), kind.flag());
                let sealed = match kind {
                    Kind::Data | Kind::Retransmit => {
                        rmtp::Data::parse(p.body()).is_err_and(|_| h.mangled)
                            || rmtp::Data::parse(p.body()).is_ok_and(|d| d.crc_ok())
                    }
                    _ => trailer::checked(p.body()).is_ok(),
                };
                assert!(sealed, "{kind:?}: the body's CRC-32C matches");
                if parses(&p) {
                    parsed += 1;
                } else {
                    assert!(
                        h.mangled || kind == Kind::Nack || kind == Kind::Ncf,
                        "{kind:?}"
                    );
                }
            }
            assert!(parsed > 400, "{kind:?}: only {parsed} of 1000 parse");
        }
    }

    #[test]
    fn same_seed_same_packets_and_bytes_drive_it_too() {
        let k = knowledge();
        let run = |seed| {
            let mut rng = Rng::new(seed);
            (0..50)
                .map(|_| generate_any(&mut rng, &k, &[], n(2), n(1)).packet)
                .collect::<Vec<_>>()
        };
        assert_eq!(run(3), run(3));
        assert_ne!(run(3), run(4));
        // Any byte string, even an empty one, gives a sealed packet.
        for input in [&[][..], &[0xFF; 3][..], &[7; 200][..]] {
            let mut e = ByteEntropy::new(input);
            let h = generate_any(&mut e, &k, &[], n(2), n(1));
            assert!(Packet::parse(&h.packet, k.mtu).is_ok());
        }
    }
}
