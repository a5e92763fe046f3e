//! A sender that completed lingers, then has ended, in virtual time: it keeps sending SPMs for
//! `SenderConfig::linger` after every receiver reported everything (so that they see the final
//! trailing edge and leave the group), and the transfer has ended exactly when that linger is
//! over. The rule lives in the sender core on the time passed in, so the simulator's nodes and
//! the threaded engine's server threads (which end then) see the same instant.

use control::settings::sender::LINGER;
use control::topology::build;
use dataplane::node::{Node, RmtpOptions};
use dataplane::sim::Sim;
use dataplane::sim::scenario::{Scenario, content, group, n};
use std::time::Duration;

#[test]
fn a_complete_sender_lingers_then_has_ended() {
    let (sender, receivers) = (n(1), [n(2), n(3)]);
    let mut s = Scenario::start(
        build::line(3, 47_000),
        5,
        RmtpOptions::default(),
        sender,
        &receivers,
        content(256 * 1024, 5),
    )
    .expect("the scenario starts");
    assert!(s.run_until_received(&receivers, Duration::from_secs(30)));
    s.assert_identical(&receivers);

    // (complete, ended, SPMs sent) of the sender's core.
    let core = |sim: &Sim<Node>| {
        sim.node(sender)
            .and_then(|node| node.transfers().sender(group()))
            .map(|c| (c.is_complete(), c.has_ended(), c.stats().spms_sent))
            .expect("the sender is listed")
    };
    s.sim.set_cond_interval(Duration::from_millis(1));
    let deadline = s.sim.now() + Duration::from_secs(10);
    let completed_at = s
        .sim
        .run_until_cond(deadline, |sim| core(sim).0)
        .expect("the sender completes once the receivers report everything");

    // Lingering: not ended, still sending SPMs.
    let (_, ended, spms_at_completion) = core(&s.sim);
    assert!(!ended, "ended at completion");
    s.sim
        .run_until(completed_at + LINGER - Duration::from_millis(2));
    let (_, ended, spms) = core(&s.sim);
    assert!(!ended, "ended before the linger was over");
    assert!(spms > spms_at_completion, "no SPM while lingering");

    // Ended once the linger is over (the core asked for a timer at that instant).
    s.sim
        .run_until(completed_at + LINGER + Duration::from_millis(1));
    assert!(core(&s.sim).1, "not ended after the linger");
}
