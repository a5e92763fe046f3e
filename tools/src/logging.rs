//! Diagnostics: `tracing` to standard error, quiet unless asked (`-v` info, `-vv` debug,
//! `-vvv` trace), and panics reported as one line rather than a backtrace.

use std::io::IsTerminal;
use tracing::Level;

pub fn init(verbose: u8) {
    let level = match verbose {
        0 => Level::WARN,
        1 => Level::INFO,
        2 => Level::DEBUG,
        _ => Level::TRACE,
    };
    tracing_subscriber::fmt()
        .with_max_level(level)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_target(verbose >= 2)
        .init();
    // A bug should still read as one clear line; -vv keeps Rust's full report for developers.
    if verbose < 2 {
        std::panic::set_hook(Box::new(|info| {
            let thread = std::thread::current();
            eprintln!(
                "burghers: internal error in thread {}: {info} (please report it; -vv shows more)",
                thread.name().unwrap_or("?")
            );
        }));
    }
}
