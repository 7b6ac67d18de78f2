//! The client: a connection manager that reconnects with backoff, publishes
//! that fall back to the outbox, and the entry points services call.

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use mortar_bus_proto::{Frame, NewMessage};
use serde::Serialize;
use tokio::sync::{Notify, oneshot, watch};
use tokio::time::Instant;
use tokio_util::sync::{CancellationToken, DropGuard};

use crate::config::ClientConfig;
use crate::error::ClientError;
use crate::nats::NatsLink;
use crate::outbox::Outbox;
use crate::session::{Deliveries, Reply, RequestError, Session};
use crate::url::{BusUrl, Scheme};

/// How a publish was taken.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Published {
    /// The broker stored it durably (fsynced); these are its ids.
    Durable(Vec<u64>),
    /// The broker was unreachable: it is in the local outbox (fsynced) and
    /// will be relayed in order once the broker is back.
    Buffered,
}

impl Published {
    /// The broker's ids, when the publish went straight to the broker.
    pub fn ids(&self) -> Option<&[u64]> {
        match self {
            Published::Durable(ids) => Some(ids),
            Published::Buffered => None,
        }
    }
}

/// A subscription to re-establish after every reconnect.
#[derive(Debug, Clone)]
pub(crate) struct SubSpec {
    pub(crate) topic: String,
    pub(crate) group: String,
    pub(crate) credits: u32,
}

/// A live way to the bus: the embedded broker's session or JetStream.
pub(crate) enum Route {
    Mortar(Arc<Session>),
    Nats(Arc<NatsLink>),
}

impl Route {
    /// Publishes a batch; `Disconnected` means it may or may not have landed.
    pub(crate) async fn publish(
        &self,
        inner: &Inner,
        topic: &str,
        messages: Vec<NewMessage>,
    ) -> Result<Vec<u64>, RequestError> {
        match self {
            Route::Mortar(session) => session.publish(inner.next_id(), topic, messages).await,
            Route::Nats(nats) => nats.publish(topic, messages).await,
        }
    }

    /// Returns once this route is gone (or, for NATS, after a pause: the
    /// NATS client reconnects on its own).
    pub(crate) async fn lost(&self) {
        match self {
            Route::Mortar(session) => session.closed().cancelled().await,
            Route::Nats(_) => tokio::time::sleep(Duration::from_millis(500)).await,
        }
    }
}

/// State shared by the client's handles and background tasks.
pub(crate) struct Inner {
    pub(crate) config: ClientConfig,
    authority: String,
    pub(crate) session: watch::Sender<Option<Arc<Session>>>,
    next_id: AtomicU64,
    pub(crate) subs: Mutex<HashMap<u64, SubSpec>>,
    pub(crate) deliveries: Deliveries,
    pub(crate) outbox: Option<Arc<Outbox>>,
    /// Set for a `nats://` URL: everything goes to JetStream instead of a session.
    pub(crate) nats: Option<Arc<NatsLink>>,
    pub(crate) relay_wake: Notify,
    pub(crate) shutdown: CancellationToken,
}

pub(crate) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Inner {
    pub(crate) fn next_id(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::Relaxed)
    }

    pub(crate) fn current(&self) -> Option<Arc<Session>> {
        self.session.borrow().clone()
    }

    /// Where a publish can go right now, if anywhere.
    pub(crate) fn route(&self) -> Option<Route> {
        match &self.nats {
            Some(nats) => nats.is_connected().then(|| Route::Nats(nats.clone())),
            None => self.current().map(Route::Mortar),
        }
    }

    /// The current session, waiting for one until `deadline`.
    async fn session_until(&self, deadline: Instant) -> Result<Arc<Session>, ClientError> {
        if self.shutdown.is_cancelled() {
            return Err(ClientError::Closed);
        }
        if let Some(session) = self.current() {
            return Ok(session);
        }
        let mut rx = self.session.subscribe();
        let waited = tokio::select! {
            _ = self.shutdown.cancelled() => return Err(ClientError::Closed),
            r = tokio::time::timeout_at(deadline, rx.wait_for(|s| s.is_some())) => r,
        };
        match waited {
            Ok(Ok(s)) => s.clone().ok_or(ClientError::Closed),
            Ok(Err(_)) => Err(ClientError::Closed),
            Err(_) => Err(ClientError::Unavailable {
                url: self.config.url.clone(),
                reason: format!("not connected within {:?}", self.config.publish_timeout),
            }),
        }
    }
}

/// A connection to the mortar bus, cheap to clone; see the crate docs.
/// Dropping the last clone stops its background tasks.
#[derive(Clone)]
pub struct Client {
    pub(crate) inner: Arc<Inner>,
    _stop: Arc<DropGuard>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("url", &self.inner.config.url)
            .field("connected", &self.inner.current().is_some())
            .finish()
    }
}

impl Client {
    /// Connects to `url` (`mortar://HOST:PORT`) as `name` with `token`,
    /// without an outbox: fails if the bus cannot be reached now.
    pub async fn connect(url: &str, name: &str, token: &str) -> Result<Client, ClientError> {
        Client::connect_with(ClientConfig::new(url, name, token)).await
    }

    /// Connects as `name` to the bus the environment names (`MORTAR_BUS_URL`
    /// and friends, see [`ClientConfig::from_env`]).
    pub async fn from_env(name: &str) -> Result<Client, ClientError> {
        Client::connect_with(ClientConfig::from_env(name)?).await
    }

    /// Connects with explicit settings. With an outbox, an unreachable bus is
    /// not an error: publishes are buffered until it is back.
    pub async fn connect_with(config: ClientConfig) -> Result<Client, ClientError> {
        let url = BusUrl::parse(&config.url)?;
        let outbox = match &config.outbox {
            Some(path) => {
                let path = path.clone();
                let max = config.outbox_max_bytes;
                let opened = tokio::task::spawn_blocking(move || Outbox::open(path, max))
                    .await
                    .map_err(|_| ClientError::Closed)??;
                Some(Arc::new(opened))
            }
            None => None,
        };
        let nats = match url.scheme {
            Scheme::Nats => Some(Arc::new(
                NatsLink::connect(&config, outbox.is_some()).await?,
            )),
            Scheme::Mortar => None,
        };
        let shutdown = CancellationToken::new();
        let inner = Arc::new(Inner {
            config,
            nats,
            authority: url.authority,
            session: watch::channel(None).0,
            next_id: AtomicU64::new(1),
            subs: Mutex::default(),
            deliveries: Arc::default(),
            outbox: outbox.clone(),
            relay_wake: Notify::new(),
            shutdown: shutdown.clone(),
        });
        let first = if inner.nats.is_some() {
            // The NATS client keeps its own connection (and reconnects).
            Ok(())
        } else {
            let (first_tx, first_rx) = oneshot::channel();
            tokio::spawn(manage_connection(inner.clone(), first_tx));
            first_rx.await.unwrap_or(Err(ClientError::Closed))
        };
        if let Err(e) = first {
            if outbox.is_none() {
                shutdown.cancel();
                return Err(e);
            }
            tracing::warn!(error = %e, "bus client: the bus is unreachable; publishes go to the outbox until it is back");
        }
        if let Some(outbox) = outbox {
            tokio::spawn(crate::relay::relay(inner.clone(), outbox));
        }
        Ok(Client {
            inner,
            _stop: Arc::new(shutdown.drop_guard()),
        })
    }

    /// Whether a connection to the broker is up right now.
    pub fn is_connected(&self) -> bool {
        match &self.inner.nats {
            Some(nats) => nats.is_connected(),
            None => self.inner.current().is_some(),
        }
    }

    /// The outbox, when configured (e.g. to report how much is buffered).
    pub fn outbox(&self) -> Option<&Outbox> {
        self.inner.outbox.as_deref()
    }

    /// Creates a topic and its dead-letter topic; idempotent.
    pub async fn create_topic(&self, topic: &str) -> Result<(), ClientError> {
        if let Some(nats) = &self.inner.nats {
            return nats.create_topic(topic).await;
        }
        let deadline = Instant::now() + self.inner.config.publish_timeout;
        loop {
            let session = self.inner.session_until(deadline).await?;
            let id = self.inner.next_id();
            let frame = Frame::CreateTopic {
                request_id: id,
                topic: topic.to_owned(),
            };
            match session.request(id, frame).await {
                Ok(Reply::Refused(code, message)) => {
                    return Err(ClientError::Broker { code, message });
                }
                Ok(_) => return Ok(()),
                Err(RequestError::Refused(e)) => return Err(e),
                Err(RequestError::Disconnected) => {
                    if Instant::now() >= deadline {
                        return Err(self.unavailable("the connection dropped"));
                    }
                }
            }
        }
    }

    /// Publishes one message; see [`Client::publish_batch`].
    pub async fn publish(
        &self,
        topic: &str,
        message: NewMessage,
    ) -> Result<Published, ClientError> {
        self.publish_batch(topic, vec![message]).await
    }

    /// Publishes `value` as JSON with header `content-type: application/json`.
    pub async fn publish_json<T: Serialize + ?Sized>(
        &self,
        topic: &str,
        key: Option<&str>,
        value: &T,
    ) -> Result<Published, ClientError> {
        let mut message = NewMessage::new(serde_json::to_vec(value)?)
            .with_header("content-type", "application/json");
        message.key = key.map(str::to_owned);
        self.publish(topic, message).await
    }

    /// Publishes a batch atomically and in order. Returns once it is durable
    /// at the broker, or — with an outbox, while the broker is unreachable or
    /// older publishes still wait in the outbox — once it is durable in the
    /// outbox. A broker refusal (unknown topic, too large) is an error.
    pub async fn publish_batch(
        &self,
        topic: &str,
        mut messages: Vec<NewMessage>,
    ) -> Result<Published, ClientError> {
        if self.inner.shutdown.is_cancelled() {
            return Err(ClientError::Closed);
        }
        crate::trace::stamp(&mut messages);
        if let Some(outbox) = &self.inner.outbox {
            // Older buffered publishes go first: keep the order.
            if outbox.is_empty()
                && let Some(route) = self.inner.route()
            {
                match route.publish(&self.inner, topic, messages.clone()).await {
                    Ok(ids) => return Ok(Published::Durable(ids)),
                    Err(RequestError::Refused(e)) => return Err(e),
                    Err(RequestError::Disconnected) => {}
                }
            }
            return self.buffer(outbox.clone(), topic, messages).await;
        }
        if let Some(nats) = &self.inner.nats {
            return match nats.publish(topic, messages).await {
                Ok(ids) => Ok(Published::Durable(ids)),
                Err(RequestError::Refused(e)) => Err(e),
                Err(RequestError::Disconnected) => {
                    Err(self.unavailable("NATS did not acknowledge the publish"))
                }
            };
        }
        let deadline = Instant::now() + self.inner.config.publish_timeout;
        loop {
            let session = self.inner.session_until(deadline).await?;
            let id = self.inner.next_id();
            match session.publish(id, topic, messages.clone()).await {
                Ok(ids) => return Ok(Published::Durable(ids)),
                Err(RequestError::Refused(e)) => return Err(e),
                Err(RequestError::Disconnected) => {
                    if Instant::now() >= deadline {
                        return Err(self.unavailable("the connection dropped"));
                    }
                }
            }
        }
    }

    async fn buffer(
        &self,
        outbox: Arc<Outbox>,
        topic: &str,
        messages: Vec<NewMessage>,
    ) -> Result<Published, ClientError> {
        let topic = topic.to_owned();
        tokio::task::spawn_blocking(move || outbox.append(&topic, &messages))
            .await
            .map_err(|_| ClientError::Closed)??;
        self.inner.relay_wake.notify_one();
        Ok(Published::Buffered)
    }

    fn unavailable(&self, reason: &str) -> ClientError {
        ClientError::Unavailable {
            url: self.inner.config.url.clone(),
            reason: reason.to_owned(),
        }
    }

    /// Stops the background tasks; publishes fail with `Closed` afterwards.
    /// Everything already `Buffered` stays in the outbox for the next start.
    pub fn close(&self) {
        self.inner.shutdown.cancel();
    }
}

/// Keeps a session up: connects, re-subscribes, waits for it to drop,
/// reconnects with exponential backoff, until shutdown.
async fn manage_connection(inner: Arc<Inner>, first: oneshot::Sender<Result<(), ClientError>>) {
    let mut first = Some(first);
    let mut backoff = inner.config.min_backoff;
    loop {
        let attempt = tokio::select! {
            _ = inner.shutdown.cancelled() => break,
            r = Session::connect(&inner.authority, &inner.config.name, &inner.config.token, inner.deliveries.clone()) => r,
        };
        match attempt {
            Ok(session) => {
                backoff = inner.config.min_backoff;
                // Re-subscribe before the session is visible, so no ack or
                // credit reaches the broker for a subscription it lacks…
                let mut sent = BTreeSet::new();
                resubscribe(&inner, &session, &mut sent).await;
                inner.session.send_replace(Some(session.clone()));
                // …then catch subscriptions added meanwhile (a duplicate is
                // answered with a harmless error).
                resubscribe(&inner, &session, &mut sent).await;
                if let Some(first) = first.take() {
                    let _ = first.send(Ok(()));
                }
                tracing::info!(url = %inner.config.url, "bus client: connected");
                tokio::select! {
                    _ = inner.shutdown.cancelled() => {
                        session.closed().cancel();
                        break;
                    }
                    _ = session.closed().cancelled() => {}
                }
                inner.session.send_replace(None);
                tracing::warn!(url = %inner.config.url, "bus client: connection lost; reconnecting");
            }
            Err(e) => {
                if let Some(first) = first.take() {
                    let _ = first.send(Err(e));
                } else if matches!(&e, ClientError::Handshake { code, .. } if code.is_retryable()) {
                    // Down for now (an outage): the outbox holds publishes.
                    tracing::info!(error = %e, ?backoff, "bus client: the bus is unavailable; retrying");
                } else if matches!(e, ClientError::Handshake { .. }) {
                    // Refused, not unreachable: someone must fix a setting.
                    tracing::warn!(error = %e, ?backoff, "bus client: the bus refused the connection");
                } else {
                    tracing::debug!(error = %e, ?backoff, "bus client: reconnect failed");
                }
                tokio::select! {
                    _ = inner.shutdown.cancelled() => break,
                    _ = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(inner.config.max_backoff);
            }
        }
    }
    inner.session.send_replace(None);
}

/// Sends `Subscribe` for every registered subscription not in `sent`.
async fn resubscribe(inner: &Inner, session: &Session, sent: &mut BTreeSet<u64>) {
    let specs: Vec<(u64, SubSpec)> = lock(&inner.subs)
        .iter()
        .filter(|(id, _)| !sent.contains(id))
        .map(|(id, s)| (*id, s.clone()))
        .collect();
    for (sub_id, spec) in specs {
        sent.insert(sub_id);
        let frame = Frame::Subscribe {
            sub_id,
            topic: spec.topic,
            group: spec.group,
            credits: spec.credits,
        };
        session.send(frame).await;
    }
}

/// The delay before a failed message is redelivered: doubling per attempt.
pub(crate) fn nack_delay(attempt: u32) -> Duration {
    let exp = attempt.saturating_sub(1).min(12);
    (Duration::from_millis(100) * 2u32.pow(exp)).min(Duration::from_secs(300))
}
