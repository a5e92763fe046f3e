//! DNP's counters: atomics bumped by every thread that receives, forwards or sends, read as a
//! plain snapshot ([`DnpStats`]).

use control::wire::{DnpError, Flag};
use std::sync::atomic::{AtomicU64, Ordering};

/// Names of the DNP errors, in the order of [`error_index`]; the same as `DnpError::name`.
pub const ERROR_NAMES: [&str; 5] = [
    "too_short",
    "too_long",
    "length_mismatch",
    "bad_checksum",
    "unknown_flag",
];

pub fn error_index(e: &DnpError) -> usize {
    match e {
        DnpError::TooShort(_) => 0,
        DnpError::TooLong { .. } => 1,
        DnpError::LengthMismatch { .. } => 2,
        DnpError::BadChecksum => 3,
        DnpError::UnknownFlag(_) => 4,
    }
}

/// Names of the protocols, in the order of `Flag::ALL`.
pub const FLAG_NAMES: [&str; 9] = [
    "drp",
    "gmp",
    "rap",
    "rmtp_data",
    "rmtp_retransmit",
    "rmtp_nack",
    "rmtp_mab",
    "rmtp_ncf",
    "rmtp_spm",
];

pub fn flag_index(f: Flag) -> usize {
    Flag::ALL.iter().position(|&x| x == f).unwrap_or(0)
}

/// The flag of a packet about to be sent, read from its header (if it has one).
pub fn flag_of(packet: &[u8]) -> Option<Flag> {
    let raw = packet.get(6..8)?;
    Flag::from_raw(u16::from_be_bytes([raw[0], raw[1]]))
}

macro_rules! dnp_counters {
    ($($(#[doc = $doc:literal])+ $name:ident,)*) => {
        /// The live counters (relaxed atomics: each is a tally, never a synchronisation point).
        #[derive(Debug, Default)]
        pub struct DnpCounters {
            $(pub $name: AtomicU64,)*
            pub rx_errors: [AtomicU64; 5],
            pub rx_by_flag: [AtomicU64; 9],
            pub tx_by_flag: [AtomicU64; 9],
        }

        /// A snapshot of DNP's counters.
        #[derive(Clone, Debug, Default, PartialEq, Eq)]
        pub struct DnpStats {
            $($(#[doc = $doc])+ pub $name: u64,)*
            /// Datagrams dropped by DNP parsing, by error (see [`ERROR_NAMES`]).
            pub rx_errors: [u64; 5],
            /// Accepted packets by protocol (see [`FLAG_NAMES`]), local deliveries included.
            pub rx_by_flag: [u64; 9],
            /// Packets handed to `sendto` (or to the garbler) by protocol, forwards included.
            pub tx_by_flag: [u64; 9],
        }

        impl DnpCounters {
            pub fn snapshot(&self) -> DnpStats {
                let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
                DnpStats {
                    $($name: load(&self.$name),)*
                    rx_errors: self.rx_errors.each_ref().map(load),
                    rx_by_flag: self.rx_by_flag.each_ref().map(load),
                    tx_by_flag: self.tx_by_flag.each_ref().map(load),
                }
            }
        }

        impl DnpStats {
            /// Every counter by name (`rx_error_bad_checksum`, `rx_drp`, `tx_gmp`, ...).
            pub fn fields(&self) -> Vec<(String, u64)> {
                let mut out = vec![$((stringify!($name).to_string(), self.$name),)*];
                for (name, v) in ERROR_NAMES.iter().zip(self.rx_errors) {
                    out.push((format!("rx_error_{name}"), v));
                }
                for (name, v) in FLAG_NAMES.iter().zip(self.rx_by_flag) {
                    out.push((format!("rx_{name}"), v));
                }
                for (name, v) in FLAG_NAMES.iter().zip(self.tx_by_flag) {
                    out.push((format!("tx_{name}"), v));
                }
                out
            }

            /// The count of one DNP error by its `DnpError::name`.
            pub fn rx_error(&self, name: &str) -> Option<u64> {
                ERROR_NAMES.iter().position(|&n| n == name).map(|i| self.rx_errors[i])
            }
        }
    };
}

dnp_counters! {
    /// Datagrams returned by `recvfrom`, valid or not.
    rx_datagrams,
    /// Bytes of those datagrams.
    rx_bytes,
    /// `recvfrom` failures other than the periodic wake-up timeout.
    rx_socket_errors,
    /// Datagrams the kernel dropped because the socket's receive queue was full (the running
    /// `SO_RXQ_OVFL` count the last datagram carried; 0 until the first drop).
    rx_queue_overflows,
    /// Receive buffer the kernel granted the socket, bytes (its doubled bookkeeping size).
    socket_rcvbuf,
    /// Send buffer the kernel granted the socket, bytes.
    socket_sndbuf,
    /// Valid packets from a socket address that is no node we know, dropped (DRP packets we
    /// learnt the sender from excepted; the `learn_refused_*` counters say why the others
    /// taught nothing).
    rx_unknown_peer,
    /// Neighbours learned from a hello or LSP sent from a socket not in the topology file.
    peers_learned,
    /// Learnt neighbours forgotten: DRP declared them dead, or they never became live.
    peers_expired,
    /// DRP packets from an unknown socket whose body is no valid hello or LSP.
    learn_refused_body,
    /// Hellos and LSPs from an unknown socket claiming a node that already has an address (the
    /// file's, or a learnt one whose neighbour is still live), or from a socket already bound.
    learn_refused_taken,
    /// Hellos and LSPs from an unknown socket while the learnt-peer table is full.
    learn_refused_full,
    /// Hop-by-hop packets (DRP, GMP) whose destination is another node.
    rx_not_for_me,
    /// Packets whose source or destination cannot be what their protocol needs (e.g. a RAP
    /// packet to a group).
    rx_bad_address,
    /// RAP packets for a service id that no server or client of this node has.
    rap_no_endpoint,
    /// RAP packets too short to name a service id.
    rap_malformed,
    /// DRP bodies that did not parse.
    drp_malformed,
    /// RMTP packets for this node, or to a group, while no RMTP layer is attached.
    rmtp_unclaimed,
    /// Packets a protocol of this node sent to this node, delivered without the network.
    local_deliveries,
    /// Packets for another node sent on toward it by `next_hop`.
    forwarded,
    /// Packets to forward for which there was no route.
    forward_no_route,
    /// Packets to forward whose next hop was the neighbour they came from (routes still
    /// converging): dropped rather than bounced.
    forward_loop,
    /// Datagrams handed to `sendto` (garbled copies included).
    tx_packets,
    /// Bytes of those datagrams.
    tx_bytes,
    /// `sendto` failures, or fewer bytes sent than asked.
    tx_errors,
    /// Routed sends with no route to the destination.
    tx_no_route,
    /// Sends to a node that is no neighbour we have a socket address for.
    tx_unknown_neighbour,
    /// Routed sends whose header has no node destination.
    tx_bad_packet,
}

impl DnpCounters {
    pub fn bump(a: &AtomicU64) {
        a.fetch_add(1, Ordering::Relaxed);
    }

    pub fn add(a: &AtomicU64, n: u64) {
        a.fetch_add(n, Ordering::Relaxed);
    }
}
