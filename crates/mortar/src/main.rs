//! `mortar`: the command line. Parsing and wiring only; the work is in the
//! library crates.

mod cli;
mod cmd;

use std::process::ExitCode;

use clap::Parser;

/// The node, the broker and the gateway allocate a small buffer per message
/// and per request across many threads; mimalloc's thread-local free lists
/// make that markedly cheaper than glibc malloc (see docs/benchmarks.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

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
