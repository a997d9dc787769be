//! The outermost HTTP middleware: gives every request an id, logs it through `tracing`, and
//! counts it in the metrics.
//!
//! It replaces actix's `Logger`, which writes through the `log` crate and so bypassed the
//! `tracing` subscriber (and with it `LOG_FORMAT=json`).

use std::time::Instant;

use actix_web::body::{BoxBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::{HeaderName, HeaderValue};
use actix_web::middleware::Next;
use actix_web::HttpMessage;
use tracing::Instrument as _;

use crate::metrics::{HttpLabels, METRICS};

/// The request-id header, read from clients and sent back on every response.
pub const REQUEST_ID_HEADER: &str = "x-request-id";

/// The id of one request: the client's `X-Request-Id` when it is sane (1–128 visible ASCII
/// characters), a new UUIDv7 otherwise. Recorded in the metadata of the events it causes.
#[derive(Debug, Clone)]
pub struct RequestId(pub String);

impl RequestId {
    fn of(request: &ServiceRequest) -> RequestId {
        let presented = request
            .headers()
            .get(REQUEST_ID_HEADER)
            .and_then(|value| value.to_str().ok())
            .filter(|id| {
                !id.is_empty() && id.len() <= 128 && id.bytes().all(|b| b.is_ascii_graphic())
            });
        RequestId(presented.map_or_else(|| uuid::Uuid::now_v7().to_string(), str::to_owned))
    }
}

tokio::task_local! {
    /// The id of the request being answered, for the errors that name it to the client.
    static CURRENT_REQUEST_ID: String;
}

/// The id of the request being answered, when called while one is (inside [`observe`]).
pub fn current_request_id() -> Option<String> {
    CURRENT_REQUEST_ID.try_with(String::clone).ok()
}

/// Runs `work` as if it answered the request `id` (for tests of what an answer names).
#[cfg(test)]
pub(crate) async fn with_request_id<T>(id: &str, work: impl std::future::Future<Output = T>) -> T {
    CURRENT_REQUEST_ID.scope(id.to_owned(), work).await
}

/// Runs the request inside a span carrying its id, then logs and counts its outcome and puts
/// the id on the response.
pub async fn observe(
    request: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<BoxBody>, actix_web::Error> {
    let started = Instant::now();
    let request_id = RequestId::of(&request);
    request.extensions_mut().insert(request_id.clone());
    let method = request.method().to_string();
    let span = tracing::info_span!("request", request_id = %request_id.0);
    // (The request must not be cloned before routing: actix needs to own it alone then.)
    let answered = CURRENT_REQUEST_ID.scope(request_id.0.clone(), next.call(request));
    let mut response = match answered.instrument(span).await {
        Ok(response) => response.map_into_boxed_body(),
        Err(error) => {
            // Inner layers answer errors as responses; an error here is actix's own, passed on.
            let status = error.as_response_error().status_code().as_u16();
            tracing::warn!(target: "dns_handling::http", request_id = %request_id.0, %method, status, %error, "request failed");
            return Err(error);
        }
    };
    if let Ok(value) = HeaderValue::from_str(&request_id.0) {
        response
            .headers_mut()
            .insert(HeaderName::from_static(REQUEST_ID_HEADER), value);
    }
    let route = response
        .request()
        .match_pattern()
        .unwrap_or_else(|| "unmatched".to_owned());
    let status = response.status().as_u16();
    let elapsed_ms = started.elapsed().as_secs_f64() * 1000.0;
    // Refusals and failures are worth a line at the default level; a successful request is
    // logged at debug (`LOG_LEVEL=info,dns_handling::http=debug` for an access log): at
    // thousands of reads a second, a line each cost a fifth of the read path's throughput.
    macro_rules! log_request {
        ($level:expr) => {
            tracing::event!(
                target: "dns_handling::http",
                $level,
                request_id = %request_id.0,
                %method,
                path = response.request().path(),
                status,
                elapsed_ms = format_args!("{elapsed_ms:.2}"),
                "request"
            )
        };
    }
    match status {
        500.. => log_request!(tracing::Level::WARN),
        400..=499 => log_request!(tracing::Level::INFO),
        _ => log_request!(tracing::Level::DEBUG),
    }
    METRICS
        .http_requests
        .get_or_create(&HttpLabels {
            route,
            method,
            status,
        })
        .inc();
    Ok(response)
}
