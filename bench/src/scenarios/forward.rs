//! placeholder
use super::Outcome;
use crate::runner::Stop;
use std::io;

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Engine {
    Threaded,
}
impl Engine {
    pub const ALL: [Engine; 1] = [Engine::Threaded];
}
pub fn run(_quick: bool, _engines: &[Engine], _stop: &Stop) -> io::Result<Outcome> {
    todo!()
}
