//! The end-to-end harness: a `Lab` is a temporary directory with a topology file on free
//! loopback ports, and the real `burghers` processes started from it. Every child gets the
//! directory as `$TMPDIR`, so its control socket (and nothing else) lands there; its standard
//! output and error go to files in it, shown when a wait fails. Dropping the lab (also while a
//! failed test unwinds) stops every child still running: SIGTERM, then SIGKILL after a grace
//! period, and a wait for each.

#![allow(dead_code)]

use burghers_lab::lab::with_engine;
use control::NodeAddr;
use control::drp::RoutingTable;
use control::topology::{Timers, Topology};
use std::collections::BTreeMap;
use std::fs::File;
use std::net::UdpSocket;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_burghers");

/// `engine_tests!(a, b)`: for each test function `a(engine: &'static str)`, a module `a` with
/// one `#[test]` per engine (`a::threaded`, ...) that runs it on that engine, so each engine
/// passes or fails on its own and the test's name says which. The list in the first arm is the
/// one list of engines the end-to-end tests run on: a new engine is a new name there.
macro_rules! engine_tests {
    ($($test:ident),+ $(,)?) => {
        $( $crate::common::engine_tests!(@each $test [threaded, uring]); )+
    };
    (@each $test:ident [$($engine:ident),+]) => {
        mod $test {
            $(
                #[test]
                fn $engine() {
                    super::$test(stringify!($engine))
                }
            )+
        }
    };
}
pub(crate) use engine_tests;

/// A generous bound for anything that takes well under a second on an idle machine.
pub const LIMIT: Duration = Duration::from_secs(30);

pub fn n(v: u16) -> NodeAddr {
    NodeAddr::new(v).expect("node address")
}

/// Protocol timers short enough for a quick suite, with a dead interval long enough that a
/// busy two-core machine running several networks at once does not make neighbours flap.
pub fn fast_timers() -> Timers {
    Timers {
        hello_interval: Duration::from_millis(100),
        dead_hellos: 10,
        lsp_retransmit: Duration::from_millis(200),
        former_probe_interval: Duration::from_millis(300),
        gmp_refresh: Duration::from_millis(200),
        gmp_expire: Duration::from_millis(3_000),
        rap_retry: Duration::from_millis(200),
    }
}

/// `count` UDP ports on 127.0.0.1 that were free a moment ago: all bound at once (so they are
/// distinct), then released for the nodes to bind.
pub fn free_ports(count: usize) -> Vec<u16> {
    let sockets: Vec<UdpSocket> = (0..count)
        .map(|_| UdpSocket::bind("127.0.0.1:0").expect("bind a loopback socket"))
        .collect();
    sockets
        .iter()
        .map(|s| s.local_addr().expect("local address").port())
        .collect()
}

/// One process the lab started.
pub struct Proc {
    pub name: String,
    child: Child,
    status: Option<ExitStatus>,
}

pub struct Lab {
    /// The engine every node process of the lab runs (`--engine`).
    pub engine: &'static str,
    pub dir: tempfile::TempDir,
    pub topology: Topology,
    pub topology_path: PathBuf,
    /// Whether each node reads only its own links (`node-<addr>.toml`), so that it must
    /// learn the rest of the network by DRP flooding.
    local_files: bool,
    procs: Vec<Proc>,
}

impl Lab {
    /// Writes `topology` with fast timers and free ports into a new temporary directory; every
    /// node process started from it runs `engine`.
    pub fn new(mut topology: Topology, engine: &'static str) -> Lab {
        topology.network.timers = fast_timers();
        let ports = free_ports(topology.nodes.len());
        for (spec, port) in topology.nodes.iter_mut().zip(ports) {
            spec.socket = std::net::SocketAddr::from(([127, 0, 0, 1], port));
        }
        let dir = tempfile::Builder::new()
            .prefix("burghers-e2e-")
            .tempdir()
            .expect("create a temporary directory");
        let topology_path = dir.path().join("net.toml");
        std::fs::write(&topology_path, topology.to_toml()).expect("write the topology");
        Lab {
            engine,
            dir,
            topology,
            topology_path,
            local_files: false,
            procs: Vec::new(),
        }
    }

    /// From now on each node started reads a file with only itself, its neighbours and its
    /// links (`ctl` still finds every socket through the full file).
    pub fn use_local_files(&mut self) {
        for spec in &self.topology.nodes {
            let own = self.topology.local_view(spec.addr);
            std::fs::write(
                self.path(&format!("node-{}.toml", spec.addr)),
                own.to_toml(),
            )
            .expect("write a node's topology");
        }
        self.local_files = true;
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// A `burghers` command with the lab's environment.
    pub fn command(&self) -> Command {
        let mut c = Command::new(BIN);
        c.env("TMPDIR", self.dir.path())
            .env_remove("RUST_BACKTRACE")
            .current_dir(self.dir.path());
        c
    }

    /// Starts `burghers ARGS` in the background as `name` (its output in `name.out` and
    /// `name.err`); returns its index. A hosting subcommand runs the lab's engine.
    pub fn spawn(&mut self, name: &str, args: &[&str]) -> usize {
        let out = File::create(self.path(&format!("{name}.out"))).expect("create a log file");
        let err = File::create(self.path(&format!("{name}.err"))).expect("create a log file");
        let child = self
            .command()
            .args(with_engine(args, self.engine))
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .expect("start burghers");
        self.procs.push(Proc {
            name: name.to_string(),
            child,
            status: None,
        });
        self.procs.len() - 1
    }

    fn topology_arg(&self) -> String {
        self.topology_path.display().to_string()
    }

    /// Starts `burghers node` for `addr` (with `-v`, so its log says what happened).
    pub fn spawn_node(&mut self, addr: u16) -> usize {
        let topo = if self.local_files {
            self.path(&format!("node-{addr}.toml"))
                .display()
                .to_string()
        } else {
            self.topology_arg()
        };
        let a = addr.to_string();
        self.spawn(
            &format!("node{addr}"),
            &["node", "-v", "--topology", &topo, "--addr", &a],
        )
    }

    /// Starts a node process for every node of the topology and waits until each answers
    /// on its control socket.
    pub fn start_all_nodes(&mut self) -> Vec<usize> {
        let addrs: Vec<u16> = self.topology.nodes.iter().map(|s| s.addr.get()).collect();
        let ids = addrs.iter().map(|&a| self.spawn_node(a)).collect();
        for a in addrs {
            self.wait_until(
                &format!("node {a} answers on its control socket"),
                LIMIT,
                |lab| lab.ctl(a, &["info"]).is_ok(),
            );
        }
        ids
    }

    /// Runs `burghers ARGS` to completion (a hosting subcommand on the lab's engine).
    pub fn run(&self, args: &[&str]) -> Output {
        self.command()
            .args(with_engine(args, self.engine))
            .stdin(Stdio::null())
            .output()
            .expect("run burghers")
    }

    /// `burghers ctl --topology FILE --node NODE ARGS`: its standard output, or its error line.
    pub fn ctl(&self, node: u16, args: &[&str]) -> Result<String, String> {
        let topo = self.topology_arg();
        let node = node.to_string();
        let mut all = vec!["ctl", "--topology", &topo, "--node", &node];
        all.extend_from_slice(args);
        let out = self.run(&all);
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).trim().to_string())
        }
    }

    /// `ctl` that must succeed.
    pub fn ctl_ok(&self, node: u16, args: &[&str]) -> String {
        self.ctl(node, args).unwrap_or_else(|e| {
            panic!(
                "burghers ctl --node {node} {}: {e}\n{}",
                args.join(" "),
                self.logs()
            )
        })
    }

    /// Node `node`'s routing table as destination -> (next hop, hops).
    pub fn routes(&self, node: u16) -> Option<BTreeMap<u16, (u16, u16)>> {
        self.ctl(node, &["routes"]).ok().map(|t| parse_routes(&t))
    }

    /// Node `node`'s counters by name.
    pub fn stats(&self, node: u16, prefix: &str) -> BTreeMap<String, u64> {
        let args: &[&str] = if prefix.is_empty() {
            &["stats"]
        } else {
            &["stats", prefix]
        };
        let text = self.ctl_ok(node, args);
        text.lines()
            .filter_map(|l| {
                let (name, value) = l.split_once(' ')?;
                Some((name.to_string(), value.trim().parse().ok()?))
            })
            .collect()
    }

    /// Whether every node in `nodes` has exactly the shortest-path routes over the links for
    /// which `link_up` holds.
    pub fn routes_are(&self, nodes: &[u16], link_up: impl Fn(NodeAddr, NodeAddr) -> bool) -> bool {
        let expected = self.topology.expected_routes(link_up);
        nodes.iter().all(|&a| {
            let Some(i) = self.topology.nodes.iter().position(|s| s.addr.get() == a) else {
                return false;
            };
            self.routes(a) == Some(table_map(&expected[i]))
        })
    }

    pub fn all_nodes(&self) -> Vec<u16> {
        self.topology.nodes.iter().map(|s| s.addr.get()).collect()
    }

    /// Polls `cond` every 100 ms until it holds (returns how long it took); panics with every
    /// child's log after `limit`.
    pub fn wait_until(
        &self,
        what: &str,
        limit: Duration,
        mut cond: impl FnMut(&Lab) -> bool,
    ) -> Duration {
        let start = Instant::now();
        loop {
            if cond(self) {
                return start.elapsed();
            }
            if start.elapsed() >= limit {
                panic!(
                    "timed out after {:.1}s waiting until {what}\n{}",
                    limit.as_secs_f64(),
                    self.logs()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    pub fn pid(&self, id: usize) -> u32 {
        self.procs[id].child.id()
    }

    /// Sends `signal` (`TERM`, `INT`, `KILL`) to child `id`, if it still runs.
    pub fn signal(&mut self, id: usize, signal: &str) {
        if self.procs[id].status.is_some() || self.try_status(id).is_some() {
            return;
        }
        let pid = self.pid(id).to_string();
        let _ = Command::new("kill")
            .args([&format!("-{signal}"), &pid])
            .status();
    }

    fn try_status(&mut self, id: usize) -> Option<ExitStatus> {
        let p = &mut self.procs[id];
        if p.status.is_none() {
            p.status = p.child.try_wait().ok().flatten();
        }
        p.status
    }

    /// Waits up to `limit` for child `id` to exit.
    pub fn wait_exit(&mut self, id: usize, limit: Duration) -> Option<ExitStatus> {
        let start = Instant::now();
        loop {
            if let Some(s) = self.try_status(id) {
                return Some(s);
            }
            if start.elapsed() >= limit {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Child `id`'s exit status, failing the test with the logs if it does not exit in time.
    pub fn expect_exit(&mut self, id: usize, limit: Duration) -> ExitStatus {
        match self.wait_exit(id, limit) {
            Some(s) => s,
            None => panic!(
                "{} did not exit within {:.1}s\n{}",
                self.procs[id].name,
                limit.as_secs_f64(),
                self.logs()
            ),
        }
    }

    pub fn stdout_of(&self, id: usize) -> String {
        std::fs::read_to_string(self.path(&format!("{}.out", self.procs[id].name)))
            .unwrap_or_default()
    }

    pub fn stderr_of(&self, id: usize) -> String {
        std::fs::read_to_string(self.path(&format!("{}.err", self.procs[id].name)))
            .unwrap_or_default()
    }

    /// The engine and the last lines each child wrote, for failure messages.
    pub fn logs(&self) -> String {
        let mut out = format!("---- engine {} ----\n", self.engine);
        for (id, p) in self.procs.iter().enumerate() {
            for (kind, text) in [("out", self.stdout_of(id)), ("err", self.stderr_of(id))] {
                let lines: Vec<&str> = text.lines().collect();
                let tail = &lines[lines.len().saturating_sub(15)..];
                if !tail.is_empty() {
                    out.push_str(&format!(
                        "---- {}.{kind} ----\n{}\n",
                        p.name,
                        tail.join("\n")
                    ));
                }
            }
        }
        out
    }

    /// Stops every child still running: SIGTERM, up to `grace` to exit, then SIGKILL.
    pub fn stop_all(&mut self, grace: Duration) {
        for id in 0..self.procs.len() {
            self.signal(id, "TERM");
        }
        let deadline = Instant::now() + grace;
        for id in 0..self.procs.len() {
            let left = deadline.saturating_duration_since(Instant::now());
            if self.wait_exit(id, left).is_none() {
                let _ = self.procs[id].child.kill();
                self.procs[id].status = self.procs[id].child.wait().ok();
            }
        }
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        self.stop_all(Duration::from_secs(5));
    }
}

/// Parses `ctl routes` output (`  DST via NEXT (H hops)` lines).
pub fn parse_routes(text: &str) -> BTreeMap<u16, (u16, u16)> {
    text.lines()
        .filter_map(|l| {
            let w: Vec<&str> = l.split_whitespace().collect();
            match w.as_slice() {
                [dst, "via", next, hops, _] => Some((
                    dst.parse().ok()?,
                    (
                        next.parse().ok()?,
                        hops.trim_start_matches('(').parse().ok()?,
                    ),
                )),
                _ => None,
            }
        })
        .collect()
}

pub fn table_map(t: &RoutingTable) -> BTreeMap<u16, (u16, u16)> {
    t.routes()
        .iter()
        .map(|r| (r.dst.get(), (r.next_hop.get(), r.hops)))
        .collect()
}

/// Whether `path` exists.
pub fn exists(path: &Path) -> bool {
    path.symlink_metadata().is_ok()
}

/// Transfer tests keep both cores busy: one at a time, so timers stay honest.
pub fn serial() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    LOCK.lock().unwrap_or_else(|p| p.into_inner())
}

/// `size` pseudo-random bytes (xorshift from `seed`) written to `path`.
pub fn write_random(path: &Path, size: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    let data: Vec<u8> = (0..size)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect();
    std::fs::write(path, &data).expect("write the source file");
    data
}

impl Lab {
    /// `burghers recv` on `addr` for group 1 from `sender`, into `out-<addr>/`, joining at once
    /// under `name` (or, with `None`, once the sender announces it over RAP); `extra`
    /// arguments appended.
    pub fn spawn_recv(
        &mut self,
        addr: u16,
        sender: u16,
        name: Option<&str>,
        extra: &[&str],
    ) -> usize {
        let topo = self.topology_arg();
        let out = self.path(&format!("out-{addr}")).display().to_string();
        let (a, s) = (addr.to_string(), sender.to_string());
        let mut args = vec![
            "recv",
            "-v",
            "--topology",
            &topo,
            "--addr",
            &a,
            "--group",
            "1",
            "--sender",
            &s,
            "--out",
            &out,
        ];
        if let Some(name) = name {
            args.extend_from_slice(&["--name", name]);
        }
        args.extend_from_slice(extra);
        self.spawn(&format!("recv{addr}"), &args)
    }

    /// `burghers send FILE` on `addr` to group 1; `extra` arguments appended.
    pub fn spawn_send(&mut self, addr: u16, file: &Path, extra: &[&str]) -> usize {
        let topo = self.topology_arg();
        let file = file.display().to_string();
        let a = addr.to_string();
        let mut args = vec![
            "send",
            "-v",
            &file,
            "--topology",
            &topo,
            "--addr",
            &a,
            "--group",
            "1",
        ];
        args.extend_from_slice(extra);
        self.spawn(&format!("send{addr}"), &args)
    }

    /// Bytes the receiver on `addr` has written so far (0 if it cannot be asked).
    pub fn delivered(&self, addr: u16) -> u64 {
        self.ctl(addr, &["stats", "rmtp.client.100.delivered"])
            .ok()
            .and_then(|t| t.split_whitespace().nth(1)?.parse().ok())
            .unwrap_or(0)
    }

    /// The receiver output directory of `addr`.
    pub fn out(&self, addr: u16) -> PathBuf {
        self.path(&format!("out-{addr}"))
    }
}
