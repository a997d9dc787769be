//! `ApiError`: every failure a client can see, with its status code and `{"error": ...}` body.

use actix_web::body::MessageBody;
use actix_web::dev::ServiceResponse;
use actix_web::http::header::CONTENT_TYPE;
use actix_web::http::StatusCode;
use actix_web::middleware::ErrorHandlerResponse;
use actix_web::{HttpResponse, ResponseError};
use cqrs_es::AggregateError;

use crate::acme::AcmeError;
use crate::aggregate::DomainError;
use crate::store::StoreError;

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
    /// 500: ACME or the store failed.
    #[error("{0}")]
    Internal(String),
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
            Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn error_response(&self) -> HttpResponse {
        HttpResponse::build(self.status_code())
            .json(serde_json::json!({ "error": self.to_string() }))
    }
}

impl From<StoreError> for ApiError {
    fn from(error: StoreError) -> Self {
        tracing::error!(%error, "store failure");
        Self::Internal(error.to_string())
    }
}

impl From<crate::vault::VaultError> for ApiError {
    fn from(error: crate::vault::VaultError) -> Self {
        tracing::error!(%error, "key vault failure");
        Self::Internal(error.to_string())
    }
}

impl From<AcmeError> for ApiError {
    fn from(error: AcmeError) -> Self {
        tracing::error!(%error, "ACME failure");
        Self::Internal(error.to_string())
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
            AggregateError::AggregateConflict => Self::Conflict(
                "the domain was changed by another request at the same time; nothing was recorded, retry"
                    .into(),
            ),
            other => {
                tracing::error!(error = %other, "event store failure");
                Self::Internal(format!("event store failure: {other}"))
            }
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
