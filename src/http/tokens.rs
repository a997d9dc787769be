//! Handlers of `/tokens…`: the access tokens the service manages. Making and revoking one is
//! an admin's (a read-only token gets `403`, as on every write; an edge token too, as off the
//! edge routes); its secret is shown once, when it is made, and never stored.

use actix_web::{web, HttpRequest, HttpResponse};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::auth::Role;
use super::bodies::{rfc3339, rfc3339_opt, CallerErrors, ChangeErrors, NotFoundError};
use super::origin::origin;
use super::{ApiError, SharedState};
use crate::domain::access_token::AccessToken;
use crate::use_cases::access_tokens::{
    access_token, access_tokens, create_token, last_uses, revoke_token, NewToken,
};

/// Body of `POST /tokens`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateToken {
    /// What it is for, 1 to 100 characters; an edge token's name is its edge's name (1 to 64
    /// letters, digits, `-`, `_` or `.`, the user of its Basic credentials).
    #[schema(example = "deploy pipeline")]
    pub name: String,
    /// `admin`, `auditor`, `edge` or `tenant` (with `tenant`: its domains only).
    #[schema(example = "auditor")]
    pub role: String,
    /// The tenant of a `tenant` token (required with it; refused with any other role): 1 to
    /// 64 ASCII letters, digits, `_` or `-`, as domains take it.
    pub tenant: Option<String>,
    /// When it stops being accepted (RFC 3339, in the future); omitted: never.
    pub expires_at: Option<DateTime<Utc>>,
    /// The prefixes (CIDR, at most 32) the caller's address must be in; omitted or empty: any
    /// address. The address is the connection's peer, or, from one of `TRUSTED_PROXIES`, the
    /// right-most address of `X-Forwarded-For` that is not a trusted proxy's.
    #[schema(example = json!(["10.0.0.0/8"]))]
    pub allowed_from: Option<Vec<String>>,
}

/// An access token (never its secret).
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct TokenBody {
    /// The token's id (the `token_id` in the metadata of the events it causes).
    pub id: String,
    /// What it is for.
    pub name: String,
    /// `admin`, `auditor`, `edge` or `tenant`.
    pub role: &'static str,
    /// The tenant of a `tenant` token.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tenant: Option<String>,
    /// `active`, `expired` or `revoked`.
    pub status: &'static str,
    /// When it stops being accepted; absent: never.
    #[serde(
        serialize_with = "rfc3339_opt",
        skip_serializing_if = "Option::is_none"
    )]
    pub expires_at: Option<DateTime<Utc>>,
    /// The prefixes the caller's address must be in (empty: any).
    pub allowed_from: Vec<String>,
    /// When it was made.
    #[serde(serialize_with = "rfc3339")]
    pub created_at: DateTime<Utc>,
    /// When it was revoked.
    #[serde(
        serialize_with = "rfc3339_opt",
        skip_serializing_if = "Option::is_none"
    )]
    pub revoked_at: Option<DateTime<Utc>>,
    /// When it was last used, to the minute or so (noted at most once a minute per replica);
    /// absent: never.
    #[serde(
        serialize_with = "rfc3339_opt",
        skip_serializing_if = "Option::is_none"
    )]
    pub last_used_at: Option<DateTime<Utc>>,
}

/// `201` body of `POST /tokens`: the token and its secret, shown this once.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct TokenWithSecret {
    /// The token.
    #[serde(flatten)]
    pub token: TokenBody,
    /// The secret (`dnsh_…`, 256 random bits): present it as `Authorization: Bearer <secret>`.
    /// Store it now: only its SHA-256 is kept, and it is never shown again.
    #[schema(example = "dnsh_2Zl4u1lJ0zvA7m3yQv0mRk9pLd8t6Xc1sHq5WbYjN0E")]
    pub secret: String,
}

/// `200` body of `GET /tokens`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct TokenList {
    /// Every token, revoked ones too, oldest first.
    pub items: Vec<TokenBody>,
}

fn body_of(id: String, token: AccessToken, last_used_at: Option<DateTime<Utc>>) -> TokenBody {
    let now = Utc::now();
    let status = match (&token.revoked_at, token.expires_at) {
        (Some(_), _) => "revoked",
        (None, Some(end)) if now >= end => "expired",
        _ => "active",
    };
    TokenBody {
        id,
        name: token.name,
        role: token.role.map_or("", |role| role.as_str()),
        tenant: token.tenant,
        status,
        expires_at: token.expires_at,
        allowed_from: token.allowed_from,
        created_at: token.created_at.unwrap_or_default(),
        revoked_at: token.revoked_at,
        last_used_at,
    }
}

/// `POST /tokens`: make a token; its secret is answered this once.
#[utoipa::path(
    post, path = "/tokens", operation_id = "createToken", tag = "tokens",
    request_body = CreateToken,
    responses(
        (status = 201, description = "Made; the secret is shown this once", body = TokenWithSecret),
        (status = 413, description = "Body too large", body = super::bodies::ErrorBody),
        (status = 415, description = "Body is not JSON", body = super::bodies::ErrorBody),
        CallerErrors, ChangeErrors
    ),
    security(("bearer" = []))
)]
pub async fn create(
    state: SharedState,
    request: HttpRequest,
    body: web::Json<CreateToken>,
) -> Result<HttpResponse, ApiError> {
    Role::require_admin(&request, "make tokens")?;
    let body = body.into_inner();
    let new = NewToken {
        name: body.name,
        role: body.role,
        tenant: body.tenant,
        expires_at: body.expires_at,
        allowed_from: body.allowed_from.unwrap_or_default(),
    };
    let created = create_token(&state, new, origin(&request)).await?;
    Ok(HttpResponse::Created().json(TokenWithSecret {
        token: body_of(created.id, created.token, None),
        secret: created.secret,
    }))
}

/// `GET /tokens`: every token, revoked ones too (never a secret).
#[utoipa::path(
    get, path = "/tokens", operation_id = "listTokens", tag = "tokens",
    responses((status = 200, description = "The tokens, oldest first", body = TokenList), CallerErrors),
    security(("bearer" = []))
)]
pub async fn list(state: SharedState) -> Result<HttpResponse, ApiError> {
    let uses = last_uses(&state).await?;
    let items = access_tokens(&state)
        .await?
        .into_iter()
        .map(|(id, token)| {
            let used = uses.get(&id).copied();
            body_of(id, token, used)
        })
        .collect();
    Ok(HttpResponse::Ok().json(TokenList { items }))
}

/// `GET /tokens/{id}`: one token (never its secret).
#[utoipa::path(
    get, path = "/tokens/{id}", operation_id = "getToken", tag = "tokens",
    params(("id" = String, Path, description = "The token's id")),
    responses((status = 200, description = "The token", body = TokenBody), CallerErrors, NotFoundError),
    security(("bearer" = []))
)]
pub async fn get(state: SharedState, id: web::Path<String>) -> Result<HttpResponse, ApiError> {
    let token = access_token(&state, &id).await?;
    let used = last_uses(&state).await?.get(id.as_str()).copied();
    Ok(HttpResponse::Ok().json(body_of(id.into_inner(), token, used)))
}

/// `DELETE /tokens/{id}`: revoke a token; every replica refuses it within a second or so.
#[utoipa::path(
    delete, path = "/tokens/{id}", operation_id = "revokeToken", tag = "tokens",
    params(("id" = String, Path, description = "The token's id")),
    responses((status = 204, description = "Revoked"), CallerErrors, NotFoundError, ChangeErrors),
    security(("bearer" = []))
)]
pub async fn revoke(
    state: SharedState,
    request: HttpRequest,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    Role::require_admin(&request, "revoke tokens")?;
    revoke_token(&state, &id, origin(&request)).await?;
    Ok(HttpResponse::NoContent().finish())
}
