//! The `name value` lines of the protocol cores' counters, shared by every engine's stats
//! (`ctl stats` reads them), so a counter has one name whatever the engine.

use crate::garbler::{DelayStats, GarblerStats};
use crate::rmtp::RelayStats;
use control::NodeAddr;
use control::drp::DrpStats;
use control::gmp::GmpStats;
use control::rap::{RapClientStats, RapServerStats};

/// Pushes `prefix.field` lines for the listed fields of a stats struct.
macro_rules! fields {
    ($out:ident, $prefix:expr, $s:expr, [$($f:ident),* $(,)?]) => {
        $( $out.push((format!("{}.{}", $prefix, stringify!($f)), $s.$f)); )*
    };
}

pub(crate) use fields;

/// `drp.*`, `gmp.*`, `rap_server.<sid>.*` and `rap_client.*`.
pub(crate) fn control_plane_lines(
    out: &mut Vec<(String, u64)>,
    drp: &DrpStats,
    gmp: &GmpStats,
    rap_servers: &[(u16, &RapServerStats)],
    rap_client: &RapClientStats,
) {
    let d = drp;
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
    let g = gmp;
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
    for (sid, s) in rap_servers {
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
    let c = rap_client;
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
}

/// `garbler.<neighbour>.*` for each direction that garbled anything, and `garbler.delay.*`.
pub(crate) fn garbler_lines(
    out: &mut Vec<(String, u64)>,
    garbler: &[(NodeAddr, GarblerStats)],
    delay_line: &DelayStats,
) {
    for (n, s) in garbler {
        for (name, v) in s.fields() {
            out.push((format!("garbler.{n}.{name}"), v));
        }
    }
    for (name, v) in delay_line.fields() {
        out.push((format!("garbler.delay.{name}"), v));
    }
}

/// `rmtp.relay.*`.
pub(crate) fn relay_lines(out: &mut Vec<(String, u64)>, relay: &RelayStats) {
    let s = relay;
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
            cache_copies_asked_again,
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
            mab_completions_held,
            upstream_rtt_samples,
            data_implausible,
            spms_implausible,
        ]
    );
}
