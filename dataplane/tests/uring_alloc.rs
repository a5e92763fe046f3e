//! Heap allocations per packet on the io_uring engine, counted by a global allocator of this
//! test binary (its own binary, so that it counts nothing of the other tests).
//!
//! What is counted: every allocation (and reallocation) made on a node's engine thread, by
//! node. The allocator knows an engine thread by its name (`n<addr>-uring`, which the engine
//! gives it): a thread-local remembers, from each thread's first allocation on, which node it
//! runs (or none). So the test's own thread and the other threads of the binary may allocate
//! freely, and the engine thread needs no hook of its own. The test watches a stream through
//! [`UringNode::engine_counters`] (atomics the engine publishes, read without calling into its
//! thread); the full `stats()` runs on the engine thread and allocates, so it is only read
//! outside a measured window.
//!
//! The measured window starts after a warm-up (the first packets grow the queues and pools to
//! their working size) and ends before the transfer does; no protocol timer fires inside it
//! (the timers are long, see [`quiet_timers`]), so every allocation in it belongs to a packet.
//!
//! Copies are counted by the engine (`engine.payload_copies`): a packet passed on leaves from
//! the receive buffer it arrived in (`engine.sends_from_receive_buffer`), a packet a local core
//! built from the one buffer it was built in, whatever the number of next hops
//! (`engine.packets_built`).

mod uring_common;

use control::Addr;
use control::topology::{Topology, build};
use control::wire::dnp::{self, Flag};
use dataplane::host::RunningNode;
use dataplane::rmtp::FileSink;
use dataplane::sim::scenario::content;
use dataplane::threaded::ReceiveState;
use dataplane::uring::{EngineStats, UringNode, UringOptions, UringStats};
use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::net::UdpSocket;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use uring_common::{LIMIT, TempDir, bind_all, g, n, quiet_timers, wait_until};

/// Engine threads of nodes 1..MAX_NODE are told apart.
const MAX_NODE: usize = 8;
/// Allocations made on the engine thread of node `i`.
static ALLOCATIONS: [AtomicU64; MAX_NODE] = [const { AtomicU64::new(0) }; MAX_NODE];

/// A thread's node, once known: `NOT_A_NODE`, or the node's address.
const UNKNOWN: u8 = u8::MAX;
/// The thread is reading its own name (which may allocate): not counted.
const RESOLVING: u8 = u8::MAX - 1;
const NOT_A_NODE: u8 = 0;

thread_local! {
    static NODE_OF_THREAD: Cell<u8> = const { Cell::new(UNKNOWN) };
}

/// The node whose engine thread is named `name` (`n<addr>-uring`).
fn engine_node(name: Option<&str>) -> u8 {
    name.and_then(|s| s.strip_prefix('n'))
        .and_then(|s| s.strip_suffix("-uring"))
        .and_then(|s| s.parse::<u8>().ok())
        .filter(|&a| usize::from(a) < MAX_NODE)
        .unwrap_or(NOT_A_NODE)
}

fn count_one() {
    // `try_with`: a thread being torn down is not counted (and must not panic here).
    let _ = NODE_OF_THREAD.try_with(|node| {
        let mut at = node.get();
        if at == UNKNOWN {
            node.set(RESOLVING);
            at = engine_node(std::thread::current().name());
            node.set(at);
        }
        if at != NOT_A_NODE
            && let Some(counter) = ALLOCATIONS.get(usize::from(at))
        {
            counter.fetch_add(1, Ordering::Relaxed);
        }
    });
}

struct CountingAllocator;

// SAFETY: every call goes to the system allocator unchanged; counting touches no heap memory.
unsafe impl GlobalAlloc for CountingAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count_one();
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        count_one();
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count_one();
        unsafe { System.realloc(ptr, layout, new_size) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOCATOR: CountingAllocator = CountingAllocator;

fn allocations(node: u16) -> u64 {
    ALLOCATIONS[usize::from(node)].load(Ordering::Relaxed)
}

/// The tests share node addresses: they run one at a time.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

/// A line 1 - 2 - 3 of io_uring nodes with quiet timers, each routing to the others; also a
/// second handle on node 1's socket, for a test that sends from it.
fn start_line() -> (Vec<UringNode>, UdpSocket) {
    start(build::line(3, 7001), [1, 3], 2)
}

/// `topology` (three nodes) on io_uring nodes with quiet timers, once the nodes `ends` route
/// to each other through node `via`.
fn start(mut topology: Topology, ends: [u16; 2], via: u16) -> (Vec<UringNode>, UdpSocket) {
    topology.network.timers = quiet_timers();
    let sockets = bind_all(&mut topology);
    let source = sockets[&n(1)].try_clone().expect("clone node 1's socket");
    let nodes: Vec<UringNode> = sockets
        .into_iter()
        .map(|(addr, socket)| {
            let options = UringOptions {
                seed: u64::from(addr.get()),
                ..UringOptions::default()
            };
            UringNode::start_with_socket(&topology, addr, socket, options)
                .expect("start an io_uring node")
        })
        .collect();
    let routed = wait_until(LIMIT, || {
        let [a, b] = ends;
        nodes[usize::from(a - 1)].next_hop(n(b)) == Some(n(via))
            && nodes[usize::from(b - 1)].next_hop(n(a)) == Some(n(via))
    });
    assert!(routed.is_some(), "the routes did not converge");
    (nodes, source)
}

/// Allocations on the engine threads of `nodes` while `packets()` grows by `count`, and how
/// much it grew: the window opens once it has grown by `warm_up`. `drive` runs between looks
/// (it may feed the stream).
fn measure(
    nodes: &[u16],
    packets: impl Fn() -> u64,
    warm_up: u64,
    count: u64,
    mut drive: impl FnMut(),
) -> (u64, u64) {
    let base = packets();
    let mut grow = |by: u64| {
        let deadline = std::time::Instant::now() + LIMIT;
        while packets() < base + by {
            assert!(std::time::Instant::now() < deadline, "the stream stopped");
            drive();
            std::thread::sleep(Duration::from_micros(100));
        }
    };
    grow(warm_up);
    let start_packets = packets();
    let start: u64 = nodes.iter().map(|&a| allocations(a)).sum();
    grow(warm_up + count);
    let end: u64 = nodes.iter().map(|&a| allocations(a)).sum();
    (end - start, packets() - start_packets)
}

/// RAP packets for a service id no node runs, addressed to node 3, are forwarded by node 2 and
/// counted by node 3 (as the `forward` benchmark's chain). Node 2 forwarding them and node 3
/// accepting them allocate nothing per packet once warm.
#[test]
fn forwarding_a_stream_allocates_nothing_per_packet() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let (nodes, source) = start_line();
    let packet = {
        let sid = 0xBE0C_u16;
        let mut body = vec![0xA5; 1024 - control::wire::DNP_HEADER_LEN - 4];
        body[..2].copy_from_slice(&sid.to_be_bytes());
        control::wire::trailer::push(&mut body);
        dnp::frame(Addr::Node(n(3)), Addr::Node(n(1)), Flag::Rap, &body)
    };
    let entry = nodes[1].local_addr();
    let sink_received = || nodes[2].engine_counters().datagrams_received;
    // Bursts of 64, the next once the sink has had the last: no queue overflows.
    let mut sent = sink_received();
    let drive = || {
        if sink_received() >= sent {
            for _ in 0..64 {
                source.send_to(&packet, entry).expect("send to node 2");
            }
            sent += 64;
        }
    };
    let (allocs, packets) = measure(&[2, 3], sink_received, 5_000, 50_000, drive);
    let per_packet = allocs as f64 / packets as f64;
    println!(
        "forwarding: {allocs} allocations on nodes 2 and 3 for {packets} packets forwarded and \
         accepted ({per_packet:.3} per packet)"
    );
    let forwarder: EngineStats = nodes[1].engine_counters();
    // Its worker validated every packet; the control thread refused each for its service id,
    // but may have been refused some by its inbox first (a loaded machine), all counted. The
    // control thread may still be working through its inbox: its count is waited for.
    let ended = |stats: &UringStats| {
        stats.get("dnp.rap_no_endpoint").unwrap_or(0) + stats.engine.control_inbox_full
    };
    wait_until(LIMIT, || ended(&nodes[2].stats()) >= 55_000);
    let stats = nodes[2].stats();
    assert!(
        stats.get("dnp.rx_accepted").unwrap_or(0) >= 55_000,
        "node 3 accepted the stream: {stats}"
    );
    assert!(
        ended(&stats) >= 55_000,
        "every packet of the stream is counted where it ended: {stats}"
    );
    println!(
        "node 2: {} datagrams in {} receives, {} in {} sends, {} payload copies (indicative)",
        forwarder.datagrams_received,
        forwarder.receives,
        forwarder.datagrams_sent,
        forwarder.sends,
        forwarder.payload_copies
    );
    // Each forwarded packet leaves from the buffer it was received in: no copy, and no buffer
    // beyond those reserved at start.
    assert!(
        forwarder.sends_from_receive_buffer >= 55_000,
        "{forwarder:?}"
    );
    assert_eq!(forwarder.payload_copies, 0, "{forwarder:?}");
    assert_eq!(forwarder.rx_buffers_held_copies, 0, "{forwarder:?}");
    assert_eq!(forwarder.send_buffers_allocated, 0);
    assert_eq!(allocs, 0, "allocations per forwarded packet: {per_packet}");
    for node in nodes {
        node.stop();
    }
}

/// Node 1 sends a file through relay 2 to receiver 3, which writes it to a file sink: relaying
/// and delivering allocate nothing per packet once warm, and the file arrives intact.
#[test]
fn relaying_and_delivering_a_transfer_allocates_nothing_per_packet() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let data = content(48 << 20, 3);
    let dir = TempDir::new("alloc");
    let (nodes, _) = start_line();
    let group = g(1);
    let sink = FileSink::create(&dir.of(n(3)), "payload.bin").expect("create the sink");
    let rx = nodes[2]
        .receive(
            group,
            n(1),
            1,
            Box::new(sink),
            dataplane::threaded::ReceiveOptions::default(),
        )
        .expect("start the receiver");
    let joined = wait_until(LIMIT, || {
        nodes[1]
            .multicast()
            .lookup(group, n(1))
            .is_some_and(|e| e.downstream.contains(&n(3)))
            && nodes[0]
                .multicast()
                .lookup(group, n(1))
                .is_some_and(|e| e.downstream.contains(&n(2)))
    });
    assert!(joined.is_some(), "the tree never reached node 3");
    let send = nodes[0]
        .send(
            group,
            "payload.bin",
            Box::new(dir.source(&data)),
            dataplane::threaded::SendOptions::default(),
        )
        .expect("start the sender");
    let receiver_got = || nodes[2].engine_counters().datagrams_received;
    // About 49,000 DATA packets: the window is 30,000 of them, after 8,000.
    let (allocs, packets) = measure(&[2, 3], receiver_got, 8_000, 30_000, || {});
    let per_packet = allocs as f64 / packets as f64;
    println!(
        "relay + delivery: {allocs} allocations on nodes 2 and 3 for {packets} packets relayed \
         and delivered ({per_packet:.3} per packet)"
    );
    let relay: EngineStats = nodes[1].engine_counters();
    println!(
        "relay: {} datagrams in {} receives, {} in {} sends, {} from the receive buffer, {} \
         payload copies (indicative)",
        relay.datagrams_received,
        relay.receives,
        relay.datagrams_sent,
        relay.sends,
        relay.sends_from_receive_buffer,
        relay.payload_copies
    );
    assert_eq!(relay.send_buffers_allocated, 0);
    // Every DATA the relay passed on left from its receive buffer.
    assert!(relay.sends_from_receive_buffer >= packets, "{relay:?}");
    assert_eq!(relay.payload_copies, 0, "{relay:?}");
    assert_eq!(rx.wait(Duration::from_secs(120)), ReceiveState::Complete);
    assert!(send.wait(Duration::from_secs(60)), "{:?}", send.progress());
    let got = std::fs::read(dir.of(n(3)).join("payload.bin")).expect("the file arrived");
    assert!(got == data, "the file differs ({} bytes)", got.len());
    // The receiving thread waits for a slow disk by sleeping, not on a channel (whose first
    // blocking receive allocates: 2 allocations seen under load before FileSink waited so).
    assert_eq!(allocs, 0, "allocations per relayed packet: {per_packet}");
    for node in nodes {
        node.stop();
    }
}

/// Node 1 of a star multicasts a file to receivers 2 and 3, one next hop each: every DATA is
/// built once, in one outgoing buffer both sends refer to (no copy per next hop), and both
/// files arrive intact.
#[test]
fn a_sender_builds_each_packet_once_for_all_its_next_hops() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let data = content(16 << 20, 5);
    let dir = TempDir::new("alloc-star");
    let (nodes, _) = start(build::star(3, 7001), [2, 3], 1);
    let group = g(1);
    let receivers: Vec<_> = [2u16, 3]
        .into_iter()
        .map(|r| {
            let sink = FileSink::create(&dir.of(n(r)), "payload.bin").expect("create the sink");
            nodes[usize::from(r - 1)]
                .receive(
                    group,
                    n(1),
                    1,
                    Box::new(sink),
                    dataplane::threaded::ReceiveOptions::default(),
                )
                .expect("start the receiver")
        })
        .collect();
    let joined = wait_until(LIMIT, || {
        nodes[0]
            .multicast()
            .lookup(group, n(1))
            .is_some_and(|e| e.downstream.contains(&n(2)) && e.downstream.contains(&n(3)))
    });
    assert!(joined.is_some(), "the tree never reached both receivers");
    let send = nodes[0]
        .send(
            group,
            "payload.bin",
            Box::new(dir.source(&data)),
            dataplane::threaded::SendOptions::default(),
        )
        .expect("start the sender");
    let built = || nodes[0].engine_counters().packets_built;
    // About 16,000 DATA packets: the window is 8,000 of them, after 3,000.
    let (allocs, packets) = measure(&[1], built, 3_000, 8_000, || {});
    for rx in &receivers {
        assert_eq!(rx.wait(Duration::from_secs(120)), ReceiveState::Complete);
    }
    assert!(send.wait(Duration::from_secs(60)), "{:?}", send.progress());
    for r in [2u16, 3] {
        let got = std::fs::read(dir.of(n(r)).join("payload.bin")).expect("the file arrived");
        assert!(got == data, "node {r}'s file differs ({} bytes)", got.len());
    }
    let end: EngineStats = nodes[0].engine_counters();
    println!(
        "sender: {} packets built, {} datagrams sent in {} sends, {} payload copies; {allocs} \
         allocations for {packets} packets built (indicative)",
        end.packets_built, end.datagrams_sent, end.sends, end.payload_copies
    );
    // Each packet built went to both next hops from its one buffer: no copy. (Besides the
    // DATA, what the sender sends to both is built too; the few control-plane packets are
    // their own buffers, and count in the datagrams sent only.)
    assert_eq!(end.payload_copies, 0, "{end:?}");
    assert_eq!(end.send_buffers_allocated, 0, "{end:?}");
    assert!(end.packets_built >= 16_000, "{end:?}");
    assert!(
        end.datagrams_sent as f64 >= 1.9 * end.packets_built as f64,
        "{end:?}"
    );
    for node in nodes {
        node.stop();
    }
}

/// Node 2 is stopped while it forwards a flood from node 1's socket to node 3: every receive
/// buffer a send held went back, and no outgoing buffer is left referred to, once it stopped.
#[test]
fn stopping_mid_stream_releases_every_buffer() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let (nodes, source) = start_line();
    let packet = {
        let mut body = vec![0x5A; 1024 - control::wire::DNP_HEADER_LEN - 4];
        body[..2].copy_from_slice(&0xBE0C_u16.to_be_bytes());
        control::wire::trailer::push(&mut body);
        dnp::frame(Addr::Node(n(3)), Addr::Node(n(1)), Flag::Rap, &body)
    };
    let entry = nodes[1].local_addr();
    let forwarded = || nodes[1].engine_counters().sends_from_receive_buffer;
    // Flooding (no pacing): sends are in flight when the stop comes.
    let flowing = wait_until(LIMIT, || {
        for _ in 0..256 {
            let _ = source.send_to(&packet, entry);
        }
        forwarded() >= 2_000
    });
    assert!(flowing.is_some(), "node 2 forwarded nothing");
    for _ in 0..256 {
        let _ = source.send_to(&packet, entry);
    }
    RunningNode::stop(&nodes[1]);
    let stopped: EngineStats = nodes[1].engine_counters();
    println!(
        "node 2 stopped after {} sends from receive buffers ({} datagrams copied with half the \
         receive buffers held, {} receives): {} receive buffers held, {} outgoing buffers in use",
        stopped.sends_from_receive_buffer,
        stopped.rx_buffers_held_copies,
        stopped.receives,
        stopped.rx_buffers_held,
        stopped.send_buffers_in_use
    );
    assert_eq!(stopped.rx_buffers_held, 0, "{stopped:?}");
    assert_eq!(stopped.send_buffers_in_use, 0, "{stopped:?}");
    for node in nodes {
        node.stop();
    }
}
