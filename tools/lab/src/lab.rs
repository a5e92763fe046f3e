//! A lab of real `burghers` processes on loopback: a topology written with free ports, one
//! child process per node with its output in the lab's directory, their control sockets, and
//! a clean stop. `burghers demo` and the benchmarks' `multicast` scenario both run on it.

use crate::ctl_client;
use control::NodeAddr;
use control::rng::Rng;
use control::topology::{Faults, Timers, Topology};
use std::collections::BTreeMap;
use std::fs::File;
use std::io::Write;
use std::net::UdpSocket;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// The `burghers` subcommands that host a node, and so take `--engine`.
pub const HOSTING: [&str; 4] = ["node", "send", "recv", "demo"];

/// `args` of a `burghers` command with `--engine ENGINE` after a subcommand that hosts a node,
/// unless they name an engine already: how every harness passes on the engine it runs.
pub fn with_engine<'a>(args: &[&'a str], engine: &'a str) -> Vec<&'a str> {
    let mut all = args.to_vec();
    let hosting = args.first().is_some_and(|s| HOSTING.contains(s));
    if hosting && !args.contains(&"--engine") {
        all.splice(1..1, ["--engine", engine]);
    }
    all
}

/// Timers for a quick start that stay calm while a transfer keeps every core busy.
pub fn calm_timers() -> Timers {
    Timers {
        hello_interval: Duration::from_millis(200),
        dead_hellos: 15,
        lsp_retransmit: Duration::from_millis(200),
        former_probe_interval: Duration::from_millis(1000),
        gmp_refresh: Duration::from_millis(200),
        gmp_expire: Duration::from_millis(5000),
        rap_retry: Duration::from_millis(200),
    }
}

/// Children of the `burghers` executable `exe`, each with its output in `dir`.
pub struct Lab {
    dir: PathBuf,
    exe: PathBuf,
    /// The engine every hosting child runs (`--engine`).
    engine: String,
    verbose: u8,
    topology_path: PathBuf,
    children: BTreeMap<String, (Child, Option<ExitStatus>)>,
}

impl Lab {
    /// A lab in `dir` (which the caller owns) running `exe`, its nodes on `engine` (a name
    /// `--engine` takes); `verbose` adds that many `-v`.
    pub fn new(dir: &Path, exe: PathBuf, engine: &str, verbose: u8) -> Lab {
        Lab {
            dir: dir.to_path_buf(),
            exe,
            engine: engine.to_string(),
            verbose,
            topology_path: dir.join("topology.toml"),
            children: BTreeMap::new(),
        }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Writes `topology` with each node on a free loopback port, `loss` on every link (both
    /// directions) and `timers`; every child is started with it. Returns what was written.
    pub fn write_topology(
        &self,
        mut topology: Topology,
        loss: f64,
        timers: Timers,
    ) -> Result<Topology, String> {
        topology.network.timers = timers;
        // Bind them all at once so they are distinct, then let the nodes have them.
        let sockets: Vec<UdpSocket> = topology
            .nodes
            .iter()
            .map(|_| UdpSocket::bind("127.0.0.1:0"))
            .collect::<Result<_, _>>()
            .map_err(|e| format!("cannot find free loopback ports: {e}"))?;
        for (spec, s) in topology.nodes.iter_mut().zip(&sockets) {
            spec.socket = s
                .local_addr()
                .map_err(|e| format!("cannot find free loopback ports: {e}"))?;
        }
        drop(sockets);
        for link in &mut topology.links {
            link.faults = Faults {
                loss,
                ..Faults::default()
            };
        }
        std::fs::write(&self.topology_path, topology.to_toml())
            .map_err(|e| format!("cannot write the topology: {e}"))?;
        Ok(topology)
    }

    /// Starts `burghers ARGS --topology FILE` as `name` (a hosting subcommand on the lab's
    /// engine); its output goes to `name.out` and `name.err` (where a failure to start is
    /// written too).
    pub fn spawn(&mut self, name: &str, args: &[&str]) {
        let out = File::create(self.dir.join(format!("{name}.out")));
        let err = File::create(self.dir.join(format!("{name}.err")));
        let mut cmd = Command::new(&self.exe);
        cmd.args(with_engine(args, &self.engine))
            .arg("--topology")
            .arg(&self.topology_path)
            .env("TMPDIR", &self.dir)
            .stdin(Stdio::null())
            .stdout(out.map_or_else(|_| Stdio::null(), Stdio::from))
            .stderr(err.map_or_else(|_| Stdio::null(), Stdio::from));
        if self.verbose > 0 {
            cmd.arg(format!("-{}", "v".repeat(usize::from(self.verbose))));
        }
        match cmd.spawn() {
            Ok(child) => {
                self.children.insert(name.to_string(), (child, None));
            }
            Err(e) => {
                let _ = std::fs::write(
                    self.dir.join(format!("{name}.err")),
                    format!("cannot start {}: {e}", self.exe.display()),
                );
            }
        }
    }

    /// The exit status of a child that has ended.
    pub fn exited(&mut self, name: &str) -> Option<ExitStatus> {
        let (child, status) = self.children.get_mut(name)?;
        if status.is_none() {
            *status = child.try_wait().ok().flatten();
        }
        *status
    }

    /// An error if a process ended while it should be running.
    pub fn check_alive(&mut self) -> Result<(), String> {
        let names: Vec<String> = self.children.keys().cloned().collect();
        for name in names {
            if let Some(status) = self.exited(&name) {
                return Err(format!(
                    "{name} ended early ({status}): {}",
                    self.last_error(&name)
                ));
            }
        }
        Ok(())
    }

    /// Whether every one of `nodes` answers on its control socket.
    pub fn all_up(&self, topology: &Topology, nodes: &[u16]) -> bool {
        nodes.iter().all(|&n| self.ctl(topology, n, "info").is_ok())
    }

    /// One control request to node `node`.
    pub fn ctl(&self, topology: &Topology, node: u16, request: &str) -> Result<String, String> {
        let addr = NodeAddr::try_new(node).map_err(|e| e.to_string())?;
        let path = self.socket_of(topology, addr)?;
        ctl_client::request(&path, request, Duration::from_secs(5))
    }

    /// Where a child's control socket is: its default path under the lab's `$TMPDIR`.
    fn socket_of(&self, topology: &Topology, addr: NodeAddr) -> Result<PathBuf, String> {
        let port = topology
            .node(addr)
            .map(|n| n.socket.port())
            .ok_or("no such node")?;
        Ok(self
            .dir
            .join("burghers")
            .join(format!("node-{addr}-{port}.sock")))
    }

    pub fn stdout(&self, name: &str) -> String {
        std::fs::read_to_string(self.dir.join(format!("{name}.out"))).unwrap_or_default()
    }

    pub fn stderr(&self, name: &str) -> String {
        std::fs::read_to_string(self.dir.join(format!("{name}.err"))).unwrap_or_default()
    }

    /// The last line a child wrote on standard error.
    pub fn last_error(&self, name: &str) -> String {
        self.stderr(name)
            .lines()
            .last()
            .unwrap_or("no output")
            .to_string()
    }

    /// Stops every child: a clean `ctl stop` first, SIGKILL for any still running after a
    /// grace period; waits for each (so that its resource usage is the parent's to read).
    pub fn stop_all(&mut self) {
        let topology = Topology::load(&self.topology_path).ok();
        let names: Vec<String> = self.children.keys().cloned().collect();
        for name in &names {
            if self.exited(name).is_none()
                && let Some(t) = &topology
                && let Some(addr) = name
                    .trim_start_matches(|c: char| c.is_ascii_alphabetic())
                    .parse::<u16>()
                    .ok()
                    .and_then(NodeAddr::new)
                && let Ok(path) = self.socket_of(t, addr)
            {
                let _ = ctl_client::request(&path, "stop", Duration::from_secs(2));
            }
        }
        let grace = Instant::now() + Duration::from_secs(5);
        for name in &names {
            while self.exited(name).is_none() && Instant::now() < grace {
                std::thread::sleep(Duration::from_millis(20));
            }
            if let Some((child, status)) = self.children.get_mut(name)
                && status.is_none()
            {
                let _ = child.kill();
                *status = child.wait().ok();
            }
        }
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        self.stop_all();
    }
}

/// `name value` lines (a `ctl stats` reply) -> one value; 0 if absent.
pub fn counter(stats: &str, name: &str) -> u64 {
    stats
        .lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
        .unwrap_or(0)
}

/// The `summary: key=value ...` line a `send` or `recv` prints last.
pub fn summary_of(stdout: &str) -> BTreeMap<String, String> {
    stdout
        .lines()
        .rev()
        .find_map(|l| l.strip_prefix("summary: "))
        .map(|s| {
            s.split_whitespace()
                .filter_map(|kv| kv.split_once('='))
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        })
        .unwrap_or_default()
}

/// Writes `size` seeded random bytes to `path`; returns their BLAKE3.
pub fn write_random(path: &Path, size: u64, seed: u64) -> Result<[u8; 32], String> {
    let io = |e: std::io::Error| format!("cannot write {}: {e}", path.display());
    let mut file = std::io::BufWriter::new(File::create(path).map_err(io)?);
    let mut rng = Rng::new(seed);
    let mut hasher = blake3::Hasher::new();
    let mut chunk = vec![0u8; 1 << 20];
    let mut left = size;
    while left > 0 {
        let n = usize::try_from(left.min(chunk.len() as u64)).unwrap_or(chunk.len());
        for word in chunk[..n].chunks_mut(8) {
            let r = rng.next_u64().to_le_bytes();
            word.copy_from_slice(&r[..word.len()]);
        }
        file.write_all(&chunk[..n]).map_err(io)?;
        hasher.update(&chunk[..n]);
        left -= n as u64;
    }
    file.flush().map_err(io)?;
    Ok(*hasher.finalize().as_bytes())
}

/// A file's length and BLAKE3, read in pieces.
pub fn file_hash(path: &Path) -> std::io::Result<(u64, [u8; 32])> {
    let mut hasher = blake3::Hasher::new();
    let size = std::io::copy(&mut File::open(path)?, &mut hasher)?;
    Ok((size, *hasher.finalize().as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_counters_and_summaries() {
        let stats = "rmtp.relay.nacks_received 12\nrmtp.relay.nacks_received_x 5\n";
        assert_eq!(counter(stats, "rmtp.relay.nacks_received"), 12);
        assert_eq!(counter(stats, "rmtp.relay.mabs_sent"), 0);
        let out = "received x\nsummary: state=complete bytes=10 seconds=1.500\n";
        let s = summary_of(out);
        assert_eq!(s["state"], "complete");
        assert_eq!(s["seconds"], "1.500");
        assert!(summary_of("no summary here").is_empty());
    }

    #[test]
    fn hosting_commands_get_the_engine_once() {
        assert_eq!(
            with_engine(&["node", "--addr", "1"], "threaded"),
            ["node", "--engine", "threaded", "--addr", "1"]
        );
        assert_eq!(
            with_engine(&["send", "f", "--engine", "other"], "threaded"),
            ["send", "f", "--engine", "other"]
        );
        assert_eq!(with_engine(&["ctl", "info"], "threaded"), ["ctl", "info"]);
        assert!(with_engine(&[], "threaded").is_empty());
    }

    #[test]
    fn random_files_are_seeded() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (dir.path().join("a"), dir.path().join("b"));
        let ha = write_random(&a, 100_003, 5).unwrap();
        assert_eq!(write_random(&b, 100_003, 5).unwrap(), ha);
        assert_eq!(std::fs::metadata(&a).unwrap().len(), 100_003);
        assert_eq!(file_hash(&a).unwrap(), (100_003, ha));
        assert_ne!(write_random(&b, 100_003, 6).unwrap(), ha);
    }
}
