//! Writing the topology file as TOML that `parse` reads back to an equal model.

use super::{Action, NetworkOptions, Topology};
use std::fmt::Write as _;
use std::time::Duration;

/// Milliseconds as TOML: an integer when whole, otherwise the shortest exact decimal.
pub(super) fn fmt_millis(d: Duration) -> String {
    let nanos = d.as_nanos();
    if nanos.is_multiple_of(1_000_000) {
        format!("{}", nanos / 1_000_000)
    } else {
        format!("{:?}", nanos as f64 / 1e6)
    }
}

impl Topology {
    /// The topology as TOML that [`Topology::from_toml_str`] reads back to an equal value
    /// (for any valid topology). Options equal to their defaults are left out.
    pub fn to_toml(&self) -> String {
        let mut s = String::new();
        // `write!` to a String cannot fail.
        let mut network = String::new();
        let def = NetworkOptions::default();
        let (t, dt) = (&self.network.timers, &def.timers);
        if self.network.mtu != def.mtu {
            let _ = writeln!(network, "mtu = {}", self.network.mtu);
        }
        let durations = [
            ("hello_interval_ms", t.hello_interval, dt.hello_interval),
            ("lsp_retransmit_ms", t.lsp_retransmit, dt.lsp_retransmit),
            (
                "former_probe_ms",
                t.former_probe_interval,
                dt.former_probe_interval,
            ),
            ("gmp_refresh_ms", t.gmp_refresh, dt.gmp_refresh),
            ("gmp_expire_ms", t.gmp_expire, dt.gmp_expire),
            ("rap_retry_ms", t.rap_retry, dt.rap_retry),
        ];
        for (name, v, d) in durations {
            if v != d {
                let _ = writeln!(network, "{name} = {}", fmt_millis(v));
            }
        }
        if t.dead_hellos != dt.dead_hellos {
            let _ = writeln!(network, "dead_hellos = {}", t.dead_hellos);
        }
        if !network.is_empty() {
            let _ = writeln!(s, "[network]\n{network}");
        }
        for n in &self.nodes {
            let _ = writeln!(
                s,
                "[[node]]\naddr = {}\nsocket = \"{}\"\n",
                n.addr, n.socket
            );
        }
        for l in &self.links {
            let _ = writeln!(s, "[[link]]\nnodes = [{}, {}]", l.a, l.b);
            let f = &l.faults;
            for (name, p) in [
                ("loss", f.loss),
                ("corrupt", f.corrupt),
                ("duplicate", f.duplicate),
                ("reorder", f.reorder),
            ] {
                if p != 0.0 {
                    let _ = writeln!(s, "{name} = {p:?}");
                }
            }
            if !f.delay.is_zero() {
                let _ = writeln!(s, "delay_ms = {}", fmt_millis(f.delay));
            }
            if !f.jitter.is_zero() {
                let _ = writeln!(s, "jitter_ms = {}", fmt_millis(f.jitter));
            }
            if f.down {
                let _ = writeln!(s, "down = true");
            }
            if let Some(rate) = f.rate {
                let _ = writeln!(s, "rate_mbit = {:?}", rate as f64 * 8.0 / 1e6);
            }
            if let Some(q) = f.queue_bytes {
                let _ = writeln!(s, "queue_bytes = {q}");
            }
            if !f.coalesce.is_zero() {
                let _ = writeln!(s, "coalesce_ms = {}", fmt_millis(f.coalesce));
            }
            s.push('\n');
        }
        for e in &self.schedule {
            let _ = writeln!(s, "[[event]]\nat_ms = {}", fmt_millis(e.at));
            let _ = match e.action {
                Action::LinkDown(a, b) => writeln!(s, "link_down = [{a}, {b}]"),
                Action::LinkUp(a, b) => writeln!(s, "link_up = [{a}, {b}]"),
                Action::NodeDown(n) => writeln!(s, "node_down = {n}"),
                Action::NodeUp(n) => writeln!(s, "node_up = {n}"),
            };
            s.push('\n');
        }
        // One trailing newline, not a blank line.
        while s.ends_with("\n\n") {
            s.pop();
        }
        s
    }
}
