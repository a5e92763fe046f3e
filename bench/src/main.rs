//! `bench <scenario> [--quick] [--out DIR]`: runs one scenario, prints its tables, writes its
//! results as JSON.

use bench::machine::Machine;
use bench::report::Report;
use bench::runner::Stop;
use bench::scenarios::{self, forward::Engine};
use clap::{Parser, ValueEnum};
use std::path::PathBuf;
use std::process::ExitCode;

/// Burghers benchmarks: every compared system in one run, repetitions alternated, with ratios
/// and the share of the kernel's own limit. Loopback (127.0.0.1) only.
#[derive(Parser, Debug)]
#[command(name = "bench", version)]
struct Cli {
    /// What to measure.
    #[arg(value_enum)]
    scenario: Scenario,
    /// A few seconds per scenario: fewer repetitions, shorter runs, fewer points (checks that it
    /// works; its figures are not to be quoted).
    #[arg(long)]
    quick: bool,
    /// Folder for the JSON results (created if missing).
    #[arg(long, value_name = "DIR", default_value = "target/bench")]
    out: PathBuf,
    /// Engines to compare (comma-separated) [default: every engine that exists].
    #[arg(long, value_enum, value_delimiter = ',', value_name = "ENGINE")]
    engines: Vec<Engine>,
}

#[derive(ValueEnum, Clone, Copy, Debug)]
enum Scenario {
    /// The kernel's ceiling with no protocol: one-hop UDP forwarders (recvfrom/sendto,
    /// recvmmsg/sendmmsg, io_uring, GRO/GSO) and a ping-pong's round trip.
    Limit,
    /// A chain of 1–4 nodes of each engine forwarding DNP packets, offered load swept, beside a
    /// bare forwarder chain of the same length.
    Forward,
}

impl Scenario {
    fn name(self) -> &'static str {
        match self {
            Scenario::Limit => "limit",
            Scenario::Forward => "forward",
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
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
        if cli.quick { " --quick" } else { "" },
        machine.cpu_model,
        machine.cores,
        machine.kernel,
        machine.load_average
    );
    let engines = if cli.engines.is_empty() {
        Engine::ALL.to_vec()
    } else {
        cli.engines.clone()
    };
    let outcome = match cli.scenario {
        Scenario::Limit => scenarios::limit::run(cli.quick, &stop),
        Scenario::Forward => scenarios::forward::run(cli.quick, &engines, &stop),
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
        quick: cli.quick,
        interrupted: stop.requested(),
        machine,
        settings: outcome.settings,
        comparisons: outcome.comparisons,
        summary: outcome.summary,
    };
    match report.write(&cli.out) {
        Ok(path) => println!("\nresults: {}", path.display()),
        Err(e) => {
            eprintln!("bench: cannot write results to {}: {e}", cli.out.display());
            return ExitCode::FAILURE;
        }
    }
    if report.interrupted {
        ExitCode::from(130)
    } else {
        ExitCode::SUCCESS
    }
}
