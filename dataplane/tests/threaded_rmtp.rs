//! Reliable multicast on the threaded engine: real nodes on 127.0.0.1, each with its RMTP
//! middle-layer thread, a server thread on the sender and a client thread per receiver, files
//! written by `FileSink`s in a temporary directory. Each test prints the figures it saw (time,
//! goodput, repairs); none asserts a speed.

mod threaded_common;

use control::topology::{Faults, Topology, build};
use control::wire::{Flag, dnp, drp};
use control::{Addr, GroupAddr, NodeAddr};
use dataplane::node::{RAP_SERVER_SID, StartError};
use dataplane::rmtp::{FileSink, FileSource, Finished, MemSink, MemSource, Sink, SinkError};
use dataplane::sim::scenario::content;
use dataplane::threaded::{
    ReceiveHandle, ReceiveOptions, ReceiveState, SendHandle, SendOptions, ThreadedOptions,
};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use threaded_common::*;

const MIB: usize = 1 << 20;
const NAME: &str = "payload.bin";

/// A directory of its own under the system's temporary directory, removed when dropped (also
/// when the test fails).
struct TempDir(PathBuf);

impl TempDir {
    fn new(test: &str) -> TempDir {
        let dir = std::env::temp_dir().join(format!(
            "burghers-threaded-rmtp-{}-{test}",
            std::process::id()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("create a temporary directory");
        TempDir(dir)
    }

    /// The output directory of receiver `r`.
    fn of(&self, r: NodeAddr) -> PathBuf {
        let d = self.0.join(format!("node{r}"));
        std::fs::create_dir_all(&d).expect("create an output directory");
        d
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn faulty() -> Faults {
    Faults {
        loss: 0.05,
        corrupt: 0.01,
        duplicate: 0.02,
        reorder: 0.02,
        ..Faults::default()
    }
}

fn start_net(mut topology: Topology, faults: Option<Faults>) -> Net {
    if let Some(f) = faults {
        for l in &mut topology.links {
            l.faults = f;
        }
    }
    let net = Net::start(topology);
    net.converge();
    net
}

fn receive_options(sender_timeout: Duration) -> ReceiveOptions {
    ReceiveOptions {
        sender_timeout,
        ..ReceiveOptions::default()
    }
}

/// Each receiver joins (group, sender) as client 1 and writes `dir/node<r>/NAME`.
fn join_all(
    net: &Net,
    dir: &TempDir,
    group: GroupAddr,
    sender: NodeAddr,
    receivers: &[NodeAddr],
    options: &ReceiveOptions,
) -> Vec<(NodeAddr, ReceiveHandle)> {
    receivers
        .iter()
        .map(|&r| {
            let sink = FileSink::create(&dir.of(r), NAME).expect("create the sink");
            let h = net.nodes[&r]
                .receive(group, sender, 1, Box::new(sink), options.clone())
                .expect("start a receiver");
            (r, h)
        })
        .collect()
}

/// Waits until every receiver's branch reaches the sender: along each receiver's upstream
/// chain, every node lists the one below it as downstream. A receiver whose join is still on
/// its way when the data starts is a late joiner, who may find the start no longer repaired.
fn wait_for_members(net: &Net, group: GroupAddr, sender: NodeAddr, receivers: &[NodeAddr]) {
    let joined = |r: NodeAddr| {
        let mut at = r;
        for _ in 0..net.nodes.len() {
            if at == sender {
                return true;
            }
            let Some(up) = net.nodes[&at]
                .multicast()
                .lookup(group, sender)
                .and_then(|e| e.upstream)
            else {
                return false;
            };
            let listed = net.nodes[&up]
                .multicast()
                .lookup(group, sender)
                .is_some_and(|e| e.downstream.contains(&at));
            if !listed {
                return false;
            }
            at = up;
        }
        false
    };
    let formed = wait_until(LIMIT, || receivers.iter().all(|&r| joined(r)));
    assert!(formed.is_some(), "the tree never reached every receiver");
}

fn report(
    what: &str,
    size: usize,
    elapsed: Duration,
    send: &SendHandle,
    rx: &[(NodeAddr, ReceiveHandle)],
) {
    let secs = elapsed.as_secs_f64();
    let p = send.progress();
    println!(
        "{what}: {:.1} MiB in {secs:.2} s, goodput {:.2} MiB/s; sender: {} retransmissions, {} NACKs in, acked {} of {} bytes",
        size as f64 / MIB as f64,
        size as f64 / MIB as f64 / secs.max(1e-9),
        p.retransmissions,
        p.nacks,
        p.acked,
        p.total,
    );
    for (r, h) in rx {
        let q = h.progress();
        println!(
            "  node {r}: {:?}, delivered {} bytes, {} repairs, {} NACKs, {} CRC failures",
            q.state, q.delivered, q.repairs, q.nacks, q.crc_failures
        );
    }
}

fn assert_received(dir: &TempDir, r: NodeAddr, data: &[u8]) {
    let out = dir.of(r);
    let got = std::fs::read(out.join(NAME)).expect("the final file exists");
    assert!(
        got == data,
        "node {r}: content differs ({} bytes)",
        got.len()
    );
    assert!(
        !out.join(format!("{NAME}.partial")).exists(),
        "node {r}: the partial file was renamed"
    );
}

fn assert_only_partial(dir: &TempDir, r: NodeAddr) {
    let out = dir.of(r);
    assert!(!out.join(NAME).exists(), "node {r}: no final file");
    assert!(
        out.join(format!("{NAME}.partial")).exists(),
        "node {r}: the partial file stays"
    );
}

fn write_source(dir: &Path, data: &[u8]) -> FileSource {
    let path = dir.join("source.bin");
    std::fs::write(&path, data).expect("write the source file");
    FileSource::open(&path).expect("open the source file")
}

#[test]
fn a_file_crosses_the_lossy_tree_to_every_leaf() {
    let size = 4 * MIB;
    let data = content(size, 11);
    let dir = TempDir::new("tree");
    let mut topology = build::binary_tree(3, 7001);
    // Hellos are lost too; a tree has no detour, so a false "dead" would only cost time.
    topology.network.timers.dead_hellos = 8;
    let net = start_net(topology, Some(faulty()));
    let group = g(1);
    let leaves = [n(4), n(5), n(6), n(7)];
    let rx = join_all(
        &net,
        &dir,
        group,
        n(1),
        &leaves,
        &receive_options(Duration::from_secs(20)),
    );
    wait_for_members(&net, group, n(1), &leaves);

    let start = Instant::now();
    let source = write_source(&dir.0, &data);
    let send = net
        .node(1)
        .send(group, NAME, Box::new(source), SendOptions::default())
        .expect("start the sender");
    for (r, h) in &rx {
        let state = h.wait(Duration::from_secs(300));
        assert_eq!(state, ReceiveState::Complete, "node {r}");
    }
    let elapsed = start.elapsed();
    assert!(
        send.wait(Duration::from_secs(30)),
        "the sender learns that everyone has it"
    );
    report(
        "7-node tree, 5% loss, 1% corruption, duplication, reordering",
        size,
        elapsed,
        &send,
        &rx,
    );
    for (r, _) in &rx {
        assert_received(&dir, *r, &data);
    }
    let total_repairs: u64 = rx.iter().map(|(_, h)| h.progress().repairs).sum();
    assert!(total_repairs > 0, "5% loss needs repairs");
    let s = net.node(2).stats();
    println!(
        "node 2: relay forwarded {} copies, {} NACKs in, {} sent upstream, {} cache repairs; buffer.rmtp.dropped {}",
        s.get("rmtp.relay.forwarded_copies").unwrap(),
        s.get("rmtp.relay.nacks_received").unwrap(),
        s.get("rmtp.relay.nacks_sent_upstream").unwrap(),
        s.get("rmtp.relay.repairs_from_cache").unwrap(),
        s.get("buffer.rmtp.dropped").unwrap(),
    );
    assert!(s.get("rmtp.relay.forwarded_copies").unwrap() > 0);
    let leaf = net.node(4).stats();
    assert_eq!(leaf.get("rmtp.client.1.complete"), Some(1));
    assert!(leaf.get("buffer.rmtp.client.1.pushed").unwrap() > 0);
    net.stop();
}

fn mem(data: &[u8]) -> Box<MemSource> {
    Box::new(MemSource::new(data.to_vec()))
}

/// Waits until every handle has delivered at least `bytes`.
fn wait_delivered(rx: &[(NodeAddr, ReceiveHandle)], bytes: u64) {
    let reached = wait_until(LIMIT, || {
        rx.iter().all(|(_, h)| h.progress().delivered >= bytes)
    });
    assert!(reached.is_some(), "the transfer never got going");
}

#[test]
fn a_receiver_whose_node_stops_does_not_stall_the_others() {
    let size = 4 * MIB;
    let data = content(size, 12);
    let dir = TempDir::new("receiver-stops");
    let mut net = start_net(build::binary_tree(3, 7001), None);
    let group = g(2);
    let leaves = [n(4), n(5), n(6), n(7)];
    let options = receive_options(Duration::from_secs(10));
    let mut rx = join_all(&net, &dir, group, n(1), &leaves, &options);
    // A second client on node 6 shares each packet with the first (one buffer, two references).
    let out = dir.0.join("node6-second");
    std::fs::create_dir_all(&out).unwrap();
    let second = net
        .node(6)
        .receive(
            group,
            n(1),
            2,
            Box::new(FileSink::create(&out, NAME).unwrap()),
            options,
        )
        .unwrap();
    wait_for_members(&net, group, n(1), &[n(4), n(5), n(6), n(7)]);

    let start = Instant::now();
    // Paced, so that the transfer is still under way when node 7 goes.
    let send_options = SendOptions {
        rate: Some(4 * MIB as u64),
        ..SendOptions::default()
    };
    let send = net
        .node(1)
        .send(group, NAME, mem(&data), send_options)
        .unwrap();
    wait_delivered(&rx, MIB as u64);
    let (_, gone) = rx.pop().expect("node 7's receiver");
    net.nodes.remove(&n(7)).expect("node 7").stop();
    let state = gone.wait(Duration::from_secs(5));
    assert!(matches!(state, ReceiveState::Failed(_)), "{state:?}");
    let left_at = gone.progress().delivered;
    assert!(left_at < size as u64, "node 7 stopped mid-transfer");

    for (r, h) in &rx {
        assert_eq!(
            h.wait(Duration::from_secs(120)),
            ReceiveState::Complete,
            "node {r}"
        );
    }
    assert_eq!(
        second.wait(Duration::from_secs(120)),
        ReceiveState::Complete
    );
    assert!(
        send.wait(Duration::from_secs(60)),
        "the sender completes without node 7"
    );
    let elapsed = start.elapsed();
    report(
        "7-node tree, node 7 stopped mid-transfer",
        size,
        elapsed,
        &send,
        &rx,
    );
    println!("  node 7: stopped after {left_at} bytes: {state:?}");
    for (r, _) in &rx {
        assert_received(&dir, *r, &data);
    }
    assert_eq!(std::fs::read(out.join(NAME)).unwrap(), data);
    assert_only_partial(&dir, n(7));
    // Node 6's middle layer handed each packet to both clients.
    let s = net.node(6).stats();
    assert!(s.get("buffer.rmtp.client.1.pushed").unwrap() >= (size / 1024) as u64);
    assert!(s.get("buffer.rmtp.client.2.pushed").unwrap() >= (size / 1024) as u64);
    // Node 3's relay pruned node 7 (its leave, then routing), so the window kept moving.
    let relay3 = net.node(3).stats();
    assert!(
        relay3.get("rmtp.relay.prunes").unwrap() >= 1,
        "node 3 never pruned node 7:\n{relay3}"
    );
    net.stop();
}

#[test]
fn receivers_of_a_sender_that_stops_fail_and_keep_only_the_partial_file() {
    let size = 4 * MIB;
    let data = content(size, 13);
    let dir = TempDir::new("sender-stops");
    let mut net = start_net(build::binary_tree(3, 7001), None);
    let group = g(3);
    let receivers = [n(3), n(4), n(7)];
    let timeout = Duration::from_millis(1500);
    let rx = join_all(
        &net,
        &dir,
        group,
        n(1),
        &receivers,
        &receive_options(timeout),
    );
    wait_for_members(&net, group, n(1), &receivers);

    let send_options = SendOptions {
        rate: Some(2 * MIB as u64),
        ..SendOptions::default()
    };
    let send = net
        .node(1)
        .send(group, NAME, mem(&data), send_options)
        .unwrap();
    wait_delivered(&rx, MIB as u64 / 2);
    let stopped = Instant::now();
    net.nodes.remove(&n(1)).expect("node 1").stop();
    assert!(!send.wait(Duration::ZERO), "stopped before the end");

    for (r, h) in &rx {
        let state = h.wait(Duration::from_secs(30));
        let ReceiveState::Failed(reason) = &state else {
            panic!("node {r}: {state:?}");
        };
        // Only the sender watch says this, and only once `timeout` has passed.
        assert!(
            reason.starts_with("sender silent") || reason.starts_with("sender unreachable"),
            "node {r}: {reason}"
        );
        let p = h.progress();
        assert!(p.delivered < size as u64, "node {r}: {p:?}");
        println!(
            "node {r}: {state:?} {:.2} s after the sender stopped, with {} of {} bytes",
            stopped.elapsed().as_secs_f64(),
            p.delivered,
            p.total.map_or("?".into(), |t| t.to_string()),
        );
    }
    for r in receivers {
        assert_only_partial(&dir, r);
        assert_eq!(net.nodes[&r].stats().get("rmtp.client.1.failed"), Some(1));
    }
    // The clients left: the tree is gone from the receivers' nodes.
    assert!(
        wait_until(LIMIT, || receivers
            .iter()
            .all(|r| net.nodes[r].multicast().lookup(group, n(1)).is_none()))
        .is_some()
    );
    net.stop();
}

#[test]
fn a_link_cut_mid_transfer_is_routed_around_and_the_transfer_completes() {
    let size = 4 * MIB;
    let data = content(size, 14);
    let dir = TempDir::new("link-cut");
    let net = start_net(build::grid(3, 3, 7001), None);
    let group = g(4);
    let receivers = [n(3), n(7), n(9)];
    let rx = join_all(
        &net,
        &dir,
        group,
        n(1),
        &receivers,
        &receive_options(Duration::from_secs(10)),
    );
    wait_for_members(&net, group, n(1), &receivers);
    let formed = wait_until(LIMIT, || {
        net.node(1)
            .multicast()
            .lookup(group, n(1))
            .is_some_and(|e| e.downstream.len() == 2)
    });
    assert!(formed.is_some(), "both of node 1's links carry the tree");
    // The corner 9 is reached through one of node 1's two links; cut that one.
    let path_to_9 = net.node(1).next_hop(n(9)).expect("a route to 9");

    let send_options = SendOptions {
        rate: Some(4 * MIB as u64),
        ..SendOptions::default()
    };
    let start = Instant::now();
    let send = net
        .node(1)
        .send(group, NAME, mem(&data), send_options)
        .unwrap();
    wait_delivered(&rx, MIB as u64);
    let down = Faults {
        down: true,
        ..Faults::default()
    };
    net.node(1).set_faults(path_to_9, down).unwrap();
    net.nodes[&path_to_9].set_faults(n(1), down).unwrap();
    let cut = Instant::now();

    for (r, h) in &rx {
        assert_eq!(
            h.wait(Duration::from_secs(120)),
            ReceiveState::Complete,
            "node {r}"
        );
    }
    assert!(send.wait(Duration::from_secs(60)));
    let elapsed = start.elapsed();
    report(
        &format!("3x3 grid, link 1-{path_to_9} cut mid-transfer"),
        size,
        elapsed,
        &send,
        &rx,
    );
    println!(
        "  completed {:.2} s after the cut; node 1 now reaches 9 through {:?}",
        cut.elapsed().as_secs_f64(),
        net.node(1).next_hop(n(9))
    );
    assert_ne!(net.node(1).next_hop(n(9)), Some(path_to_9), "routed around");
    for r in receivers {
        assert_received(&dir, r, &data);
    }
    net.stop();
}

/// The sender's only receiver gives up and leaves: the sender does not wait for ever, nor
/// claim completion; it ends and says why.
#[test]
fn a_sender_whose_only_receiver_left_ends_with_a_reason() {
    let dir = TempDir::new("alone");
    let net = start_net(build::line(2, 7101), None);
    let group = g(7);
    let sink = FileSink::create(&dir.of(n(2)), NAME).unwrap();
    let rx = net
        .node(2)
        .receive(group, n(1), 9, Box::new(sink), receive_options(LIMIT))
        .unwrap();
    wait_for_members(&net, group, n(1), &[n(2)]);
    let options = SendOptions {
        rate: Some(100_000),
        ..SendOptions::default()
    };
    let data = content(4 * MIB, 11);
    let send = net.node(1).send(group, NAME, mem(&data), options).unwrap();
    wait_delivered(&[(n(2), rx.clone())], 1);
    rx.abort();
    assert!(!send.wait(LIMIT), "complete without its receiver");
    let p = send.progress();
    assert!(!p.complete);
    assert!(p.failed.is_some(), "ended without a reason: {p:?}");
    println!("sender ended: {}", p.failed.unwrap());
    assert_only_partial(&dir, n(2));
}

#[test]
fn abort_busy_ids_and_a_node_without_rmtp() {
    let dir = TempDir::new("api");
    let net = start_net(build::line(2, 7001), None);
    let group = g(5);
    let options = receive_options(Duration::from_secs(30));
    let sink = FileSink::create(&dir.of(n(2)), NAME).unwrap();
    let h = net
        .node(2)
        .receive(group, n(1), 7, Box::new(sink), options.clone())
        .unwrap();
    assert_eq!(h.progress().state, ReceiveState::Receiving);
    // One client per id; one server per group.
    let other = FileSink::create(&dir.0, "other").unwrap();
    let busy = net
        .node(2)
        .receive(g(6), n(1), 7, Box::new(other), options.clone());
    assert!(matches!(busy, Err(StartError::Busy)), "{busy:?}");
    let send = net
        .node(1)
        .send(group, NAME, mem(b"hello"), SendOptions::default())
        .unwrap();
    let again = net
        .node(1)
        .send(group, "again", mem(b"x"), SendOptions::default());
    assert!(matches!(again, Err(StartError::Busy)), "{again:?}");
    // The transfer is announced on the node's RAP server.
    let list = net
        .node(2)
        .request_services(n(1), RAP_SERVER_SID, LIMIT)
        .unwrap();
    assert!(
        list.iter()
            .any(|e| e.name == NAME && e.group == group && e.size == 5)
    );
    assert_eq!(send.entry().name, NAME);

    // A tiny transfer completes; the sender learns it and ends, withdrawing its announcement.
    assert_eq!(h.wait(LIMIT), ReceiveState::Complete);
    assert!(send.wait(LIMIT));
    assert!(
        h.wait_ended(LIMIT),
        "the client leaves once the sender knows"
    );
    assert!(net.node(2).multicast().lookup(group, n(1)).is_none());
    assert_eq!(std::fs::read(dir.of(n(2)).join(NAME)).unwrap(), b"hello");
    let withdrawn = wait_until(LIMIT, || {
        net.node(2)
            .request_services(n(1), RAP_SERVER_SID, LIMIT)
            .is_ok_and(|l| l.is_empty())
    });
    assert!(
        withdrawn.is_some(),
        "the ended transfer is no longer announced"
    );
    h.abort();
    assert_eq!(
        h.progress().state,
        ReceiveState::Complete,
        "abort leaves it complete"
    );

    // Abort before anything arrives: the partial file stays.
    let sink = FileSink::create(&dir.0, "aborted").unwrap();
    let a = net
        .node(2)
        .receive(g(7), n(1), 8, Box::new(sink), options.clone())
        .unwrap();
    a.abort();
    assert_eq!(a.wait(LIMIT), ReceiveState::Failed("aborted".into()));
    assert!(dir.0.join("aborted.partial").exists() && !dir.0.join("aborted").exists());
    let lines = net.node(2).stats().to_string();
    for name in [
        "rmtp.middle.packets ",
        "rmtp.relay.forwarded_copies ",
        "rmtp.client.8.failed 1",
        "rmtp.client.7.complete 1",
        "buffer.rmtp.local.dropped ",
        "buffer.rmtp.client.7.dropped ",
    ] {
        assert!(lines.contains(name), "{name} missing:\n{lines}");
    }
    assert!(
        net.node(1)
            .stats()
            .to_string()
            .contains(&format!("rmtp.server.{group}.complete 1"))
    );
    net.stop();

    // Without the middle layer a node cannot send or receive.
    let bare = Net::start_without_rmtp(build::line(2, 7001));
    let refused = bare
        .node(1)
        .send(group, NAME, mem(b"x"), SendOptions::default());
    assert!(
        matches!(refused, Err(StartError::Unavailable(_))),
        "{refused:?}"
    );
    bare.stop();
}

#[test]
fn data_the_receiver_refuses_does_not_keep_a_silent_sender_alive() {
    // Node 1 is a test socket at node 1's address: it says hello (so node 2 routes to it and
    // joins through it) and sends nothing but DATA whose CRC is wrong.
    let mut net = Net::start_some(
        build::line(2, 7001),
        |a| a == n(2),
        |_| ThreadedOptions::default(),
        |_, t| t.clone(),
    );
    let fake = net.idle.remove(&n(1)).unwrap();
    let node2 = net.node(2);
    let to = node2.local_addr();
    let hello = dnp::frame(Addr::Node(n(2)), Addr::Node(n(1)), Flag::Drp, &drp::hello());
    fake.send_to(&hello, to).unwrap();
    assert!(wait_until(LIMIT, || node2.next_hop(n(1)) == Some(n(1))).is_some());
    let group = g(9);
    let h = node2
        .receive(
            group,
            n(1),
            1,
            Box::new(MemSink::new()),
            receive_options(Duration::from_secs(1)),
        )
        .unwrap();
    // Sequence 0 at offset 0 with a CRC of zero, which is not the payload's.
    let mut body = vec![0u8; 20];
    body.extend([7u8; 100]);
    let bad = dnp::frame(Addr::Group(group), Addr::Node(n(1)), Flag::RmtpData, &body);
    let start = Instant::now();
    let state = loop {
        fake.send_to(&hello, to).unwrap();
        fake.send_to(&bad, to).unwrap();
        // Paces the fake neighbour; returns at once when the receiver gives up.
        let state = h.wait(Duration::from_millis(50));
        if state != ReceiveState::Receiving || start.elapsed() >= LIMIT {
            break state;
        }
    };
    let ReceiveState::Failed(reason) = &state else {
        panic!("refused data kept the receiver waiting: {state:?}");
    };
    assert!(reason.starts_with("sender silent"), "{reason}");
    assert!(
        h.progress().crc_failures > 0,
        "the data did reach the receiver"
    );
    net.stop();
}

/// The figures of a clean, unpaced run (the window alone limits the sender): bursts beyond the
/// kernel's socket buffers are lost and repaired, so this shows what the defaults give.
#[test]
#[ignore = "figures only: cargo test --release --test threaded_rmtp -- --ignored --nocapture"]
fn figures_of_a_clean_unpaced_tree() {
    let size = 32 * MIB;
    let data = content(size, 15);
    let dir = TempDir::new("clean");
    let net = start_net(build::binary_tree(3, 7001), None);
    let group = g(8);
    let leaves = [n(4), n(5), n(6), n(7)];
    let rx = join_all(&net, &dir, group, n(1), &leaves, &receive_options(LIMIT));
    wait_for_members(&net, group, n(1), &leaves);
    let start = Instant::now();
    let send = net
        .node(1)
        .send(group, NAME, mem(&data), SendOptions::default())
        .unwrap();
    for (r, h) in &rx {
        assert_eq!(
            h.wait(Duration::from_secs(600)),
            ReceiveState::Complete,
            "node {r}"
        );
    }
    let elapsed = start.elapsed();
    assert!(send.wait(LIMIT));
    report(
        "7-node tree, clean links, unpaced",
        size,
        elapsed,
        &send,
        &rx,
    );
    for r in [1, 2, 4] {
        let s = net.node(r).stats();
        println!(
            "  node {r}: buffer.rmtp.dropped {}, relay copies {}",
            s.get("buffer.rmtp.dropped").unwrap(),
            s.get("rmtp.relay.forwarded_copies").unwrap()
        );
    }
    for (r, _) in &rx {
        assert_received(&dir, *r, &data);
    }
    net.stop();
}

/// A receiver tracks no more missing sequences than its node's relay NACK table holds (the
/// rule the sans-IO node applies, from the same setting): with a table of 8 entries and 20%
/// loss, the receiver's gap tracking stops at 8 (`missing_full`) instead of its NACKs being
/// refused at its own relay (`nack_table_full`), and the file still arrives whole.
#[test]
fn a_receiver_tracks_no_more_missing_sequences_than_its_relay_holds() {
    const NACK_ENTRIES: usize = 8;
    let dir = TempDir::new("nack-entries");
    let mut topology = build::line(2, 7201);
    for l in &mut topology.links {
        l.faults = Faults {
            loss: 0.2,
            ..Faults::default()
        };
    }
    topology.network.timers.dead_hellos = 8;
    let net = Net::start_with(
        topology,
        |a| ThreadedOptions {
            seed: u64::from(a.get()),
            nack_entries: NACK_ENTRIES,
            ..ThreadedOptions::default()
        },
        |_, t| t.clone(),
    );
    net.converge();
    let group = g(8);
    let sink = FileSink::create(&dir.of(n(2)), NAME).unwrap();
    let rx = net
        .node(2)
        .receive(group, n(1), 1, Box::new(sink), receive_options(LIMIT))
        .unwrap();
    wait_for_members(&net, group, n(1), &[n(2)]);
    let data = content(MIB, 13);
    let send = net
        .node(1)
        .send(group, NAME, mem(&data), SendOptions::default())
        .unwrap();
    assert_eq!(rx.wait(LIMIT), ReceiveState::Complete);
    assert_received(&dir, n(2), &data);
    let s = net.node(2).stats();
    let (capped, refused) = (
        s.get("rmtp.client.1.missing_full").unwrap(),
        s.get("rmtp.relay.nack_table_full").unwrap(),
    );
    println!("node 2: gap tracking capped {capped} times, relay NACK table full {refused} times");
    assert!(capped > 0, "20% loss opens more than {NACK_ENTRIES} gaps");
    assert_eq!(refused, 0, "the receiver's NACKs fit its relay's table");
    drop(send);
    net.stop();
}

/// A sink whose `finish` takes as long as syncing a large file to a busy disk: the client
/// thread is blocked meanwhile, the sender's SPMs queue behind it.
struct SlowToFinish {
    inner: MemSink,
    finishing: Duration,
}

impl Sink for SlowToFinish {
    fn write_at(&mut self, offset: u64, data: &[u8]) -> Result<(), SinkError> {
        self.inner.write_at(offset, data)
    }

    fn finish(&mut self, hash: &[u8; 32]) -> Result<Finished, SinkError> {
        // Stands for the disk, not for synchronisation: the thread is meant to be blocked.
        std::thread::sleep(self.finishing);
        self.inner.finish(hash)
    }

    fn abort(&mut self) {
        self.inner.abort()
    }
}

/// Before the fix, a receiver whose sink took longer to finish than the linger's silence
/// (500 ms) left at once, its completion reported once (which the relay holds until a second
/// report) and the sender failed "no receiver left" (seen in bench multicast, 256 MiB to 7
/// receivers, where `FileSink::finish` syncs the file).
#[test]
fn a_receiver_slow_to_finish_its_sink_still_completes_the_sender() {
    let net = start_net(build::line(2, 7201), None);
    let group = g(8);
    let sink = SlowToFinish {
        inner: MemSink::new(),
        finishing: Duration::from_millis(1500),
    };
    let rx = net
        .node(2)
        .receive(group, n(1), 3, Box::new(sink), receive_options(LIMIT))
        .unwrap();
    wait_for_members(&net, group, n(1), &[n(2)]);
    let data = content(MIB, 12);
    let send = net
        .node(1)
        .send(group, NAME, mem(&data), SendOptions::default())
        .unwrap();
    assert_eq!(rx.wait(LIMIT), ReceiveState::Complete);
    let complete = send.wait(LIMIT);
    assert!(
        complete,
        "the sender did not complete: {:?}",
        send.progress()
    );
    net.stop();
}
