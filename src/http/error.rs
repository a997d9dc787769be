//! `ApiError`: every failure a client can see, with its status code and `{"error": ...}` body.
//!
//! The status is decided here, in `status_code`, and nowhere else. The client-facing kinds
//! (`4xx`) carry the message the client reads. The internal kinds (`500`, `502`, `503`) carry
//! their cause as a boxed `source`: it is logged once, with the request id, when the answer is
//! made, and the client reads a fixed text naming the request id, never the cause.

use actix_web::body::MessageBody;
use actix_web::dev::ServiceResponse;
use actix_web::http::header::{CONTENT_TYPE, RETRY_AFTER};
use actix_web::http::StatusCode;
use actix_web::middleware::ErrorHandlerResponse;
use actix_web::{HttpResponse, ResponseError};
use cqrs_es::AggregateError;

use crate::adapters::acme::AcmeError;
use crate::adapters::store::{is_unreachable_cause, StoreError};
use crate::adapters::vault::VaultError;
use crate::domain::access_token::AccessTokenError;
use crate::domain::aggregate::DomainError;
use crate::domain::tenant::OtherTenant;
use crate::domain::webhook_endpoint::WebhookEndpointError;
use crate::http::observe::current_request_id;

/// The `Retry-After` of a `503` for an unreachable store, in seconds. A restart or failover of
/// PostgreSQL takes seconds, and each request waits `STORE_TIMEOUT` (2 s) for a connection
/// before it gets its `503`: retrying sooner than that only adds waiting requests, much later
/// keeps clients away after the store is back. Two seconds is about one more `STORE_TIMEOUT`.
pub const RETRY_AFTER_SECONDS: u32 = 2;

/// The cause behind an internal answer: logged, never sent to the client.
pub type Cause = Box<dyn std::error::Error + Send + Sync + 'static>;

/// An error answered to a REST client.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// 400: the request or the domain's state does not allow this.
    #[error("{0}")]
    BadRequest(String),
    /// 401: no or a wrong bearer token.
    #[error("{0}")]
    Unauthorized(String),
    /// 403: the token is read-only.
    #[error("{0}")]
    Forbidden(String),
    /// 404: no such domain, route or certificate.
    #[error("{0}")]
    NotFound(String),
    /// 405: the route exists, the method does not.
    #[error("{0}")]
    MethodNotAllowed(String),
    /// 409: the name is taken, or another request changed the domain first.
    #[error("{0}")]
    Conflict(String),
    /// 409 `caa_forbids`: CAA records forbid every configured CA to issue; nothing was asked of
    /// any. The body has `code` and `caa` (the refusals) beside `error`.
    #[error("{message}")]
    CaaForbids {
        /// What the client reads in `error`.
        message: String,
        /// The refusals, as `OrderConflictBody::caa`.
        caa: serde_json::Value,
    },
    /// 413: the body is larger than allowed.
    #[error("{0}")]
    PayloadTooLarge(String),
    /// 415: the body is not JSON.
    #[error("{0}")]
    UnsupportedMediaType(String),
    /// 424: a DNS lookup the request depends on failed.
    #[error("{0}")]
    FailedDependency(String),
    /// 500: a fault of the service (the store, the CA client, the key vault, a stored value
    /// that no longer reads). The client reads only "internal error" and the request id.
    #[error("{context}")]
    Internal {
        /// What was being done, for the log.
        context: String,
        /// Why it failed, when an error said.
        #[source]
        source: Option<Cause>,
    },
    /// 502: a CA no longer configured, which alone can act on what it issued, could not be
    /// asked. The client reads `message` (which names the CA and what to do, and nothing the
    /// CA said); the CA's answer is the logged `source`.
    #[error("{message}")]
    BadGateway {
        /// What the client reads.
        message: String,
        /// What went wrong with the CA.
        #[source]
        source: Option<Cause>,
    },
    /// 503: the store cannot be reached; answered with `Retry-After` and a fixed text.
    #[error("the store is unavailable")]
    ServiceUnavailable {
        /// How the store failed.
        #[source]
        source: Cause,
    },
    /// 429: the CA refused for now (or a budget kept for it is spent); answered with
    /// `Retry-After` in seconds; nothing was recorded.
    #[error("{message}")]
    TooManyRequests {
        /// What the CA said, or which budget is spent.
        message: String,
        /// Seconds until a retry may succeed.
        retry_after_secs: u64,
    },
}

impl ApiError {
    /// A `500` with no error behind it: `context` says what went wrong, for the log.
    pub fn internal(context: impl Into<String>) -> Self {
        Self::Internal {
            context: context.into(),
            source: None,
        }
    }

    /// A `500` caused by `source` while doing `context`.
    pub fn internal_from(context: impl Into<String>, source: impl Into<Cause>) -> Self {
        Self::Internal {
            context: context.into(),
            source: Some(source.into()),
        }
    }

    /// A `502`: the client reads `message`; `source`, the CA's failure, is logged.
    pub fn bad_gateway(message: impl Into<String>, source: impl Into<Cause>) -> Self {
        Self::BadGateway {
            message: message.into(),
            source: Some(source.into()),
        }
    }

    /// The answer while the store cannot be reached: not a fault of the request or of the
    /// service, so `503` with `Retry-After` rather than `500`.
    pub fn store_unavailable(source: impl Into<Cause>) -> Self {
        Self::ServiceUnavailable {
            source: source.into(),
        }
    }

    /// What the client reads in `error`: the message of a client-facing kind; a fixed text
    /// naming the request id for an internal one.
    fn client_text(&self) -> String {
        let request =
            current_request_id().map_or_else(String::new, |id| format!("; request id {id}"));
        match self {
            Self::Internal { .. } => format!("internal error{request}"),
            Self::ServiceUnavailable { .. } => {
                format!("the store is unavailable; retry in a few seconds{request}")
            }
            Self::BadGateway { message, .. } => format!("{message}{request}"),
            client_facing => client_facing.to_string(),
        }
    }

    /// Logs an internal error once, with the request id and its whole chain of causes; a
    /// client-facing one is the client's to read and is not logged here.
    fn log_cause(&self) {
        let level_is_error = match self {
            Self::Internal { .. } | Self::BadGateway { .. } => true,
            Self::ServiceUnavailable { .. } => false,
            _ => return,
        };
        let request_id = current_request_id().unwrap_or_default();
        let chain = error_chain(self);
        let status = self.status_code().as_u16();
        if level_is_error {
            tracing::error!(%request_id, status, error = %chain, "internal error");
        } else {
            tracing::warn!(%request_id, status, error = %chain, "store unavailable");
        }
    }
}

/// An error and every cause under it, `: `-separated, for the log. A cause whose text the
/// error above it already ends with (as `"database error: {0}"` or instant-acme's
/// `"HTTP request failure: {0}"` tell their cause) is not told twice.
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut next = error.source();
    while let Some(cause) = next {
        let told = cause.to_string();
        if !text.ends_with(&told) {
            text.push_str(": ");
            text.push_str(&told);
        }
        next = cause.source();
    }
    text
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        match self {
            Self::BadRequest(_) => StatusCode::BAD_REQUEST,
            Self::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            Self::Forbidden(_) => StatusCode::FORBIDDEN,
            Self::NotFound(_) => StatusCode::NOT_FOUND,
            Self::MethodNotAllowed(_) => StatusCode::METHOD_NOT_ALLOWED,
            Self::Conflict(_) | Self::CaaForbids { .. } => StatusCode::CONFLICT,
            Self::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            Self::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Self::FailedDependency(_) => StatusCode::FAILED_DEPENDENCY,
            Self::Internal { .. } => StatusCode::INTERNAL_SERVER_ERROR,
            Self::BadGateway { .. } => StatusCode::BAD_GATEWAY,
            Self::ServiceUnavailable { .. } => StatusCode::SERVICE_UNAVAILABLE,
            Self::TooManyRequests { .. } => StatusCode::TOO_MANY_REQUESTS,
        }
    }

    fn error_response(&self) -> HttpResponse {
        self.log_cause();
        let mut response = HttpResponse::build(self.status_code());
        match self {
            Self::ServiceUnavailable { .. } => {
                response.insert_header((RETRY_AFTER, RETRY_AFTER_SECONDS.to_string()));
            }
            Self::TooManyRequests {
                retry_after_secs, ..
            } => {
                response.insert_header((RETRY_AFTER, retry_after_secs.to_string()));
            }
            _ => {}
        }
        if let Self::CaaForbids { caa, .. } = self {
            return response.json(serde_json::json!({
                "error": self.client_text(),
                "code": "caa_forbids",
                "caa": caa,
            }));
        }
        response.json(serde_json::json!({ "error": self.client_text() }))
    }
}

impl From<StoreError> for ApiError {
    fn from(error: StoreError) -> Self {
        if error.is_unavailable() {
            return Self::store_unavailable(error);
        }
        Self::internal_from("store failure", error)
    }
}

impl From<VaultError> for ApiError {
    fn from(error: VaultError) -> Self {
        match error {
            VaultError::Store(error) => error.into(),
            error => Self::internal_from("key vault failure", error),
        }
    }
}

impl From<AcmeError> for ApiError {
    fn from(error: AcmeError) -> Self {
        match error {
            AcmeError::Vault(VaultError::Store(error)) if error.is_unavailable() => error.into(),
            AcmeError::BudgetSpent {
                detail,
                retry_after,
            } => {
                let retry_after_secs = (retry_after - chrono::Utc::now())
                    .to_std()
                    .map_or(1, |wait| wait.as_secs().max(1));
                Self::TooManyRequests {
                    message: format!(
                        "{detail}; the CA was not asked and nothing was recorded, retry after \
                         {retry_after_secs} s"
                    ),
                    retry_after_secs,
                }
            }
            AcmeError::RateLimited {
                detail,
                retry_after,
            } => {
                // Without a time from the CA, a minute: sooner would only be refused again.
                let retry_after_secs = retry_after
                    .and_then(|at| (at - chrono::Utc::now()).to_std().ok())
                    .map_or(60, |wait| wait.as_secs().max(1));
                Self::TooManyRequests {
                    message: format!(
                        "the CA refused for now; nothing was recorded, retry after \
                         {retry_after_secs} s: {detail}"
                    ),
                    retry_after_secs,
                }
            }
            // The CA's final word on the names or the account: the client's to act on.
            AcmeError::Refused(reason) => Self::BadRequest(format!(
                "the CA refused the order ({}): {}; no other CA was asked and nothing was \
                 recorded",
                reason.code, reason.detail
            )),
            error => Self::internal_from("ACME failure", error),
        }
    }
}

impl From<AggregateError<DomainError>> for ApiError {
    fn from(error: AggregateError<DomainError>) -> Self {
        match error {
            AggregateError::UserError(DomainError::NotRegistered) => {
                Self::NotFound("domain not found".into())
            }
            AggregateError::UserError(DomainError::Removed) => {
                Self::NotFound("domain was removed".into())
            }
            AggregateError::UserError(refusal) => Self::BadRequest(refusal.to_string()),
            other => Self::from_event_store(other, "domain"),
        }
    }
}

impl ApiError {
    /// What an aggregate's failure other than its own refusal answers: a lost race `409`, an
    /// unreachable store `503`, anything else `500`.
    fn from_event_store<E>(error: AggregateError<E>, what: &str) -> Self
    where
        E: std::error::Error + Send + Sync + 'static,
    {
        match error {
            AggregateError::AggregateConflict => Self::Conflict(format!(
                "the {what} was changed by another request at the same time; nothing was \
                 recorded, retry"
            )),
            AggregateError::DatabaseConnectionError(cause)
            | AggregateError::UnexpectedError(cause)
                if is_unreachable_cause(cause.as_ref()) =>
            {
                Self::store_unavailable(cause)
            }
            other => Self::internal_from(format!("event store failure ({what})"), other),
        }
    }
}

impl From<AggregateError<WebhookEndpointError>> for ApiError {
    fn from(error: AggregateError<WebhookEndpointError>) -> Self {
        match error {
            AggregateError::UserError(
                refusal @ (WebhookEndpointError::NotFound | WebhookEndpointError::Deleted),
            ) => Self::NotFound(refusal.to_string()),
            AggregateError::UserError(refusal) => Self::Conflict(refusal.to_string()),
            other => Self::from_event_store(other, "webhook endpoint"),
        }
    }
}

impl From<OtherTenant> for ApiError {
    fn from(refusal: OtherTenant) -> Self {
        Self::Forbidden(refusal.to_string())
    }
}

impl From<AggregateError<AccessTokenError>> for ApiError {
    fn from(error: AggregateError<AccessTokenError>) -> Self {
        match error {
            AggregateError::UserError(AccessTokenError::NotFound) => {
                Self::NotFound("no token with this id".into())
            }
            AggregateError::UserError(
                refusal @ (AccessTokenError::Revoked | AccessTokenError::AlreadyExists),
            ) => Self::Conflict(refusal.to_string()),
            AggregateError::UserError(refusal) => Self::BadRequest(refusal.to_string()),
            other => Self::from_event_store(other, "token"),
        }
    }
}

/// Turns any error response that is not JSON yet (actix's own: unknown route, wrong method,
/// oversized or malformed bodies) into the contract's `{"error": ...}` body.
pub fn json_error_body<B: MessageBody + 'static>(
    response: ServiceResponse<B>,
) -> actix_web::Result<ErrorHandlerResponse<B>> {
    let is_json = response
        .response()
        .headers()
        .get(CONTENT_TYPE)
        .is_some_and(|value| value.as_bytes().starts_with(b"application/json"));
    if is_json {
        return Ok(ErrorHandlerResponse::Response(
            response.map_into_left_body(),
        ));
    }
    let status = response.status();
    let message = match status {
        StatusCode::METHOD_NOT_ALLOWED => format!(
            "method {} is not allowed on {}",
            response.request().method(),
            response.request().path()
        ),
        StatusCode::NOT_FOUND => format!(
            "no route for {} {}",
            response.request().method(),
            response.request().path()
        ),
        other => other.canonical_reason().unwrap_or("error").to_lowercase(),
    };
    let (request, _) = response.into_parts();
    let json = HttpResponse::build(status).json(serde_json::json!({ "error": message }));
    Ok(ErrorHandlerResponse::Response(
        ServiceResponse::new(request, json).map_into_right_body(),
    ))
}

#[cfg(test)]
mod tests;
