//! `multicast`: one file from a sender to N receivers (star: each receiver one hop from the
//! sender; tree: two relays share the receivers), with loss on every link, run by real
//! `burghers` processes on loopback, one per node, for each engine. Beside them in the same
//! run: `uftp`, an established multicast file tool, in network namespaces this scenario makes
//! and removes (star only: it has no relays), and the kernel's limit, one GSO sender moving the
//! same bytes to N bare UDP receivers, the disk's, N threads writing as many copies to the
//! folder the receivers write to, and the least work of a verified copy, the file read, sent,
//! hashed and written with no protocol. Every copy's BLAKE3 is checked against the source.

mod disk;
mod engine_run;
mod fanout;
mod layout;
mod netns;
mod table;
mod uftp;
mod verified;

pub use layout::{Layout, SENDER, Shape};

use super::Engine;
use super::Outcome;
use crate::runner::{self, Comparison, Metric, Sample, Stop, System};
use serde_json::json;
use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub const GOODPUT: Metric = Metric {
    name: "goodput of the slowest receiver",
    unit: "B/s",
    higher_is_better: true,
};

/// What one comparison moves: the source file, its hash and where it goes.
pub struct Transfer {
    pub source: PathBuf,
    pub hash: [u8; 32],
    pub size: u64,
    pub receivers: usize,
    pub shape: Shape,
    pub loss: f64,
    /// Warm the page cache just before each copy is written ([`Transfer::warm_pages`]).
    pub warm_pages: bool,
}

impl Transfer {
    /// The gigabytes delivered by one transfer: every receiver's copy.
    fn gigabytes(&self) -> f64 {
        self.size as f64 * self.receivers as f64 / 1e9
    }

    /// How long a transfer may take before it counts as failed.
    fn deadline(&self) -> Duration {
        Duration::from_secs(60 + self.size / (256 << 10))
    }

    /// Just before a system writes its copies: [`crate::machine::warm_free_pages`] for as
    /// many bytes as the copies take (off with `--cold-pages`).
    fn warm_pages(&self) -> io::Result<()> {
        if !self.warm_pages {
            return Ok(());
        }
        crate::machine::warm_free_pages(self.size.saturating_mul(self.receivers as u64))
    }

    /// An error unless `copy` is the source, byte for byte.
    fn verify(&self, copy: &Path) -> io::Result<()> {
        match burghers_lab::lab::file_hash(copy) {
            Ok((size, hash)) if size == self.size && hash == self.hash => Ok(()),
            Ok(_) => Err(io::Error::other(format!(
                "{} differs from the source",
                copy.display()
            ))),
            Err(e) => Err(io::Error::other(format!(
                "no copy at {}: {e}",
                copy.display()
            ))),
        }
    }
}

/// What a transfer measured, the same for every system.
#[derive(Default)]
struct Figures {
    /// The longest any receiver took from its first byte to its whole copy.
    slowest_receiver: Duration,
    /// From the sender's first byte until every receiver had the whole file.
    last_copy: Duration,
    /// User + system time of every process of the transfer.
    cpu: Duration,
    /// Repair packets over first transmissions, as a receiver sees them.
    repair_share: Option<f64>,
    /// NACKs the receivers sent over the NACKs that reached the sender.
    nack_aggregation: Option<f64>,
    /// Other counters worth keeping (NACKs, retransmissions …).
    counters: Vec<(&'static str, f64)>,
}

impl Figures {
    fn sample(self, transfer: &Transfer) -> Sample {
        let seconds = self.slowest_receiver.as_secs_f64().max(1e-9);
        let mut details = std::collections::BTreeMap::new();
        details.insert(
            "time_to_last_copy_s".to_string(),
            self.last_copy.as_secs_f64(),
        );
        details.insert(
            "cpu_s_per_gb".to_string(),
            self.cpu.as_secs_f64() / transfer.gigabytes(),
        );
        details.insert("copies_verified".to_string(), transfer.receivers as f64);
        if let Some(r) = self.repair_share {
            details.insert("repair_share".to_string(), r);
        }
        if let Some(r) = self.nack_aggregation {
            details.insert("nack_aggregation".to_string(), r);
        }
        for (k, v) in self.counters {
            details.insert(k.to_string(), v);
        }
        Sample {
            value: transfer.size as f64 / seconds,
            details,
            limited_by: None,
        }
    }
}

/// What the run compares, from the command line.
#[derive(Clone, Debug)]
pub struct Options {
    pub quick: bool,
    pub engines: Vec<Engine>,
    /// File size [default: 256 MiB, quick 4 MiB].
    pub size: Option<u64>,
    pub receivers: Vec<usize>,
    pub shapes: Vec<Shape>,
    pub losses: Vec<f64>,
    pub repetitions: Option<usize>,
    /// uftp's `-R` rate in Kbit/s (-1: as fast as the interface allows).
    pub uftp_rate: i64,
    /// Leave uftp out.
    pub no_uftp: bool,
    /// Do not warm the page cache before each copy ([`Transfer::warm_pages`]).
    pub cold_pages: bool,
}

/// The matrix measured.
struct Plan {
    size: u64,
    receivers: Vec<usize>,
    shapes: Vec<Shape>,
    losses: Vec<f64>,
    repetitions: usize,
}

pub const MAX_RECEIVERS: usize = 32;

/// The file: large enough that start-up and the last repairs are a small part of a
/// transfer.
const DEFAULT_SIZE: u64 = 256 << 20;

/// Two, not three: at 256 MiB one repetition of the default matrix takes about 25 minutes on a
/// 2-core machine (the 10%-loss transfers to 7 receivers take minutes each); two still show the
/// spread, as min and max.
const DEFAULT_REPETITIONS: usize = 2;

impl Plan {
    fn new(o: &Options) -> Plan {
        let pick = |given: &[usize], quick: &[usize], full: &[usize]| {
            if !given.is_empty() {
                given.to_vec()
            } else if o.quick {
                quick.to_vec()
            } else {
                full.to_vec()
            }
        };
        Plan {
            size: o
                .size
                .unwrap_or(if o.quick { 4 << 20 } else { DEFAULT_SIZE }),
            receivers: pick(&o.receivers, &[1, 3], &[1, 3, 7]),
            shapes: if !o.shapes.is_empty() {
                o.shapes.clone()
            } else {
                vec![Shape::Star, Shape::Tree]
            },
            losses: if !o.losses.is_empty() {
                o.losses.clone()
            } else if o.quick {
                vec![0.02]
            } else {
                vec![0.0, 0.02, 0.10]
            },
            repetitions: o
                .repetitions
                .unwrap_or(if o.quick { 1 } else { DEFAULT_REPETITIONS }),
        }
    }
}

pub fn run(options: &Options, stop: &Stop) -> io::Result<Outcome> {
    let plan = Plan::new(options);
    if let Some(&n) = plan
        .receivers
        .iter()
        .find(|&&n| n == 0 || n > MAX_RECEIVERS)
    {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("--receivers: expected 1 to {MAX_RECEIVERS}, got {n}"),
        ));
    }
    let exe = engine_run::locate()?;
    eprintln!("  burghers processes: {}", exe.display());
    let uftp = if options.no_uftp {
        Err("left out (--no-uftp)".to_string())
    } else {
        uftp::Availability::probe()
    };
    match &uftp {
        Ok(a) => eprintln!("  uftp: {}", a.describe()),
        Err(why) => eprintln!("  uftp: not compared: {why}"),
    }
    let work = tempfile::Builder::new()
        .prefix("bench-multicast-")
        .tempdir()?;
    let source = work.path().join("payload.bin");
    let hash = burghers_lab::lab::write_random(&source, plan.size, 1).map_err(io::Error::other)?;
    // On the disk before the first transfer, whose receivers' writes its write-back would
    // otherwise slow.
    std::fs::File::open(&source)?.sync_all()?;
    let mut comparisons = Vec::new();
    let mut shapes_of = Vec::new();
    let mut notes = Vec::new();
    for &shape in &plan.shapes {
        for &receivers in &plan.receivers {
            for &loss in &plan.losses {
                if stop.requested() {
                    break;
                }
                let transfer = Transfer {
                    source: source.clone(),
                    hash,
                    size: plan.size,
                    receivers,
                    shape,
                    loss,
                    warm_pages: !options.cold_pages,
                };
                let mut systems: Vec<Box<dyn System + '_>> = options
                    .engines
                    .iter()
                    .map(|&engine| {
                        Box::new(engine_run::Run {
                            engine,
                            exe: exe.clone(),
                            transfer: &transfer,
                            stop: stop.clone(),
                        }) as Box<dyn System>
                    })
                    .collect();
                // uftp has no relays: it runs the star comparisons.
                if let (Ok(a), Shape::Star) = (&uftp, shape) {
                    match a.can_run(loss) {
                        Ok(()) => systems.push(Box::new(uftp::Run {
                            availability: a,
                            rate: options.uftp_rate,
                            transfer: &transfer,
                            stop: stop.clone(),
                        })),
                        Err(why) => notes.push(format!(
                            "uftp, {receivers} receiver(s), {}% loss: {why}",
                            loss * 100.0
                        )),
                    }
                }
                systems.push(Box::new(fanout::Run {
                    transfer: &transfer,
                    stop: stop.clone(),
                }));
                systems.push(Box::new(disk::Run {
                    transfer: &transfer,
                    stop: stop.clone(),
                }));
                systems.push(Box::new(verified::Run {
                    transfer: &transfer,
                    stop: stop.clone(),
                }));
                let comparison = Comparison {
                    title: format!(
                        "{} MiB to {receivers} receiver(s), {}, {}% loss",
                        plan.size >> 20,
                        shape.name(),
                        loss * 100.0
                    ),
                    metric: GOODPUT,
                    systems,
                };
                comparisons.push(runner::run(comparison, plan.repetitions, stop));
                shapes_of.push((receivers, shape.name(), loss));
            }
        }
    }
    for note in &notes {
        println!("note: {note}");
    }
    let table = table::summary_rows(&comparisons);
    let goodput = table::goodput_points(&comparisons, &shapes_of);
    table::print_summary(&table);
    Ok(Outcome {
        settings: json!({
            "file_bytes": plan.size,
            "receivers": plan.receivers,
            "shapes": plan.shapes.iter().map(|s| s.name()).collect::<Vec<_>>(),
            "loss_per_link": plan.losses,
            "repetitions": plan.repetitions,
            "engines": options.engines.iter().map(|e| e.name()).collect::<Vec<_>>(),
            "burghers_timers": "burghers demo's (gmp_refresh 200 ms); send --linger-ms 500",
            "uftp": match &uftp {
                Ok(a) => json!({
                    "version": a.version,
                    "rate_kbit_per_s": options.uftp_rate,
                    "command": uftp::describe_command(options.uftp_rate),
                    "network": "one namespace per endpoint, veth pairs to a bridge; loss by nftables on every endpoint's input",
                }),
                Err(why) => json!({ "skipped": why }),
            },
            "uftp_notes": notes,
            "kernel_limit": fanout::NAME,
            "kernel_limit_datagram_bytes": fanout::DATAGRAM,
            "page_cache": if options.cold_pages { "as found (--cold-pages)" } else { "warmed before each copy: a file of the copies' size written and deleted" },
            "disk_limit": disk::NAME,
            "verified_copy": verified::NAME,
            "address": "127.0.0.1 (uftp: 10.213.0.0/24 inside its own namespaces)",
            "default_note": "256 MiB and 2 repetitions by default: the full matrix takes about 25 minutes per repetition on a 2-core machine (the lossy transfers to 7 receivers dominate); --size or --loss shorten it",
        }),
        comparisons,
        summary: json!({
            "transfers": table,
            "goodput": goodput,
        }),
    })
}
