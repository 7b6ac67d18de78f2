//! `mortar`: the command line. Parsing and wiring only; the work is in the
//! library crates.

mod cli;
mod cmd;

use std::process::ExitCode;

use clap::Parser;

/// The broker, the node and the gateway allocate small buffers per message
/// and per request on many threads and free them on others; jemalloc does
/// that markedly faster than glibc malloc and still returns freed memory
/// (docs/benchmarks.md shows throughput and the broker's bounded RSS).
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    match cmd::dispatch(cli.command) {
        Ok(code) => code,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}
