//! Group commit: one thread per topic drains every publish waiting in its channel and
//! writes them all at once; one fsync then answers every waiter. Under load many
//! publishers share one fsync, which is what makes durable publishing fast.
//!
//! With [`Delivery::Written`] the fsync runs on a second thread (the syncer) while the
//! writer goes on writing and consumers already read what was written: a slow fsync
//! then delays acknowledgements only, not the writes and deliveries behind it. The
//! syncer also folds every commit queued behind a running fsync into its next one.
//! With [`Delivery::Synced`] the writer fsyncs each commit itself before publishing it.
//!
//! Both are dedicated OS threads rather than tasks that hand each commit to a blocking
//! pool: their work is blocking I/O anyway, and a thread that owns it saves two
//! hand-offs between threads on every commit, which is publish latency.

use std::ops::Range;
use std::sync::{Arc, mpsc as std_mpsc};
use std::time::{SystemTime, UNIX_EPOCH};

use tokio::sync::{Notify, mpsc, oneshot};

use crate::log::{Log, LogWriter, Unsynced};
use crate::{BusError, NewMessage};

/// Most publish requests folded into one commit, so one commit's latency stays bounded.
const MAX_REQUESTS_PER_COMMIT: usize = 1024;

/// How many publish requests may queue before publishers wait (backpressure).
pub(crate) const QUEUE_DEPTH: usize = 4096;

/// How many written commits may wait for the syncer before the writer waits for it,
/// which bounds what is written but not yet durable. Deep enough that a fsync stalled
/// for a second at a thousand commits a second does not stall the writes behind it.
const SYNC_QUEUE_DEPTH: usize = 1024;

/// What a publisher is answered: the ids of its messages.
type Reply = oneshot::Sender<Result<Vec<u64>, BusError>>;

/// One publish waiting for its fsync.
pub(crate) struct AppendRequest {
    pub(crate) messages: Vec<NewMessage>,
    pub(crate) reply: Reply,
}

/// One written commit waiting for the syncer.
struct SyncJob {
    files: Vec<Unsynced>,
    /// Each publisher of the commit with the offsets its messages got.
    replies: Vec<(Reply, Range<u64>)>,
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
    let syncer = if writer.delivery() == crate::Delivery::Written {
        let (jobs, queue) = std_mpsc::sync_channel(SYNC_QUEUE_DEPTH);
        let log = Arc::clone(writer.log());
        let thread = std::thread::Builder::new()
            .name(format!("bus-sync-{topic}"))
            .spawn(move || sync_loop(&log, &queue))?;
        Some((jobs, thread))
    } else {
        None
    };
    std::thread::Builder::new()
        .name(format!("bus-writer-{topic}"))
        .spawn(move || {
            let (jobs, thread) = syncer.unzip();
            run(writer, requests, &appended, jobs.as_ref());
            // Everything written is fsynced and answered before the topic closes.
            drop(jobs);
            if let Some(thread) = thread
                && thread.join().is_err()
            {
                tracing::error!("the bus syncer thread panicked");
            }
            let _ = done.send(());
        })?;
    Ok(finished)
}

fn run(
    mut writer: LogWriter,
    mut requests: mpsc::Receiver<AppendRequest>,
    appended: &Notify,
    syncer: Option<&std_mpsc::SyncSender<SyncJob>>,
) {
    let mut batch = Vec::new();
    while requests.blocking_recv_many(&mut batch, MAX_REQUESTS_PER_COMMIT) > 0 {
        let slices: Vec<&[NewMessage]> = batch.iter().map(|r| r.messages.as_slice()).collect();
        let result = writer.append(&slices, now_ms());
        match result {
            Ok(firsts) => {
                appended.notify_waiters();
                let replies = batch.drain(..).zip(firsts).map(|(request, first)| {
                    (request.reply, first..first + request.messages.len() as u64)
                });
                let files = writer.take_unsynced();
                match syncer {
                    Some(syncer) if !files.is_empty() => {
                        let job = SyncJob {
                            files,
                            replies: replies.collect(),
                        };
                        if let Err(std_mpsc::SendError(job)) = syncer.send(job) {
                            answer(job.replies, &Err(BusError::Closed));
                        }
                    }
                    _ => answer(replies, &Ok(())),
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

/// The syncer: fsyncs what the writer wrote, one fsync for every commit queued by then,
/// and answers their publishers. Ends when the writer drops its sender.
fn sync_loop(log: &Log, queue: &std_mpsc::Receiver<SyncJob>) {
    let mut jobs = Vec::new();
    while let Ok(job) = queue.recv() {
        jobs.push(job);
        jobs.extend(queue.try_iter().take(SYNC_QUEUE_DEPTH));
        let mut files: Vec<Unsynced> = Vec::new();
        for file in jobs.iter_mut().flat_map(|j| j.files.drain(..)) {
            if files.last().is_none_or(|last| !last.same_file(&file)) {
                files.push(file);
            }
        }
        let synced = log.sync_written(&files);
        for job in jobs.drain(..) {
            answer(job.replies, &synced);
        }
    }
}

/// Answers publishers with their ids, or each with a copy of the error.
fn answer(replies: impl IntoIterator<Item = (Reply, Range<u64>)>, outcome: &Result<(), BusError>) {
    for (reply, ids) in replies {
        let _ = reply.send(match outcome {
            Ok(()) => Ok(ids.collect()),
            Err(error) => Err(copy_error(error)),
        });
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
        BusError::SyncFailed { path, detail } => BusError::SyncFailed {
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
