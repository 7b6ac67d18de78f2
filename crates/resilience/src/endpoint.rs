//! One instance: points the request at the instance,
//! sends it over the instance's connection [`Pool`], and watches the outcome
//! for passive outlier ejection.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use bytes::Bytes;
use http::header::HOST;
use http::{HeaderValue, Request};
use tokio::sync::mpsc;

use crate::EndpointError;
use crate::deadline::DEADLINE_NAME;
use crate::discovery::Event;
use crate::pool::{Pool, SendError};
use crate::raw::RawResponse;

/// Failure streak of one instance.
#[derive(Debug, Default)]
pub(crate) struct Tracker {
    pub(crate) consecutive: AtomicU32,
    /// Ejections since the last success; doubles the next ejection time.
    pub(crate) ejections: AtomicU32,
}

/// One instance, as the balancer sees it. Cloning is one reference count.
#[derive(Clone)]
pub(crate) struct EndpointService {
    inner: Arc<Instance>,
}

struct Instance {
    pool: Arc<Pool>,
    id: Arc<str>,
    address: SocketAddr,
    /// `address` as a `Host` header value, formatted once.
    host: HeaderValue,
    tracker: Arc<Tracker>,
    events: mpsc::UnboundedSender<Event>,
    eject_after: u32,
}

impl EndpointService {
    pub(crate) fn new(
        pool: Arc<Pool>,
        id: Arc<str>,
        address: SocketAddr,
        tracker: Arc<Tracker>,
        events: mpsc::UnboundedSender<Event>,
        eject_after: u32,
    ) -> Self {
        let host = HeaderValue::try_from(address.to_string())
            .unwrap_or_else(|_| HeaderValue::from_static("localhost"));
        Self {
            inner: Arc::new(Instance {
                pool,
                id,
                address,
                host,
                tracker,
                events,
                eject_after,
            }),
        }
    }
}

impl Instance {
    fn observe(&self, failed: bool) {
        if !failed {
            if self.tracker.consecutive.load(Ordering::Relaxed) != 0 {
                self.tracker.consecutive.store(0, Ordering::Relaxed);
            }
            if self.tracker.ejections.load(Ordering::Relaxed) != 0 {
                self.tracker.ejections.store(0, Ordering::Relaxed);
            }
            return;
        }
        let streak = self.tracker.consecutive.fetch_add(1, Ordering::Relaxed) + 1;
        if streak == self.eject_after {
            let _ = self.events.send(Event::Eject(self.id.clone()));
        }
    }
}

impl EndpointService {
    /// Sends `req` to this instance, with its address as `Host` and the
    /// attempt's `deadline` field, and notes the outcome for ejection.
    pub(crate) async fn send(
        &self,
        req: &Request<Bytes>,
        deadline: &HeaderValue,
    ) -> Result<RawResponse, EndpointError> {
        let this = &*self.inner;
        let set = [(&HOST, &this.host), (&DEADLINE_NAME, deadline)];
        let result = this.pool.send(req, &set).await;
        match result {
            Ok(resp) => {
                this.observe(resp.status.is_server_error());
                Ok(resp)
            }
            Err(e) => {
                this.observe(true);
                let instance = this.id.to_string();
                let address = this.address;
                Err(match e {
                    SendError::Connect(source) => EndpointError::Connect {
                        instance,
                        address,
                        source,
                    },
                    SendError::Exchange(source) => EndpointError::Exchange {
                        instance,
                        address,
                        source,
                    },
                })
            }
        }
    }
}
