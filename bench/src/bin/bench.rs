//! The `bench` binary: `cargo run --release -p bench -- <scenario> [--quick] [--out DIR]`.

fn main() -> std::process::ExitCode {
    bench::cli::main(std::env::args_os())
}
