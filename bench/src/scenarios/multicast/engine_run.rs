//! One transfer by real `burghers` processes of one engine (the lab passes `--engine NAME` to
//! each): `node` on the relays, `recv` on the receivers, `send` on node 1, on free loopback ports with the transfer's loss on every link
//! (the lab `burghers demo` runs on). Counters come from the processes' summaries and the
//! relays' `ctl stats`.

use super::{Figures, Layout, SENDER, Transfer};
use crate::machine::children_cpu;
use crate::runner::{Sample, Stop, System};
use crate::scenarios::Engine;
use burghers_lab::lab::{Lab, calm_timers, counter, summary_of};
use std::io;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

const FILE_NAME: &str = "payload.bin";
const GROUP: &str = "1";
/// Set, a failed transfer's folder (topology, every process's output) is kept and printed.
pub const KEEP_FAILED: &str = "BENCH_KEEP_FAILED";
/// How long the relays and receivers may take to answer on their control sockets.
const START_TIMEOUT: Duration = Duration::from_secs(20);

/// The `burghers` executable: `$BURGHERS_BIN`, else the one beside this benchmark (same
/// profile), rebuilt first when this benchmark runs under cargo so that it is not stale.
pub fn locate() -> io::Result<PathBuf> {
    if let Some(path) = std::env::var_os("BURGHERS_BIN") {
        return Ok(PathBuf::from(path));
    }
    let me = std::env::current_exe()?;
    let dir = me
        .parent()
        .ok_or_else(|| io::Error::other("the bench executable has no folder"))?;
    // Test binaries live one level down, in deps/.
    let dir = if dir.ends_with("deps") {
        dir.parent().unwrap_or(dir)
    } else {
        dir
    };
    if let Some(cargo) = std::env::var_os("CARGO") {
        let release = dir.file_name().is_some_and(|n| n == "release");
        let mut build = Command::new(cargo);
        build.args(["build", "--quiet", "-p", "burghers", "--bin", "burghers"]);
        if release {
            build.arg("--release");
        }
        eprintln!("  building the burghers executable (cargo build -p burghers) …");
        let status = build.status()?;
        if !status.success() {
            return Err(io::Error::other(
                "cargo build -p burghers failed: the multicast scenario needs the burghers executable",
            ));
        }
    }
    let exe = dir.join("burghers");
    if exe.is_file() {
        Ok(exe)
    } else {
        Err(io::Error::new(
            io::ErrorKind::NotFound,
            format!(
                "no burghers executable at {}: build it with `cargo build --release -p burghers` (or set BURGHERS_BIN)",
                exe.display()
            ),
        ))
    }
}

pub struct Run<'a> {
    pub engine: Engine,
    pub exe: PathBuf,
    pub transfer: &'a Transfer,
    pub stop: Stop,
}

impl System for Run<'_> {
    fn name(&self) -> String {
        self.engine.name().to_string()
    }

    fn limit(&self) -> Option<String> {
        Some(super::fanout::NAME.to_string())
    }

    fn measure(&mut self) -> io::Result<Sample> {
        let dir = tempfile::Builder::new()
            .prefix("bench-multicast-burghers-")
            .tempdir()?;
        let mut lab = Lab::new(dir.path(), self.exe.clone(), self.engine.name(), 0);
        let cpu_before = children_cpu();
        let outcome = self
            .start(&mut lab)
            .and_then(|network| self.transfer(&mut lab, &network));
        lab.stop_all();
        let cpu = children_cpu().saturating_sub(cpu_before);
        if outcome.is_err() && std::env::var_os(KEEP_FAILED).is_some() {
            eprint!("(kept {}) ", dir.keep().display());
        }
        let mut figures = outcome?;
        figures.cpu = cpu;
        Ok(figures.sample(self.transfer))
    }
}

/// A started network: its topology as written and its layout.
struct Network {
    layout: Layout,
    topology: control::topology::Topology,
}

impl Run<'_> {
    /// Starts the relays and the receivers and waits until each answers on its control
    /// socket.
    fn start(&self, lab: &mut Lab) -> io::Result<Network> {
        let t = self.transfer;
        let layout = Layout::new(t.shape, t.receivers);
        let topology = lab
            .write_topology(layout.topology.clone(), t.loss, calm_timers())
            .map_err(io::Error::other)?;
        let deadline = Instant::now() + START_TIMEOUT;
        for r in &layout.relays {
            lab.spawn(&format!("node{r}"), &["node", "--addr", &r.to_string()]);
        }
        for l in &layout.receivers {
            let out = lab.dir().join(format!("node{l}"));
            lab.spawn(
                &format!("recv{l}"),
                &[
                    "recv",
                    "--addr",
                    &l.to_string(),
                    "--group",
                    GROUP,
                    "--sender",
                    &SENDER.to_string(),
                    "--name",
                    FILE_NAME,
                    "--out",
                    &out.display().to_string(),
                    "--sender-timeout-ms",
                    "30000",
                    "--quiet",
                ],
            );
        }
        let others: Vec<u16> = layout
            .relays
            .iter()
            .chain(&layout.receivers)
            .copied()
            .collect();
        // Up once each has answered once.
        let mut silent = others.clone();
        loop {
            silent.retain(|&n| lab.ctl(&topology, n, "info").is_err());
            if silent.is_empty() {
                return Ok(Network { layout, topology });
            }
            let nodes: Vec<String> = silent.iter().map(|n| n.to_string()).collect();
            let waiting = format!("waiting for nodes {} to answer", nodes.join(", "));
            lab.check_alive()
                .map_err(|e| io::Error::other(format!("{e} (while {waiting})")))?;
            self.wait(deadline, &waiting)?;
        }
    }

    /// Starts the sender, waits for every process to finish and checks every copy.
    fn transfer(&self, lab: &mut Lab, network: &Network) -> io::Result<Figures> {
        let t = self.transfer;
        let (layout, topology) = (&network.layout, &network.topology);
        let deadline = Instant::now() + t.deadline();
        let branches: Vec<String> = layout.branches.iter().map(|b| b.to_string()).collect();
        t.warm_pages()?;
        lab.spawn(
            "send1",
            &[
                "send",
                &t.source.display().to_string(),
                "--addr",
                &SENDER.to_string(),
                "--group",
                GROUP,
                "--name",
                FILE_NAME,
                "--wait-branches",
                &branches.join(","),
                "--linger-ms",
                "500",
                "--quiet",
            ],
        );
        let mut processes: Vec<String> = layout
            .receivers
            .iter()
            .map(|l| format!("recv{l}"))
            .collect();
        processes.push("send1".into());
        while processes.iter().any(|p| lab.exited(p).is_none()) {
            self.wait(deadline, "moving the file")?;
        }
        for p in &processes {
            if let Some(status) = lab.exited(p).filter(|s| !s.success()) {
                return Err(io::Error::other(format!(
                    "{p} failed ({status}): {}",
                    lab.last_error(p)
                )));
            }
        }
        // The relays' counters, while they still run.
        let relay_stats: Vec<String> = layout
            .relays
            .iter()
            .map(|&r| {
                lab.ctl(topology, r, "stats rmtp.relay.")
                    .map_err(io::Error::other)
            })
            .collect::<io::Result<_>>()?;
        for l in &layout.receivers {
            t.verify(&lab.dir().join(format!("node{l}")).join(FILE_NAME))?;
        }
        Ok(figures(lab, layout, &relay_stats, t))
    }

    fn wait(&self, deadline: Instant, what: &str) -> io::Result<()> {
        if self.stop.requested() {
            return Err(io::Error::other(format!("interrupted while {what}")));
        }
        if Instant::now() >= deadline {
            return Err(io::Error::other(format!("gave up while {what}")));
        }
        std::thread::sleep(Duration::from_millis(20));
        Ok(())
    }
}

/// The figures of a finished transfer, from the processes' summary lines and relay counters.
fn figures(lab: &Lab, layout: &Layout, relay_stats: &[String], t: &Transfer) -> Figures {
    let number = |summary: &std::collections::BTreeMap<String, String>, key: &str| {
        summary
            .get(key)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    let receivers: Vec<_> = layout
        .receivers
        .iter()
        .map(|l| summary_of(&lab.stdout(&format!("recv{l}"))))
        .collect();
    let sender = summary_of(&lab.stdout("send1"));
    let slowest = receivers
        .iter()
        .map(|s| number(s, "seconds"))
        .fold(0.0, f64::max);
    let receiver_nacks: f64 = receivers.iter().map(|s| number(s, "nacks")).sum();
    // The longest any receiver's verified copy took to sync to the disk before its rename.
    let final_sync = receivers
        .iter()
        .map(|s| number(s, "sync_seconds"))
        .fold(0.0, f64::max);
    let repairs: f64 = receivers.iter().map(|s| number(s, "repairs")).sum();
    let sender_nacks = number(&sender, "nacks");
    let relay = |name: &str| -> f64 {
        relay_stats
            .iter()
            .map(|s| counter(s, &format!("rmtp.relay.{name}")))
            .sum::<u64>() as f64
    };
    let segment = control::wire::rmtp::max_payload(layout.topology.network.mtu).max(1) as u64;
    let segments = t.size.div_ceil(segment) as f64 * t.receivers as f64;
    Figures {
        slowest_receiver: Duration::from_secs_f64(slowest),
        last_copy: Duration::from_secs_f64(number(&sender, "seconds")),
        cpu: Duration::ZERO,
        repair_share: Some(repairs / segments),
        nack_aggregation: (sender_nacks > 0.0).then(|| receiver_nacks / sender_nacks),
        counters: vec![
            ("receiver_nacks", receiver_nacks),
            ("final_sync_s", final_sync),
            ("sender_nacks", sender_nacks),
            ("sender_retransmissions", number(&sender, "retransmissions")),
            ("relay_repairs_from_cache", relay("repairs_from_cache")),
        ],
    }
}
