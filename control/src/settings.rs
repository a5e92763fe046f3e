//! Every tunable of a Burghers node with its default, declared once (Aeron's `Configuration`
//! is the model). The cores' configurations, the engines' options and the CLI's flags take
//! their defaults from here, and `burghers settings` prints this list ([`ALL`]): a default
//! changes in one place, and what a node runs with can be read without the source.
//!
//! Wire-format constants (header lengths, the largest fixed packet) are not settings: they
//! live with their formats in [`crate::wire`]. Limits of the format that a setting may not
//! exceed (e.g. `MAX_FANOUT`) stay beside the code that relies on them.

use std::fmt::Debug;

/// One setting as [`ALL`] lists it.
#[derive(Clone, Copy)]
pub struct Setting {
    /// The section (the layer it tunes), as in `relay`.
    pub section: &'static str,
    /// The constant's name, as in `NACK_ENTRIES`.
    pub name: &'static str,
    pub default: &'static (dyn Debug + Sync),
    /// Its documentation, one line per doc line.
    pub meaning: &'static str,
}

impl Setting {
    /// `section.name` in lower case, as `burghers settings` prints it.
    pub fn key(&self) -> String {
        format!("{}.{}", self.section, self.name.to_ascii_lowercase())
    }
}

/// Declares sections of settings: per section a module of documented constants, and in
/// [`ALL`] every one of them with its section, name, default and documentation.
macro_rules! settings {
    ($(
        $(#[doc = $section_doc:literal])*
        mod $section:ident {
            $( $(#[doc = $doc:literal])* $name:ident: $ty:ty = $value:expr; )*
        }
    )*) => {
        $(
            $(#[doc = $section_doc])*
            pub mod $section {
                #[allow(unused_imports)]
                use std::time::Duration;
                $( $(#[doc = $doc])* pub const $name: $ty = $value; )*
            }
        )*

        /// Every setting, in declaration order.
        pub const ALL: &[Setting] = &[$($(
            Setting {
                section: stringify!($section),
                name: stringify!($name),
                default: &$section::$name,
                meaning: concat!($($doc, "\n"),*),
            },
        )*)*];
    };
}

settings! {
    /// What a topology file's `[network]` section says when it is silent.
    mod network {
        /// Largest DNP packet, header included, bytes.
        MTU: usize = 1024;
        /// DRP hello period (seed: 1 s).
        HELLO_INTERVAL: Duration = Duration::from_secs(1);
        /// A neighbour is dead after this many hello periods without a hello (seed: 3).
        DEAD_HELLOS: u32 = 3;
        /// Period of re-forwarding unacknowledged LSPs (seed: 1 s).
        LSP_RETRANSMIT: Duration = Duration::from_secs(1);
        /// Period of hellos to former neighbours, to notice a healed link.
        FORMER_PROBE_INTERVAL: Duration = Duration::from_secs(5);
        /// GMP join refresh period (seed: 1 s).
        GMP_REFRESH: Duration = Duration::from_secs(1);
        /// A downstream GMP entry expires after this long without a join (seed: 10 s).
        GMP_EXPIRE: Duration = Duration::from_secs(10);
        /// RAP client retry period.
        RAP_RETRY: Duration = Duration::from_secs(1);
    }

    /// Link-state routing: how much the network can make DRP hold, and its ageing.
    mod drp {
        /// Link-state entries (originating nodes) kept at most; one more is refused and
        /// counted (`drp.lsdb_full`).
        LSDB_CAPACITY: usize = 16_384;
        /// Neighbours, live or former, kept at most (the file's are always admitted).
        NEIGHBOUR_CAPACITY: usize = 1_024;
        /// Another node's LSP not refreshed within this is removed (OSPF's MaxAge).
        MAX_AGE: Duration = Duration::from_secs(3600);
        /// Our own LSP is originated again this often (OSPF's LSRefreshTime).
        REFRESH_INTERVAL: Duration = Duration::from_secs(1800);
        /// How long a flush (an LSP at the maximum sequence) is held before removal.
        FLUSH_HOLD: Duration = Duration::from_secs(10);
        /// Dead intervals during which a neighbour's terminates are not believed, after one
        /// proved false (0 believes every terminate).
        TERMINATE_HOLD_DOWN_DEAD_INTERVALS: u32 = 10;
    }

    /// Multicast group membership.
    mod gmp {
        /// (group, sender) trees kept at most; a join that would make one more is refused and
        /// counted (`gmp.trees_refused`).
        MAX_TREES: usize = 4096;
    }

    /// Service announcements.
    mod rap {
        /// Period of re-sending an unacknowledged provide.
        RESEND_INTERVAL: Duration = Duration::from_secs(1);
        /// Re-sends after the first provide before the server gives up on a client.
        MAX_RESENDS: u32 = 5;
        /// Clients with an unacknowledged answer held at once (about 32 KiB when full).
        MAX_PENDING: usize = 1024;
    }

    /// What every RMTP core (sender, receiver, relay) shares.
    mod rmtp {
        /// The shortest timer derived from a measured round trip.
        TIMER_FLOOR: Duration = Duration::from_micros(50);
        /// A sequence repaired toward a receiver (by the sender, or from a relay's cache
        /// toward a peer) is not repaired again sooner; scaled down to the measured repair
        /// round trip once there is one.
        REPAIR_HOLDOFF: Duration = Duration::from_millis(10);
        /// Period of a receiver's and a relay's MABs (window reports) upstream.
        MAB_INTERVAL: Duration = Duration::from_millis(50);
        /// NACK table entries (sequences) per tree at a relay, and so the most missing
        /// sequences a local receiver tracks.
        NACK_ENTRIES: usize = 4096;
    }

    /// The RMTP sender.
    mod sender {
        /// How far (bytes) a sender may go before the first MAB arrives.
        INITIAL_WINDOW: u64 = 64 * 1024;
        /// Bytes a paced sender sends at once ahead of its pace (a burst per wake-up, which
        /// leaves as one segmented send); its rate holds on average.
        PACE_QUANTUM: u64 = 16 * 1024;
        /// Bytes of new DATA a local sender builds in one call at most (whole packets, at
        /// least one, at most 64), end to end in one buffer: each next hop gets the batch as
        /// one run, which leaves as one segmented send (the kernel takes up to 64 KiB and 64
        /// segments), and the engine makes one call per batch rather than per packet.
        BATCH_BYTES: usize = 64_000;
        /// Batches a local sender builds in one pump of its node at most; then the engine
        /// sends them and reads what came in (MABs, NACKs) before the sender builds more.
        /// Unbounded, a sender built its whole window (~2 MiB, ~2.5 ms on the 2-core EPYC VM)
        /// before any of it left, and NACKs and repairs waited behind the burst: at 2% loss a
        /// gap's first NACK to its repair took 3.0 ms (median; 1.8-2.0 with 4), and half the
        /// lost sequences were repaired twice or more (with 4, about one in ten).
        BATCHES_PER_PUMP: usize = 4;
        /// Period of SPMs while data flows.
        SPM_INTERVAL: Duration = Duration::from_millis(100);
        /// Period of SPMs once everything was sent, until every receiver has it.
        SPM_INTERVAL_END: Duration = Duration::from_millis(20);
        /// Repairs of distinct sequences sent at most per repair hold-off.
        MAX_REPAIRS_PER_HOLDOFF: usize = 128;
        /// Aggregated MABs in a row that must agree before the sender believes that every
        /// receiver holds the whole transfer, or that every receiver failed.
        MAB_AGREEMENT: usize = 2;
        /// This long without a MAB (since the last one, or the first DATA) means no receiver
        /// is left: the transfer fails.
        FEEDBACK_TIMEOUT: Duration = Duration::from_secs(5);
        /// Keep every sent sequence repairable (the source is random access, so this costs no
        /// memory); off, the trailing edge follows what every receiver reported, as in PGM.
        RETAIN_ALL: bool = true;
        /// How long a complete sender keeps sending SPMs (so every receiver sees the final
        /// trailing edge and may leave) before its transfer has ended.
        LINGER: Duration = Duration::from_secs(1);
        /// Bytes a file source reads ahead of what is sent, in one read: small enough that
        /// the block is still in the core's first caches when the segments are copied out of
        /// it (on the 2-core EPYC VM 256 KiB and 64 KiB cost ~1 us per 1 KiB segment, read and
        /// copy, against ~0.3 us at 32 KiB; 8 KiB pays for its system calls).
        READ_AHEAD: usize = 32 * 1024;
    }

    /// The RMTP receiver.
    mod receiver {
        /// Bytes accepted beyond what was delivered, for a receiver core configured directly
        /// (the simulator); `send`/`recv` on a real engine ask [`super::host::RECEIVE_WINDOW`].
        WINDOW: u64 = 256 * 1024;
        /// Wait after a gap opens before the first NACK (lets reordering settle).
        NACK_DELAY: Duration = Duration::from_millis(1);
        /// First NACK retry period; doubles up to `NACK_RETRY_MAX`. Replaced by the measured
        /// repair round trip when shorter.
        NACK_RETRY: Duration = Duration::from_millis(10);
        /// Longest NACK retry period.
        NACK_RETRY_MAX: Duration = Duration::from_millis(200);
        /// Retries at the first retry period, after the first retry, before the period starts
        /// doubling: a lost NACK or repair is common on a lossy path (a third of them at 10%
        /// loss over two hops), and each doubling holds the window at that gap for longer.
        NACK_RETRIES_UNDOUBLED: u32 = 2;
        /// After an NCF for a sequence, it is not NACKed again for this long (or the retry
        /// timer derived from the measured round trip, when shorter).
        NCF_HOLDOFF: Duration = Duration::from_millis(15);
        /// Missing sequences tracked at most (capped by `rmtp.nack_entries` in a node).
        MAX_MISSING: usize = 1 << 16;
        /// Out-of-order segments held at most.
        MAX_BUFFERED: usize = 1 << 16;
        /// Report the MAB at once when it advanced this many bytes (0: an eighth of the window,
        /// or a quarter of the in-flight allowance when less).
        MAB_STEP: u64 = 0;
        /// The MAB grants at most this many bytes past the highest byte received, plus
        /// `IN_FLIGHT_GAIN` times the measured delivery rate × round trip: a sender, paced or
        /// not, then queues no more than the path needs in front of the receiver, and repairs
        /// do not wait behind a whole window (0: no cap, the MAB is delivered + window).
        IN_FLIGHT_HEADROOM: u64 = 256 * 1024;
        /// Bandwidth-delay products (measured delivery rate × smallest window round trip)
        /// allowed in flight besides `IN_FLIGHT_HEADROOM`; above 1, so the rate can grow.
        IN_FLIGHT_GAIN: u64 = 2;
        /// Period over which a receiver measures its delivery rate (the largest of the last 8
        /// periods counts).
        RATE_INTERVAL: Duration = Duration::from_millis(1);
        /// SPMs in a row that must agree before a trailing edge that fails the transfer, or a
        /// content hash, is believed.
        SPM_AGREEMENT: usize = 2;
        /// The receiver fails when the sender has been unreachable or silent this long (twice
        /// the sender's `feedback_timeout`, so that a sender that gave up has failed first).
        SENDER_TIMEOUT: Duration = Duration::from_secs(10);
        /// After completing, a receiver stops lingering once the sender has been silent this
        /// long (counted from its first report of the completion).
        LINGER_SILENCE: Duration = Duration::from_millis(500);
        /// Bytes a file sink stages before its writer (its thread, or the uring worker's ring)
        /// writes them, in one write (and starts their write-back to the disk). Each write
        /// through the ring wakes a kernel io-wq thread: 1 MiB blocks took the receive side of
        /// a 256 MiB transfer from 0.40-0.51 to 0.39-0.43 CPU-s against 256 KiB ones.
        STAGED_BYTES: usize = 1024 * 1024;
        /// Staging blocks of a file sink, made at start: the receiving thread waits for the
        /// writer (or, on the uring engine, writes a block itself) only when the disk is this
        /// many blocks behind. A uring worker's turn can deliver megabytes before its writes are
        /// submitted: with 1 MiB in 4 blocks, 19 of a 256 MiB transfer's 256 blocks were written
        /// by the worker itself; with 8, none (with 256 KiB in 4 blocks, 490 of 1,024).
        STAGED_BLOCKS: usize = 8;
        /// A received file's pages are dropped from the page cache this many bytes behind the
        /// block last written, once written back (the writer waits for that, off the uring
        /// worker), and all of them after the final sync: a bulk transfer does not push the
        /// machine's cache out, and the blocks that follow reuse the freed pages, which on a
        /// VM that hands free memory back to its host saves a fault in the host per page. A
        /// 1 GiB transfer over loopback took 3.5 s and 4.5 CPU-s of the machine (medians of 5
        /// alternated) against 4.1 s and 6.4 keeping them; 256 MiB, 1.3 CPU-s against 1.5 in
        /// the same time (docs/BENCHMARKS.md). 0: the pages stay cached.
        DROP_BEHIND: u64 = 8 * 1024 * 1024;
        /// Bytes a file sink hashes at once on the receiving thread as they are staged, while
        /// they are still in its caches (its writer thread only writes): hashing a staged
        /// block on the writer's core cost ~0.43 us per KiB on the 2-core EPYC VM, most of it
        /// reading the block from the other core's cache.
        HASH_RUN: usize = 16 * 1024;
        /// The longest the receiving thread waits (parked) before it looks again for a spare
        /// staging block when the sink's writer is every block behind; the writer wakes it as
        /// soon as it gives a block back (50 us sleeps, slept ~100 us with the timer's slack,
        /// cost a 256 MiB transfer ~60 ms of the receiving thread's ~530).
        WRITER_WAIT: Duration = Duration::from_millis(1);
        /// How often a sink syncing a verified file to disk off the engine's thread is asked
        /// whether it is done.
        FINISH_POLL: Duration = Duration::from_millis(5);
    }

    /// The RMTP relay (every node runs one).
    mod relay {
        /// Trees tracked at once.
        MAX_TREES: usize = 64;
        /// Sequences one NACK packet may ask for; the rest is refused (the receiver asks again).
        NACK_SEQS_PER_PACKET: usize = 1024;
        /// A NACK entry older than this is sent upstream again when asked again; scaled down
        /// to the measured upstream repair round trip.
        NACK_STALE: Duration = Duration::from_millis(10);
        /// A NACK entry older than this is forgotten.
        NACK_EXPIRE: Duration = Duration::from_secs(2);
        /// An unreachable peer whose last MAB is older than this is pruned.
        MAB_EXPIRE: Duration = Duration::from_secs(3);
        /// Repair cache per tree, bytes (0: no cache).
        CACHE_BYTES: usize = 1 << 20;
        /// Cache on the sender's own node too (the sender can re-read its source).
        CACHE_AT_ROOT: bool = false;
        /// Cache repairs queued at most; more are dropped (the receiver asks again).
        REPAIR_QUEUE: usize = 1024;
        /// The shortest cache-repair hold-off toward a peer, however short a measured round
        /// trip: what a forger NACKing one sequence over and over can draw at most.
        REPAIR_HOLDOFF_FLOOR: Duration = Duration::from_micros(50);
        /// A tree without a multicast entry and without traffic for this long is forgotten.
        TREE_IDLE: Duration = Duration::from_secs(30);
        /// The most one packet may advance what the relay believes of a tree's leading edge,
        /// and the most a MAB sent upstream may run ahead of the data forwarded here, bytes.
        MAX_EDGE_STEP: u64 = 64 << 20;
        /// A cached copy asked for again this many times is dropped and asked upstream
        /// (a forged copy a receiver refuses is not served for ever).
        ASKED_AGAIN_LIMIT: u8 = 2;
    }

    /// What `send` and `recv` ask of an engine, and socket sizing on real UDP.
    mod host {
        /// A receiver's window on a real engine, clamped to what the engine can buffer.
        RECEIVE_WINDOW: u64 = 2 * 1024 * 1024;
        /// Kernel receive and send buffer asked for a node's socket, bytes (capped by
        /// `net.core.rmem_max` / `wmem_max`).
        SOCKET_BUFFER: usize = 4 << 20;
        /// How long a `send` keeps its node running after the transfer ended, so late
        /// repairs and RAP answers still go out.
        SEND_LINGER: Duration = Duration::from_millis(1500);
        /// How long `recv` waits for the sender's announcement.
        ANNOUNCE_TIMEOUT: Duration = Duration::from_secs(30);
    }

    /// The threaded engine (the seed's thread-per-protocol baseline).
    mod threaded {
        /// Capacity of each impatient buffer between threads (the seed's 100).
        BUFFER_CAPACITY: usize = 100;
        /// Packets a thread takes from its buffer at once.
        BATCH: usize = 64;
        /// Neighbours missing from the topology file learnt at once.
        LEARNED_PEER_CAPACITY: usize = 64;
        /// Service id of a node's RAP client endpoint.
        RAP_CLIENT_SID: u16 = 0xFFFE;
        /// How long the DNP receiver blocks before it looks whether the node is stopping.
        RECV_TIMEOUT: Duration = Duration::from_millis(250);
        /// How often a receiving client checks that its sender is still routable.
        ROUTE_CHECK: Duration = Duration::from_millis(100);
    }

    /// The io_uring engine (the product).
    mod uring {
        /// Receive buffers in the provided-buffer ring (a power of two); each holds one
        /// receive, a GRO batch of up to 64 KiB, and stays held while sends of what it holds
        /// are in flight (zero-copy forwarding): a turn of single-datagram receives must fit.
        /// More is slower: at 256 (16 MiB of buffers) one node forwarded 30% less than at 128
        /// (`bench forward --quick`, 1 hop), the buffers no longer warm in the caches.
        RECV_BUFFERS: u16 = 128;
        /// Submission queue entries of the ring.
        RING_ENTRIES: u32 = 256;
        /// Sends in flight at once (each may carry a segmented batch).
        SEND_SLOTS: usize = 64;
        /// Outgoing buffers of one MTU allocated at start and recycled.
        SEND_BUFFERS: usize = 4096;
        /// Let the kernel coalesce receives (`UDP_GRO`).
        GRO: bool = true;
        /// Send runs of equal-size packets to one neighbour as one segmented send (`UDP_SEGMENT`).
        GSO: bool = true;
        /// Datagrams in one segmented send at most (the kernel's limit is 64 on older kernels).
        MAX_SEGMENTS: usize = 64;
        /// A wake-up with at least this many completions means a stream is flowing: the next
        /// wait asks for a batch instead of the first completion.
        STREAMING: usize = 3;
        /// Completions a streaming wait asks for.
        WAIT_BATCH: usize = 4;
        /// Longest a streaming wait holds out for its batch.
        BATCH_WAIT_LIMIT: Duration = Duration::from_micros(50);
        /// After a turn that received, a worker that does not busy-poll looks at its ring for
        /// this long before it sleeps in the kernel: a packet that comes in the meantime costs
        /// no sleep and wake-up (0: sleep at once). Off by default: on a 2-core machine shared
        /// with other work, 20 us made neither `bench latency --hops 3` nor `forward` nor
        /// `multicast` better beyond their run-to-run noise, and the spins take the core from
        /// the next hop's process (docs/BENCHMARKS.md).
        SPIN_BEFORE_SLEEP: Duration = Duration::ZERO;
        /// Dataplane workers of a node (`--cores`), each with its ring and its socket on the
        /// node's port; every packet of one tree is handled by one of them.
        WORKERS: usize = 1;
        /// How a node's workers get their trees' datagrams. Off (the default): a classic-BPF
        /// reuseport program makes the kernel deliver each datagram to its tree's worker. On:
        /// the kernel spreads datagrams by its own hash (of addresses and ports), and a worker
        /// that receives a datagram of a tree another worker owns copies it into one of that
        /// worker's hand-off buffers and queues it there (lock-free; a full queue drops and
        /// counts, `engine.hand_off_full`). Steering was the faster in `bench scale` (see
        /// docs/BENCHMARKS.md).
        HAND_OFF: bool = false;
        /// Datagrams each worker's hand-off queue holds, each in an MTU buffer made at start
        /// (a turn of coalesced receives can hold thousands).
        HAND_OFF_QUEUE: usize = 4096;
        /// Control-plane packets (DRP, GMP, RAP) the workers may queue for the control thread
        /// before it takes them; beyond, they are dropped and counted
        /// (`engine.control_inbox_full`): the protocols repeat what matters. Each has an MTU
        /// buffer made at start.
        CONTROL_INBOX: usize = 1024;
    }

    /// The garbler (faults a topology file puts on real links).
    mod garbler {
        /// Longest extra delay of a reordered packet.
        REORDER_WINDOW: Duration = Duration::from_millis(10);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    /// Each setting is listed once, with a meaning and a default that prints.
    #[test]
    fn every_setting_is_listed_once_with_its_meaning() {
        let keys: HashSet<String> = ALL.iter().map(Setting::key).collect();
        assert_eq!(keys.len(), ALL.len());
        assert!(keys.contains("relay.cache_bytes"));
        for s in ALL {
            assert!(!s.meaning.trim().is_empty(), "{} has no meaning", s.key());
            assert!(!format!("{:?}", s.default).is_empty());
        }
        let mtu = ALL
            .iter()
            .find(|s| s.key() == "network.mtu")
            .expect("listed");
        assert_eq!(format!("{:?}", mtu.default), "1024");
    }
}
