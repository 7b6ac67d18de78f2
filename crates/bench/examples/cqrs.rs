//! The CQRS bench without building the whole `mortar` binary:
//! `cargo run --release -p mortar-bench --example cqrs -- [postgres://…] [clients] [secs]`.
#![allow(missing_docs)]

use std::time::Duration;

use mortar_bench::cqrs::{CqrsBenchOptions, run};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let store_url = args.first().filter(|a| a.starts_with("postgres")).cloned();
    let rest: Vec<&String> = args.iter().filter(|a| !a.starts_with("postgres")).collect();
    let clients = rest.first().map_or(Ok(128), |s| s.parse())?;
    let secs = rest.get(1).map_or(Ok(5), |s| s.parse())?;
    let options = CqrsBenchOptions {
        store_url,
        clients,
        duration: Duration::from_secs(secs),
    };
    let r = run(&options).await?;
    println!("{}", mortar_bench::cqrs::format_report(&options, &r));
    Ok(())
}
