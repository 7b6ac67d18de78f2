//! Group commit: one task per topic drains every publish waiting in its channel, writes
//! them all, fsyncs once, then answers every waiter. Under load many publishers share
//! one fsync, which is what makes durable publishing fast.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use tokio::sync::{Notify, mpsc, oneshot};
use tokio::task::JoinHandle;

use crate::log::LogWriter;
use crate::{BusError, NewMessage};

/// Most publish requests folded into one commit, so one commit's latency stays bounded.
const MAX_REQUESTS_PER_COMMIT: usize = 1024;

/// How many publish requests may queue before publishers wait (backpressure).
pub(crate) const QUEUE_DEPTH: usize = 4096;

/// One publish waiting for its fsync.
pub(crate) struct AppendRequest {
    pub(crate) messages: Vec<NewMessage>,
    pub(crate) reply: oneshot::Sender<Result<Vec<u64>, BusError>>,
}

/// Starts the writer task. It ends when every sender is dropped, after committing
/// everything already queued. `appended` is notified after each commit.
pub(crate) fn spawn(
    writer: LogWriter,
    requests: mpsc::Receiver<AppendRequest>,
    appended: Arc<Notify>,
) -> JoinHandle<()> {
    tokio::spawn(run(writer, requests, appended))
}

async fn run(
    mut writer: LogWriter,
    mut requests: mpsc::Receiver<AppendRequest>,
    appended: Arc<Notify>,
) {
    while let Some(first) = requests.recv().await {
        // Publishers answered by the previous commit are usually about to send again:
        // letting them run first puts them into this commit instead of the next one.
        tokio::task::yield_now().await;
        let mut batch = vec![first];
        while batch.len() < MAX_REQUESTS_PER_COMMIT {
            match requests.try_recv() {
                Ok(request) => batch.push(request),
                Err(_) => break,
            }
        }
        let joined = tokio::task::spawn_blocking(move || {
            let slices: Vec<&[NewMessage]> = batch.iter().map(|r| r.messages.as_slice()).collect();
            let result = writer.append(&slices, now_ms());
            (writer, batch, result)
        })
        .await;
        let Ok((returned, batch, result)) = joined else {
            // The runtime is shutting down; dropped replies tell publishers the broker closed.
            return;
        };
        writer = returned;
        match result {
            Ok(firsts) => {
                appended.notify_waiters();
                for (request, first) in batch.into_iter().zip(firsts) {
                    let ids = (first..first + request.messages.len() as u64).collect();
                    let _ = request.reply.send(Ok(ids));
                }
            }
            Err(error) => {
                tracing::error!(%error, "publish failed; the publishers get the error");
                for request in batch {
                    let _ = request.reply.send(Err(copy_error(&error)));
                }
            }
        }
    }
}

/// One error for each waiter of a failed commit (`io::Error` is not `Clone`).
fn copy_error(error: &BusError) -> BusError {
    match error {
        BusError::Io { path, source } => BusError::Io {
            path: path.clone(),
            source: std::io::Error::new(source.kind(), source.to_string()),
        },
        BusError::Corrupt { path, detail } => BusError::Corrupt {
            path: path.clone(),
            detail: detail.clone(),
        },
        _ => BusError::Closed,
    }
}

/// Milliseconds since the Unix epoch (0 if the clock is before it).
pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}
