//! The shipped topology files, the builders and the TOML writer agree with one another.

use control::rng::Rng;
use control::topology::build::{self, DEFAULT_BASE_PORT};
use control::topology::{Action, NetworkOptions, ScheduledEvent, Topology};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

fn shipped(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../topologies")
        .join(name)
}

/// Every shipped file and the builder call it must equal.
fn expected_files() -> Vec<(&'static str, Topology)> {
    let p = DEFAULT_BASE_PORT;
    vec![
        ("line.toml", build::line(5, p)),
        ("ring.toml", build::ring(8, p)),
        ("star.toml", build::star(6, p)),
        ("tree7.toml", build::binary_tree(3, p)),
        ("grid4x4.toml", build::grid(4, 4, p)),
    ]
}

#[test]
fn shipped_files_equal_the_builders() {
    for (name, built) in expected_files() {
        let loaded = Topology::load(&shipped(name)).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(loaded, built, "{name} drifted from its builder");
        println!(
            "{name}: {} nodes, {} links, diameter {:?}",
            loaded.nodes.len(),
            loaded.links.len(),
            loaded.diameter()
        );
    }
}

#[test]
fn every_shipped_file_is_checked() {
    let on_disk: BTreeSet<String> = std::fs::read_dir(shipped(""))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".toml"))
        .collect();
    let known: BTreeSet<String> = expected_files()
        .into_iter()
        .map(|(n, _)| n.to_string())
        .collect();
    assert_eq!(on_disk, known);
}

/// A valid topology with everything the file can say set to something not default: options,
/// faults with fractional values, down links and a schedule.
fn decorated(seed: u64) -> Topology {
    let mut rng = Rng::new(seed);
    let n = 1 + rng.below(60) as usize;
    let extra = rng.below(build::max_extra_links(n).min(40) as u64 + 1) as usize;
    let mut t = build::random_connected(n, extra, seed, 20000 + rng.below(1000) as u16);
    let ms = |rng: &mut Rng| Duration::from_nanos(1 + rng.below(10_000_000_000));
    let refresh = ms(&mut rng);
    t.network = NetworkOptions {
        // At least 256, so any node of 60 fits its neighbours in one LSP.
        mtu: 256 + rng.below(65536 - 256) as usize,
        timers: control::topology::Timers {
            hello_interval: ms(&mut rng),
            dead_hellos: 1 + rng.below(10) as u32,
            lsp_retransmit: ms(&mut rng),
            former_probe_interval: ms(&mut rng),
            gmp_refresh: refresh,
            gmp_expire: refresh + ms(&mut rng),
            rap_retry: ms(&mut rng),
        },
    };
    let prob = |rng: &mut Rng| match rng.below(4) {
        0 => 0.0,
        1 => 1.0,
        _ => rng.next_f64(),
    };
    for l in &mut t.links {
        l.faults.loss = prob(&mut rng);
        l.faults.corrupt = prob(&mut rng);
        l.faults.duplicate = prob(&mut rng);
        l.faults.reorder = prob(&mut rng);
        l.faults.delay = Duration::from_nanos(rng.below(1_000_000_000));
        l.faults.jitter = Duration::from_millis(rng.below(100));
        l.faults.down = rng.chance(0.2);
        if rng.chance(0.5) {
            l.faults.rate = Some(1 + rng.below(125_000_000_000));
            l.faults.queue_bytes = rng.chance(0.5).then(|| 1 + rng.below(1 << 30));
        }
    }
    let mut at = Duration::ZERO;
    for _ in 0..rng.below(8) {
        // Some events share a time, to check that their order is kept.
        if rng.chance(0.7) {
            at += Duration::from_nanos(rng.below(5_000_000_000));
        }
        let node = t.nodes[rng.below(t.nodes.len() as u64) as usize].addr;
        let action = match (t.links.is_empty(), rng.below(4)) {
            (false, 0 | 1) => {
                let l = &t.links[rng.below(t.links.len() as u64) as usize];
                if rng.chance(0.5) {
                    Action::LinkDown(l.a, l.b)
                } else {
                    Action::LinkUp(l.a, l.b)
                }
            }
            (_, 2) => Action::NodeDown(node),
            _ => Action::NodeUp(node),
        };
        t.schedule.push(ScheduledEvent { at, action });
    }
    t
}

#[test]
fn writing_then_reading_gives_the_same_topology() {
    for seed in 0..300 {
        let original = decorated(seed);
        let text = original.to_toml();
        let read = Topology::from_toml_str(&text, "generated.toml")
            .unwrap_or_else(|e| panic!("seed {seed}: {e}\n{text}"));
        assert_eq!(read, original, "seed {seed}:\n{text}");
        // Writing is deterministic too.
        assert_eq!(read.to_toml(), text);
    }
}

#[test]
fn default_options_are_left_out_of_the_written_file() {
    let text = build::line(2, 7001).to_toml();
    assert_eq!(
        text,
        "[[node]]\naddr = 1\nsocket = \"127.0.0.1:7001\"\n\n\
         [[node]]\naddr = 2\nsocket = \"127.0.0.1:7002\"\n\n\
         [[link]]\nnodes = [1, 2]\n"
    );
}

#[test]
fn the_file_is_normalised_when_read() {
    let text = "\
[[node]]
addr = 3
socket = \"127.0.0.1:7003\"
[[node]]
addr = 1
socket = \"127.0.0.1:7001\"
[[node]]
addr = 2
socket = \"[::1]:7002\"
[[link]]
nodes = [3, 2]
[[link]]
nodes = [2, 1]
[[event]]
at_ms = 20
node_up = 3
[[event]]
at_ms = 10.5
link_down = [3, 2]
[[event]]
at_ms = 20
node_down = 1
";
    let t = Topology::from_toml_str(text, "t.toml").unwrap();
    let addrs: Vec<u16> = t.nodes.iter().map(|n| n.addr.get()).collect();
    assert_eq!(addrs, [1, 2, 3]);
    let links: Vec<(u16, u16)> = t.links.iter().map(|l| (l.a.get(), l.b.get())).collect();
    assert_eq!(links, [(1, 2), (2, 3)]);
    let times: Vec<u128> = t.schedule.iter().map(|e| e.at.as_micros()).collect();
    assert_eq!(times, [10_500, 20_000, 20_000]);
    let n = |v| control::NodeAddr::new(v).unwrap();
    assert_eq!(t.schedule[0].action, Action::LinkDown(n(2), n(3)));
    // Equal times keep the file's order.
    assert_eq!(t.schedule[1].action, Action::NodeUp(n(3)));
    assert_eq!(t.schedule[2].action, Action::NodeDown(n(1)));
}

#[test]
fn random_graphs_are_connected_and_exact() {
    for seed in 0..200 {
        let mut rng = Rng::new(seed ^ 0x5eed);
        let n = 1 + rng.below(120) as usize;
        let max = build::max_extra_links(n);
        // Sparse most of the time, sometimes dense enough to take the other path.
        let extra = if rng.chance(0.2) {
            max - rng.below(max as u64 / 4 + 1) as usize
        } else {
            rng.below((n as u64).min(max as u64) + 1) as usize
        };
        let t = build::random_connected(n, extra, seed, 7001);
        assert_eq!(t.nodes.len(), n);
        assert_eq!(t.links.len(), n - 1 + extra, "seed {seed}");
        assert!(
            t.links
                .windows(2)
                .all(|w| (w[0].a, w[0].b) < (w[1].a, w[1].b))
        );
        assert!(t.links.iter().all(|l| l.a < l.b));
        let hops = t.hops_from(t.nodes[0].addr);
        assert!(
            hops.iter().all(Option::is_some),
            "seed {seed}: not connected"
        );
    }
}

#[test]
fn random_graphs_depend_only_on_the_seed() {
    let a = build::random_connected(50, 30, 7, 7001);
    assert_eq!(a, build::random_connected(50, 30, 7, 7001));
    assert_ne!(a.links, build::random_connected(50, 30, 8, 7001).links);
    // Node 1 is not a favoured hub: over many seeds its degree averages near the mean degree.
    let total: usize = (0..200)
        .map(|s| {
            build::random_connected(50, 0, s, 7001)
                .neighbours(control::NodeAddr::new(1).unwrap())
                .len()
        })
        .sum();
    let mean = total as f64 / 200.0;
    assert!(
        mean < 3.0,
        "node 1 averages {mean} neighbours in a 50-node tree"
    );
}

/// Correctness at size only: how fast it goes is a benchmark's claim, not a test's.
#[test]
fn a_thousand_node_graph_builds_and_round_trips() {
    let t = build::random_connected(1000, 1000, 42, 10000);
    let text = t.to_toml();
    let read = Topology::from_toml_str(&text, "big.toml").unwrap();
    assert_eq!(read, t);
    assert!(t.is_connected());
    assert_eq!(t.nodes.len(), 1000);
    let full = build::random_connected(build::MAX_NODES, 5000, 1, 1);
    assert!(full.is_connected());
    assert_eq!(full.nodes.len(), build::MAX_NODES);
}

#[test]
fn the_documented_example_is_valid() {
    let doc = include_str!("../../docs/TOPOLOGY.md");
    let start = doc.find("```toml\n").expect("an example") + "```toml\n".len();
    let len = doc[start..].find("```").expect("the example's end");
    let t = Topology::from_toml_str(&doc[start..start + len], "TOPOLOGY.md").unwrap();
    assert_eq!(t.nodes.len(), 3);
    assert_eq!(t.network.timers.hello_interval, Duration::from_millis(500));
    let lossy = &t.links[2];
    assert_eq!((lossy.a.get(), lossy.b.get()), (2, 3));
    assert_eq!(lossy.faults.jitter, Duration::from_micros(500));
    assert_eq!(t.schedule.len(), 2);
}
