//! Token authentication with three roles, tokens compared in constant time.
//!
//! Every route takes `Authorization: Bearer <token>`. The edge routes (every path under
//! [`EDGE_ROUTES`]) also take HTTP Basic credentials `<edge name>:<token>`, since Caddy's
//! `get_certificate http` sends only what its URL holds (Go turns a URL's user info into Basic
//! credentials). A token is never read from a query string.

use std::sync::Arc;

use actix_web::body::{EitherBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::AUTHORIZATION;
use actix_web::http::Method;
use actix_web::middleware::Next;
use actix_web::{web, HttpMessage, HttpRequest};
use base64::Engine as _;
use subtle::ConstantTimeEq;

use super::ApiError;
use crate::app_state::AppState;
use crate::settings::{Secret, Settings};

/// The prefix of the edge routes: an edge token may use these and nothing else, an auditor
/// none of them (they hand out private keys). A route mounted under it is guarded as one.
pub const EDGE_ROUTES: &str = "/edge/";

/// What the caller may do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Role {
    /// Everything, private keys included (and every caller when no token is configured).
    Admin,
    /// Read domains, certificates' public parts and events; nothing else.
    Auditor,
    /// One of the platform's TLS edges, by its name in `EDGE_TOKENS`: the edge routes only.
    Edge(Arc<str>),
}

impl Role {
    /// How the role appears in audit records.
    pub fn label(&self) -> &'static str {
        match self {
            Self::Admin => "admin",
            Self::Auditor => "auditor",
            Self::Edge(_) => "edge",
        }
    }

    /// The role the authentication middleware gave this request.
    pub fn of(request: &HttpRequest) -> Role {
        request
            .extensions()
            .get::<Role>()
            .cloned()
            .unwrap_or(Role::Auditor)
    }

    /// Refuses anyone but an admin.
    pub fn require_admin(request: &HttpRequest, what: &str) -> Result<(), ApiError> {
        match Self::of(request) {
            Role::Admin => Ok(()),
            Role::Auditor => Err(ApiError::Forbidden(format!(
                "a read-only token may not {what}"
            ))),
            Role::Edge(_) => Err(ApiError::Forbidden(format!("an edge token may not {what}"))),
        }
    }
}

fn matches(presented: &str, expected: &Secret) -> bool {
    bool::from(presented.as_bytes().ct_eq(expected.expose().as_bytes()))
}

/// Decides the caller's role from its token, refuses unknown callers with `401`, and with
/// `403` state changes by read-only callers, edge tokens outside the edge routes, and
/// auditors on them.
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

/// What the `Authorization` header presents.
enum Presented<'a> {
    /// `Bearer <token>`.
    Bearer(&'a str),
    /// `Basic base64(<user>:<token>)`.
    Basic { user: String, token: String },
    /// Nothing usable.
    Nothing,
}

fn presented(request: &ServiceRequest) -> Presented<'_> {
    let Some(value) = request
        .headers()
        .get(AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
    else {
        return Presented::Nothing;
    };
    if let Some(token) = value.strip_prefix("Bearer ") {
        return Presented::Bearer(token.trim());
    }
    let basic = value
        .strip_prefix("Basic ")
        .and_then(|encoded| {
            base64::engine::general_purpose::STANDARD
                .decode(encoded.trim())
                .ok()
        })
        .and_then(|decoded| String::from_utf8(decoded).ok());
    match basic.as_deref().and_then(|text| text.split_once(':')) {
        Some((user, token)) => Presented::Basic {
            user: user.to_owned(),
            token: token.to_owned(),
        },
        None => Presented::Nothing,
    }
}

/// The caller's role, or why it is refused.
fn decide_role(request: &ServiceRequest) -> Result<Role, ApiError> {
    let Some(state) = request.app_data::<web::Data<Arc<AppState>>>().cloned() else {
        return Err(ApiError::internal("service state missing"));
    };
    let edge_route = request.path().starts_with(EDGE_ROUTES);
    let role = match &state.settings.auth_token {
        None => Role::Admin,
        Some(admin_token) => {
            let unknown = || {
                ApiError::Unauthorized(match edge_route {
                    true => "missing or invalid token (Authorization: Bearer <token>, or Basic \
                             <edge name>:<token>)"
                        .into(),
                    // The console shows it as it is.
                    false => {
                        "missing or invalid bearer token (Authorization: Bearer <token>)".into()
                    }
                })
            };
            let (token, user) = match presented(request) {
                Presented::Bearer(token) => (token.to_owned(), None),
                // Basic credentials are an edge route's alone (Caddy's way to present them).
                Presented::Basic { user, token } if edge_route => (token, Some(user)),
                Presented::Basic { .. } | Presented::Nothing => return Err(unknown()),
            };
            let role = role_of(&state.settings, admin_token, &token).ok_or_else(unknown)?;
            // Basic credentials name the edge: an edge's token under another name is refused.
            if let (Role::Edge(name), Some(user)) = (&role, user) {
                if **name != *user {
                    return Err(unknown());
                }
            }
            role
        }
    };
    let reads_only = matches!(*request.method(), Method::GET | Method::HEAD);
    match (&role, edge_route) {
        (Role::Auditor, _) if !reads_only => Err(ApiError::Forbidden(
            "a read-only token may not change anything".into(),
        )),
        (Role::Auditor, true) => Err(ApiError::Forbidden(
            "a read-only token may not use the edge routes: they hand out private keys".into(),
        )),
        (Role::Edge(name), false) => Err(ApiError::Forbidden(format!(
            "the token of edge {name} may use the edge routes ({EDGE_ROUTES}…) only"
        ))),
        _ => Ok(role),
    }
}

/// Whose token `presented` is. Every token is compared (no early exit), so timing says
/// nothing about which token came close.
fn role_of(settings: &Settings, admin_token: &Secret, presented: &str) -> Option<Role> {
    let is_admin = matches(presented, admin_token);
    let is_auditor = settings
        .read_only_tokens
        .iter()
        .fold(false, |found, token| found | matches(presented, token));
    let edge = settings.edge_tokens.iter().fold(None, |found, edge| {
        match matches(presented, &edge.token) {
            true => Some(&edge.name),
            false => found,
        }
    });
    match (is_admin, is_auditor, edge) {
        (true, _, _) => Some(Role::Admin),
        (false, true, _) => Some(Role::Auditor),
        (false, false, Some(name)) => Some(Role::Edge(name.clone())),
        (false, false, None) => None,
    }
}
