//! A completed local receiver tells its engine when it may leave, in virtual time: the node
//! reports `TransferEvent::MayLeave` for it after `Received`, once its core needs nothing more
//! from the tree: here, the sender's node dropped its ended sender (as an engine does; the
//! simulator's nodes keep theirs) and the receiver heard no SPM for its `linger_silence`. Engines leave the group on this
//! signal (the io_uring engine's transfer handles, the threaded engine's client thread) rather
//! than after a fixed linger.

use control::settings::receiver::SENDER_TIMEOUT;
use control::topology::build;
use control::{Instant, NodeAddr};
use dataplane::node::{NodeEvent, RmtpOptions, TransferEvent};
use dataplane::sim::scenario::{SID, Scenario, content, group, n};
use std::time::Duration;

const STEP: Duration = Duration::from_millis(10);

#[test]
fn a_completed_receiver_is_told_it_may_leave() {
    let receiver: NodeAddr = n(3);
    let mut s = Scenario::start(
        build::line(3, 7001),
        5,
        RmtpOptions::default(),
        n(1),
        &[receiver],
        content(512 * 1024, 5),
    )
    .expect("the scenario starts");
    let limit = s.sim.now() + SENDER_TIMEOUT * 3;
    let mut received: Option<Instant> = None;
    let mut may_leave: Option<Instant> = None;
    let mut sender_dropped: Option<Instant> = None;
    while s.sim.now() < limit && may_leave.is_none() {
        s.sim.run_for(STEP);
        // What an engine does (the simulator's nodes keep ended senders): drop the sender once
        // it has ended, after its linger; its SPMs stop.
        let mut sender = s.sim.node_mut(n(1)).expect("the sender stays up");
        let ended = sender
            .transfers()
            .sender(group())
            .is_some_and(|c| c.has_ended());
        if ended {
            let now = sender.now();
            assert!(sender.stop_send(now, group()));
            sender_dropped = Some(now);
        }
        drop(sender);
        let mut node = s.sim.node_mut(receiver).expect("the receiver stays up");
        while let Some(event) = node.poll_event() {
            match event {
                NodeEvent::Transfer(TransferEvent::Received { sid, at, .. }) => {
                    assert_eq!(sid, SID);
                    received = Some(at);
                }
                NodeEvent::Transfer(TransferEvent::MayLeave {
                    sid,
                    group: g,
                    sender,
                }) => {
                    assert_eq!((sid, g, sender), (SID, group(), n(1)));
                    assert!(received.is_some(), "MayLeave came before Received");
                    may_leave = Some(node.now());
                }
                NodeEvent::Transfer(TransferEvent::ReceiveFailed { reason, .. }) => {
                    panic!("the receiver failed: {reason}")
                }
                _ => {}
            }
        }
    }
    let (received, may_leave) = (
        received.expect("the transfer completed"),
        may_leave.expect("the receiver was told it may leave"),
    );
    let dropped = sender_dropped.expect("the sender ended and was dropped");
    assert!(s.outcomes[&receiver].borrow().verified == Some(true));
    // Told once the sender fell silent for the receiver's linger, long before the sender
    // watch's cap would have told it.
    let linger_silence =
        dataplane::rmtp::ReceiverConfig::new(receiver, group(), n(1), 1500).linger_silence;
    assert!(
        may_leave >= dropped && may_leave.saturating_since(dropped) <= linger_silence + STEP * 2,
        "told {:?} after the sender was dropped, {:?} after completing",
        may_leave.saturating_since(dropped),
        may_leave.saturating_since(received)
    );
    // The node itself keeps the receiver until its client stops it (the engine's decision).
    let node = s.sim.node(receiver).expect("up");
    assert!(node.transfers().delivered(SID).is_some());
}
