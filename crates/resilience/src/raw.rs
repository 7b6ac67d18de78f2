//! [`RawResponse`]: an instance's answer with its fields as they arrived.

use http::{Response, StatusCode, Version};
use mortar_h1::{Fields, H1Error};

use crate::client::ResponseBody;
use crate::{CallError, ExchangeError};

/// An answer as the instance sent it: status, fields unparsed into a map,
/// and the body. [`Client::call_raw`](crate::Client::call_raw) returns it.
///
/// Why: a proxy passes most answers on unchanged, and building an
/// `http::HeaderMap` only to encode it again was about a tenth of the
/// gateway's instructions per forwarded call. Calls that want `http`'s
/// types get [`RawResponse::into_http`], which is what
/// [`Client::call`](crate::Client::call) returns.
#[derive(Debug)]
pub struct RawResponse {
    /// The status code.
    pub status: StatusCode,
    /// The version the instance spoke.
    pub version: Version,
    /// The fields as sent (framing fields included: a proxy must not pass
    /// those on, the body's own framing replaces them).
    pub fields: Fields,
    /// The body.
    pub body: ResponseBody,
}

impl RawResponse {
    /// The answer with its fields in a `HeaderMap`; fails only on a field
    /// `http` refuses (the parser already checked names and values).
    pub fn into_http(self) -> Result<Response<ResponseBody>, H1Error> {
        let headers = self.fields.to_header_map()?;
        let mut resp = Response::new(self.body);
        *resp.status_mut() = self.status;
        *resp.version_mut() = self.version;
        *resp.headers_mut() = headers;
        Ok(resp)
    }

    /// [`RawResponse::into_http`] for a call of `service`: a field `http`
    /// refuses fails the call as a broken answer would.
    pub fn into_http_for(self, service: &str) -> Result<Response<ResponseBody>, CallError> {
        self.into_http().map_err(|e| CallError::Upstream {
            service: service.to_owned(),
            source: Box::new(ExchangeError::Invalid(e)),
        })
    }

    /// An `http` answer (a fallback's) in this form.
    pub fn from_http(resp: Response<ResponseBody>) -> RawResponse {
        let (parts, body) = resp.into_parts();
        RawResponse {
            status: parts.status,
            version: parts.version,
            fields: Fields::from_header_map(&parts.headers),
            body,
        }
    }
}

/// What the retry policy and the breaker look at in an answer.
pub(crate) trait Answer {
    fn status(&self) -> StatusCode;
}

impl<B> Answer for Response<B> {
    fn status(&self) -> StatusCode {
        Response::status(self)
    }
}

impl Answer for RawResponse {
    fn status(&self) -> StatusCode {
        self.status
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use http_body_util::{BodyExt, Full};

    #[tokio::test]
    async fn an_http_answer_survives_the_round_trip() {
        let resp = Response::builder()
            .status(StatusCode::ACCEPTED)
            .header("content-type", "text/plain")
            .header("x-a", "1")
            .body(
                Full::new(Bytes::from_static(b"hi"))
                    .map_err(|never| match never {})
                    .boxed(),
            )
            .expect("valid");
        let raw = RawResponse::from_http(resp);
        assert!(raw.fields.iter().any(|f| f == (&b"x-a"[..], &b"1"[..])));
        let back = raw.into_http().expect("valid");
        assert_eq!(back.status(), StatusCode::ACCEPTED);
        assert_eq!(back.headers()["content-type"], "text/plain");
        let body = back.into_body().collect().await.expect("body").to_bytes();
        assert_eq!(&body[..], b"hi");
    }
}
