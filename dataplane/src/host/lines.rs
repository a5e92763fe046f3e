//! The `name value` lines of the protocol cores' counters, shared by every engine's stats
//! (`ctl stats` reads them), so a counter has one name whatever the engine.

use crate::garbler::{DelayStats, GarblerStats};
use crate::host::transfer::{ReceiveProgress, ReceiveState, SendProgress};
use crate::rmtp::{ReceiverStats, RelayStats, SenderStats};
use control::drp::DrpStats;
use control::gmp::GmpStats;
use control::rap::{RapClientStats, RapServerStats};
use control::{GroupAddr, NodeAddr};

/// Pushes a `prefix.name value` line for every counter in `fields` (a stats struct's
/// `fields()`, see [`control::counters!`]).
pub(crate) fn push_fields(
    out: &mut Vec<(String, u64)>,
    prefix: &str,
    fields: impl Iterator<Item = (&'static str, u64)>,
) {
    out.extend(fields.map(|(name, v)| (format!("{prefix}.{name}"), v)));
}

/// `drp.*`, `gmp.*`, `rap_server.<sid>.*` and `rap_client.*`.
pub(crate) fn control_plane_lines(
    out: &mut Vec<(String, u64)>,
    drp: &DrpStats,
    gmp: &GmpStats,
    rap_servers: &[(u16, &RapServerStats)],
    rap_client: &RapClientStats,
) {
    push_fields(out, "drp", drp.fields());
    push_fields(out, "gmp", gmp.fields());
    for (sid, s) in rap_servers {
        push_fields(out, &format!("rap_server.{sid}"), s.fields());
    }
    push_fields(out, "rap_client", rap_client.fields());
}

/// `garbler.<neighbour>.*` for each direction that garbled anything, and `garbler.delay.*`.
pub(crate) fn garbler_lines(
    out: &mut Vec<(String, u64)>,
    garbler: &[(NodeAddr, GarblerStats)],
    delay_line: &DelayStats,
) {
    for (n, s) in garbler {
        push_fields(out, &format!("garbler.{n}"), s.fields());
    }
    push_fields(out, "garbler.delay", delay_line.fields());
}

/// `rmtp.relay.*`.
pub(crate) fn relay_lines(out: &mut Vec<(String, u64)>, relay: &RelayStats) {
    push_fields(out, "rmtp.relay", relay.fields());
}

/// A local sender's or receiver's progress with its core's counters.
pub(crate) type SenderLines = (GroupAddr, SendProgress, SenderStats);
pub(crate) type ReceiverLines = (u16, ReceiveProgress, ReceiverStats);

/// `rmtp.server.<group>.*` and `rmtp.client.<sid>.*`: each transfer's progress, then its
/// core's counters.
pub(crate) fn transfer_lines(
    out: &mut Vec<(String, u64)>,
    servers: &[SenderLines],
    clients: &[ReceiverLines],
) {
    for (group, p, s) in servers {
        let prefix = format!("rmtp.server.{group}");
        for (name, v) in [("total", p.total), ("sent", p.sent), ("acked", p.acked)] {
            out.push((format!("{prefix}.{name}"), v));
        }
        out.push((format!("{prefix}.complete"), u64::from(p.complete)));
        out.push((format!("{prefix}.failed"), u64::from(p.failed.is_some())));
        push_fields(out, &prefix, s.fields());
    }
    for (sid, p, s) in clients {
        let prefix = format!("rmtp.client.{sid}");
        out.push((format!("{prefix}.delivered"), p.delivered));
        out.push((format!("{prefix}.total"), p.total.unwrap_or(0)));
        out.push((
            format!("{prefix}.complete"),
            u64::from(p.state == ReceiveState::Complete),
        ));
        out.push((
            format!("{prefix}.failed"),
            u64::from(matches!(p.state, ReceiveState::Failed(_))),
        ));
        push_fields(out, &prefix, s.fields());
    }
}
