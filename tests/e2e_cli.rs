//! End to end, the command line's manners: every mistake is one clear line on standard error
//! and a non-zero exit, never a panic; control sockets left by a killed node are reclaimed.

mod common;

use common::*;
use control::topology::build;
use std::net::UdpSocket;
use std::process::Output;
use std::time::Duration;

engine_tests!(
    mistakes_are_one_clear_line,
    a_running_node_refuses_bad_requests_and_keeps_going,
    a_killed_nodes_socket_is_reclaimed_and_a_live_one_is_not_taken,
);

/// The one error line of a failed run.
fn error_line(out: &Output) -> String {
    assert!(!out.status.success(), "expected a failure");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!err.contains("panicked"), "a panic: {err}");
    assert!(!err.contains("backtrace"), "a backtrace: {err}");
    let lines: Vec<&str> = err.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "not one line: {err}");
    lines[0].to_string()
}

fn mistakes_are_one_clear_line(engine: &'static str) {
    let lab = Lab::new(build::line(3, 7001), engine);
    let topo = lab.topology_path.display().to_string();

    let e = error_line(&lab.run(&["node", "--topology", "missing.toml", "--addr", "1"]));
    assert!(
        e.starts_with("burghers: missing.toml") && e.contains("cannot read"),
        "{e}"
    );

    let bad = lab.path("bad.toml");
    std::fs::write(&bad, "[[node]]\naddr = 1\nsocket = \"nowhere\"\n").unwrap();
    let e = error_line(&lab.run(&["node", "-t", bad.to_str().unwrap(), "-a", "1"]));
    assert!(e.contains("bad.toml:3:"), "{e}");

    let e = error_line(&lab.run(&["node", "-t", &topo, "-a", "9"]));
    assert_eq!(e, "burghers: node 9 is not in the topology");

    // A port another program holds.
    let holder = UdpSocket::bind(lab.topology.node(n(1)).unwrap().socket).unwrap();
    let e = error_line(&lab.run(&["node", "-t", &topo, "-a", "1"]));
    assert!(
        e.starts_with("burghers: cannot start node 1 on 127.0.0.1:") && e.contains("in use"),
        "{e}"
    );
    drop(holder);

    let e = error_line(&lab.run(&["ctl", "-t", &topo, "-n", "2", "routes"]));
    assert!(
        e.contains("cannot reach the control socket") && e.contains("node-2-"),
        "{e}"
    );
    let e = error_line(&lab.run(&["ctl", "routes"]));
    assert!(e.contains("--node"), "{e}");

    // clap's own errors: usage on standard error, exit status 2, no panic.
    let out = lab.run(&[
        "ctl", "-t", &topo, "-n", "2", "garble", "--to", "1", "--loss", "2",
    ]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("probability between 0 and 1"), "{err}");
    let out = lab.run(&["recv", "--group", "nope"]);
    assert_eq!(out.status.code(), Some(2));
    let out = lab.run(&["node", "-t", &topo, "-a", "1", "--engine", "steam"]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("invalid value 'steam'") && err.contains(engine),
        "{err}"
    );
    let out = lab.run(&["ctl", "--node", "0", "routes"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("reserved"));
    let out = lab.run(&["node", "-t", &topo, "-a", "1", "--pin", "100000"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("expected a core from 0 to"));
    if engine == "threaded" {
        let e = error_line(&lab.run(&["node", "-t", &topo, "-a", "1", "--pin", "0"]));
        assert!(e.contains("--pin is for --engine uring"), "{e}");
    }
}

/// `--pin 0` pins the uring engine's worker to core 0 (`engine.pinned_core` is the core plus
/// one).
#[test]
fn a_pinned_uring_node_says_where_its_worker_runs() {
    let mut lab = Lab::new(build::line(2, 7001), "uring");
    let topo = lab.topology_path.display().to_string();
    lab.spawn("pinned", &["node", "-t", &topo, "-a", "1", "--pin", "0"]);
    lab.wait_until("node 1 answers", LIMIT, |lab| lab.ctl(1, &["info"]).is_ok());
    assert_eq!(
        lab.stats(1, "engine.pinned_core").get("engine.pinned_core"),
        Some(&1)
    );
    lab.stop_all(Duration::from_secs(5));
}

fn a_running_node_refuses_bad_requests_and_keeps_going(engine: &'static str) {
    let mut lab = Lab::new(build::line(3, 7001), engine);
    lab.start_all_nodes();
    let nodes = lab.all_nodes();
    lab.wait_until("the line converges", LIMIT, |lab| {
        lab.routes_are(&nodes, |_, _| true)
    });
    let topo = lab.topology_path.display().to_string();
    let e = error_line(&lab.run(&[
        "ctl", "-t", &topo, "-n", "1", "garble", "--to", "3", "--down",
    ]));
    assert_eq!(e, "burghers: node 1 has no link to node 3");
    let e = error_line(&lab.run(&["ctl", "-t", &topo, "-n", "1", "stats", "nothing.like.this"]));
    assert_eq!(e, "burghers: no counter starts with \"nothing.like.this\"");
    let e = error_line(&lab.run(&["ctl", "-t", &topo, "-n", "3", "leave", "-g", "1", "-s", "1"]));
    assert!(e.contains("not a member"), "{e}");

    // Raw requests on the socket: junk, an over-long line, invalid UTF-8.
    let sock = lab.path("burghers").join(format!(
        "node-1-{}.sock",
        lab.topology.node(n(1)).unwrap().socket.port()
    ));
    for junk in [
        &b"frobnicate\n"[..],
        &[b'x'; 5000][..],
        &[0xff, 0xfe, b'\n'][..],
    ] {
        use std::io::{Read, Write};
        let mut s = std::os::unix::net::UnixStream::connect(&sock).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let _ = s.write_all(junk);
        let _ = s.shutdown(std::net::Shutdown::Write);
        let mut reply = String::new();
        s.read_to_string(&mut reply).unwrap();
        assert!(reply.starts_with("error "), "{reply:?}");
    }
    // Still serving, on the engine asked for, and what it announces (nothing yet) is listed
    // through another node.
    let info = lab.ctl_ok(1, &["info"]);
    assert!(info.contains("neighbours 2"), "{info}");
    assert!(info.contains(&format!("\nengine {engine}\n")), "{info}");
    let out = lab.run(&["services", "-t", &topo, "--node", "1", "--via", "3"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "node 1 announces 0 services\n"
    );
}

fn a_killed_nodes_socket_is_reclaimed_and_a_live_one_is_not_taken(engine: &'static str) {
    let mut lab = Lab::new(build::line(2, 7001), engine);
    let ids = lab.start_all_nodes();
    // A second process for node 1 on another port but the same control socket is refused.
    let mut other = lab.topology.clone();
    other.nodes[0].socket.set_port(free_ports(1)[0]);
    let other_path = lab.path("other.toml");
    std::fs::write(&other_path, other.to_toml()).unwrap();
    let sock = lab.path("burghers").join(format!(
        "node-1-{}.sock",
        lab.topology.node(n(1)).unwrap().socket.port()
    ));
    let e = error_line(&lab.run(&[
        "node",
        "-t",
        other_path.to_str().unwrap(),
        "-a",
        "1",
        "--ctl",
        sock.to_str().unwrap(),
    ]));
    assert!(e.contains("belongs to a running node"), "{e}");

    // SIGKILL leaves the socket file behind; the next node 1 takes it over.
    lab.signal(ids[0], "KILL");
    lab.expect_exit(ids[0], Duration::from_secs(5));
    assert!(exists(&sock));
    lab.spawn_node(1);
    lab.wait_until("the restarted node 1 answers", LIMIT, |lab| {
        lab.ctl(1, &["info"]).is_ok()
    });
}
