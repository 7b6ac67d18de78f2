//! NATS for tests: the shared JetStream server on 127.0.0.1:4222 (which in
//! CI must be there), and private `nats-server -js` processes a test may
//! kill and restart without disturbing anyone else.

use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// The shared JetStream server every machine of this project runs.
pub const SHARED_NATS: &str = "nats://127.0.0.1:4222";

/// The shared server's URL, or `None` (with the reason printed) when it is
/// not reachable here. Under `CI=true` an unreachable server fails the test:
/// CI must test the NATS backend, never skip it.
pub fn shared_or_skip(test: &str) -> Option<String> {
    if TcpStream::connect_timeout(&"127.0.0.1:4222".parse().unwrap(), Duration::from_secs(2))
        .is_ok()
    {
        return Some(SHARED_NATS.to_owned());
    }
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "{test}: NATS JetStream is not reachable at {SHARED_NATS}, and CI=true requires the NATS tests to run"
    );
    eprintln!("SKIPPED {test}: NATS JetStream is not reachable at {SHARED_NATS}");
    None
}

/// The `nats-server` binary, if installed (Debian puts it in /usr/sbin).
pub fn server_binary() -> Option<PathBuf> {
    [
        "/usr/sbin/nats-server",
        "/usr/bin/nats-server",
        "/usr/local/bin/nats-server",
    ]
    .iter()
    .map(PathBuf::from)
    .find(|p| p.exists())
}

/// A private JetStream server on a loopback port of its own, with its own
/// store directory, that survives [`PrivateNats::kill`] + [`PrivateNats::start`].
pub struct PrivateNats {
    port: u16,
    store: PathBuf,
    binary: PathBuf,
    child: Option<Child>,
}

impl PrivateNats {
    /// A server that will use `store` and a free port; not started yet.
    pub fn new(store: &Path) -> Option<PrivateNats> {
        let binary = server_binary()?;
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        Some(PrivateNats {
            port,
            store: store.to_path_buf(),
            binary,
            child: None,
        })
    }

    /// `nats://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// Starts the server and waits until it accepts connections.
    pub fn start(&mut self) {
        self.spawn(true);
    }

    /// Starts a plain NATS server, JetStream off: what a misconfigured
    /// deployment looks like.
    pub fn start_without_jetstream(&mut self) {
        self.spawn(false);
    }

    fn spawn(&mut self, jetstream: bool) {
        let mut command = Command::new(&self.binary);
        if jetstream {
            command.arg("-js").arg("-sd").arg(&self.store);
        }
        let child = command
            .args(["-a", "127.0.0.1", "-p", &self.port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start nats-server");
        self.child = Some(child);
        let addr = format!("127.0.0.1:{}", self.port).parse().unwrap();
        crate::wait::wait_for(
            "the private nats-server to listen",
            Duration::from_secs(30),
            || TcpStream::connect_timeout(&addr, Duration::from_millis(200)).ok(),
        );
    }

    /// SIGKILLs the server (no clean shutdown) and reaps it.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for PrivateNats {
    fn drop(&mut self) {
        self.kill();
    }
}
