//! Bearer-token authentication, compared in constant time.

use std::sync::Arc;

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::AUTHORIZATION;
use actix_web::middleware::Next;
use actix_web::web;
use subtle::ConstantTimeEq;

use super::ApiError;
use crate::services::Services;

/// Lets a request through when no token is configured or when it carries the configured one.
pub async fn require_token(
    request: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let expected = request
        .app_data::<web::Data<Arc<Services>>>()
        .and_then(|services| services.settings.auth_token.clone());
    if let Some(expected) = expected {
        let presented = request
            .headers()
            .get(AUTHORIZATION)
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.strip_prefix("Bearer "))
            .map(str::trim);
        let accepted = presented
            .is_some_and(|token| bool::from(token.as_bytes().ct_eq(expected.expose().as_bytes())));
        if !accepted {
            return Err(ApiError::Unauthorized(
                "missing or invalid bearer token (Authorization: Bearer <token>)".into(),
            )
            .into());
        }
    }
    next.call(request).await
}
