//! The front's own answers: JSON bodies and ACME problem documents.

use http_body_util::Full;
use hyper::body::Bytes;
use hyper::header::{HeaderValue, CONTENT_TYPE, RETRY_AFTER};
use hyper::{Response, StatusCode};
use serde_json::{json, Value};

/// What the front answers and sends: a body of bytes, whole.
pub(super) type Body = Full<Bytes>;

/// An ACME problem document (RFC 8555 §6.7) with `status`, of the type that status usually
/// has.
pub(super) fn problem(status: StatusCode, detail: &str) -> Response<Body> {
    let kind = match status {
        StatusCode::TOO_MANY_REQUESTS => "rateLimited",
        status if status.is_client_error() => "malformed",
        _ => "serverInternal",
    };
    typed_problem(status, kind, detail)
}

/// An ACME problem document with `status` and the type `urn:ietf:params:acme:error:{kind}`.
pub(super) fn typed_problem(status: StatusCode, kind: &str, detail: &str) -> Response<Body> {
    let body = json!({
        "type": format!("urn:ietf:params:acme:error:{kind}"),
        "detail": detail,
        "status": status.as_u16(),
    });
    respond(status, "application/problem+json", &body, None)
}

/// A JSON response, with `Retry-After` in seconds when given.
pub(super) fn respond(
    status: StatusCode,
    content_type: &'static str,
    body: &Value,
    retry_after_secs: Option<u64>,
) -> Response<Body> {
    let mut response = Response::new(Full::new(Bytes::from(body.to_string())));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    if let Some(secs) = retry_after_secs {
        headers.insert(RETRY_AFTER, HeaderValue::from(secs));
    }
    response
}
