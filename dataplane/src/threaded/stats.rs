//! A snapshot of every counter of a threaded node, printable as `name value` lines.

use super::buffer::BufferStats;
use super::counters::DnpStats;
use super::rmtp::RmtpStats;
use crate::garbler::{DelayStats, GarblerStats};
use crate::host::lines::{
    control_plane_lines, garbler_lines, push_fields, relay_lines, transfer_lines,
};
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
            push_fields(&mut out, &format!("buffer.{buf}"), s.fields());
        }
        let rap_servers: Vec<(u16, &RapServerStats)> =
            self.rap_servers.iter().map(|(sid, s)| (*sid, s)).collect();
        control_plane_lines(
            &mut out,
            &self.drp,
            &self.gmp,
            &rap_servers,
            &self.rap_client,
        );
        garbler_lines(&mut out, &self.garbler, &self.delay_line);
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

/// `rmtp.middle.*` (the middle-layer thread), `rmtp.relay.*` (its core), then each local
/// transfer's lines.
fn rmtp_lines(out: &mut Vec<(String, u64)>, r: &RmtpStats) {
    push_fields(out, "rmtp.middle", r.middle.fields());
    relay_lines(out, &r.relay);
    transfer_lines(out, &r.servers, &r.clients);
}
