//! A bus server for cross-process tests: opens a broker on a data directory,
//! creates the topics named on the command line, prints `listening ADDR`
//! and serves until SIGTERM or Ctrl-C. Tests SIGKILL it to prove durability.
//!
//! Usage: `mortar-bus-test-server DATA_DIR [ADDR] [--topic NAME]...`

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use mortar_bus::BrokerConfig;

#[tokio::main]
async fn main() -> ExitCode {
    let mut data_dir: Option<PathBuf> = None;
    let mut addr: SocketAddr = SocketAddr::from(([127, 0, 0, 1], 0));
    let mut topics = Vec::new();
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        if arg == "--topic" {
            match args.next() {
                Some(t) => topics.push(t),
                None => return usage("--topic needs a name"),
            }
        } else if data_dir.is_none() {
            data_dir = Some(PathBuf::from(arg));
        } else {
            match arg.parse() {
                Ok(a) => addr = a,
                Err(e) => return usage(&format!("ADDR {arg:?} is invalid: {e}")),
            }
        }
    }
    let Some(data_dir) = data_dir else {
        return usage("DATA_DIR is missing");
    };
    let config = BrokerConfig {
        data_dir,
        ..BrokerConfig::default()
    };
    let (bound, bus) = match mortar_bus_server::run_embedded(config, addr).await {
        Ok(started) => started,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    for topic in &topics {
        if let Err(e) = bus.broker().create_topic(topic).await {
            eprintln!("error: cannot create topic {topic:?}: {e}");
            return ExitCode::FAILURE;
        }
    }
    println!("listening {bound}");
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: cannot handle SIGTERM: {e}");
            return ExitCode::FAILURE;
        }
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
    bus.shutdown().await;
    ExitCode::SUCCESS
}

fn usage(problem: &str) -> ExitCode {
    eprintln!("error: {problem}\nusage: mortar-bus-test-server DATA_DIR [ADDR] [--topic NAME]...");
    ExitCode::from(2)
}
