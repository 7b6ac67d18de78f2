//! Waiting for the signals that ask a process to stop.
//!
//! Handlers are installed up front with [`Signals::install`]: a SIGTERM that
//! arrives before anyone waits for it must start a drain, not kill the
//! process with the default action.

use tokio::signal::unix::{Signal, SignalKind, signal};

/// Installed SIGTERM and SIGINT handlers.
#[derive(Debug)]
pub struct Signals {
    term: Option<Signal>,
    int: Option<Signal>,
}

impl Signals {
    /// Installs the handlers now. Must run inside a Tokio runtime.
    pub fn install() -> Self {
        Signals {
            term: signal(SignalKind::terminate()).ok(),
            int: signal(SignalKind::interrupt()).ok(),
        }
    }

    /// Waits for the next SIGTERM or SIGINT and returns its name.
    ///
    /// Both mean "drain and exit": SIGTERM is what supervisors and Kubernetes
    /// send, SIGINT is Ctrl-C in a terminal.
    pub async fn recv(&mut self) -> &'static str {
        async fn next(signal: &mut Option<Signal>) {
            match signal {
                Some(s) => {
                    s.recv().await;
                }
                None => std::future::pending().await,
            }
        }
        if self.term.is_none() && self.int.is_none() {
            // No signal driver: Ctrl-C is the best that is left.
            let _ = tokio::signal::ctrl_c().await;
            return "SIGINT";
        }
        tokio::select! {
            () = next(&mut self.term) => "SIGTERM",
            () = next(&mut self.int) => "SIGINT",
        }
    }
}

/// Resolves when stdin reaches end-of-file (or fails): the supervising node
/// holds the other end and the OS closes it when the node dies.
pub async fn node_gone() {
    use tokio::io::AsyncReadExt;
    let mut stdin = tokio::io::stdin();
    let mut buf = [0u8; 64];
    loop {
        match stdin.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
    }
}
