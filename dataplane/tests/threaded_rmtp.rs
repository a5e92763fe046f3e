//! Reliable multicast on the threaded engine: real nodes on 127.0.0.1, each with its RMTP
//! middle-layer thread, a server thread on the sender and a client thread per receiver, files
//! written by `FileSink`s in a temporary directory. Each test prints the figures it saw (time,
//! goodput, repairs); none asserts a speed.

mod threaded_common;

use control::topology::{Faults, Topology, build};
use control::{GroupAddr, NodeAddr};
use dataplane::rmtp::{FileSink, FileSource, MemSource};
use dataplane::sim::scenario::content;
use dataplane::threaded::{
    ReceiveHandle, ReceiveOptions, ReceiveState, SendHandle, SendOptions, ThreadedNode,
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
    let links = links_of(&net.topology);
    assert!(
        wait_until(LIMIT, || net.routes_are(&links)).is_some(),
        "routes did not converge:\n{}",
        net.dump()
    );
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

/// Waits until the sender's node has the whole tree: every receiver's branch reached it.
fn wait_for_tree(node: &ThreadedNode, group: GroupAddr, branches: &[NodeAddr]) {
    let formed = wait_until(LIMIT, || {
        node.multicast()
            .lookup(group, node.addr())
            .is_some_and(|e| branches.iter().all(|b| e.downstream.contains(b)))
    });
    assert!(formed.is_some(), "the tree never reached the sender");
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

#[allow(dead_code)]
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
    wait_for_tree(net.node(1), group, &[n(2), n(3)]);

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

#[allow(dead_code)]
fn mem(data: &[u8]) -> Box<MemSource> {
    Box::new(MemSource::new(data.to_vec()))
}
