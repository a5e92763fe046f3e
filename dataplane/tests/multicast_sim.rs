//! Reliable multicast through whole simulated nodes (DNP, DRP, GMP, RAP, RMTP): files reach every
//! receiver byte for byte through loss, corruption and failures. Each test prints its figures.
//! The default run uses small files; `cargo test --release -- --ignored` runs the full 64 MiB.

mod support;

use control::topology::{Faults, build};
use dataplane::node::RmtpOptions;
use std::time::Duration;
use support::*;

const MIB: usize = 1 << 20;

fn lossy() -> Faults {
    Faults { loss: 0.10, corrupt: 0.01, delay: Duration::from_millis(1), ..Faults::default() }
}

fn tree_transfer(size: usize) {
    let mut topology = with_faults(build::binary_tree(3, 7001), lossy());
    // At 10% loss three hellos in a row are lost now and then; a tree has no detour, so a
    // false "dead" would only cost time. Six missed hellos make that rare.
    topology.network.timers.dead_hellos = 6;
    let leaves = [n(4), n(5), n(6), n(7)];
    let mut s = Scenario::start(topology, 1, RmtpOptions::default(), n(1), &leaves, content(size, 7));
    for r in leaves {
        s.sim.set_undetected_corruption(r, n(r.get() / 2), 0.002).unwrap();
    }
    assert!(s.run_until_received(&leaves, Duration::from_secs(600)), "not all leaves completed");
    s.report(&format!("7-node tree, {} MiB, 10% loss, 1% corruption", size / MIB));
    s.assert_identical(&leaves);
}

#[test]
fn a_file_reaches_every_leaf_of_the_tree_through_loss_and_corruption() {
    tree_transfer(4 * MIB);
}

#[test]
#[ignore = "64 MiB: run with --release -- --ignored"]
fn sixty_four_mib_to_every_leaf_of_the_tree() {
    tree_transfer(64 * MIB);
}
