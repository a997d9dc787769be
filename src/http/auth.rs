//! Token authentication with four roles, tokens compared in constant time.
//!
//! Every route takes `Authorization: Bearer <token>`. The edge routes (every path under
//! [`EDGE_ROUTES`]) also take HTTP Basic credentials `<edge name>:<token>`, since Caddy's
//! `get_certificate http` sends only what its URL holds (Go turns a URL's user info into Basic
//! credentials). A token is never read from a query string.
//!
//! A token is the environment's (`AUTH_TOKEN`, `READ_ONLY_TOKENS`, `EDGE_TOKENS`) or one the
//! service manages (`/tokens`), found in this replica's table of them without a query (see
//! `read::token_table`): past its `expires_at` it is refused with `401`, from an address outside
//! its `allowed_from` with `403`. The address is the connection's peer, or behind one of
//! `TRUSTED_PROXIES` the one it forwards (`http/client_address.rs`). Each request is tagged
//! with the [`Credential`] it presented, which the events it causes name.

use std::sync::Arc;

use actix_web::body::{EitherBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::AUTHORIZATION;
use actix_web::http::Method;
use actix_web::middleware::Next;
use actix_web::{web, HttpMessage, HttpRequest};
use base64::Engine as _;
use chrono::Utc;
use subtle::ConstantTimeEq;

use super::ApiError;
use crate::app_state::AppState;
use crate::domain::access_token::TokenRole;
use crate::domain::tenant::{Scope, TenantId};
use crate::read::token_table::ManagedToken;
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
    /// A tenant's token: its tenant's domains only (see `http/scope.rs`).
    Tenant(TenantId),
}

impl Role {
    /// How the role appears in audit records.
    pub fn label(&self) -> &'static str {
        match self {
            Self::Admin => "admin",
            Self::Auditor => "auditor",
            Self::Edge(_) => "edge",
            Self::Tenant(_) => "tenant",
        }
    }

    /// Which domains the role sees and acts on.
    pub fn scope(&self) -> Scope {
        match self {
            Self::Tenant(tenant) => Scope::Tenant(tenant.clone()),
            Self::Admin | Self::Auditor | Self::Edge(_) => Scope::All,
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
            Role::Tenant(_) => Err(ApiError::Forbidden(format!(
                "a tenant token may not {what}"
            ))),
        }
    }
}

/// Which credential a request presented, as the events it causes name it (never its secret):
/// a managed token's id, or for the environment's tokens `env:admin`, `env:auditor:<n>` (its
/// place in `READ_ONLY_TOKENS`, from 1) and `env:edge:<name>`; `env:open` when no token is
/// configured.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credential(pub Arc<str>);

impl Credential {
    /// The credential the authentication middleware found for this request.
    pub fn of(request: &HttpRequest) -> Option<Credential> {
        request.extensions().get::<Credential>().cloned()
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
    let decided = match decide_role(&request) {
        // A tenant's request goes on only to its own domains' routes (`http/scope.rs`).
        Ok((Role::Tenant(tenant), credential)) => super::scope::confine(&request, &tenant)
            .await
            .map(|()| (Role::Tenant(tenant), credential)),
        other => other,
    };
    match decided {
        Ok((role, credential)) => {
            request.extensions_mut().insert(role);
            request.extensions_mut().insert(credential);
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

/// The caller's role and credential, or why it is refused.
fn decide_role(request: &ServiceRequest) -> Result<(Role, Credential), ApiError> {
    let Some(state) = request.app_data::<web::Data<Arc<AppState>>>().cloned() else {
        return Err(ApiError::internal("service state missing"));
    };
    let edge_route = request.path().starts_with(EDGE_ROUTES);
    let (role, credential) = match &state.settings.auth_token {
        None => (Role::Admin, Credential("env:open".into())),
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
            let (role, credential) = match role_of(&state.settings, admin_token, &token) {
                Some(found) => found,
                None => {
                    let found = state.token_table.find(&token).ok_or_else(unknown)?;
                    managed_role(&state, request, &found)?
                }
            };
            // Basic credentials name the edge: an edge's token under another name is refused.
            if let (Role::Edge(name), Some(user)) = (&role, user) {
                if **name != *user {
                    return Err(unknown());
                }
            }
            (role, credential)
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
        (Role::Tenant(_), true) => Err(ApiError::Forbidden(
            "a tenant token may not use the edge routes: they hand out private keys".into(),
        )),
        _ => Ok((role, credential)),
    }
}

/// The role of a managed token the caller presented, or why it is refused: past its end
/// (`401`), or from an address outside its `allowed_from` (`403`). A use is noted in the store
/// at most once a minute per token and replica, by a task of its own: the request never waits
/// for it.
fn managed_role(
    state: &Arc<AppState>,
    request: &ServiceRequest,
    token: &ManagedToken,
) -> Result<(Role, Credential), ApiError> {
    let now = Utc::now();
    if token.is_expired(now) {
        return Err(ApiError::Unauthorized("token expired".into()));
    }
    let peer = super::client_address::client_address(request, &state.settings.trusted_proxies);
    if !token.admits(peer) {
        return Err(ApiError::Forbidden(match peer {
            Some(peer) => format!("this token is not accepted from {peer}"),
            None => "this token is not accepted from an unknown address".into(),
        }));
    }
    if token.use_due(now) {
        let (store, id) = (state.store.clone(), token.id.clone());
        actix_web::rt::spawn(async move {
            if let Err(error) = store.record_token_use(&id, now).await {
                tracing::warn!(token = %id, %error, "noting a token's use failed");
            }
        });
    }
    let role = match token.role {
        TokenRole::Admin => Role::Admin,
        TokenRole::Auditor => Role::Auditor,
        TokenRole::Edge => Role::Edge(token.name.clone()),
        // The aggregate made it with a valid tenant; a token without one is never accepted.
        TokenRole::Tenant => match token.tenant.as_deref().map(TenantId::parse) {
            Some(Ok(tenant)) => Role::Tenant(tenant),
            _ => return Err(ApiError::internal("a tenant token without a valid tenant")),
        },
    };
    Ok((role, Credential(token.id.clone())))
}

/// Whose token `presented` is. Every token is compared (no early exit), so timing says
/// nothing about which token came close.
fn role_of(
    settings: &Settings,
    admin_token: &Secret,
    presented: &str,
) -> Option<(Role, Credential)> {
    let is_admin = matches(presented, admin_token);
    let auditor =
        settings
            .read_only_tokens
            .iter()
            .enumerate()
            .fold(None, |found, (place, token)| {
                match matches(presented, token) {
                    true => Some(place + 1),
                    false => found,
                }
            });
    let edge = settings.edge_tokens.iter().fold(None, |found, edge| {
        match matches(presented, &edge.token) {
            true => Some(&edge.name),
            false => found,
        }
    });
    let credential = |id: String| Credential(id.into());
    match (is_admin, auditor, edge) {
        (true, _, _) => Some((Role::Admin, credential("env:admin".into()))),
        (false, Some(place), _) => {
            Some((Role::Auditor, credential(format!("env:auditor:{place}"))))
        }
        (false, None, Some(name)) => Some((
            Role::Edge(name.clone()),
            credential(format!("env:edge:{name}")),
        )),
        (false, None, None) => None,
    }
}
