//! `burghers sim`: run a topology in the simulator.

#[derive(clap::Args)]
pub struct SimArgs {
    /// Topology file (TOML).
    pub topology: std::path::PathBuf,
}

pub fn run(args: SimArgs) -> Result<(), String> {
    Err(format!(
        "simulator not built yet ({})",
        args.topology.display()
    ))
}
