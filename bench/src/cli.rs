//! `bench <scenario> [--quick] [--out DIR]`: runs one scenario, prints its tables, writes its
//! results as JSON. Shared by the `bench` binary and `burghers bench`.

use crate::machine::Machine;
use crate::profile::{self, Profile};
use crate::publish::{self, PublishArgs};
use crate::report::Report;
use crate::runner::Stop;
use crate::scenarios::{self, Engine, multicast, multicast::Shape};
use clap::builder::TypedValueParser;
use clap::{Args, Parser, Subcommand};
use std::ffi::OsString;
use std::path::PathBuf;
use std::process::ExitCode;

/// Burghers benchmarks: every compared system in one run, repetitions alternated, with ratios
/// and the share of the kernel's own limit. Loopback (127.0.0.1) only.
#[derive(Parser, Debug)]
#[command(
    name = "bench",
    version,
    subcommand_value_name = "SCENARIO",
    subcommand_help_heading = "Scenarios"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Clone, Debug)]
enum Command {
    #[command(flatten)]
    Scenario(Scenario),
    /// Not a scenario: render the latest result of each scenario (tables, charts) into
    /// docs/BENCHMARKS.md, between its generated-section markers.
    Report(PublishArgs),
}

/// A scenario to run and the command line that asked for it (recorded in the results).
struct ScenarioRun {
    scenario: Scenario,
    command: String,
}

/// What every scenario takes.
#[derive(Args, Clone, Debug)]
struct Common {
    /// A few seconds per scenario: shorter runs, one repetition, fewer points (shows that it
    /// works; its figures are not to be quoted).
    #[arg(long)]
    quick: bool,
    /// Folder for the JSON results (created if missing).
    #[arg(long, value_name = "DIR", default_value = "target/bench")]
    out: PathBuf,
    /// Profile the run with Linux `perf` (the bench and every thread and process it starts)
    /// and write the CPU shares by thread, binary and symbol beside the JSON (`.perf.txt`).
    #[arg(long)]
    perf: bool,
}

#[derive(Subcommand, Clone, Debug)]
enum Scenario {
    /// The kernel's ceiling with no protocol: one-hop UDP forwarders (recvfrom/sendto,
    /// recvmmsg/sendmmsg, io_uring, GRO/GSO) and a ping-pong's round trip.
    Limit(Common),
    /// Chains of 1-4 nodes of each engine forwarding DNP packets, offered load swept, beside a
    /// chain of bare forwarders of the same length.
    Forward {
        #[command(flatten)]
        common: Common,
        /// Engines to compare (comma-separated) [default: every engine that exists].
        #[arg(long, value_delimiter = ',', value_name = "ENGINE", value_parser = engine_parser())]
        engines: Vec<Engine>,
        /// Chain lengths, forwarding nodes (comma-separated, 1 to 4) [default: 1,2,3,4; with
        /// --quick 1,2].
        #[arg(long, value_delimiter = ',', value_name = "K", value_parser = clap::value_parser!(u64).range(1..=4))]
        hops: Vec<u64>,
    },
    /// One probe at a time through chains of 1-4 nodes of each engine, open loop, at a low
    /// fixed rate and at 50/75/90% of the engine's saturation, beside a chain of bare forwarders of
    /// the same length: p50/p99/p99.9/max from the scheduled send, sleeping and busy-polling.
    Latency {
        #[command(flatten)]
        common: Common,
        /// Engines to compare (comma-separated) [default: every engine that exists].
        #[arg(long, value_delimiter = ',', value_name = "ENGINE", value_parser = engine_parser())]
        engines: Vec<Engine>,
        /// Chain lengths, forwarding nodes (comma-separated, 1 to 4) [default: 1,2,3,4; with
        /// --quick 1].
        #[arg(long, value_delimiter = ',', value_name = "K", value_parser = clap::value_parser!(u64).range(1..=4))]
        hops: Vec<u64>,
    },
    /// Packets/s per dataplane core from 1 core to all of them: pinned cells of source, bare
    /// forwarder and sink, one per core (engines without per-core workers are listed as
    /// skipped).
    Scale {
        #[command(flatten)]
        common: Common,
        /// Engines to compare (comma-separated) [default: every engine that exists].
        #[arg(long, value_delimiter = ',', value_name = "ENGINE", value_parser = engine_parser())]
        engines: Vec<Engine>,
    },
    /// A file from one sender to N receivers (star and tree, with loss) by real `burghers`
    /// processes of each engine, beside uftp and one GSO sender to N bare UDP receivers.
    Multicast {
        #[command(flatten)]
        common: Common,
        /// Engines to compare (comma-separated) [default: every engine that exists].
        #[arg(long, value_delimiter = ',', value_name = "ENGINE", value_parser = engine_parser())]
        engines: Vec<Engine>,
        /// File size, e.g. 64MiB [default: 256MiB; with --quick 4MiB].
        #[arg(long, value_name = "SIZE", value_parser = burghers_lab::units::parse_size)]
        size: Option<u64>,
        /// Receiver counts (comma-separated, 1 to 32) [default: 1,3,7; with --quick 1,3].
        #[arg(long, value_delimiter = ',', value_name = "N", value_parser = clap::value_parser!(u64).range(1..=multicast::MAX_RECEIVERS as u64))]
        receivers: Vec<u64>,
        /// Topologies (comma-separated) [default: star,tree].
        #[arg(long, value_enum, value_delimiter = ',', value_name = "SHAPE")]
        shapes: Vec<Shape>,
        /// Loss probabilities per link (comma-separated) [default: 0,0.02,0.1; with --quick
        /// 0.02].
        #[arg(long, value_delimiter = ',', value_name = "P", value_parser = burghers_lab::units::parse_probability)]
        loss: Vec<f64>,
        /// Repetitions per system [default: 2; with --quick 1].
        #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=100))]
        repetitions: Option<u32>,
        /// uftp's transmit rate (its -R) in Kbit/s; -1 sends as fast as the link takes.
        #[arg(long, value_name = "KBPS", default_value_t = -1, allow_negative_numbers = true)]
        uftp_rate: i64,
        /// Leave uftp out.
        #[arg(long)]
        no_uftp: bool,
        /// Write the copies to the page cache as found: by default a file of the copies' size
        /// is written and deleted just before each system writes them, so that no system's
        /// copies land on pages a VM's host took back (docs/BENCHMARKS.md).
        #[arg(long)]
        cold_pages: bool,
    },
    /// The control plane: SPF time against topology size, convergence after a link cut in the
    /// simulator, and a worker's slowdown while routing-table snapshots are published.
    Control(Common),
    /// How a receiver's DATA payloads reach its file and hash, no network: the product's
    /// staging sink against writes straight from the receive buffers (CPU seconds per GB).
    Sink {
        #[command(flatten)]
        common: Common,
        /// Bytes written per copy, e.g. 64MiB [default: 256MiB; with --quick 16MiB].
        #[arg(long, value_name = "SIZE", value_parser = burghers_lab::units::parse_size)]
        size: Option<u64>,
        /// Repetitions per system [default: 5; with --quick 1].
        #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=100))]
        repetitions: Option<u32>,
    },
}

impl Scenario {
    fn name(&self) -> &'static str {
        match self {
            Scenario::Limit(_) => "limit",
            Scenario::Forward { .. } => "forward",
            Scenario::Latency { .. } => "latency",
            Scenario::Scale { .. } => "scale",
            Scenario::Control(_) => "control",
            Scenario::Multicast { .. } => "multicast",
            Scenario::Sink { .. } => "sink",
        }
    }

    fn common(&self) -> &Common {
        match self {
            Scenario::Limit(common)
            | Scenario::Forward { common, .. }
            | Scenario::Latency { common, .. }
            | Scenario::Scale { common, .. }
            | Scenario::Control(common)
            | Scenario::Multicast { common, .. }
            | Scenario::Sink { common, .. } => common,
        }
    }
}

/// `--engines` takes the names of dataplane's one list of engines (and help lists them).
fn engine_parser() -> impl TypedValueParser<Value = Engine> {
    clap::builder::PossibleValuesParser::new(Engine::ALL.map(Engine::name))
        .map(|name: String| Engine::from_name(&name).expect("a name from the list"))
}

/// The engines asked for, or every engine that exists when none was named.
fn or_every_engine(engines: &[Engine]) -> Vec<Engine> {
    if engines.is_empty() {
        Engine::ALL.to_vec()
    } else {
        engines.to_vec()
    }
}

/// Parses `args` (the first is the program's name, as in `std::env::args_os`) and runs the
/// scenario. A bad argument prints clap's error and exits with its code (2).
pub fn main(args: impl IntoIterator<Item = OsString>) -> ExitCode {
    let args: Vec<OsString> = args.into_iter().collect();
    let cli = match Cli::parse_from(&args).command {
        Command::Report(options) => return publish::main(&options),
        Command::Scenario(scenario) => ScenarioRun {
            scenario,
            command: command_line(&args),
        },
    };
    let common = cli.scenario.common().clone();
    let stop = match Stop::on_ctrl_c() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("bench: cannot install the Ctrl-C handler: {e}");
            return ExitCode::FAILURE;
        }
    };
    let machine = Machine::describe();
    eprintln!(
        "bench {}{}: {} ({} cores), {}, load {}",
        cli.scenario.name(),
        if common.quick { " --quick" } else { "" },
        machine.cpu_model,
        machine.cores,
        machine.kernel,
        machine.load_average
    );
    let profile = match common.perf.then(Profile::start).transpose() {
        Ok(p) => p,
        Err(e) => {
            eprintln!("bench {}: {e}", cli.scenario.name());
            return ExitCode::FAILURE;
        }
    };
    let outcome = match &cli.scenario {
        Scenario::Limit(_) => scenarios::limit::run(common.quick, &stop),
        Scenario::Forward { engines, hops, .. } => {
            let hops: Vec<usize> = hops.iter().map(|&k| k as usize).collect();
            scenarios::forward::run(common.quick, &or_every_engine(engines), &hops, &stop)
        }
        Scenario::Latency { engines, hops, .. } => {
            let hops: Vec<usize> = hops.iter().map(|&k| k as usize).collect();
            scenarios::latency::run(common.quick, &or_every_engine(engines), &hops, &stop)
        }
        Scenario::Scale { engines, .. } => {
            scenarios::scale::run(common.quick, &or_every_engine(engines), &stop)
        }
        Scenario::Control(_) => scenarios::control_plane::run(common.quick, &stop),
        Scenario::Multicast {
            engines,
            size,
            receivers,
            shapes,
            loss,
            repetitions,
            uftp_rate,
            no_uftp,
            cold_pages,
            ..
        } => {
            let options = multicast::Options {
                quick: common.quick,
                engines: or_every_engine(engines),
                size: *size,
                receivers: receivers.iter().map(|&n| n as usize).collect(),
                shapes: shapes.clone(),
                losses: loss.clone(),
                repetitions: repetitions.map(|r| r as usize),
                uftp_rate: *uftp_rate,
                no_uftp: *no_uftp,
                cold_pages: *cold_pages,
            };
            multicast::run(&options, &stop)
        }
        Scenario::Sink {
            size, repetitions, ..
        } => scenarios::sink::run(common.quick, *size, repetitions.map(|r| r as usize), &stop),
    };
    // The profile covers the run only, not the writing of its results.
    let mut profile = profile;
    if let Some(p) = &mut profile {
        p.stop();
    }
    let outcome = match outcome {
        Ok(o) => o,
        Err(e) => {
            eprintln!("bench {}: {e}", cli.scenario.name());
            return ExitCode::FAILURE;
        }
    };
    let report = Report {
        scenario: cli.scenario.name().to_string(),
        command: cli.command,
        quick: common.quick,
        interrupted: stop.requested(),
        machine,
        settings: outcome.settings,
        comparisons: outcome.comparisons,
        summary: outcome.summary,
    };
    match report.write(&common.out) {
        Ok(written) => {
            println!("\nresults: {}", written.json.display());
            for chart in written.charts {
                println!("chart: {}", chart.display());
            }
            if let Some(p) = profile {
                let path = profile::path_beside(&written.json);
                match p.finish(&report.command, &path) {
                    Ok(()) => println!("profile: {}", path.display()),
                    Err(e) => eprintln!("bench: no profile: {e}"),
                }
            }
        }
        Err(e) => {
            eprintln!(
                "bench: cannot write results to {}: {e}",
                common.out.display()
            );
            return ExitCode::FAILURE;
        }
    }
    if report.interrupted {
        ExitCode::from(130)
    } else {
        ExitCode::SUCCESS
    }
}

/// The command that reproduces a run: the `bench` binary's arguments after
/// `cargo run --release -p bench --`, another program's (`burghers bench`) after its name.
fn command_line(args: &[OsString]) -> String {
    let program = args.first().map(|p| p.to_string_lossy().into_owned());
    let invoked = match program.as_deref() {
        Some(p)
            if std::path::Path::new(p)
                .file_name()
                .is_some_and(|n| n == "bench") =>
        {
            "cargo run --release -p bench --".to_string()
        }
        Some(p) => p.to_string(),
        None => "bench".to_string(),
    };
    let mut line = invoked;
    for arg in args.iter().skip(1) {
        line.push(' ');
        line.push_str(&shell_quoted(&arg.to_string_lossy()));
    }
    line
}

/// An argument as a POSIX shell reads it back.
fn shell_quoted(arg: &str) -> String {
    let plain = !arg.is_empty()
        && arg
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./=,:@%+".contains(c));
    if plain {
        arg.to_string()
    } else {
        format!("'{}'", arg.replace('\'', "'\\''"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_command_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn the_recorded_command_reproduces_the_run() {
        let args = |a: &[&str]| a.iter().map(OsString::from).collect::<Vec<_>>();
        assert_eq!(
            command_line(&args(&[
                "target/release/bench",
                "forward",
                "--engines",
                "threaded"
            ])),
            "cargo run --release -p bench -- forward --engines threaded"
        );
        assert_eq!(
            command_line(&args(&["burghers bench", "limit", "--out", "my results"])),
            "burghers bench limit --out 'my results'"
        );
        assert_eq!(shell_quoted("it's"), "'it'\\''s'");
    }
}
