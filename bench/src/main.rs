//! `bench <scenario> [--quick] [--out DIR]`: runs one scenario, prints its tables, writes its
//! results as JSON.

use bench::machine::Machine;
use bench::report::Report;
use bench::runner::Stop;
use bench::scenarios::{self, forward::Engine, multicast, multicast::Shape};
use clap::{Args, Parser, Subcommand};
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
    scenario: Scenario,
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
        #[arg(long, value_enum, value_delimiter = ',', value_name = "ENGINE")]
        engines: Vec<Engine>,
    },
    /// A file from one sender to N receivers (star and tree, with loss) by real `burghers`
    /// processes of each engine, beside uftp and one GSO sender to N bare UDP receivers.
    Multicast {
        #[command(flatten)]
        common: Common,
        /// Engines to compare (comma-separated) [default: every engine that exists].
        #[arg(long, value_enum, value_delimiter = ',', value_name = "ENGINE")]
        engines: Vec<Engine>,
        /// File size, e.g. 256MiB [default: 32MiB; with --quick 4MiB].
        #[arg(long, value_name = "SIZE", value_parser = burghers::units::parse_size)]
        size: Option<u64>,
        /// Receiver counts (comma-separated, 1 to 32) [default: 1,3,7; with --quick 1,3].
        #[arg(long, value_delimiter = ',', value_name = "N", value_parser = clap::value_parser!(u64).range(1..=multicast::MAX_RECEIVERS as u64))]
        receivers: Vec<u64>,
        /// Topologies (comma-separated) [default: star,tree].
        #[arg(long, value_enum, value_delimiter = ',', value_name = "SHAPE")]
        shapes: Vec<Shape>,
        /// Loss probabilities per link (comma-separated) [default: 0,0.02,0.1; with --quick
        /// 0.02].
        #[arg(long, value_delimiter = ',', value_name = "P", value_parser = burghers::units::parse_probability)]
        loss: Vec<f64>,
        /// Repetitions per system [default: 3; with --quick 1].
        #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=100))]
        repetitions: Option<u32>,
        /// uftp's transmit rate (its -R) in Kbit/s; -1 sends as fast as the link takes.
        #[arg(long, value_name = "KBPS", default_value_t = -1, allow_negative_numbers = true)]
        uftp_rate: i64,
        /// Leave uftp out.
        #[arg(long)]
        no_uftp: bool,
    },
}

impl Scenario {
    fn name(&self) -> &'static str {
        match self {
            Scenario::Limit(_) => "limit",
            Scenario::Forward { .. } => "forward",
            Scenario::Multicast { .. } => "multicast",
        }
    }

    fn common(&self) -> &Common {
        match self {
            Scenario::Limit(common)
            | Scenario::Forward { common, .. }
            | Scenario::Multicast { common, .. } => common,
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
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
    let outcome = match &cli.scenario {
        Scenario::Limit(_) => scenarios::limit::run(common.quick, &stop),
        Scenario::Forward { engines, .. } => {
            let engines = if engines.is_empty() {
                Engine::ALL.to_vec()
            } else {
                engines.clone()
            };
            scenarios::forward::run(common.quick, &engines, &stop)
        }
        Scenario::Multicast {
            engines,
            size,
            receivers,
            shapes,
            loss,
            repetitions,
            uftp_rate,
            no_uftp,
            ..
        } => {
            let options = multicast::Options {
                quick: common.quick,
                engines: if engines.is_empty() {
                    Engine::ALL.to_vec()
                } else {
                    engines.clone()
                },
                size: *size,
                receivers: receivers.iter().map(|&n| n as usize).collect(),
                shapes: shapes.clone(),
                losses: loss.clone(),
                repetitions: repetitions.map(|r| r as usize),
                uftp_rate: *uftp_rate,
                no_uftp: *no_uftp,
            };
            multicast::run(&options, &stop)
        }
    };
    let outcome = match outcome {
        Ok(o) => o,
        Err(e) => {
            eprintln!("bench {}: {e}", cli.scenario.name());
            return ExitCode::FAILURE;
        }
    };
    let report = Report {
        scenario: cli.scenario.name().to_string(),
        quick: common.quick,
        interrupted: stop.requested(),
        machine,
        settings: outcome.settings,
        comparisons: outcome.comparisons,
        summary: outcome.summary,
    };
    match report.write(&common.out) {
        Ok(path) => println!("\nresults: {}", path.display()),
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
