//! The SDK harness seen from outside: a real process, real signals, real
//! sockets.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use mortar_test_support::{binary, wait_for};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde_json::Value;

/// Starts the fixture service and returns it with its JSON log lines.
fn start_fixture(env: &[(&str, &str)]) -> (std::process::Child, mpsc::Receiver<Value>) {
    let mut child = Command::new(binary("fixture-service"))
        .env("PORT", "0")
        .env("MORTAR_SHUTDOWN_GRACE", "10s")
        .envs(env.iter().copied())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let value: Value = serde_json::from_str(&line)
                .unwrap_or_else(|e| panic!("log line is not JSON ({e}): {line}"));
            if tx.send(value).is_err() {
                break;
            }
        }
    });
    (child, rx)
}

fn port_from_logs(rx: &mpsc::Receiver<Value>) -> u16 {
    loop {
        let line = rx
            .recv_timeout(Duration::from_secs(30))
            .expect("a listening line");
        if line["msg"] == "listening" {
            return line["port"].as_u64().unwrap() as u16;
        }
    }
}

#[test]
fn sigterm_finishes_in_flight_request_refuses_new_connections_and_exits_zero() {
    let (mut child, logs) = start_fixture(&[]);
    let port = port_from_logs(&logs);
    let base = format!("http://127.0.0.1:{port}");

    let slow_url = format!("{base}/slow?ms=1500");
    let slow = std::thread::spawn(move || {
        let client = reqwest::blocking::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()
            .unwrap();
        let resp = client.get(slow_url).send().unwrap();
        (resp.status().as_u16(), resp.text().unwrap())
    });
    // The slow request must be in flight before the signal.
    wait_for(
        "the slow request to be accepted",
        Duration::from_secs(10),
        || {
            let out = Command::new("ss")
                .args([
                    "-tnH",
                    "state",
                    "established",
                    &format!("( sport = :{port} )"),
                ])
                .output()
                .ok()?;
            (!out.stdout.is_empty()).then_some(())
        },
    );
    std::thread::sleep(Duration::from_millis(100));
    kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM).unwrap();

    // New connections are refused while the old request is still running.
    wait_for(
        "new connections to be refused",
        Duration::from_secs(5),
        || {
            TcpStream::connect(("127.0.0.1", port))
                .is_err()
                .then_some(())
        },
    );
    assert!(
        !slow.is_finished(),
        "the slow request should still be in flight"
    );

    let (status, body) = slow.join().unwrap();
    assert_eq!(status, 200);
    assert_eq!(body, "slept 1500 ms\n");
    let exit = wait_for("the service to exit", Duration::from_secs(15), || {
        child.try_wait().unwrap()
    });
    assert_eq!(exit.code(), Some(0), "a drained shutdown exits 0");

    // The log reader may still be passing on the last lines after the exit.
    let mut messages: Vec<String> = Vec::new();
    let until = std::time::Instant::now() + Duration::from_secs(5);
    while !messages.iter().any(|m| m == "drained, exiting") {
        let left = until.saturating_duration_since(std::time::Instant::now());
        match logs.recv_timeout(left) {
            Ok(l) => messages.push(l["msg"].as_str().unwrap_or("").to_owned()),
            Err(_) => break,
        }
    }
    assert!(
        messages.iter().any(|m| m.starts_with("draining")),
        "{messages:?}"
    );
    assert!(
        messages.iter().any(|m| m == "drained, exiting"),
        "{messages:?}"
    );
}

#[test]
fn readiness_turns_false_at_once_on_sigterm() {
    let (mut child, logs) = start_fixture(&[]);
    let port = port_from_logs(&logs);
    let client = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap();
    let ready = client
        .get(format!("http://127.0.0.1:{port}/health/ready"))
        .send()
        .unwrap();
    assert_eq!(ready.status(), 200);
    // Hold a request in flight so the process stays up while we probe.
    let slow = {
        let client = client.clone();
        std::thread::spawn(move || {
            client
                .get(format!("http://127.0.0.1:{port}/slow?ms=1500"))
                .send()
                .map(|r| r.status().as_u16())
        })
    };
    std::thread::sleep(Duration::from_millis(200));
    kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM).unwrap();
    // Whatever a probe meets now — a refused connection or a 503 — it is not ready.
    wait_for(
        "readiness to turn false",
        Duration::from_secs(5),
        || match client
            .get(format!("http://127.0.0.1:{port}/health/ready"))
            .send()
        {
            Ok(r) if r.status() == 200 => None,
            _ => Some(()),
        },
    );
    assert_eq!(slow.join().unwrap().unwrap(), 200);
    wait_for("exit", Duration::from_secs(15), || {
        child.try_wait().unwrap()
    });
}

#[test]
fn logs_are_json_lines_with_identity_fields() {
    let (mut child, logs) = start_fixture(&[
        ("MORTAR_SERVICE", "fixture"),
        ("MORTAR_INSTANCE", "fixture-7"),
    ]);
    let line = logs.recv_timeout(Duration::from_secs(30)).unwrap();
    for field in ["ts", "level", "msg", "service", "instance"] {
        assert!(line.get(field).is_some(), "missing {field} in {line}");
    }
    assert_eq!(line["service"], "fixture");
    assert_eq!(line["instance"], "fixture-7");
    kill(Pid::from_raw(child.id() as i32), Signal::SIGINT).unwrap();
    let exit = wait_for("exit", Duration::from_secs(15), || {
        child.try_wait().unwrap()
    });
    assert_eq!(exit.code(), Some(0), "SIGINT drains like SIGTERM");
}

#[test]
fn a_bad_variable_exits_78_with_one_line_naming_it() {
    for (env, variable) in [
        (vec![("PORT", "eighty")], "PORT"),
        (
            vec![("MORTAR_SHUTDOWN_GRACE", "soon")],
            "MORTAR_SHUTDOWN_GRACE",
        ),
        (vec![("FIXTURE_REQUIRE", "1")], "FIXTURE_NEEDS"),
    ] {
        let out = Command::new(binary("fixture-service"))
            .envs(env.iter().copied())
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(78), "{env:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        let lines: Vec<&str> = stderr.lines().collect();
        assert_eq!(lines.len(), 1, "exactly one line: {stderr}");
        assert!(lines[0].contains(variable), "{stderr}");
        assert!(lines[0].contains("expected"), "{stderr}");
    }
}
