//! The `burghers` command.

mod args;
mod ctl;
mod demo;
mod host;
mod logging;
mod node;
mod progress;
mod recv;
mod send;
mod services;
mod settings;
mod shutdown;
mod sim;
mod topo;

use clap::{Parser, Subcommand};
use std::ffi::OsString;
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "burghers",
    version,
    about = "Reliable multicast overlay network: simulator, nodes and tools",
    after_help = "\
Examples:
  burghers demo                                         # a 7-node network on loopback
  burghers node --topology topologies/tree7.toml --addr 1
  burghers ctl --topology topologies/tree7.toml --node 1 routes
  burghers sim topologies/grid4x4.toml"
)]
struct Cli {
    /// More log output on standard error (-v info, -vv debug, -vvv trace).
    #[arg(long, short, action = clap::ArgAction::Count, global = true)]
    verbose: u8,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Start a 7-node network on loopback and multicast a file from the root to every leaf.
    Demo(demo::DemoArgs),
    /// Run one node until stopped (SIGINT, SIGTERM or `ctl stop`).
    Node(node::NodeCmd),
    /// Host a node and multicast a file from it to a group.
    Send(send::SendArgs),
    /// Host a node and receive a group's file on it.
    Recv(recv::RecvArgs),
    /// List what a node announces over RAP.
    Services(services::ServicesArgs),
    /// Inspect and change a running node: routes, groups, stats, link faults.
    Ctl(ctl::CtlArgs),
    /// Print every tunable setting with its default and meaning.
    Settings(settings::SettingsArgs),
    /// Run a topology in the deterministic simulator and print what it converged to.
    Sim(sim::SimArgs),
    /// Generate a topology file (random connected graph or a standard shape), or check one.
    Topo(topo::TopoArgs),
    /// Run a benchmark scenario or render the results into docs/BENCHMARKS.md: the same as
    /// `cargo run --release -p bench -- <scenario> [args]` (`burghers bench --help` lists them).
    #[command(
        disable_help_flag = true,
        after_help = "\
Examples:
  burghers bench limit --quick
  burghers bench forward --engines threaded
  burghers bench report --results target/bench --out docs/BENCHMARKS.md"
    )]
    Bench {
        /// The scenario and its arguments, as the bench binary takes them.
        #[arg(
            trailing_var_arg = true,
            allow_hyphen_values = true,
            value_name = "SCENARIO [ARGS]"
        )]
        args: Vec<OsString>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    logging::init(cli.verbose);
    let result = match cli.command {
        // The bench CLI parses its own arguments and reports its own errors.
        Command::Bench { args } => {
            return bench::cli::main(std::iter::once("burghers bench".into()).chain(args));
        }
        Command::Demo(args) => demo::run(args, cli.verbose),
        Command::Node(args) => node::run(args),
        Command::Send(args) => send::run(args),
        Command::Recv(args) => recv::run(args),
        Command::Services(args) => services::run(args),
        Command::Ctl(args) => ctl::run(args),
        Command::Settings(args) => settings::run(args),
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

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_command_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    /// `bench` hands every argument after it to the bench CLI, flags and `--help` included.
    #[test]
    fn bench_passes_its_arguments_through() {
        for args in [
            &["forward", "--quick", "--engines", "threaded"][..],
            &["--help"],
            &["limit", "-V"],
            &[],
        ] {
            let cli = Cli::try_parse_from(["burghers", "bench"].iter().chain(args))
                .unwrap_or_else(|e| panic!("burghers bench {args:?}: {e}"));
            let Command::Bench { args: passed } = cli.command else {
                panic!("not the bench command")
            };
            assert_eq!(passed, args.iter().map(OsString::from).collect::<Vec<_>>());
        }
    }

    /// The subcommands that run nodes take `--engine`, with every engine as a value.
    #[test]
    fn every_hosting_subcommand_takes_an_engine() {
        use clap::ValueEnum;
        let engines: Vec<String> = host::Engine::value_variants()
            .iter()
            .map(|e| e.name())
            .collect();
        assert!(engines.contains(&"threaded".to_string()), "{engines:?}");
        let cmd = Cli::command();
        for sub in ["node", "send", "recv", "demo"] {
            let sub = cmd.find_subcommand(sub).expect("a subcommand");
            let arg = sub
                .get_arguments()
                .find(|a| a.get_long() == Some("engine"))
                .unwrap_or_else(|| panic!("`burghers {}` takes no --engine", sub.get_name()));
            let values: Vec<String> = arg
                .get_possible_values()
                .iter()
                .map(|v| v.get_name().to_string())
                .collect();
            assert_eq!(values, engines, "`burghers {} --engine`", sub.get_name());
        }
        for name in &engines {
            let parsed = host::Engine::from_str(name, false).expect("its own name parses");
            assert_eq!(&parsed.name(), name);
        }
    }

    /// Every subcommand, nested ones included, shows an example in its --help.
    #[test]
    fn every_subcommand_has_an_example() {
        fn check(cmd: &mut clap::Command, path: &str) {
            let help = cmd.render_long_help().to_string();
            assert!(help.contains("burghers "), "`{path} --help` has no example");
            // clap's generated `help` subcommand is no command of ours.
            for sub in cmd.get_subcommands_mut().filter(|s| s.get_name() != "help") {
                let name = format!("{path} {}", sub.get_name());
                check(sub, &name);
            }
        }
        let mut cmd = Cli::command();
        for sub in cmd.get_subcommands_mut() {
            let name = format!("burghers {}", sub.get_name());
            check(sub, &name);
        }
    }
}
