//! Bearer-token authentication with two roles, tokens compared in constant time.

use std::sync::Arc;

use actix_web::body::{EitherBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::AUTHORIZATION;
use actix_web::http::Method;
use actix_web::middleware::Next;
use actix_web::{web, HttpMessage, HttpRequest};
use subtle::ConstantTimeEq;

use super::ApiError;
use crate::app_state::AppState;
use crate::settings::Secret;

/// What the caller may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Everything, private keys included (and every caller when no token is configured).
    Admin,
    /// Read domains, certificates' public parts and events; nothing else.
    Auditor,
}

impl Role {
    /// How the role appears in audit records.
    pub fn label(self) -> &'static str {
        match self {
            Self::Admin => "admin",
            Self::Auditor => "auditor",
        }
    }

    /// The role the authentication middleware gave this request.
    pub fn of(request: &HttpRequest) -> Role {
        request
            .extensions()
            .get::<Role>()
            .copied()
            .unwrap_or(Role::Auditor)
    }

    /// Refuses anyone but an admin.
    pub fn require_admin(request: &HttpRequest, what: &str) -> Result<(), ApiError> {
        match Self::of(request) {
            Role::Admin => Ok(()),
            Role::Auditor => Err(ApiError::Forbidden(format!(
                "a read-only token may not {what}"
            ))),
        }
    }
}

fn matches(presented: &str, expected: &Secret) -> bool {
    bool::from(presented.as_bytes().ct_eq(expected.expose().as_bytes()))
}

/// Decides the caller's role from its bearer token, refuses unknown callers with `401`, and
/// refuses state changes by read-only callers with `403`.
pub async fn require_token<B: MessageBody>(
    request: ServiceRequest,
    next: Next<B>,
) -> Result<ServiceResponse<EitherBody<B>>, actix_web::Error> {
    match decide_role(&request) {
        Ok(role) => {
            request.extensions_mut().insert(role);
            Ok(next.call(request).await?.map_into_left_body())
        }
        // Answered here rather than raised, so the outer layers log and label it like any
        // other response.
        Err(refusal) => Ok(request.error_response(refusal).map_into_right_body()),
    }
}

/// The caller's role, or why it is refused.
fn decide_role(request: &ServiceRequest) -> Result<Role, ApiError> {
    let Some(state) = request.app_data::<web::Data<Arc<AppState>>>().cloned() else {
        return Err(ApiError::internal("service state missing"));
    };
    let settings = &state.settings;
    let role = match &settings.auth_token {
        None => Role::Admin,
        Some(admin_token) => {
            let presented = request
                .headers()
                .get(AUTHORIZATION)
                .and_then(|value| value.to_str().ok())
                .and_then(|value| value.strip_prefix("Bearer "))
                .map(str::trim)
                .unwrap_or("");
            // Every token is compared (no early exit), so timing says nothing about which
            // token came close.
            let is_admin = matches(presented, admin_token);
            let is_auditor = settings
                .read_only_tokens
                .iter()
                .fold(false, |found, token| found | matches(presented, token));
            match (is_admin, is_auditor) {
                (true, _) => Role::Admin,
                (false, true) => Role::Auditor,
                (false, false) => {
                    return Err(ApiError::Unauthorized(
                        "missing or invalid bearer token (Authorization: Bearer <token>)".into(),
                    ))
                }
            }
        }
    };
    let reads_only = matches!(*request.method(), Method::GET | Method::HEAD);
    if role == Role::Auditor && !reads_only {
        return Err(ApiError::Forbidden(
            "a read-only token may not change anything".into(),
        ));
    }
    Ok(role)
}
