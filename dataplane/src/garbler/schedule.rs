//! The topology file's schedule on a real node, for either engine: at each event's time since
//! the node started, a `link_down` / `link_up` naming one of this node's links sets or clears
//! `down` in the garbler for the direction this node sends (the other end does the same for
//! its own). Node events are for the harness that runs the processes (it stops and restarts
//! them) and are skipped here. The engine only waits for each change's time and applies it.

use control::NodeAddr;
use control::topology::{Action, Faults, ScheduledEvent};
use std::time::Duration;

/// One change of one of this node's links, from the schedule.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LinkChange {
    /// Time since the node started.
    pub at: Duration,
    /// The far end of the link.
    pub peer: NodeAddr,
    pub down: bool,
}

impl LinkChange {
    /// The faults toward `peer` once the change is applied to `current`.
    pub fn applied_to(&self, current: Faults) -> Faults {
        Faults {
            down: self.down,
            ..current
        }
    }
}

/// The far end of `(a, b)` if this node is one end.
fn other_end(me: NodeAddr, a: NodeAddr, b: NodeAddr) -> Option<NodeAddr> {
    if a == me {
        Some(b)
    } else if b == me {
        Some(a)
    } else {
        None
    }
}

/// The changes of this node's links, in time order (the file keeps its events sorted).
pub fn link_changes(me: NodeAddr, events: &[ScheduledEvent]) -> Vec<LinkChange> {
    events
        .iter()
        .filter_map(|e| {
            let (a, b, down) = match e.action {
                Action::LinkDown(a, b) => (a, b, true),
                Action::LinkUp(a, b) => (a, b, false),
                Action::NodeDown(_) | Action::NodeUp(_) => return None,
            };
            let peer = other_end(me, a, b)?;
            Some(LinkChange {
                at: e.at,
                peer,
                down,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(v: u16) -> NodeAddr {
        NodeAddr::new(v).expect("a node address")
    }

    #[test]
    fn only_this_nodes_links_change_and_node_events_are_skipped() {
        let at = Duration::from_millis;
        let events = [
            ScheduledEvent {
                at: at(100),
                action: Action::LinkDown(n(1), n(2)),
            },
            ScheduledEvent {
                at: at(150),
                action: Action::LinkDown(n(2), n(3)),
            },
            ScheduledEvent {
                at: at(200),
                action: Action::NodeDown(n(2)),
            },
            ScheduledEvent {
                at: at(300),
                action: Action::LinkUp(n(3), n(1)),
            },
        ];
        let changes = link_changes(n(1), &events);
        assert_eq!(
            changes,
            [
                LinkChange {
                    at: at(100),
                    peer: n(2),
                    down: true
                },
                LinkChange {
                    at: at(300),
                    peer: n(3),
                    down: false
                },
            ]
        );
        let lossy = Faults {
            loss: 0.5,
            ..Faults::default()
        };
        let down = changes[0].applied_to(lossy);
        assert!(down.down && down.loss == 0.5);
    }
}
