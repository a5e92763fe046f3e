//! The `burghers` command.

mod sim;
mod topo;

use clap::{Parser, Subcommand};
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "burghers",
    version,
    about = "Reliable multicast overlay network: simulator, nodes and tools"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a topology in the deterministic simulator and print what it converged to.
    Sim(sim::SimArgs),
    /// Generate a topology file (random connected graph or a standard shape), or check one.
    Topo(topo::TopoArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Sim(args) => sim::run(args),
        Command::Topo(args) => topo::run(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("burghers: {message}");
            ExitCode::FAILURE
        }
    }
}
