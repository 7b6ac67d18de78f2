//! Running one service binary alone (no node) and finding its port.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use serde_json::Value;

/// A service process started with `PORT=0`; its port is read from the
/// SDK's `listening` log line.
#[derive(Debug)]
pub struct ServiceProcess {
    /// The process.
    pub child: Child,
    /// The port it bound.
    pub port: u16,
    /// Its later log lines.
    pub logs: mpsc::Receiver<Value>,
}

impl ServiceProcess {
    /// Starts `binary` with `env` and waits for it to listen.
    pub fn start(binary: &Path, env: &[(&str, &str)]) -> ServiceProcess {
        ServiceProcess::start_with_args(binary, &[], env)
    }

    /// [`ServiceProcess::start`] with arguments (`mortar bus http`, a
    /// script run by python). A `PORT` in `env` wins over 0.
    #[allow(clippy::zombie_processes)] // waited for in Drop
    pub fn start_with_args(binary: &Path, args: &[&str], env: &[(&str, &str)]) -> ServiceProcess {
        let mut child = Command::new(binary)
            .args(args)
            .env("PORT", "0")
            .env("MORTAR_LOG_LEVEL", "info")
            .envs(env.iter().copied())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", binary.display()));
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let Ok(value) = serde_json::from_str::<Value>(&line) else {
                    continue;
                };
                if tx.send(value).is_err() {
                    break;
                }
            }
        });
        loop {
            let line = rx
                .recv_timeout(Duration::from_secs(60))
                .expect("the service logs a `listening` line");
            if line["msg"] == "listening" {
                let port = line["port"].as_u64().expect("a port") as u16;
                return ServiceProcess {
                    child,
                    port,
                    logs: rx,
                };
            }
        }
    }

    /// `http://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// SIGKILL, no draining: the crash case.
    pub fn kill9(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for ServiceProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
