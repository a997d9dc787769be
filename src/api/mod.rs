//! The REST API (actix-web), as written in the contract (`shared/spec/API.md`).

mod auth;
mod domains;
mod error;
mod events;
mod views;

use actix_web::error::{JsonPayloadError, PathError, QueryPayloadError};
use actix_web::middleware::{from_fn, ErrorHandlers};
use actix_web::{web, HttpRequest, HttpResponse};

pub use error::ApiError;

/// The largest request body accepted; the API's bodies are a few hundred bytes.
pub const MAX_BODY_BYTES: usize = 16 * 1024;

/// Registers every route, the JSON error handling and authentication.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.app_data(
        web::JsonConfig::default()
            .limit(MAX_BODY_BYTES)
            .error_handler(json_payload_error),
    )
    .app_data(web::PathConfig::default().error_handler(path_error))
    .app_data(web::QueryConfig::default().error_handler(query_error))
    .route("/healthz", web::get().to(healthz))
    .route("/readyz", web::get().to(readyz))
    .service(
        web::scope("/domains")
            .wrap(from_fn(auth::require_token))
            .service(
                web::resource("")
                    .route(web::post().to(domains::register))
                    .route(web::get().to(domains::list)),
            )
            .service(
                web::resource("/{id}")
                    .route(web::get().to(domains::get))
                    .route(web::delete().to(domains::remove)),
            )
            .service(web::resource("/{id}/retry").route(web::post().to(domains::retry)))
            .service(web::resource("/{id}/events").route(web::get().to(events::history)))
            .service(web::resource("/{id}/verify").route(web::post().to(domains::verify)))
            .service(
                web::resource("/{id}/issue-certificate")
                    .route(web::post().to(domains::issue_certificate)),
            )
            .service(web::resource("/{id}/certificate").route(web::get().to(domains::certificate)))
            .service(
                web::resource("/{id}/certificate/key")
                    .route(web::get().to(domains::certificate_key)),
            ),
    )
    .service(
        web::resource("/events")
            .wrap(from_fn(auth::require_token))
            .route(web::get().to(events::feed)),
    )
    .default_service(web::to(unknown_route));
}

/// The middleware that turns actix's own plain-text errors into `{"error": ...}`.
pub fn json_errors<B: actix_web::body::MessageBody + 'static>() -> ErrorHandlers<B> {
    ErrorHandlers::new().default_handler(error::json_error_body)
}

async fn unknown_route(request: HttpRequest) -> Result<HttpResponse, ApiError> {
    Err(ApiError::NotFound(format!(
        "no route for {} {}",
        request.method(),
        request.path()
    )))
}

async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(serde_json::json!({ "status": "ok" }))
}

async fn readyz(services: web::Data<std::sync::Arc<crate::services::Services>>) -> HttpResponse {
    match services.store.ping().await {
        Ok(()) => HttpResponse::Ok().json(serde_json::json!({ "status": "ready" })),
        Err(error) => HttpResponse::ServiceUnavailable()
            .json(serde_json::json!({ "error": format!("store unreachable: {error}") })),
    }
}

fn json_payload_error(error: JsonPayloadError, _request: &HttpRequest) -> actix_web::Error {
    let api_error = match &error {
        JsonPayloadError::Overflow { limit }
        | JsonPayloadError::OverflowKnownLength { limit, .. } => {
            ApiError::PayloadTooLarge(format!("request body is larger than {limit} bytes"))
        }
        JsonPayloadError::ContentType => ApiError::UnsupportedMediaType(
            "request body must be JSON (Content-Type: application/json)".into(),
        ),
        JsonPayloadError::Deserialize(inner) if inner.is_data() => {
            ApiError::BadRequest(format!("invalid request body: {inner}"))
        }
        JsonPayloadError::Deserialize(inner) => {
            ApiError::BadRequest(format!("malformed JSON: {inner}"))
        }
        other => ApiError::BadRequest(format!("invalid request body: {other}")),
    };
    api_error.into()
}

fn path_error(error: PathError, _request: &HttpRequest) -> actix_web::Error {
    ApiError::BadRequest(format!("invalid path: {error}")).into()
}

fn query_error(error: QueryPayloadError, _request: &HttpRequest) -> actix_web::Error {
    ApiError::BadRequest(format!("invalid query: {error}")).into()
}

/// The per-domain locks of `issue-certificate`, shared by all HTTP workers.
pub fn domains_issue_locks() -> domains::IssueLocks {
    domains::IssueLocks::default()
}
