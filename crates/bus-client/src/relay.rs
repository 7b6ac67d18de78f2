//! The outbox relay: forwards buffered publishes to the broker, oldest
//! first, whenever a connection is up.

use std::sync::Arc;
use std::time::Duration;

use mortar_bus_proto::ErrorCode;
use tokio::sync::watch;

use crate::client::Inner;
use crate::error::ClientError;
use crate::outbox::{Outbox, OutboxRecord};
use crate::session::RequestError;

/// Runs until the client shuts down.
pub(crate) async fn relay(inner: Arc<Inner>, outbox: Arc<Outbox>) {
    let mut sessions: watch::Receiver<_> = inner.session.subscribe();
    loop {
        if inner.shutdown.is_cancelled() {
            return;
        }
        let Some(route) = inner.route() else {
            tokio::select! {
                _ = inner.shutdown.cancelled() => return,
                _ = sessions.changed() => continue,
                // NATS reconnects by itself; look again shortly.
                _ = tokio::time::sleep(Duration::from_millis(200)), if inner.nats.is_some() => continue,
            }
        };
        let peeked = {
            let outbox = outbox.clone();
            tokio::task::spawn_blocking(move || outbox.peek()).await
        };
        let record = match peeked {
            Ok(Ok(Some(record))) => record,
            Ok(Ok(None)) => {
                tokio::select! {
                    _ = inner.shutdown.cancelled() => return,
                    _ = inner.relay_wake.notified() => {}
                    _ = sessions.changed() => {}
                }
                continue;
            }
            Ok(Err(e)) => {
                tracing::error!(error = %e, "bus outbox: cannot read; retrying");
                pause(&inner, Duration::from_secs(1)).await;
                continue;
            }
            Err(_) => return,
        };
        match route
            .publish(&inner, &record.topic, record.messages.clone())
            .await
        {
            Ok(_) => advance(&inner, &outbox, record.end).await,
            Err(RequestError::Disconnected) => {
                tokio::select! {
                    _ = inner.shutdown.cancelled() => return,
                    _ = route.lost() => {}
                }
            }
            // An unknown topic may be created any moment (services and
            // topics start in any order): wait for it rather than set aside.
            Err(RequestError::Refused(ClientError::Broker { code, message }))
                if code.is_retryable() || code == ErrorCode::UnknownTopic =>
            {
                tracing::warn!(%code, message, "bus outbox: the broker cannot take a buffered publish yet; retrying");
                pause(&inner, Duration::from_secs(1)).await;
            }
            Err(RequestError::Refused(e)) => set_aside(&inner, &outbox, record, e).await,
        }
    }
}

async fn advance(inner: &Inner, outbox: &Arc<Outbox>, end: u64) {
    let o = outbox.clone();
    match tokio::task::spawn_blocking(move || o.advance(end)).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => {
            // The publish is durable at the broker; failing to record that
            // only means it is sent again (at-least-once).
            tracing::error!(error = %e, "bus outbox: cannot record relay progress");
            pause(inner, Duration::from_secs(1)).await;
        }
        Err(_) => {}
    }
}

/// A publish the broker will never take (too large, invalid name) is moved
/// to `<outbox>.rejected` with an error log, so it is neither retried
/// forever, blocking everything behind it, nor silently lost.
async fn set_aside(inner: &Inner, outbox: &Arc<Outbox>, record: OutboxRecord, why: ClientError) {
    tracing::error!(topic = %record.topic, messages = record.messages.len(), error = %why,
        "bus outbox: the broker refused a buffered publish; it is kept in the .rejected file beside the outbox");
    let o = outbox.clone();
    let end = record.end;
    match tokio::task::spawn_blocking(move || o.set_aside(&record)).await {
        Ok(Ok(())) => advance(inner, outbox, end).await,
        Ok(Err(e)) => {
            tracing::error!(error = %e, "bus outbox: cannot set the refused publish aside; retrying");
            pause(inner, Duration::from_secs(5)).await;
        }
        Err(_) => {}
    }
}

async fn pause(inner: &Inner, d: Duration) {
    tokio::select! {
        _ = inner.shutdown.cancelled() => {}
        _ = tokio::time::sleep(d) => {}
    }
}
