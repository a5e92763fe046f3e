//! The control protocol's server side: one request line in, a status line and a body out.
//!
//! Requests are words separated by spaces; the first names the command. The reply's first line
//! is `ok` or `error <message>`; the body follows (see `docs/CLI.md`).

use crate::args::{parse_group, parse_millis, parse_node, parse_probability};
use crate::shutdown::Shutdown;
use control::NodeAddr;
use control::topology::Faults;
use dataplane::host::{RunningNode, counter};
use std::fmt::Write as _;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The longest `services` wait a client may ask for.
const MAX_SERVICES_WAIT: Duration = Duration::from_secs(60);

/// Something hosted next to the node (a sender, a receiver) that reports a line of progress
/// to `ctl transfers`.
pub type Reporter = Box<dyn Fn() -> String + Send + Sync>;

/// What a control request can see and change.
pub struct Handler {
    pub node: Arc<dyn RunningNode>,
    pub shutdown: Shutdown,
    pub reporters: Mutex<Vec<Reporter>>,
    /// The node's neighbours in its topology file (live DRP neighbours count too).
    file_neighbours: Vec<NodeAddr>,
}

impl Handler {
    pub fn new(
        node: Arc<dyn RunningNode>,
        shutdown: Shutdown,
        file_neighbours: Vec<NodeAddr>,
    ) -> Handler {
        Handler {
            node,
            shutdown,
            reporters: Mutex::new(Vec::new()),
            file_neighbours,
        }
    }

    /// The reply to one request line: `Ok(body)` or `Err(one-line message)`.
    pub fn handle(&self, line: &str) -> Result<String, String> {
        let words: Vec<&str> = line.split_whitespace().collect();
        let Some((&command, rest)) = words.split_first() else {
            return Err("empty request".into());
        };
        match command {
            "info" => no_args(rest).map(|()| self.info()),
            "routes" => no_args(rest).map(|()| self.node.routes().to_string()),
            "neighbours" => no_args(rest).map(|()| {
                self.node
                    .neighbours()
                    .iter()
                    .map(|n| format!("{n}\n"))
                    .collect()
            }),
            "groups" => no_args(rest).map(|()| self.groups()),
            "stats" => self.stats(rest),
            "garble" => self.garble(rest),
            "join" | "leave" => self.membership(command == "join", rest),
            "services" => self.services(rest),
            "transfers" => no_args(rest).map(|()| self.transfers()),
            "stop" => no_args(rest).map(|()| {
                self.shutdown.raise("ctl stop");
                format!("node {} stopping\n", self.node.addr())
            }),
            other => Err(format!(
                "unknown command {other:?} (info, routes, neighbours, groups, stats, garble, join, leave, services, transfers, stop)"
            )),
        }
    }

    fn info(&self) -> String {
        let n = &self.node;
        let stats = n.stats();
        let neighbours: Vec<String> = n.neighbours().iter().map(|a| a.to_string()).collect();
        format!(
            "node {}\nsocket {}\nengine {}\npid {}\nuptime_ms {}\nneighbours {}\nroutes {}\ntrees {}\n",
            n.addr(),
            n.local_addr(),
            n.engine(),
            std::process::id(),
            counter(&stats, "node.uptime_ms").unwrap_or(0),
            neighbours.join(" "),
            n.routes().len(),
            n.multicast().entries().len(),
        )
    }

    fn groups(&self) -> String {
        let table = self.node.multicast();
        let entries = table.entries();
        let mut out = format!(
            "node {}: {} tree{}\n",
            self.node.addr(),
            entries.len(),
            if entries.len() == 1 { "" } else { "s" }
        );
        let list = |v: Vec<String>| {
            if v.is_empty() {
                "-".to_string()
            } else {
                v.join(",")
            }
        };
        for e in entries {
            let _ = writeln!(
                out,
                "  {} sender {} upstream {} downstream {} local {}",
                e.group,
                e.sender,
                e.upstream.map_or("-".to_string(), |u| u.to_string()),
                list(e.downstream.iter().map(|d| d.to_string()).collect()),
                list(e.local_members.iter().map(|s| s.to_string()).collect()),
            );
        }
        out
    }

    fn stats(&self, rest: &[&str]) -> Result<String, String> {
        let prefix = match rest {
            [] => "",
            [p] => p,
            _ => return Err("stats takes at most one counter-name prefix".into()),
        };
        let mut out = String::new();
        for (name, value) in self.node.stats() {
            if name.starts_with(prefix) {
                let _ = writeln!(out, "{name} {value}");
            }
        }
        if out.is_empty() {
            return Err(format!("no counter starts with {prefix:?}"));
        }
        Ok(out)
    }

    /// `garble NEIGHBOUR [clear] [loss=P] [corrupt=P] [duplicate=P] [reorder=P] [delay_ms=D]
    /// [jitter_ms=D] [down=true|false]`: changes what this node does to packets it sends to
    /// NEIGHBOUR (unnamed settings keep their value, or go back to none after `clear`) and
    /// replies with the settings now in force.
    fn garble(&self, rest: &[&str]) -> Result<String, String> {
        let Some((to, settings)) = rest.split_first() else {
            return Err("garble needs a neighbour".into());
        };
        let to = parse_node(to)?;
        let no_link = || format!("node {} has no link to node {to}", self.node.addr());
        // Every node of the file has a socket address, but only a neighbour's link carries
        // anything from here.
        if !self.file_neighbours.contains(&to) && !self.node.neighbours().contains(&to) {
            return Err(no_link());
        }
        let mut faults = self.node.faults(to).ok_or_else(no_link)?;
        for setting in settings {
            if *setting == "clear" {
                faults = Faults::default();
                continue;
            }
            let (key, value) = setting
                .split_once('=')
                .ok_or_else(|| format!("expected key=value, got {setting:?}"))?;
            match key {
                "loss" => faults.loss = parse_probability(value)?,
                "corrupt" => faults.corrupt = parse_probability(value)?,
                "duplicate" => faults.duplicate = parse_probability(value)?,
                "reorder" => faults.reorder = parse_probability(value)?,
                "delay_ms" => faults.delay = parse_millis(value)?,
                "jitter_ms" => faults.jitter = parse_millis(value)?,
                "down" => {
                    faults.down = value
                        .parse()
                        .map_err(|_| format!("down takes true or false, got {value:?}"))?
                }
                _ => return Err(format!("unknown garble setting {key:?}")),
            }
        }
        if !settings.is_empty() {
            self.node
                .set_faults(to, faults)
                .map_err(|e| format!("cannot garble the link to node {to}: {e}"))?;
            tracing::info!(to = %to, faults = %describe(&faults), "link faults changed");
        }
        Ok(format!(
            "node {} -> {to}: {}\n",
            self.node.addr(),
            describe(&faults)
        ))
    }

    /// `join|leave GROUP SENDER SID`: a local client joins or leaves a multicast tree.
    fn membership(&self, join: bool, rest: &[&str]) -> Result<String, String> {
        let [group, sender, sid] = rest else {
            return Err("join and leave take GROUP SENDER SID".into());
        };
        let group = parse_group(group)?;
        let sender = parse_node(sender)?;
        let sid: u16 = sid
            .parse()
            .map_err(|_| format!("expected a service id (0..65535), got {sid:?}"))?;
        let result = if join {
            self.node.subscribe(group, sender, sid)
        } else {
            self.node.unsubscribe(group, sender, sid)
        };
        result.map_err(|e| format!("client {sid} on node {}: {e}", self.node.addr()))?;
        Ok(format!(
            "node {} {} {group} sender {sender} as client {sid}\n",
            self.node.addr(),
            if join { "joined" } else { "left" }
        ))
    }

    /// `services NODE SID WAIT_MS`: asks NODE's RAP server SID for what it announces.
    fn services(&self, rest: &[&str]) -> Result<String, String> {
        let [server, sid, wait] = rest else {
            return Err("services takes NODE SID WAIT_MS".into());
        };
        let server: NodeAddr = parse_node(server)?;
        let sid: u16 = sid
            .parse()
            .map_err(|_| format!("expected a service id (0..65535), got {sid:?}"))?;
        let wait = parse_millis(wait)?.min(MAX_SERVICES_WAIT);
        let list = self
            .node
            .request_services(server, sid, wait)
            .map_err(|e| format!("node {server} service {sid}: {e}"))?;
        let mut out = format!(
            "node {server} announces {} service{}\n",
            list.len(),
            if list.len() == 1 { "" } else { "s" }
        );
        for e in &list {
            let hash: String = e.hash.iter().map(|b| format!("{b:02x}")).collect();
            let _ = writeln!(
                out,
                "  {} sender {} size {} segment {} blake3 {hash} name {}",
                e.group, e.sender, e.size, e.segment_size, e.name
            );
        }
        Ok(out)
    }

    fn transfers(&self) -> String {
        let reporters = self.reporters.lock().unwrap_or_else(|p| p.into_inner());
        let mut out = format!("{} transfer(s)\n", reporters.len());
        for r in reporters.iter() {
            let _ = writeln!(out, "  {}", r());
        }
        out
    }
}

fn no_args(rest: &[&str]) -> Result<(), String> {
    match rest {
        [] => Ok(()),
        _ => Err(format!("unexpected arguments: {}", rest.join(" "))),
    }
}

/// `loss 0.05 corrupt 0 duplicate 0 reorder 0 delay_ms 0 jitter_ms 0 up`.
pub fn describe(f: &Faults) -> String {
    format!(
        "loss {} corrupt {} duplicate {} reorder {} delay_ms {} jitter_ms {} {}",
        f.loss,
        f.corrupt,
        f.duplicate,
        f.reorder,
        f.delay.as_secs_f64() * 1000.0,
        f.jitter.as_secs_f64() * 1000.0,
        if f.down { "down" } else { "up" }
    )
}
