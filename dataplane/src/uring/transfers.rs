//! The engine's side of the transfer handles: it publishes each local transfer's progress to
//! the threaded engine's handle types (so callers hold the same `SendHandle` and
//! `ReceiveHandle` whatever the engine), and ends each transfer when its core says so, the way
//! the threaded engine's RMTP threads do: a sender once it has ended (everyone has everything
//! and its linger passed, or it failed) is dropped from the node and withdraws its RAP
//! announcement, so the group can be sent to again; a completed receiver leaves the group on
//! its core's `MayLeave` (its last MABs reached the sender, or the sender went silent).

use super::shared::{Command, Shared};
use crate::host::lines::{ReceiverLines, SenderLines};
use crate::host::{
    Kick, ReceiveHandle, ReceiveProgress, ReceiveShared, ReceiveState, SendHandle, SendProgress,
    SendShared,
};
use crate::node::{DataPlane, TransferEvent};
use crate::sync::lock;
use control::rap::ServiceEntry;
use control::{GroupAddr, NodeAddr};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant as StdInstant};

/// How often a running receiver's progress is looked at while nothing else wakes the engine
/// (an abort wakes it at once through the handle's kick).
const PROGRESS_POLL: Duration = Duration::from_millis(100);
/// Progress is published at most this often while a transfer runs (and always on a change
/// of state).
const PUBLISH_EVERY: Duration = Duration::from_millis(20);

/// Each local transfer's last published progress and counters: senders by group, receivers by
/// client id.
pub(crate) type Progress = (Vec<SenderLines>, Vec<ReceiverLines>);

struct Sending {
    shared: Arc<SendShared>,
    failed: Option<String>,
    published_at: StdInstant,
}

struct Receiving {
    shared: Arc<ReceiveShared>,
    group: GroupAddr,
    sender: NodeAddr,
    complete: bool,
    published_at: StdInstant,
}

#[derive(Default)]
pub(crate) struct Handles {
    senders: BTreeMap<GroupAddr, Sending>,
    receivers: BTreeMap<u16, Receiving>,
}

impl Handles {
    pub fn add_sender(&mut self, entry: ServiceEntry) -> SendHandle {
        let shared = SendShared::new(entry.clone());
        self.senders.insert(
            entry.group,
            Sending {
                shared: Arc::clone(&shared),
                failed: None,
                published_at: StdInstant::now(),
            },
        );
        SendHandle { shared }
    }

    /// The progress each running or lingering transfer last published.
    pub fn progress(&self) -> Progress {
        let senders = self
            .senders
            .iter()
            .map(|(&g, s)| {
                let status = lock(&s.shared.status);
                (g, status.progress.clone(), status.stats.clone())
            })
            .collect();
        let receivers = self
            .receivers
            .iter()
            .map(|(&sid, r)| {
                let status = lock(&r.shared.status);
                (sid, status.progress.clone(), status.stats.clone())
            })
            .collect();
        (senders, receivers)
    }

    /// A receiver this engine still runs under `sid`.
    pub fn is_receiving(&self, sid: u16) -> bool {
        self.receivers.contains_key(&sid)
    }

    /// `kick` wakes the engine when the handle aborts, so that `tick` sees the flag at once.
    pub fn add_receiver(
        &mut self,
        sid: u16,
        group: GroupAddr,
        sender: NodeAddr,
        kick: Kick,
    ) -> ReceiveHandle {
        let shared = ReceiveShared::new(kick);
        self.receivers.insert(
            sid,
            Receiving {
                shared: Arc::clone(&shared),
                group,
                sender,
                complete: false,
                published_at: StdInstant::now(),
            },
        );
        ReceiveHandle { shared }
    }

    /// Forgets a sender that never started (its announcement was refused).
    pub fn forget_sender(&mut self, group: GroupAddr) {
        self.senders.remove(&group);
    }

    /// Forgets a receiver that never started (its subscription was refused).
    pub fn forget_receiver(&mut self, sid: u16) {
        self.receivers.remove(&sid);
    }

    pub fn on_event(&mut self, data: &mut DataPlane, shared: &Shared, event: TransferEvent) {
        match event {
            TransferEvent::Received { sid, .. } => {
                if let Some(r) = self.receivers.get_mut(&sid) {
                    r.complete = true;
                    publish_receiver(data, sid, r, None);
                }
            }
            TransferEvent::MayLeave { sid, .. } => {
                self.finish_receiver(data, shared, sid, None);
            }
            TransferEvent::ReceiveFailed { sid, reason, .. } => {
                self.finish_receiver(data, shared, sid, Some(reason));
            }
            TransferEvent::Sent { group, .. } => {
                if let Some(s) = self.senders.get(&group) {
                    publish_sender(data, group, s);
                }
            }
            TransferEvent::SendFailed { group, reason } => {
                if let Some(s) = self.senders.get_mut(&group) {
                    s.failed = Some(reason);
                }
                self.finish_sender(data, shared, group);
            }
        }
    }

    /// Publishes progress, ends aborted receivers and ended senders.
    pub fn tick(&mut self, data: &mut DataPlane, shared: &Shared, at: StdInstant) {
        let mut ended = Vec::new();
        for (&sid, r) in &mut self.receivers {
            if !r.complete && r.shared.abort_requested() {
                ended.push((sid, Some("aborted".to_string())));
            } else if at >= r.published_at + PUBLISH_EVERY {
                r.published_at = at;
                publish_receiver(data, sid, r, None);
            }
        }
        for (sid, failure) in ended {
            self.finish_receiver(data, shared, sid, failure);
        }
        let mut done = Vec::new();
        for (&group, s) in &mut self.senders {
            // The core's timeout (the end of its linger) woke the engine for this.
            let ended = data
                .transfers()
                .sender(group)
                .is_none_or(|core| core.has_ended());
            if ended {
                done.push(group);
            } else if at >= s.published_at + PUBLISH_EVERY {
                s.published_at = at;
                publish_sender(data, group, s);
            }
        }
        for group in done {
            self.finish_sender(data, shared, group);
        }
    }

    /// When the engine must look again even if nothing arrives (the cores' own deadlines,
    /// lingers included, are the data plane's timeout).
    pub fn next_deadline(&self, now: StdInstant) -> Option<StdInstant> {
        let receiving = self.receivers.values().any(|r| !r.complete);
        receiving.then_some(now + PROGRESS_POLL)
    }

    /// The node is stopping: every transfer ends (an incomplete receiver fails, leaving its
    /// output partial).
    pub fn stop_all(&mut self, data: &mut DataPlane, shared: &Shared) {
        let sids: Vec<u16> = self.receivers.keys().copied().collect();
        for sid in sids {
            let incomplete = !self.receivers[&sid].complete;
            self.finish_receiver(
                data,
                shared,
                sid,
                incomplete.then(|| "the node stopped".to_string()),
            );
        }
        let groups: Vec<GroupAddr> = self.senders.keys().copied().collect();
        for group in groups {
            self.finish_sender(data, shared, group);
        }
    }

    /// Drops the receiver and has the control thread leave its group for it.
    fn finish_receiver(
        &mut self,
        data: &mut DataPlane,
        shared: &Shared,
        sid: u16,
        failure: Option<String>,
    ) {
        let Some(r) = self.receivers.remove(&sid) else {
            return;
        };
        publish_receiver(data, sid, &r, failure);
        data.transfers_mut().remove_receiver(sid);
        let (group, sender) = (r.group, r.sender);
        shared.control.command(Command::Call(Box::new(move |c| {
            let now = c.now();
            let _ = c.control.unsubscribe(now, group, sender, sid);
        })));
        r.shared.ended();
    }

    /// Drops the sender and has the control thread withdraw its announcement.
    fn finish_sender(&mut self, data: &mut DataPlane, shared: &Shared, group: GroupAddr) {
        let Some(s) = self.senders.remove(&group) else {
            return;
        };
        publish_sender(data, group, &s);
        data.transfers_mut().remove_sender(group);
        let entry = s.shared.entry().clone();
        shared.control.command(Command::Call(Box::new(move |c| {
            let services: Vec<ServiceEntry> = c
                .control
                .rap_server()
                .services()
                .iter()
                .filter(|e| **e != entry)
                .cloned()
                .collect();
            // A shorter list always fits.
            let _ = c.control.set_services(services);
        })));
        s.shared.ended();
    }
}

fn publish_sender(data: &DataPlane, group: GroupAddr, s: &Sending) {
    let Some(core) = data.transfers().sender(group) else {
        return;
    };
    let stats = core.stats();
    let progress = SendProgress {
        total: core.total(),
        sent: core.sent_offset(),
        acked: stats.bytes_acked,
        retransmissions: stats.retransmissions,
        nacks: stats.nacks_received,
        complete: core.is_complete(),
        failed: s
            .failed
            .clone()
            .or_else(|| core.failure().map(ToString::to_string)),
    };
    s.shared.publish(progress, stats);
}

fn publish_receiver(data: &DataPlane, sid: u16, r: &Receiving, failure: Option<String>) {
    let t = data.transfers();
    // The node keeps the receiver until `finish_receiver` has published its last progress.
    let delivered = t.delivered(sid).unwrap_or(0);
    let stats = t.receiver_stats(sid).cloned().unwrap_or_default();
    let complete = r.complete;
    let state = match (complete, failure) {
        (true, _) => ReceiveState::Complete,
        (false, Some(f)) => ReceiveState::Failed(f),
        (false, None) => ReceiveState::Receiving,
    };
    let progress = ReceiveProgress {
        delivered,
        total: complete.then_some(delivered),
        repairs: stats.repairs_received,
        nacks: stats.nacks_sent,
        crc_failures: stats.crc_failures,
        state,
    };
    r.shared.publish(progress, &stats);
}
