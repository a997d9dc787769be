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
use crate::domain::aggregate::DomainError;
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

/// An error and every cause under it, `: `-separated, for the log.
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut next = error.source();
    while let Some(cause) = next {
        text.push_str(": ");
        text.push_str(&cause.to_string());
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
            Self::Conflict(_) => StatusCode::CONFLICT,
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
mod tests {
    use std::time::{Duration, Instant};

    use cqrs_es::persist::{PersistedEventRepository, PersistedEventStore, SerializedEvent};
    use cqrs_es::CqrsFramework;

    use super::*;
    use crate::adapters::store::{is_unreachable, Store};
    use crate::domain::aggregate::{CustomDomain, CustomDomainCommand};
    use crate::domain::domain_name::DomainName;

    fn refused() -> sqlx::Error {
        sqlx::Error::Io(std::io::Error::from(std::io::ErrorKind::ConnectionRefused))
    }

    fn disk() -> std::io::Error {
        std::io::Error::other("no space left on the disk")
    }

    /// Status, `Retry-After` and `error` of the answer an error gives.
    async fn answer(error: ApiError) -> (u16, Option<String>, String) {
        let response = error.error_response();
        let status = response.status().as_u16();
        let retry_after = response
            .headers()
            .get(RETRY_AFTER)
            .map(|value| value.to_str().expect("ASCII").to_owned());
        let body = actix_web::body::to_bytes(response.into_body())
            .await
            .expect("body");
        let body: serde_json::Value = serde_json::from_slice(&body).expect("JSON");
        let message = body["error"].as_str().expect("error").to_owned();
        (status, retry_after, message)
    }

    #[test]
    fn only_errors_that_mean_an_unreachable_database_are_unavailable() {
        for unreachable in [
            sqlx::Error::PoolTimedOut,
            sqlx::Error::PoolClosed,
            refused(),
            sqlx::Error::Io(std::io::Error::from(std::io::ErrorKind::UnexpectedEof)),
            sqlx::Error::Tls("handshake failed".into()),
        ] {
            assert!(is_unreachable(&unreachable), "{unreachable:?}");
            assert!(StoreError::Database(unreachable).is_unavailable());
        }
        for fault in [
            sqlx::Error::RowNotFound,
            sqlx::Error::Protocol("unexpected message".into()),
            sqlx::Error::ColumnNotFound("payload".into()),
            sqlx::Error::Decode("not text".into()),
            sqlx::Error::Configuration("bad URL".into()),
            sqlx::Error::WorkerCrashed,
        ] {
            assert!(!is_unreachable(&fault), "{fault:?}");
            assert!(!StoreError::Database(fault).is_unavailable());
        }
        let shared = std::sync::Arc::new(StoreError::Database(sqlx::Error::PoolTimedOut));
        assert!(StoreError::Shared(shared).is_unavailable());
        assert!(!StoreError::io("cannot open the lock file", disk()).is_unavailable());
        assert!(!StoreError::Locked("another process".into()).is_unavailable());
    }

    #[tokio::test]
    async fn an_unreachable_store_answers_503_with_retry_after_and_other_failures_500() {
        let (status, retry_after, message) =
            answer(StoreError::Database(sqlx::Error::PoolTimedOut).into()).await;
        assert_eq!((status, retry_after.as_deref()), (503, Some("2")));
        assert!(
            message == "the store is unavailable; retry in a few seconds",
            "{message}"
        );
        // Through the key vault and the ACME client too.
        let vault = VaultError::Store(StoreError::Database(refused()));
        assert_eq!(answer(vault.into()).await.0, 503);
        let shared = std::sync::Arc::new(StoreError::Database(refused()));
        let acme = AcmeError::Vault(VaultError::Store(StoreError::Shared(shared)));
        assert_eq!(answer(acme.into()).await.0, 503);

        let (status, retry_after, _) =
            answer(StoreError::Database(sqlx::Error::RowNotFound).into()).await;
        assert_eq!((status, retry_after), (500, None));
        let acme = AcmeError::Vault(VaultError::Store(StoreError::io("disk", disk())));
        assert_eq!(answer(acme.into()).await.0, 500);
    }

    #[tokio::test]
    async fn command_errors_wrapping_an_unreachable_database_answer_503() {
        // As postgres-es and sqlite-es box a timed-out pool, and as our EventRepository boxes
        // a StoreError.
        for error in [
            AggregateError::<DomainError>::UnexpectedError(Box::new(sqlx::Error::PoolTimedOut)),
            AggregateError::DatabaseConnectionError(Box::new(refused())),
            AggregateError::DatabaseConnectionError(Box::new(StoreError::Database(
                sqlx::Error::PoolClosed,
            ))),
        ] {
            let (status, retry_after, _) = answer(error.into()).await;
            assert_eq!((status, retry_after.as_deref()), (503, Some("2")));
        }
        for error in [
            AggregateError::<DomainError>::UnexpectedError(Box::new(sqlx::Error::RowNotFound)),
            AggregateError::DatabaseConnectionError(Box::new(StoreError::io("disk", disk()))),
            AggregateError::UnexpectedError("something else".into()),
        ] {
            assert_eq!(answer(error.into()).await.0, 500);
        }
    }

    /// A real SQLite store whose every connection is taken: what the service's command and query
    /// paths return when no connection comes within `STORE_TIMEOUT`, and how fast.
    #[tokio::test]
    async fn a_store_without_a_free_connection_answers_503_after_its_store_timeout() {
        let path = std::env::temp_dir().join(format!("error-test-{}.db", uuid::Uuid::new_v4()));
        let timeout = Duration::from_millis(200);
        let store = Store::connect_with(&format!("sqlite://{}", path.display()), timeout)
            .await
            .expect("connects");
        store.migrate().await.expect("migrates");
        let Store::Sqlite(pool) = &store else {
            unreachable!("a SQLite URL")
        };
        let mut held = Vec::new();
        for _ in 0..pool.options().get_max_connections() {
            held.push(pool.acquire().await.expect("a connection"));
        }

        let started = Instant::now();
        let error = store.domain_view("d").await.expect_err("no connection");
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "waited the STORE_TIMEOUT only"
        );
        assert!(error.is_unavailable(), "{error}");
        assert_eq!(answer(error.into()).await.0, 503);

        // The command side: sqlite-es loading the aggregate...
        let event_store = PersistedEventStore::new_event_store(store.event_repository());
        let cqrs = CqrsFramework::<CustomDomain, _>::new(event_store, vec![], Default::default());
        let command = CustomDomainCommand::RegisterDomain {
            domain_name: DomainName::parse("outage.example.com").expect("valid name"),
            verification_token: "token".into(),
            verification_record_name: "_acme-challenge.outage.example.com.".into(),
            alt_names: Default::default(),
            at: chrono::Utc::now(),
        };
        let error = cqrs.execute("d", command).await.expect_err("no connection");
        assert!(
            matches!(error, AggregateError::UnexpectedError(_)),
            "{error:?}"
        );
        assert_eq!(answer(error.into()).await.0, 503);
        // ...and our EventRepository reading the hash to chain a later event to.
        let event = SerializedEvent {
            aggregate_id: "d".into(),
            sequence: 2,
            aggregate_type: dns_handling_events::AGGREGATE_TYPE.into(),
            event_type: "DomainVerified".into(),
            event_version: "1.0".into(),
            payload: serde_json::json!({}),
            metadata: serde_json::json!({}),
        };
        let error: AggregateError<DomainError> = store
            .event_repository()
            .persist::<CustomDomain>(&[event], None)
            .await
            .expect_err("no connection")
            .into();
        assert!(
            matches!(error, AggregateError::DatabaseConnectionError(_)),
            "{error:?}"
        );
        assert_eq!(answer(error.into()).await.0, 503);

        drop(held);
        assert!(store.domain_view("d").await.is_ok(), "connections are back");
        drop(store);
        for suffix in ["", "-wal", "-shm"] {
            let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
        }
    }

    /// A store failure's own words (here a statement the database did not understand, naming
    /// a table) are for the log: the client reads a fixed text and the request id.
    #[tokio::test]
    async fn a_store_failure_s_text_never_reaches_the_client() {
        let internal = || {
            ApiError::from(StoreError::Database(sqlx::Error::Protocol(
                "unexpected message from table secret_keys".into(),
            )))
        };
        let (status, _, message) = answer(internal()).await;
        assert_eq!(status, 500);
        assert_eq!(message, "internal error");
        let (_, _, message) =
            crate::http::observe::with_request_id("req-7", answer(internal())).await;
        assert_eq!(message, "internal error; request id req-7");

        let unavailable = ApiError::from(StoreError::Database(sqlx::Error::PoolTimedOut));
        let (status, _, message) = answer(unavailable).await;
        assert_eq!(status, 503);
        assert!(!message.contains("pool timed out"), "{message}");

        let acme = AcmeError::Vault(VaultError::Store(StoreError::Database(
            sqlx::Error::ColumnNotFound("sealed_private_key".into()),
        )));
        let (status, _, message) = answer(acme.into()).await;
        assert_eq!(status, 500);
        assert!(!message.contains("sealed_private_key"), "{message}");
    }

    /// What an internal answer hides from the client stays in its `source` chain, down to the
    /// database's own error, for the log.
    #[test]
    fn the_cause_of_an_internal_error_is_kept_in_its_source_chain() {
        fn causes(error: &dyn std::error::Error) -> Vec<&(dyn std::error::Error + 'static)> {
            std::iter::successors(error.source(), |cause| cause.source()).collect()
        }
        let error = ApiError::from(StoreError::Database(sqlx::Error::RowNotFound));
        assert!(
            causes(&error)
                .iter()
                .any(|cause| matches!(cause.downcast_ref(), Some(sqlx::Error::RowNotFound))),
            "{error:?}"
        );
        let error = ApiError::from(StoreError::Database(sqlx::Error::PoolTimedOut));
        assert!(
            causes(&error)
                .iter()
                .any(|cause| matches!(cause.downcast_ref(), Some(sqlx::Error::PoolTimedOut))),
            "{error:?}"
        );
        let error = ApiError::from(AcmeError::Vault(VaultError::Store(StoreError::io(
            "disk",
            disk(),
        ))));
        assert!(
            causes(&error)
                .iter()
                .any(|cause| cause.downcast_ref::<std::io::Error>().is_some()),
            "{error:?}"
        );
        assert!(
            error_chain(&error).ends_with("no space left on the disk"),
            "{}",
            error_chain(&error)
        );
    }
}
