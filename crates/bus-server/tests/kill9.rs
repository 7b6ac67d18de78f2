//! kill -9 of the broker under load: every publish that returned Ok is
//! delivered afterwards, and no delivered message is corrupt.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use mortar_bus_client::{Client, ClientConfig, NewMessage, Published};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

const ROUNDS: usize = 4;
const PRODUCERS: usize = 3;

/// Starts the test server on `dir`; returns it and its URL.
fn start_server(dir: &std::path::Path) -> (Child, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_mortar-bus-test-server"))
        .arg(dir)
        .args(["127.0.0.1:0", "--topic", "orders"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let addr = line
        .trim()
        .strip_prefix("listening ")
        .unwrap_or_else(|| panic!("bad first line {line:?}"));
    (child, format!("mortar://{addr}"))
}

/// The payload for a key: derived from the key, so any corruption shows.
fn payload(key: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(300);
    let mut x: u32 = key
        .bytes()
        .fold(2166136261, |h, b| (h ^ u32::from(b)).wrapping_mul(16777619));
    out.extend_from_slice(key.as_bytes());
    out.push(b'|');
    for _ in 0..256 {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        out.push(x as u8);
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn acknowledged_publishes_survive_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("bus");
    let acked: Arc<Mutex<BTreeSet<String>>> = Arc::default();

    for round in 0..ROUNDS {
        let (mut server, url) = start_server(&data);
        let mut cfg = ClientConfig::new(&url, "producer", "");
        cfg.publish_timeout = Duration::from_millis(500);
        let client = Client::connect_with(cfg).await.unwrap();
        let before = acked.lock().unwrap().len();
        let producers: Vec<_> = (0..PRODUCERS)
            .map(|p| {
                let client = client.clone();
                let acked = acked.clone();
                tokio::spawn(async move {
                    for seq in 0.. {
                        // Mix single publishes and small batches.
                        let keys: Vec<String> = (0..1 + seq % 3)
                            .map(|i| format!("r{round}-p{p}-s{seq}-{i}"))
                            .collect();
                        let batch = keys
                            .iter()
                            .map(|k| NewMessage::new(payload(k)).with_key(k.clone()))
                            .collect();
                        match client.publish_batch("orders", batch).await {
                            Ok(Published::Durable(ids)) => {
                                assert_eq!(ids.len(), keys.len());
                                acked.lock().unwrap().extend(keys);
                            }
                            Ok(Published::Buffered) => unreachable!("no outbox configured"),
                            Err(_) => return,
                        }
                    }
                })
            })
            .collect();
        common::wait_until("publishes to be acknowledged", || {
            acked.lock().unwrap().len() >= before + 150
        })
        .await;
        kill(Pid::from_raw(server.id() as i32), Signal::SIGKILL).unwrap();
        server.wait().unwrap();
        for p in producers {
            p.await.unwrap();
        }
        client.close();
    }

    // Restart once more and read everything back.
    let (mut server, url) = start_server(&data);
    let client = Client::connect(&url, "checker", "").await.unwrap();
    let seen: Arc<Mutex<BTreeMap<String, u32>>> = Arc::default();
    let corrupt: Arc<Mutex<Vec<String>>> = Arc::default();
    let (seen2, corrupt2) = (seen.clone(), corrupt.clone());
    let _sub = client
        .subscribe("orders", "checker", 64, move |m| {
            let (seen, corrupt) = (seen2.clone(), corrupt2.clone());
            async move {
                let key = m.key.clone().unwrap_or_default();
                if m.payload.as_ref() != payload(&key).as_slice() {
                    corrupt
                        .lock()
                        .unwrap()
                        .push(format!("id {} key {key:?}", m.id));
                }
                *seen.lock().unwrap().entry(key).or_default() += 1;
                Ok::<(), String>(())
            }
        })
        .await
        .unwrap();
    let acked = acked.lock().unwrap().clone();
    common::wait_until("every acknowledged publish to be delivered", || {
        let seen = seen.lock().unwrap();
        acked.iter().all(|k| seen.contains_key(k))
    })
    .await;
    assert!(
        corrupt.lock().unwrap().is_empty(),
        "corrupt deliveries: {:?}",
        corrupt.lock().unwrap()
    );
    assert!(acked.len() >= ROUNDS * 150);
    kill(Pid::from_raw(server.id() as i32), Signal::SIGTERM).unwrap();
    server.wait().unwrap();
}
