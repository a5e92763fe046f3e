//! The engine's counters (kept in plain integers on the engine thread, published to atomics
//! once per loop turn) and a snapshot of every counter of a node, printable as `name value`
//! lines like the threaded engine's.

use crate::garbler::{DelayStats, GarblerStats};
use crate::host::lines::{
    ReceiverLines, SenderLines, control_plane_lines, garbler_lines, push_fields, relay_lines,
    transfer_lines,
};
use crate::node::RAP_SERVER_SID;
use control::NodeAddr;
use control::drp::DrpStats;
use control::gmp::GmpStats;
use control::rap::{RapClientStats, RapServerStats};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

macro_rules! engine_counters {
    ($($(#[$doc:meta])* $name:ident),* $(,)?) => {
        /// What the engine thread counts.
        #[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
        pub struct EngineStats {
            $($(#[$doc])* pub $name: u64,)*
        }

        /// [`EngineStats`] as other threads read it.
        #[derive(Debug, Default)]
        pub(crate) struct Counters {
            $($name: AtomicU64,)*
        }

        impl Counters {
            pub fn store(&self, s: &EngineStats) {
                $(self.$name.store(s.$name, Ordering::Relaxed);)*
            }

            pub fn snapshot(&self) -> EngineStats {
                EngineStats { $($name: self.$name.load(Ordering::Relaxed),)* }
            }
        }

        impl EngineStats {
            /// Adds worker `index`'s counters to these: counts add up; what describes a
            /// worker's setup (its socket, its core) is worker 0's.
            pub fn add_worker(&mut self, index: usize, other: &EngineStats) {
                let setup = *self;
                $(self.$name = self.$name.saturating_add(other.$name);)*
                if index > 0 {
                    self.socket_rcvbuf = setup.socket_rcvbuf;
                    self.socket_sndbuf = setup.socket_sndbuf;
                    self.gro = setup.gro;
                    self.pinned_core = setup.pinned_core;
                    self.gso_disabled = setup.gso_disabled.max(other.gso_disabled);
                }
            }

            /// Every counter by name, in a fixed order.
            pub fn fields(&self) -> Vec<(&'static str, u64)> {
                vec![$((stringify!($name), self.$name),)*]
            }
        }
    };
}

engine_counters! {
    /// Datagrams handed to the node (a coalesced receive counts each of its segments); the
    /// line `dnp.rx_datagrams`, as the threaded engine names it.
    datagrams_received,
    /// Receive completions that carried data: `datagrams_received / receives` is the GRO batch.
    receives,
    /// Datagrams the kernel took; the line `dnp.tx_packets`.
    datagrams_sent,
    /// Send completions: `datagrams_sent / sends` is the GSO batch.
    sends,
    /// Times the multishot receive stopped because every provided buffer was in use (ENOBUFS).
    recv_buffers_exhausted,
    /// Datagrams from a socket address that is no node of the topology file, dropped.
    unknown_source,
    /// Packets the node copied into a send buffer: a datagram passed on while half the
    /// receive buffers were held by sends (see `rx_buffers_held_copies`); 0 otherwise, as a
    /// forward leaves from its receive buffer and a built packet from the one it was built in.
    payload_copies,
    /// Datagrams sent straight from the receive buffer they arrived in (forwards and the
    /// relay's fan-out: one per next hop).
    sends_from_receive_buffer,
    /// Datagrams copied rather than sent from their receive buffer because half the buffers
    /// were held by sends in flight (`UringOptions::recv_buffers` too small for the load).
    rx_buffers_held_copies,
    /// Packets local cores (sender, receivers, relay) built once in an outgoing buffer, which
    /// every next hop's send then refers to.
    packets_built,
    /// Times half the receive buffers were held within a turn and the pending sends were
    /// submitted before its next receives (`Engine::send_early`).
    early_sends,
    /// Copies the garbler made of packets to a faulty direction (lost ones make none, nor do
    /// those of a direction whose faults only drop; each duplicate, corrupted or delayed one
    /// is a copy of its own); 0 on clean links.
    garbler_copies,
    /// Receive buffers out of the ring now, held by sends of their datagrams (0 once stopped).
    rx_buffers_held,
    /// The node's outgoing buffers referred to by a queued or in-flight send now (0 once
    /// stopped).
    send_buffers_in_use,
    /// Send buffers the node allocated because every reserved one was in flight
    /// (`UringOptions::send_buffers` too small for the load); 0 in steady state.
    send_buffers_allocated,
    /// Sends the kernel refused (their datagrams are lost; RMTP repairs what matters).
    send_errors,
    /// 1 once a segmented send failed and the engine fell back to one datagram per send.
    gso_disabled,
    /// Receive completions with an error other than ENOBUFS.
    recv_errors,
    /// Receives cut short by the buffer size (or unparsable), dropped.
    recv_truncated,
    /// Packets for a node the topology file has no socket address for, dropped.
    tx_unknown_neighbour,
    /// The socket's running count of datagrams the kernel dropped for a full receive queue.
    rx_queue_overflows,
    /// Turns of the engine loop (a wake from the ring, a timer, or a command).
    wakeups,
    /// Where the worker's time goes, nanoseconds (`engine.time_*`): handling what the ring
    /// completed (receives through the node, send completions) ...
    time_reap_nanos,
    /// ... the local transfers' turn (senders building batches, receivers' sinks) and timers ...
    time_transfers_nanos,
    /// ... routing what the node queued into send slots ...
    time_route_nanos,
    /// ... in the kernel submitting (the sends run inline: copies, loopback delivery) ...
    time_submit_nanos,
    /// ... and asleep (or spinning) waiting for completions or a deadline.
    time_wait_nanos,
    /// Commands run for other threads.
    commands,
    /// Waits that looked at the ring before sleeping (`uring.spin_before_sleep`) and found a
    /// completion, so spared a sleep and a wake-up ...
    spins_found_work,
    /// ... and those that found none in time and slept.
    spins_gave_up,
    /// The socket's granted receive and send buffers, bytes.
    socket_rcvbuf,
    socket_sndbuf,
    /// 1 when the kernel coalesces receives (`UDP_GRO`), 0 otherwise.
    gro,
    /// The core the (first) worker thread is pinned to, plus one (0: not pinned).
    pinned_core,
    /// Control-plane packets the workers dropped because the control thread's inbox was full.
    control_inbox_full,
    /// Datagrams of another worker's tree that reached this one (a segmented send mixing
    /// groups), dropped: handling them here would split the tree's state.
    rx_other_worker,
    /// With `uring.hand_off`: datagrams of another worker's tree this one copied into that
    /// worker's hand-off queue (one payload copy each) ...
    handed_over,
    /// ... those it dropped because that queue was full ...
    hand_off_full,
    /// ... and datagrams of this worker's trees it took from its own queue and handled.
    taken_over,
    /// Local receivers' staging blocks written to their files through the ring ...
    file_writes,
    /// ... their bytes ...
    file_write_bytes,
    /// ... writes the kernel took only in part (the rest was written by another) ...
    file_writes_short,
    /// ... writes that failed (the transfer fails; the file stays partial) ...
    file_write_errors,
    /// ... and hints after them: a block's write-back started; an older range's write-back
    /// waited for, then the range dropped from the page cache (`receiver.drop_behind`).
    file_write_hints,
}

/// Every counter of one node at one moment.
#[derive(Clone, Debug, PartialEq)]
pub struct UringStats {
    pub addr: NodeAddr,
    pub uptime: Duration,
    /// The control thread and the workers.
    pub threads: usize,
    /// The workers' counters, summed.
    pub engine: EngineStats,
    /// What DNP validation and dispatch counted (the sans-IO node's counters).
    pub node: crate::node::NodeStats,
    pub relay: crate::rmtp::RelayStats,
    pub drp: DrpStats,
    pub gmp: GmpStats,
    /// The node's one RAP server (service id 1).
    pub rap_server: RapServerStats,
    pub rap_client: RapClientStats,
    /// Directions that have garbled anything, by neighbour.
    pub garbler: Vec<(NodeAddr, GarblerStats)>,
    pub delay_line: DelayStats,
    /// Transfers this node multicasts (still running or lingering).
    pub senders: Vec<SenderLines>,
    /// Transfers local clients receive (still running or lingering).
    pub receivers: Vec<ReceiverLines>,
}

impl UringStats {
    pub fn lines(&self) -> Vec<(String, u64)> {
        let mut out = vec![
            ("node.addr".to_string(), u64::from(self.addr.get())),
            (
                "node.uptime_ms".to_string(),
                u64::try_from(self.uptime.as_millis()).unwrap_or(u64::MAX),
            ),
            ("node.threads".to_string(), self.threads as u64),
        ];
        for (name, v) in self.engine.fields() {
            // The threaded engine's names for the same events, so `ctl stats` and the
            // benchmarks read both engines alike.
            let name = match name {
                "datagrams_received" => "dnp.rx_datagrams".to_string(),
                "datagrams_sent" => "dnp.tx_packets".to_string(),
                "unknown_source" => "dnp.rx_unknown_peer".to_string(),
                name => format!("engine.{name}"),
            };
            out.push((name, v));
        }
        push_fields(&mut out, "dnp", self.node.fields());
        relay_lines(&mut out, &self.relay);
        control_plane_lines(
            &mut out,
            &self.drp,
            &self.gmp,
            &[(RAP_SERVER_SID, &self.rap_server)],
            &self.rap_client,
        );
        garbler_lines(&mut out, &self.garbler, &self.delay_line);
        transfer_lines(&mut out, &self.senders, &self.receivers);
        out
    }

    /// One counter by its line name, e.g. `engine.sends`.
    pub fn get(&self, name: &str) -> Option<u64> {
        self.lines()
            .into_iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v)
    }
}

impl std::fmt::Display for UringStats {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (name, v) in self.lines() {
            writeln!(f, "{name} {v}")?;
        }
        Ok(())
    }
}
