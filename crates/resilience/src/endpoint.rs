//! One instance as a tower service: points the request at the instance,
//! sends it over the shared pooled hyper client, and watches the outcome for
//! passive outlier ejection.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::task::{Context, Poll};

use bytes::Bytes;
use futures::future::BoxFuture;
use http::{Request, Response, Uri};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client as HyperClient;
use hyper_util::client::legacy::connect::HttpConnector;
use tokio::sync::mpsc;
use tower::Service;

use crate::EndpointError;
use crate::client::ResponseBody;
use crate::discovery::Event;

/// The pooled HTTP/1 client every endpoint of a [`Client`](crate::Client)
/// shares.
pub(crate) type Http = HyperClient<HttpConnector, Full<Bytes>>;

/// Failure streak of one instance.
#[derive(Debug, Default)]
pub(crate) struct Tracker {
    pub(crate) consecutive: AtomicU32,
    /// Ejections since the last success; doubles the next ejection time.
    pub(crate) ejections: AtomicU32,
}

/// One instance, as the balancer sees it.
#[derive(Clone)]
pub(crate) struct EndpointService {
    pub(crate) http: Http,
    pub(crate) id: Arc<str>,
    pub(crate) address: SocketAddr,
    /// `address` as a URI authority, formatted once.
    pub(crate) authority: http::uri::Authority,
    pub(crate) tracker: Arc<Tracker>,
    pub(crate) events: mpsc::UnboundedSender<Event>,
    pub(crate) eject_after: u32,
}

impl EndpointService {
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

impl Service<Request<Bytes>> for EndpointService {
    type Response = Response<ResponseBody>;
    type Error = EndpointError;
    type Future = BoxFuture<'static, Result<Response<ResponseBody>, EndpointError>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), EndpointError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<Bytes>) -> Self::Future {
        let this = self.clone();
        Box::pin(async move {
            let (mut parts, body) = req.into_parts();
            let path = parts
                .uri
                .path_and_query()
                .map(|p| p.as_str())
                .unwrap_or("/");
            parts.uri = Uri::builder()
                .scheme("http")
                .authority(this.authority.clone())
                .path_and_query(path)
                .build()
                .map_err(|source| EndpointError::Uri {
                    instance: this.id.to_string(),
                    source,
                })?;
            parts.headers.remove(http::header::HOST);
            let result = this
                .http
                .request(Request::from_parts(parts, Full::new(body)))
                .await;
            match result {
                Ok(resp) => {
                    this.observe(resp.status().is_server_error());
                    Ok(resp.map(|b| b.map_err(Into::into).boxed()))
                }
                Err(source) => {
                    this.observe(true);
                    let instance = this.id.to_string();
                    let address = this.address;
                    Err(if source.is_connect() {
                        EndpointError::Connect {
                            instance,
                            address,
                            source,
                        }
                    } else {
                        EndpointError::Exchange {
                            instance,
                            address,
                            source,
                        }
                    })
                }
            }
        })
    }
}
