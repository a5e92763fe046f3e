//! `burghers demo`: a real 7-node network on loopback, one process per node, moving a file
//! from the root to every leaf through lossy links, with every copy verified.

use crate::args::{parse_probability, parse_size};
use crate::host::Engine;
use crate::progress::{mib, rate};
use crate::shutdown::Shutdown;
use burghers_lab::lab::{Lab, calm_timers, counter, file_hash, summary_of, write_random};
use control::topology::build;
use dataplane::uring::UringNode;
use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::process::ExitStatus;
use std::time::{Duration, Instant};

const ROOT: u16 = 1;
const RELAYS: [u16; 2] = [2, 3];
const LEAVES: [u16; 4] = [4, 5, 6, 7];
const FILE_NAME: &str = "demo.bin";
const SID: u16 = 100;

#[derive(clap::Args)]
#[command(after_help = "\
Writes a topology for the 7-node binary tree on free loopback ports with the given loss on
every link, starts one `burghers` process per node (node 1 runs `send`, nodes 2 and 3 run
`node`, the leaves 4-7 run `recv`), multicasts a random file from the root to the four leaves,
checks every copy against the source's BLAKE3, prints a summary, stops every process and
removes its temporary directory. Exits 0 only if every copy is verified.

Examples:
  burghers demo
  burghers demo --size 8MiB --loss 0.05 --engine threaded
  burghers demo --keep -v          # keep the directory with every process's log")]
pub struct DemoArgs {
    /// Size of the random file.
    #[arg(long, value_name = "SIZE", default_value = "64MiB", value_parser = parse_size)]
    pub size: u64,
    /// Loss probability on every link (both directions).
    #[arg(long, value_name = "P", default_value = "0.02", value_parser = parse_probability)]
    pub loss: f64,
    /// Seed of the file's content and of the links' faults.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Give up after this many seconds.
    #[arg(long, value_name = "SECONDS", default_value_t = 600)]
    pub timeout: u64,
    /// Keep the temporary directory (topology, files, every process's output) and print it.
    #[arg(long)]
    pub keep: bool,
    /// The engine every node process runs.
    #[arg(long, value_enum, default_value_t = Engine::Uring)]
    pub engine: Engine,
}

pub fn run(args: DemoArgs, verbose: u8) -> Result<(), String> {
    let shutdown = Shutdown::install()?;
    let dir = tempfile::Builder::new()
        .prefix("burghers-demo-")
        .tempdir()
        .map_err(|e| format!("cannot create a temporary directory: {e}"))?;
    let exe =
        std::env::current_exe().map_err(|e| format!("cannot find the burghers executable: {e}"))?;
    let (engine, warning) = engine_to_run(args.engine, UringNode::probe);
    if let Some(warning) = warning {
        eprintln!("warning: {warning}");
    }
    let mut lab = Lab::new(dir.path(), exe, &engine.name(), verbose);
    let result = demo(&args, engine, &mut lab, &shutdown);
    lab.stop_all();
    if args.keep {
        let kept = dir.keep();
        println!("kept {}", kept.display());
    }
    result
}

/// The engine the demo's processes run: the one asked for, or the threaded engine when io_uring
/// cannot start here (`probe` says why), with the warning to print once.
fn engine_to_run(
    asked: Engine,
    probe: impl FnOnce() -> std::io::Result<()>,
) -> (Engine, Option<String>) {
    match asked {
        Engine::Threaded => (Engine::Threaded, None),
        Engine::Uring => match probe() {
            Ok(()) => (Engine::Uring, None),
            Err(e) => (
                Engine::Threaded,
                Some(format!(
                    "the uring engine cannot start here ({e}); the demo runs on the threaded engine"
                )),
            ),
        },
    }
}

fn demo(args: &DemoArgs, engine: Engine, lab: &mut Lab, shutdown: &Shutdown) -> Result<(), String> {
    let deadline = Instant::now() + Duration::from_secs(args.timeout);
    let check = |what: &str| -> Result<(), String> {
        if shutdown.is_raised() {
            return Err(format!("interrupted while {what}"));
        }
        if Instant::now() >= deadline {
            return Err(format!(
                "gave up after {}s while {what} (run with --keep to see every log)",
                args.timeout
            ));
        }
        Ok(())
    };
    let topology = lab.write_topology(
        build::binary_tree(3, build::DEFAULT_BASE_PORT),
        args.loss,
        calm_timers(),
    )?;
    let source = lab.dir().join(FILE_NAME);
    let source_hash = write_random(&source, args.size, args.seed)?;
    let engine = engine.name();
    println!(
        "burghers demo: {} from node {ROOT} to nodes 4-7 of the 7-node tree, {}% loss on every link, one process per node ({engine} engine)",
        mib(args.size),
        args.loss * 100.0
    );

    // The relays and the receivers first, so the whole tree exists before the first byte.
    let started = Instant::now();
    for r in RELAYS {
        lab.spawn(&format!("node{r}"), &["node", "--addr", &r.to_string()]);
    }
    for l in LEAVES {
        let out = lab.dir().join(format!("node{l}"));
        lab.spawn(
            &format!("recv{l}"),
            &[
                "recv",
                "--addr",
                &l.to_string(),
                "--group",
                "1",
                "--sender",
                &ROOT.to_string(),
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
    // A leaf can join only once it has a route to the sender, so the tree forms when the
    // root is up: the root's `send` waits for both branches before its first byte.
    loop {
        check("starting the relays and the receivers")?;
        lab.check_alive()?;
        let up = RELAYS.iter().chain(&LEAVES).copied().collect::<Vec<_>>();
        if lab.all_up(&topology, &up) {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    println!(
        "  6 processes up in {:.1}s; node {ROOT} starts, waits for the tree and sends",
        started.elapsed().as_secs_f64()
    );
    let send_started = Instant::now();
    lab.spawn(
        "send1",
        &[
            "send",
            &source.display().to_string(),
            "--addr",
            &ROOT.to_string(),
            "--group",
            "1",
            "--wait-branches",
            "2,3",
            "--quiet",
        ],
    );

    // Watch the leaves until every receiver process has exited.
    let mut view = View::new(args.size);
    let mut done: BTreeMap<u16, (ExitStatus, Duration)> = BTreeMap::new();
    while done.len() < LEAVES.len() {
        check("moving the file")?;
        for l in LEAVES {
            if done.contains_key(&l) {
                continue;
            }
            if let Some(status) = lab.exited(&format!("recv{l}")) {
                done.insert(l, (status, send_started.elapsed()));
                let summary = summary_of(&lab.stdout(&format!("recv{l}")));
                let bytes = summary.get("bytes").and_then(|b| b.parse().ok());
                view.set(l, bytes.unwrap_or(0), true);
            } else if let Ok(stats) = lab.ctl(&topology, l, &format!("stats rmtp.client.{SID}.")) {
                view.set(
                    l,
                    counter(&stats, &format!("rmtp.client.{SID}.delivered")),
                    false,
                );
            }
        }
        if lab.exited("send1").is_some_and(|s| !s.success()) {
            break;
        }
        view.tick(send_started.elapsed());
        std::thread::sleep(Duration::from_millis(200));
    }
    view.finish();
    // The sender exits once everyone acknowledged, after a short linger.
    let send_status = loop {
        if let Some(s) = lab.exited("send1") {
            break Some(s);
        }
        if send_started.elapsed() > Duration::from_secs(args.timeout) || shutdown.is_raised() {
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let relay_stats: Vec<String> = RELAYS
        .iter()
        .map(|&r| {
            lab.ctl(&topology, r, "stats rmtp.relay.")
                .unwrap_or_default()
        })
        .collect();

    // Verify and summarise.
    println!(
        "  {:<8} {:>9} {:>7} {:>12} {:>8} {:>7}  copy",
        "receiver", "time", "sync", "goodput", "repairs", "NACKs"
    );
    let mut verified = 0;
    let mut receiver_nacks = 0;
    for l in LEAVES {
        let summary = summary_of(&lab.stdout(&format!("recv{l}")));
        let copy = lab.dir().join(format!("node{l}")).join(FILE_NAME);
        let status = &done.get(&l).map(|d| d.0);
        let verdict = match file_hash(&copy) {
            Ok((len, hash)) if len == args.size && hash == source_hash => {
                if status.is_some_and(|s| s.success()) {
                    verified += 1;
                    "verified (BLAKE3 equal to the source)".to_string()
                } else {
                    "complete, but the receiver reported a failure".to_string()
                }
            }
            Ok(_) => "DIFFERENT from the source".to_string(),
            Err(_) => {
                format!("missing: {}", lab.last_error(&format!("recv{l}")))
            }
        };
        let seconds = summary
            .get("seconds")
            .and_then(|s| s.parse::<f64>().ok())
            .filter(|_| summary.get("state").is_some_and(|s| s == "complete"));
        let num = |k: &str| {
            summary
                .get(k)
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(0)
        };
        receiver_nacks += num("nacks");
        // Of the time, the verified copy's final sync to the disk.
        let sync = summary
            .get("sync_seconds")
            .and_then(|s| s.parse::<f64>().ok())
            .filter(|_| seconds.is_some());
        println!(
            "  node {l:<3} {:>9} {:>7} {:>12} {:>8} {:>7}  {verdict}",
            seconds.map_or("-".into(), |s| format!("{s:.2}s")),
            sync.map_or("-".into(), |s| format!("{s:.2}s")),
            seconds.map_or("-".into(), |s| rate(args.size, Duration::from_secs_f64(s))),
            num("repairs"),
            num("nacks"),
        );
    }
    let send_summary = summary_of(&lab.stdout("send1"));
    let sender_num = |k: &str| {
        send_summary
            .get(k)
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    let sender_nacks = sender_num("nacks");
    let cache_repairs: u64 = relay_stats
        .iter()
        .map(|s| counter(s, "rmtp.relay.repairs_from_cache"))
        .sum();
    let relay_nacks_in: u64 = relay_stats
        .iter()
        .map(|s| counter(s, "rmtp.relay.nacks_received"))
        .sum();
    let relay_nacks_up: u64 = relay_stats
        .iter()
        .map(|s| counter(s, "rmtp.relay.nacks_sent_upstream"))
        .sum();
    println!(
        "  sender: {} retransmissions; relays 2 and 3: {cache_repairs} repairs from their caches, {relay_nacks_in} NACKs in, {relay_nacks_up} sent up",
        sender_num("retransmissions")
    );
    println!(
        "  NACK aggregation: the receivers sent {receiver_nacks} NACKs, the sender got {sender_nacks} ({:.1}:1)",
        receiver_nacks as f64 / sender_nacks.max(1) as f64
    );
    let sender_ok = send_status.is_some_and(|s| s.success());
    if verified == LEAVES.len() && sender_ok {
        println!(
            "  every copy verified, the last {:.1}s after the sender started",
            done.values()
                .map(|d| d.1)
                .max()
                .unwrap_or_default()
                .as_secs_f64()
        );
        Ok(())
    } else if verified == LEAVES.len() {
        Err("every copy verified, but the sender did not finish cleanly".into())
    } else {
        Err(format!(
            "{} of {} copies verified (run with --keep to see every log)",
            verified,
            LEAVES.len()
        ))
    }
}

impl Drop for View {
    fn drop(&mut self) {
        self.finish();
    }
}

/// Four bars on a terminal; a line every few seconds otherwise.
struct View {
    bars: Option<(MultiProgress, BTreeMap<u16, ProgressBar>)>,
    delivered: BTreeMap<u16, u64>,
    last_line: Instant,
}

impl View {
    fn new(size: u64) -> View {
        let bars = std::io::stderr().is_terminal().then(|| {
            let multi = MultiProgress::new();
            let style = ProgressStyle::with_template(
                "  {prefix} [{wide_bar}] {bytes}/{total_bytes} {binary_bytes_per_sec} ETA {eta}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> ");
            let bars = LEAVES
                .iter()
                .map(|&l| {
                    let bar = multi.add(ProgressBar::new(size));
                    bar.set_style(style.clone());
                    bar.set_prefix(format!("node {l}"));
                    (l, bar)
                })
                .collect();
            (multi, bars)
        });
        View {
            bars,
            delivered: BTreeMap::new(),
            last_line: Instant::now(),
        }
    }

    fn set(&mut self, leaf: u16, delivered: u64, finished: bool) {
        self.delivered.insert(leaf, delivered);
        if let Some((_, bars)) = &self.bars
            && let Some(bar) = bars.get(&leaf)
        {
            bar.set_position(delivered);
            if finished {
                bar.finish();
            }
        }
    }

    fn tick(&mut self, elapsed: Duration) {
        if self.bars.is_some() || self.last_line.elapsed() < Duration::from_secs(2) {
            return;
        }
        self.last_line = Instant::now();
        let parts: Vec<String> = self
            .delivered
            .iter()
            .map(|(l, d)| format!("node {l} {}", mib(*d)))
            .collect();
        println!("  {:>5.1}s: {}", elapsed.as_secs_f64(), parts.join(", "));
    }

    fn finish(&mut self) {
        if let Some((multi, bars)) = self.bars.take() {
            for bar in bars.values() {
                bar.finish_and_clear();
            }
            let _ = multi.clear();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_demo_falls_back_to_threaded_with_a_warning_where_io_uring_cannot_start() {
        let refused = || {
            Err(std::io::Error::other(
                "io_uring is disabled (kernel.io_uring_disabled)",
            ))
        };
        let (engine, warning) = engine_to_run(Engine::Uring, refused);
        assert_eq!(engine, Engine::Threaded);
        let warning = warning.expect("a warning");
        assert!(warning.contains("kernel.io_uring_disabled"), "{warning}");
        assert!(warning.contains("threaded engine"), "{warning}");

        assert_eq!(
            engine_to_run(Engine::Uring, || Ok(())),
            (Engine::Uring, None)
        );
        let not_probed = || -> std::io::Result<()> { panic!("the threaded engine needs no probe") };
        assert_eq!(
            engine_to_run(Engine::Threaded, not_probed),
            (Engine::Threaded, None)
        );
    }
}
