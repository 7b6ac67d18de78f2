//! Group commit: one thread per topic drains every publish waiting in its channel, writes
//! them all, fsyncs once, then answers every waiter. Under load many publishers share
//! one fsync, which is what makes durable publishing fast.
//!
//! The writer is a dedicated OS thread rather than a task that hands each commit to a
//! blocking pool: the commit is blocking I/O anyway, and a thread that owns the file
//! saves two hand-offs between threads on every commit, which is publish latency.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use tokio::sync::{Notify, mpsc, oneshot};

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

/// Starts the writer thread for the log in `topic`. It ends when every sender is
/// dropped, after committing everything already queued, and then fires the returned
/// receiver. `appended` is notified after each commit.
pub(crate) fn spawn(
    topic: &str,
    writer: LogWriter,
    requests: mpsc::Receiver<AppendRequest>,
    appended: Arc<Notify>,
) -> Result<oneshot::Receiver<()>, std::io::Error> {
    let (done, finished) = oneshot::channel();
    std::thread::Builder::new()
        .name(format!("bus-writer-{topic}"))
        .spawn(move || {
            run(writer, requests, &appended);
            let _ = done.send(());
        })?;
    Ok(finished)
}

fn run(mut writer: LogWriter, mut requests: mpsc::Receiver<AppendRequest>, appended: &Notify) {
    let mut batch = Vec::new();
    while requests.blocking_recv_many(&mut batch, MAX_REQUESTS_PER_COMMIT) > 0 {
        let slices: Vec<&[NewMessage]> = batch.iter().map(|r| r.messages.as_slice()).collect();
        let result = writer.append(&slices, now_ms());
        match result {
            Ok(firsts) => {
                appended.notify_waiters();
                for (request, first) in batch.drain(..).zip(firsts) {
                    let ids = (first..first + request.messages.len() as u64).collect();
                    let _ = request.reply.send(Ok(ids));
                }
            }
            Err(error) => {
                tracing::error!(%error, "publish failed; the publishers get the error");
                for request in batch.drain(..) {
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
