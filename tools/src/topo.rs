//! `burghers topo`: generate topology files.

#[derive(clap::Args)]
pub struct TopoArgs {}

pub fn run(_args: TopoArgs) -> Result<(), String> {
    Err("topology generator not built yet".into())
}
