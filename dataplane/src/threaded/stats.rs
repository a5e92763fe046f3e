//! A snapshot of every counter of a threaded node, printable as `name value` lines.

use super::buffer::BufferStats;
use super::counters::DnpStats;
use super::rmtp::{ReceiveState, RmtpStats};
use crate::garbler::{DelayStats, GarblerStats};
use control::NodeAddr;
use control::drp::DrpStats;
use control::gmp::GmpStats;
use control::rap::{RapClientStats, RapServerStats};
use std::fmt;
use std::time::Duration;

/// Every counter of one node at one moment. [`NodeStats::lines`] flattens it into
/// `(name, value)` pairs in a fixed order (what `Display` prints and what a serialiser or the
/// CLI can take as they are); [`NodeStats::get`] looks one up by that name.
#[derive(Clone, Debug, PartialEq)]
pub struct NodeStats {
    pub addr: NodeAddr,
    pub uptime: Duration,
    /// Threads the node runs (its own and registered ones).
    pub threads: usize,
    pub dnp: DnpStats,
    /// Every impatient buffer by name (`drp`, `gmp`, `rap.<sid>`, `rmtp`, registered ones).
    pub buffers: Vec<(String, BufferStats)>,
    pub drp: DrpStats,
    pub gmp: GmpStats,
    pub rap_servers: Vec<(u16, RapServerStats)>,
    pub rap_client: RapClientStats,
    /// Directions that have garbled anything, by neighbour.
    pub garbler: Vec<(NodeAddr, GarblerStats)>,
    pub delay_line: DelayStats,
    /// The RMTP threads (absent on a node started without its middle layer).
    pub rmtp: Option<RmtpStats>,
}

macro_rules! fields {
    ($out:ident, $prefix:expr, $s:expr, [$($f:ident),* $(,)?]) => {
        $( $out.push((format!("{}.{}", $prefix, stringify!($f)), $s.$f)); )*
    };
}

impl NodeStats {
    pub fn lines(&self) -> Vec<(String, u64)> {
        let mut out = vec![
            ("node.addr".to_string(), u64::from(self.addr.get())),
            (
                "node.uptime_ms".to_string(),
                u64::try_from(self.uptime.as_millis()).unwrap_or(u64::MAX),
            ),
            ("node.threads".to_string(), self.threads as u64),
        ];
        for (name, v) in self.dnp.fields() {
            out.push((format!("dnp.{name}"), v));
        }
        for (buf, s) in &self.buffers {
            for (name, v) in s.fields() {
                out.push((format!("buffer.{buf}.{name}"), v));
            }
        }
        let d = &self.drp;
        fields!(
            out,
            "drp",
            d,
            [
                hellos_sent,
                hellos_recv,
                lsps_originated,
                lsps_sent,
                lsps_recv,
                lsps_new,
                lsps_dup,
                lsps_old,
                acks_sent,
                acks_recv,
                retransmissions,
                neighbours_up,
                neighbours_down,
                terminates_sent,
                terminates_recv,
                terminates_held_down,
                sequence_jumps,
                neighbour_restarts,
                lsps_truncated,
                lsps_refused_full,
                neighbours_refused,
                lsps_aged_out,
                lsp_refreshes,
                flushes_originated,
                flushes_removed,
                lsps_behind_flush,
                acks_ahead,
                bad_messages,
                ignored_messages,
                spf_runs,
                routes_published,
            ]
        );
        let g = &self.gmp;
        fields!(
            out,
            "gmp",
            g,
            [
                joins_sent,
                joins_received,
                leaves_sent,
                leaves_received,
                refreshes,
                expiries,
                upstream_changes,
                unroutable,
                ignored,
                loop_guarded,
                malformed,
            ]
        );
        for (sid, s) in &self.rap_servers {
            fields!(
                out,
                format!("rap_server.{sid}"),
                s,
                [
                    requests_received,
                    duplicate_requests,
                    provides_sent,
                    resends,
                    acks_received,
                    stale_acks,
                    gave_up,
                    ignored,
                    malformed,
                    encode_failures,
                ]
            );
        }
        let c = &self.rap_client;
        fields!(
            out,
            "rap_client",
            c,
            [
                requests_sent,
                retries,
                paused,
                provides_received,
                duplicate_provides,
                unsolicited_provides,
                acks_sent,
                ignored,
                malformed,
            ]
        );
        for (n, s) in &self.garbler {
            for (name, v) in s.fields() {
                out.push((format!("garbler.{n}.{name}"), v));
            }
        }
        for (name, v) in self.delay_line.fields() {
            out.push((format!("garbler.delay.{name}"), v));
        }
        if let Some(r) = &self.rmtp {
            rmtp_lines(&mut out, r);
        }
        out
    }

    /// One counter by its line name, e.g. `dnp.rx_error_bad_checksum` or `buffer.drp.dropped`.
    pub fn get(&self, name: &str) -> Option<u64> {
        self.lines()
            .into_iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v)
    }
}

impl fmt::Display for NodeStats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (name, value) in self.lines() {
            writeln!(f, "{name} {value}")?;
        }
        Ok(())
    }
}

/// `rmtp.middle.*` (the middle-layer thread), `rmtp.relay.*` (its core), `rmtp.server.<group>.*`
/// and `rmtp.client.<sid>.*` (progress, then the core's counters).
fn rmtp_lines(out: &mut Vec<(String, u64)>, r: &RmtpStats) {
    for (name, v) in r.middle.fields() {
        out.push((format!("rmtp.middle.{name}"), v));
    }
    let s = &r.relay;
    fields!(
        out,
        "rmtp.relay",
        s,
        [
            forwarded,
            forwarded_copies,
            delivered_local,
            nacks_received,
            nack_seqs_aggregated,
            nacks_sent_upstream,
            nack_seqs_sent_upstream,
            ncfs_sent,
            ncfs_received,
            retransmissions_forwarded,
            repairs_from_cache,
            cache_corrupt,
            mabs_received,
            mabs_sent,
            prunes,
            drops_malformed,
            drops_not_on_tree,
            drops_not_from_upstream,
            retransmit_unrequested,
            nack_table_full,
            tree_table_full,
            drops_table_full,
            fanout_overflow,
            repair_queue_full,
            nacks_below_trailing,
            nack_seqs_beyond_leading,
            nack_seqs_over_cap,
            repairs_held_off,
            trees_evicted,
            peer_table_full,
            mabs_implausible,
            mabs_clamped,
            data_implausible,
            spms_implausible,
        ]
    );
    for (group, p, s) in &r.servers {
        let prefix = format!("rmtp.server.{group}");
        fields!(out, prefix, p, [total, sent, acked]);
        out.push((format!("{prefix}.complete"), u64::from(p.complete)));
        out.push((format!("{prefix}.failed"), u64::from(p.failed.is_some())));
        fields!(
            out,
            prefix,
            s,
            [
                data_sent,
                data_bytes_sent,
                retransmissions,
                spms_sent,
                nacks_received,
                repairs_suppressed,
                nacks_out_of_window,
                repairs_over_budget,
                mabs_refused,
                window_stalls,
                mabs_received,
                rtt_samples,
                srtt_nanos,
                bytes_acked,
                malformed,
            ]
        );
    }
    for (sid, p, s) in &r.clients {
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
        fields!(
            out,
            prefix,
            s,
            [
                delivered_bytes,
                data_received,
                duplicates,
                crc_failures,
                nacks_sent,
                sequences_nacked,
                ncfs_received,
                repairs_received,
                beyond_window,
                malformed,
                spms_received,
                mabs_sent,
                data_before_shape,
                data_implausible,
                buffer_full,
                missing_full,
                spms_refused,
                shapes_replaced,
            ]
        );
    }
}
