//! A receiver whose sender is gone ends cleanly, in virtual time: the sender's node goes down
//! (or restarts, forgetting the transfer, while the tree stays up) in the middle of a transfer,
//! and every receiver fails with "sender silent" once its sender
//! watch (`ReceiverConfig::sender_timeout`) runs out after the last DATA or SPM it accepted,
//! also while forged RMTP packets of the transfer keep arriving: the refused ones (most of
//! them) keep no dead sender alive. (A forgery that fits the transfer in every checkable way is
//! accepted like the sender's own, and moves the watch; two agreeing forged SPMs may also end
//! the transfer at once, as "lost for good". Either way the receiver ends cleanly.)

use control::NodeAddr;
use control::rng::Rng;
use control::settings::receiver::SENDER_TIMEOUT;
use control::topology::build;
use dataplane::node::{NodeEvent, RmtpOptions, TransferEvent};
use dataplane::rmtp::ReceiverStats;
use dataplane::sim::hostile::{Kind, Knowledge, generate_any};
use dataplane::sim::scenario::{SID, Scenario, content, group, n};
use std::collections::BTreeMap;
use std::time::Duration;

const SENDER: u16 = 1;
const LEAVES: [u16; 4] = [4, 5, 6, 7];
/// How long forgeries arrive after the sender went.
const ATTACK: Duration = Duration::from_secs(4);
/// Slow enough that the transfer is in the middle when the sender goes.
const RATE: u64 = 1 << 20;
const FILE_BYTES: usize = 4 << 20;
const SENDER_GONE_AFTER: Duration = Duration::from_millis(1500);
/// How finely the test looks at the receivers' events.
const STEP: Duration = Duration::from_millis(10);

/// How one leaf ended after its sender went.
#[derive(Debug, Default)]
struct Ending {
    /// When it failed, after the sender went, and why.
    failed: Option<(Duration, String)>,
    /// When it last accepted a forged DATA or SPM, after the sender went.
    last_forgery_accepted: Option<Duration>,
    /// Forgeries that reached the receiver and were refused there (the relay drops others).
    forgeries_refused: u64,
    /// Of those, refused after the last accepted one (or all, if none was accepted).
    refused_since: u64,
}

/// What the receiver made of the packet that moved its counters from `before` to `after`.
#[derive(PartialEq)]
enum Verdict {
    /// DATA or an SPM taken for the sender's.
    Accepted,
    /// Counted as refused (bad CRC, outside the shape, implausible, malformed).
    Refused,
    /// Never reached it, or neither (an NCF).
    Other,
}

fn verdict(before: &ReceiverStats, after: &ReceiverStats) -> Verdict {
    let seen = |s: &ReceiverStats| s.data_received + s.spms_received;
    let refused = |s: &ReceiverStats| {
        s.crc_failures + s.data_implausible + s.data_before_shape + s.spms_refused + s.malformed
    };
    if refused(after) > refused(before) {
        Verdict::Refused
    } else if seen(after) > seen(before) {
        Verdict::Accepted
    } else {
        Verdict::Other
    }
}

/// Sends from node 1 to the leaves of a 7-node tree, takes node 1 down mid-transfer (or
/// restarts it: then routes and tree come back, and forgeries keep reaching the receivers
/// through their upstream), and returns how each leaf ended. With `forge`, hostile RMTP
/// packets of the transfer arrive at every leaf from its upstream once a millisecond, for
/// `ATTACK`.
fn sender_goes_mid_transfer(seed: u64, restart: bool, forge: bool) -> BTreeMap<NodeAddr, Ending> {
    let options = RmtpOptions {
        sender_rate: Some(RATE),
        ..RmtpOptions::default()
    };
    let leaves: Vec<NodeAddr> = LEAVES.map(n).to_vec();
    let data = content(FILE_BYTES, seed);
    let mut s = Scenario::start(
        build::binary_tree(3, 7001),
        seed,
        options,
        n(SENDER),
        &leaves,
        data,
    )
    .expect("the scenario starts");
    let nodes: Vec<NodeAddr> = s.sim.addrs().collect();
    let mut knowledge = Knowledge::new(s.sim.mtu(), nodes, group(), n(SENDER));
    s.sim.run_for(SENDER_GONE_AFTER);
    let sender = s
        .sim
        .node(n(SENDER))
        .and_then(|node| node.transfers().sender(group()))
        .expect("the sender is sending");
    assert!(
        !sender.is_finished() && sender.sent_offset() > 0,
        "the transfer is under way"
    );
    let segment = sender.segment_size().max(1);
    knowledge.numbers = vec![
        sender.leading_edge(),
        sender.trailing_edge(),
        sender.sent_offset(),
        sender.window_end(),
        sender.total(),
        sender.total() / segment,
    ];
    if restart {
        s.sim.reboot(n(SENDER)).expect("node 1 exists");
    } else {
        s.sim.node_down(n(SENDER)).expect("node 1 exists");
    }
    let gone = s.sim.now();
    let mut rng = Rng::new(seed).fork(0x51_1E);
    let forged = [Kind::Data, Kind::Retransmit, Kind::Spm, Kind::Ncf];
    let mut endings: BTreeMap<NodeAddr, Ending> = BTreeMap::new();
    let limit = gone + SENDER_TIMEOUT * 3;
    let ended = |e: &BTreeMap<NodeAddr, Ending>| e.values().filter(|e| e.failed.is_some()).count();
    while s.sim.now() < limit && ended(&endings) < leaves.len() {
        if forge && s.sim.now() < gone + ATTACK {
            for _ in 0..STEP.as_millis() {
                s.sim.run_for(Duration::from_millis(1));
                for &leaf in &leaves {
                    let from = s.sim.neighbours(leaf).next().expect("a leaf has a parent");
                    let hostile = generate_any(&mut rng, &knowledge, &forged, leaf, from);
                    // A receiver that ended has nothing left to judge.
                    if s.outcomes[&leaf].borrow().verified.is_some() {
                        continue;
                    }
                    let mut node = s.sim.node_mut(leaf).expect("leaves stay up");
                    let now = node.now();
                    let stats = |node: &dataplane::node::Node| {
                        node.transfers()
                            .receiver_stats(SID)
                            .cloned()
                            .unwrap_or_default()
                    };
                    let before = stats(&node);
                    node.handle_datagram(now, from, &hostile.packet);
                    let ending = endings.entry(leaf).or_default();
                    match verdict(&before, &stats(&node)) {
                        Verdict::Accepted => {
                            ending.last_forgery_accepted = Some(now.saturating_since(gone));
                            ending.refused_since = 0;
                        }
                        Verdict::Refused => {
                            ending.forgeries_refused += 1;
                            ending.refused_since += 1;
                        }
                        Verdict::Other => {}
                    }
                }
            }
        } else {
            s.sim.run_for(STEP);
        }
        for &leaf in &leaves {
            let mut node = s.sim.node_mut(leaf).expect("leaves stay up");
            while let Some(event) = node.poll_event() {
                match event {
                    NodeEvent::Transfer(TransferEvent::ReceiveFailed { reason, .. }) => {
                        let at = node.now().saturating_since(gone);
                        endings.entry(leaf).or_default().failed = Some((at, reason));
                    }
                    NodeEvent::Transfer(TransferEvent::Received { .. }) => {
                        panic!("{leaf} completed without its sender")
                    }
                    _ => {}
                }
            }
        }
    }
    endings
}

const SILENT: &str = "sender silent (no data or SPM for 10s)";

/// Every leaf failed because its sender fell silent, the sender timeout after the last DATA or
/// SPM it accepted: the sender's own (which left at most an SPM interval, 100 ms, before the
/// sender went) or a forged one; checked to the step.
fn assert_silent_on_time(leaf: NodeAddr, ending: &Ending) {
    let Some((after, reason)) = &ending.failed else {
        panic!("{leaf} did not end within three sender timeouts: {ending:?}");
    };
    assert_eq!(reason, SILENT, "{leaf}");
    let heard = ending.last_forgery_accepted.unwrap_or_default();
    let earliest = heard + SENDER_TIMEOUT - Duration::from_millis(150);
    let latest = heard + SENDER_TIMEOUT + STEP;
    assert!(
        (earliest..=latest).contains(after),
        "{leaf} failed {after:?} after its sender went: {ending:?}"
    );
}

#[test]
fn a_receiver_whose_sender_is_gone_fails_after_the_timeout() {
    for seed in [1, 2] {
        let endings = sender_goes_mid_transfer(seed, false, false);
        println!("seed {seed}: {endings:?}");
        for leaf in LEAVES.map(n) {
            assert_silent_on_time(leaf, endings.get(&leaf).expect("an ending"));
        }
    }
}

/// Forged DATA, SPMs and NCFs of the transfer arrive at every receiver for a while after the
/// sender went (restarted, the tree still up). Each receiver ends cleanly: one that waited out
/// its sender failed the timeout after the last DATA or SPM it accepted (a forgery that fits
/// the transfer in every checkable way is accepted, and moves the watch; nothing can tell it
/// from the sender's), however many refused ones came after; one that two agreeing forged SPMs
/// told its data was gone failed at once.
#[test]
fn forged_packets_do_not_keep_a_dead_transfer_alive() {
    let (mut silent, mut refused_after) = (0, 0);
    for seed in [1, 2, 3] {
        let endings = sender_goes_mid_transfer(seed, true, true);
        println!("seed {seed}, forged DATA, SPM and NCF: {endings:?}");
        for leaf in LEAVES.map(n) {
            let ending = endings.get(&leaf).expect("an ending");
            assert!(ending.forgeries_refused > 0, "{leaf}: {ending:?}");
            match &ending.failed {
                Some((_, reason)) if reason.contains("lost for good") => {}
                _ => {
                    assert_silent_on_time(leaf, ending);
                    silent += 1;
                    refused_after += ending.refused_since;
                }
            }
        }
    }
    assert!(silent >= 2, "too few receivers waited out their sender");
    assert!(
        refused_after >= 100,
        "too few refused forgeries after the last accepted one"
    );
}
