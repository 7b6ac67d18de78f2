//! The balancer shared by every caller of one (service, version), without
//! a buffer task in between.
//!
//! `tower::balance::p2c::Balance` needs `&mut self`; the usual answer,
//! `tower::buffer`, sends every request through a worker task — two extra
//! cross-thread wake-ups per call on the hot path. Instead each caller locks
//! the balancer just long enough to pick a ready instance and start the
//! call. When no instance is ready (discovery still filling in), the caller
//! waits a millisecond and looks again, so no wake-up can be lost; the
//! per-try timeout bounds the wait.

use std::future::poll_fn;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use futures::future::BoxFuture;
use http::{Request, Response};
use tower::Service;
use tower::balance::p2c::Balance;
use tower::load::{CompleteOnResponse, PeakEwmaDiscover};

use crate::BoxError;
use crate::client::ResponseBody;
use crate::discovery::Changes;

type Inner = Balance<PeakEwmaDiscover<Changes, CompleteOnResponse>, Request<Bytes>>;

/// A cloneable handle on one balancer.
#[derive(Clone)]
pub(crate) struct SharedBalance {
    inner: Arc<Mutex<Inner>>,
}

/// How long a caller waits before looking for a ready instance again.
const RECHECK: Duration = Duration::from_millis(1);

impl SharedBalance {
    pub(crate) fn new(balance: Inner) -> Self {
        Self {
            inner: Arc::new(Mutex::new(balance)),
        }
    }
}

impl Service<Request<Bytes>> for SharedBalance {
    type Response = Response<ResponseBody>;
    type Error = BoxError;
    type Future = BoxFuture<'static, Result<Response<ResponseBody>, BoxError>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<Bytes>) -> Self::Future {
        let inner = self.inner.clone();
        Box::pin(async move {
            let mut req = Some(req);
            loop {
                let started = poll_fn(|cx| {
                    let mut balance = inner.lock().unwrap_or_else(|p| p.into_inner());
                    match balance.poll_ready(cx) {
                        Poll::Ready(Ok(())) => match req.take() {
                            Some(r) => Poll::Ready(Ok(Some(balance.call(r)))),
                            None => Poll::Ready(Ok(None)),
                        },
                        Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
                        Poll::Pending => Poll::Ready(Ok(None)),
                    }
                })
                .await?;
                match started {
                    Some(fut) => return fut.await,
                    None if req.is_none() => return Err("request lost before dispatch".into()),
                    None => tokio::time::sleep(RECHECK).await,
                }
            }
        })
    }
}
