//! Group commit's decision step, shared by both backends: given the
//! appends queued at one moment and the current version of their streams,
//! which appends go in (and at which versions) and which conflict.
//!
//! Appends to the same stream within one batch see each other, in queue
//! order, exactly as if they had been committed one after the other.

use std::collections::HashMap;

use tokio::sync::oneshot;

use crate::{AppendRequest, Appended, ExpectedVersion, Snapshot, StoreError};

/// Where a writer thread answers one queued write.
pub(crate) type Reply<T> = oneshot::Sender<Result<T, StoreError>>;

/// One write queued for a backend's writer (the only writer of its store).
pub(crate) enum Write {
    Append(AppendRequest, Reply<Appended>),
    Snapshot(Snapshot, Reply<()>),
    MarkSent(Vec<i64>, Reply<()>),
}

/// The verdict on one append of a batch.
pub(crate) enum Verdict {
    /// Goes in: its first event gets this version.
    Accept { first_version: i64 },
    /// Refused before touching the database.
    Reject(StoreError),
}

/// Decides every append of a batch. `current` holds the committed version
/// of each stream the batch touches (absent = 0).
pub(crate) fn plan(requests: &[&AppendRequest], current: &HashMap<String, i64>) -> Vec<Verdict> {
    let mut versions: HashMap<&str, i64> = HashMap::new();
    requests
        .iter()
        .map(|request| {
            if request.events.is_empty() {
                return Verdict::Reject(StoreError::Invalid(format!(
                    "an append to {:?} has no events",
                    request.stream_id
                )));
            }
            let actual = *versions
                .entry(request.stream_id.as_str())
                .or_insert_with(|| current.get(&request.stream_id).copied().unwrap_or(0));
            if let ExpectedVersion::Exact(expected) = request.expected
                && expected != actual
            {
                return Verdict::Reject(StoreError::Conflict {
                    stream_id: request.stream_id.clone(),
                    expected,
                    actual,
                });
            }
            versions.insert(
                request.stream_id.as_str(),
                actual + request.events.len() as i64,
            );
            Verdict::Accept {
                first_version: actual + 1,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::NewEvent;

    fn req(stream: &str, expected: ExpectedVersion, n: usize) -> AppendRequest {
        AppendRequest::new(
            stream,
            expected,
            (0..n)
                .map(|_| NewEvent::new("E", serde_json::json!({})))
                .collect(),
        )
    }

    #[test]
    fn appends_in_one_batch_see_each_other() {
        let a = req("s", ExpectedVersion::Exact(2), 2);
        let b = req("s", ExpectedVersion::Exact(2), 1);
        let c = req("s", ExpectedVersion::Exact(4), 1);
        let d = req("t", ExpectedVersion::Any, 1);
        let current = HashMap::from([("s".to_owned(), 2)]);
        let v = plan(&[&a, &b, &c, &d], &current);
        assert!(matches!(v[0], Verdict::Accept { first_version: 3 }));
        assert!(matches!(
            v[1],
            Verdict::Reject(StoreError::Conflict { actual: 4, .. })
        ));
        assert!(matches!(v[2], Verdict::Accept { first_version: 5 }));
        assert!(matches!(v[3], Verdict::Accept { first_version: 1 }));
    }
}
