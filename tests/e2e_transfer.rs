//! End to end, transfers: `burghers send` and `burghers recv` processes (each hosting its node)
//! with `burghers node` relays, on loopback with the file's link faults, driven and broken only
//! through the command line (`ctl garble`, signals). Each test prints what it saw.

mod common;

use common::*;
use control::topology::{Faults, Topology, build};
use std::time::{Duration, Instant};

engine_tests!(
    a_file_crosses_the_faulty_tree_intact,
    a_link_taken_down_mid_transfer_reroutes_and_the_transfer_completes,
    a_receiver_killed_mid_transfer_does_not_stall_the_others,
    a_sender_killed_mid_transfer_leaves_partial_files_and_failing_receivers,
    a_sender_waiting_for_its_branches_announces_to_receivers_that_ask_for_the_name,
);

const NAME: &str = "payload.bin";
const MIB: usize = 1 << 20;

/// A lab on `topology` with `faults` on every link, its nodes on `engine`.
fn lab_with(mut topology: Topology, faults: Faults, engine: &'static str) -> Lab {
    for l in &mut topology.links {
        l.faults = faults;
    }
    Lab::new(topology, engine)
}

/// Waits until every process in `ids` answers on its control socket.
fn wait_up(lab: &Lab, addrs: &[u16]) {
    for &a in addrs {
        lab.wait_until(&format!("node {a} answers"), LIMIT, |lab| {
            lab.ctl(a, &["info"]).is_ok()
        });
    }
}

fn assert_intact(lab: &Lab, addr: u16, data: &[u8]) {
    let out = lab.out(addr);
    let got = std::fs::read(out.join(NAME))
        .unwrap_or_else(|e| panic!("node {addr}: no final file ({e})\n{}", lab.logs()));
    assert!(
        got == data,
        "node {addr}: content differs ({} bytes)",
        got.len()
    );
    assert!(
        !exists(&out.join(format!("{NAME}.partial"))),
        "node {addr}: a partial file is left next to the final one"
    );
}

/// A partial file and no file under the final name.
fn assert_only_partial(lab: &Lab, addr: u16, total: usize) -> u64 {
    let out = lab.out(addr);
    assert!(
        !exists(&out.join(NAME)),
        "node {addr}: a file under its final name"
    );
    let partial = out.join(format!("{NAME}.partial"));
    let len = std::fs::metadata(&partial)
        .unwrap_or_else(|e| panic!("node {addr}: no partial file ({e})"))
        .len();
    assert!(
        (len as usize) < total,
        "node {addr}: the partial file is whole"
    );
    len
}

/// The `summary:` line of a send or recv process, as key -> value.
fn summary(lab: &Lab, id: usize) -> std::collections::BTreeMap<String, String> {
    lab.stdout_of(id)
        .lines()
        .rev()
        .find_map(|l| l.strip_prefix("summary: "))
        .map(|s| {
            s.split_whitespace()
                .filter_map(|kv| kv.split_once('='))
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        })
        .unwrap_or_default()
}

fn a_file_crosses_the_faulty_tree_intact(engine: &'static str) {
    let _serial = serial();
    let faults = Faults {
        loss: 0.05,
        corrupt: 0.01,
        duplicate: 0.02,
        reorder: 0.02,
        ..Faults::default()
    };
    let mut lab = lab_with(build::binary_tree(3, 7001), faults, engine);
    let data = write_random(&lab.path("source.bin"), 3 * MIB, 7);
    lab.spawn_node(2);
    lab.spawn_node(3);
    let leaves = [4, 5, 6, 7];
    // Leaves 4 and 6 learn the file's name from the sender's RAP announcement; 5 and 7 are
    // told it and join at once.
    let rx: Vec<usize> = leaves
        .iter()
        .map(|&l| {
            let name = (l % 2 == 1).then_some(NAME);
            lab.spawn_recv(l, 1, name, &["--sender-timeout-ms", "20000"])
        })
        .collect();
    wait_up(&lab, &[2, 3, 4, 5, 6, 7]);
    let start = Instant::now();
    let source = lab.path("source.bin");
    let tx = lab.spawn_send(
        1,
        &source,
        &[
            "--name",
            NAME,
            "--wait-branches",
            "2,3",
            "--settle-ms",
            "2000",
        ],
    );
    for (&l, &id) in leaves.iter().zip(&rx) {
        let status = lab.expect_exit(id, Duration::from_secs(120));
        assert!(status.success(), "receiver {l}: {status}\n{}", lab.logs());
        assert_intact(&lab, l, &data);
    }
    let status = lab.expect_exit(tx, Duration::from_secs(30));
    assert!(status.success(), "sender: {status}\n{}", lab.logs());
    let s = summary(&lab, tx);
    println!(
        "3 MiB to 4 leaves through 5% loss, 1% corruption, 2% duplication, 2% reordering: {:.1}s; sender: {} retransmissions, {} NACKs",
        start.elapsed().as_secs_f64(),
        s["retransmissions"],
        s["nacks"]
    );
    let mut repairs = 0;
    for (&l, &id) in leaves.iter().zip(&rx) {
        let r = summary(&lab, id);
        println!(
            "  node {l}: {}s, {} repairs, {} NACKs, {} CRC failures",
            r["seconds"], r["repairs"], r["nacks"], r["crc_failures"]
        );
        repairs += r["repairs"].parse::<u64>().unwrap();
    }
    assert!(repairs > 0, "5% loss needs repairs");
    let relay = lab.stats(2, "garbler.");
    assert!(
        relay
            .iter()
            .any(|(k, v)| k.ends_with(".corrupted") && *v > 0),
        "no corruption happened on node 2's links: {relay:?}"
    );
}

/// A receiver without `--name` joins only once the sender's RAP announcement told it the
/// name, so a sender that waits for that receiver's branch must announce while it waits.
fn a_sender_waiting_for_its_branches_announces_to_receivers_that_ask_for_the_name(
    engine: &'static str,
) {
    let _serial = serial();
    let mut lab = lab_with(build::line(2, 7001), Faults::default(), engine);
    let data = write_random(&lab.path("source.bin"), MIB / 4, 9);
    let rx = lab.spawn_recv(2, 1, None, &["--announce-timeout-ms", "20000"]);
    wait_up(&lab, &[2]);
    let source = lab.path("source.bin");
    let tx = lab.spawn_send(1, &source, &["--name", NAME, "--wait-branches", "2"]);
    let status = lab.expect_exit(rx, Duration::from_secs(60));
    assert!(status.success(), "receiver: {status}\n{}", lab.logs());
    assert_intact(&lab, 2, &data);
    let status = lab.expect_exit(tx, Duration::from_secs(30));
    assert!(status.success(), "sender: {status}\n{}", lab.logs());
}

fn a_link_taken_down_mid_transfer_reroutes_and_the_transfer_completes(engine: &'static str) {
    let _serial = serial();
    let mut lab = lab_with(build::grid(3, 3, 7001), Faults::default(), engine);
    let data = write_random(&lab.path("source.bin"), 2 * MIB, 8);
    // Node 9's tree runs 9-6-3-2-1 (ties go to the lowest neighbour); node 7's runs 7-4-1.
    for a in [2, 3, 4, 5, 6, 8] {
        lab.spawn_node(a);
    }
    let r9 = lab.spawn_recv(9, 1, Some(NAME), &[]);
    let r7 = lab.spawn_recv(7, 1, Some(NAME), &[]);
    wait_up(&lab, &[2, 3, 4, 5, 6, 7, 8, 9]);
    let source = lab.path("source.bin");
    let tx = lab.spawn_send(1, &source, &["--name", NAME, "--rate", "1M"]);
    lab.wait_until("node 9 has some of the file", LIMIT, |lab| {
        lab.delivered(9) > 200_000
    });
    assert_eq!(
        lab.routes(3).unwrap()[&1],
        (2, 2),
        "node 3 reaches 1 through 2"
    );
    let at = lab.delivered(9);
    lab.ctl_ok(2, &["garble", "--to", "3", "--down", "--both"]);
    println!("link 2-3 down after node 9 had {at} bytes");
    lab.wait_until("node 3 reroutes around 2-3", LIMIT, |lab| {
        lab.routes(3)
            .is_some_and(|r| r.get(&1).is_some_and(|hop| hop.0 != 2))
    });
    let detour = lab.routes(3).unwrap()[&1];
    for (addr, id) in [(9, r9), (7, r7)] {
        let status = lab.expect_exit(id, Duration::from_secs(120));
        assert!(
            status.success(),
            "receiver {addr}: {status}\n{}",
            lab.logs()
        );
        assert_intact(&lab, addr, &data);
    }
    let status = lab.expect_exit(tx, Duration::from_secs(30));
    assert!(status.success(), "sender: {status}\n{}", lab.logs());
    let down = lab.stats(2, "garbler.3.dropped_down")["garbler.3.dropped_down"];
    assert!(down > 0, "nothing was dropped on the down link");
    println!(
        "node 9 completed after the reroute (node 3 reached 1 via {} in {} hops); {down} packets hit the down link at node 2",
        detour.0, detour.1
    );
}

fn a_receiver_killed_mid_transfer_does_not_stall_the_others(engine: &'static str) {
    let _serial = serial();
    let mut lab = lab_with(build::binary_tree(3, 7001), Faults::default(), engine);
    let data = write_random(&lab.path("source.bin"), 2 * MIB, 9);
    lab.spawn_node(2);
    lab.spawn_node(3);
    let leaves = [4, 5, 6, 7];
    let rx: Vec<usize> = leaves
        .iter()
        .map(|&l| lab.spawn_recv(l, 1, Some(NAME), &[]))
        .collect();
    wait_up(&lab, &[2, 3, 4, 5, 6, 7]);
    let source = lab.path("source.bin");
    let tx = lab.spawn_send(
        1,
        &source,
        &["--name", NAME, "--rate", "1M", "--wait-branches", "2,3"],
    );
    lab.wait_until("node 5 has some of the file", LIMIT, |lab| {
        lab.delivered(5) > 200_000
    });
    let killed_at = Instant::now();
    lab.signal(rx[1], "KILL");
    lab.expect_exit(rx[1], Duration::from_secs(5));
    for (&l, &id) in leaves.iter().zip(&rx) {
        if l == 5 {
            continue;
        }
        let status = lab.expect_exit(id, Duration::from_secs(120));
        assert!(status.success(), "receiver {l}: {status}\n{}", lab.logs());
        assert_intact(&lab, l, &data);
    }
    let status = lab.expect_exit(tx, Duration::from_secs(30));
    assert!(status.success(), "sender: {status}\n{}", lab.logs());
    let partial = assert_only_partial(&lab, 5, data.len());
    let prunes = lab.stats(2, "rmtp.relay.prunes")["rmtp.relay.prunes"];
    assert!(
        prunes >= 1,
        "node 2 never pruned receiver 5\n{}",
        lab.logs()
    );
    println!(
        "receiver 5 killed with {partial} bytes; the other three finished {:.1}s later; node 2 pruned {prunes} downstream",
        killed_at.elapsed().as_secs_f64()
    );
}

fn a_sender_killed_mid_transfer_leaves_partial_files_and_failing_receivers(engine: &'static str) {
    let _serial = serial();
    let mut lab = lab_with(build::binary_tree(3, 7001), Faults::default(), engine);
    write_random(&lab.path("source.bin"), 2 * MIB, 10);
    lab.spawn_node(2);
    lab.spawn_node(3);
    let leaves = [4, 5, 6, 7];
    let rx: Vec<usize> = leaves
        .iter()
        .map(|&l| lab.spawn_recv(l, 1, Some(NAME), &["--sender-timeout-ms", "2000"]))
        .collect();
    wait_up(&lab, &[2, 3, 4, 5, 6, 7]);
    let source = lab.path("source.bin");
    let tx = lab.spawn_send(
        1,
        &source,
        &["--name", NAME, "--rate", "1M", "--wait-branches", "2,3"],
    );
    lab.wait_until("every leaf has some of the file", LIMIT, |lab| {
        leaves.iter().all(|&l| lab.delivered(l) > 200_000)
    });
    // Meanwhile the sender announces the transfer over RAP, as any node can ask.
    let topo = lab.topology_path.display().to_string();
    let out = lab.run(&["services", "-t", &topo, "--node", "1", "--via", "6"]);
    let listed = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success()
            && listed.starts_with("node 1 announces 1 service\n")
            && listed.contains("g1 sender 1 size 2097152 ")
            && listed.ends_with(" name payload.bin\n"),
        "{listed}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let transfers = lab.ctl_ok(4, &["transfers"]);
    assert!(
        transfers.starts_with("1 transfer(s)\n  recv g1 payload.bin: delivered ")
            && transfers.contains("state Receiving"),
        "{transfers}"
    );
    lab.signal(tx, "KILL");
    let killed_at = Instant::now();
    for (&l, &id) in leaves.iter().zip(&rx) {
        let status = lab.expect_exit(id, Duration::from_secs(30));
        assert!(
            !status.success(),
            "receiver {l} exited 0 without the sender"
        );
        let err = lab.stderr_of(id);
        let last = err.lines().last().unwrap_or_default();
        assert!(
            last.starts_with("burghers: transfer of payload.bin failed: sender")
                && last.contains(".partial"),
            "receiver {l}: {last}"
        );
        let partial = assert_only_partial(&lab, l, 2 * MIB);
        println!("  node {l}: {last} ({partial} bytes on disk)");
    }
    println!(
        "every receiver gave up within {:.1}s of the sender's death",
        killed_at.elapsed().as_secs_f64()
    );
}
