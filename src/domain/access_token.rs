//! The `AccessToken` aggregate: a credential the service manages (made, listed and revoked
//! through `/tokens`, unlike the environment's tokens): its role, the tenant it acts for,
//! when it expires, the addresses it is accepted from, and whether it was revoked.
//!
//! Its secret never reaches the aggregate: the command carries the secret's SHA-256.

use chrono::{DateTime, Utc};
use cqrs_es::event_sink::EventSink;
use cqrs_es::Aggregate;
use dns_handling_events::tokens::{AccessTokenEvent, TOKEN_AGGREGATE_TYPE};
use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use super::tenant::{TenantId, MAX_TENANT_CHARS};

/// The longest name a token may have, in characters.
pub const MAX_NAME_CHARS: usize = 100;

/// The longest name of an edge token (an edge's name, as `EDGE_TOKENS` takes them).
pub const MAX_EDGE_NAME_CHARS: usize = 64;

/// The most prefixes one token's `allowed_from` may list.
pub const MAX_ALLOWED_FROM: usize = 32;

/// What a managed token may do: the roles of the environment's tokens, and `tenant`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TokenRole {
    /// Everything, private keys included.
    Admin,
    /// Reads, nothing else.
    Auditor,
    /// The edge routes only, as the edge named by the token's name.
    Edge,
    /// One tenant's domains only.
    Tenant,
}

impl TokenRole {
    /// Every role, as the API lists them.
    pub const ALL: [TokenRole; 4] = [Self::Admin, Self::Auditor, Self::Edge, Self::Tenant];

    /// The role as the API spells it.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Admin => "admin",
            Self::Auditor => "auditor",
            Self::Edge => "edge",
            Self::Tenant => "tenant",
        }
    }

    /// Parses the API's spelling.
    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|role| role.as_str() == text)
    }
}

/// What can be asked of an access token.
#[derive(Debug, Clone, PartialEq)]
pub enum AccessTokenCommand {
    /// Make it, as asked (every field checked here).
    Create {
        /// What it is for (an edge token's name is the edge's name).
        name: String,
        /// Its role as asked (`admin`, `auditor`, `edge`, `tenant`).
        role: String,
        /// The tenant, for a `tenant` token only.
        tenant: Option<String>,
        /// SHA-256 of its secret, lower-case hex.
        secret_sha256: String,
        /// When it stops being accepted.
        expires_at: Option<DateTime<Utc>>,
        /// The prefixes its caller's address must be in, as asked (CIDR).
        allowed_from: Vec<String>,
        /// When.
        at: DateTime<Utc>,
    },
    /// Revoke it.
    Revoke {
        /// When.
        at: DateTime<Utc>,
    },
}

/// Why a command was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AccessTokenError {
    /// The token exists already.
    #[error("the token exists already")]
    AlreadyExists,
    /// No token with this id.
    #[error("no such token")]
    NotFound,
    /// The token was revoked already.
    #[error("the token is revoked already")]
    Revoked,
    /// The name is empty, too long or holds control characters.
    #[error("name must be 1 to {MAX_NAME_CHARS} characters, without control characters")]
    BadName,
    /// An edge token's name is an edge's name, as in `EDGE_TOKENS`: it labels metrics, names
    /// the edge's key reads and is the user of its Basic credentials.
    #[error("an edge token's name is its edge's name: 1 to {MAX_EDGE_NAME_CHARS} letters, digits, '-', '_' or '.'")]
    BadEdgeName,
    /// The role is not one of the four.
    #[error("unknown role {0:?}; use admin, auditor, edge or tenant")]
    UnknownRole(String),
    /// A `tenant` token without its tenant, or a tenant on another role.
    #[error("tenant is required with role tenant, and only with it")]
    TenantMismatch,
    /// The tenant id is empty, too long or holds other than letters, digits, `_` and `-`.
    #[error("tenant must be 1 to {MAX_TENANT_CHARS} letters, digits, '_' or '-'")]
    BadTenant,
    /// It would be expired from the start.
    #[error("expires_at must be in the future")]
    ExpiresInThePast,
    /// A prefix that does not parse.
    #[error("allowed_from: {0:?} is not a CIDR prefix such as 10.0.0.0/8 or 2001:db8::/32")]
    BadPrefix(String),
    /// Too many prefixes.
    #[error("allowed_from lists at most {MAX_ALLOWED_FROM} prefixes")]
    TooManyPrefixes,
}

/// One access token, rebuilt from its events.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct AccessToken {
    /// Whether it was created.
    pub created: bool,
    /// What it is for.
    pub name: String,
    /// Its role (`admin` until created, never read then).
    pub role: Option<TokenRole>,
    /// The tenant of a `tenant` token.
    pub tenant: Option<String>,
    /// SHA-256 of its secret, lower-case hex.
    pub secret_sha256: String,
    /// When it stops being accepted.
    pub expires_at: Option<DateTime<Utc>>,
    /// The prefixes its caller's address must be in (empty: any).
    pub allowed_from: Vec<String>,
    /// When it was created.
    pub created_at: Option<DateTime<Utc>>,
    /// When it was revoked.
    pub revoked_at: Option<DateTime<Utc>>,
}

/// Parses `allowed_from`, each prefix to its network (`10.1.2.3/8` is `10.0.0.0/8`).
pub fn parse_prefixes(prefixes: &[String]) -> Result<Vec<IpNet>, AccessTokenError> {
    if prefixes.len() > MAX_ALLOWED_FROM {
        return Err(AccessTokenError::TooManyPrefixes);
    }
    prefixes
        .iter()
        .map(|text| {
            text.trim()
                .parse::<IpNet>()
                .map(|net| net.trunc())
                .map_err(|_| AccessTokenError::BadPrefix(text.chars().take(60).collect()))
        })
        .collect()
}

fn check_name(name: &str, role: TokenRole) -> Result<(), AccessTokenError> {
    let length = name.chars().count();
    if !(1..=MAX_NAME_CHARS).contains(&length)
        || name.trim().is_empty()
        || name.chars().any(char::is_control)
    {
        return Err(AccessTokenError::BadName);
    }
    let edge_name = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.');
    if role == TokenRole::Edge && (length > MAX_EDGE_NAME_CHARS || !name.chars().all(edge_name)) {
        return Err(AccessTokenError::BadEdgeName);
    }
    Ok(())
}

fn check_tenant(role: TokenRole, tenant: Option<&str>) -> Result<(), AccessTokenError> {
    match (role, tenant) {
        (TokenRole::Tenant, Some(tenant)) => match TenantId::parse(tenant) {
            Ok(_) => Ok(()),
            Err(_) => Err(AccessTokenError::BadTenant),
        },
        (TokenRole::Tenant, None) | (_, Some(_)) => Err(AccessTokenError::TenantMismatch),
        (_, None) => Ok(()),
    }
}

impl AccessToken {
    /// Whether it is accepted at `now`, as far as time and revocation go.
    pub fn is_live(&self, now: DateTime<Utc>) -> bool {
        self.created && self.revoked_at.is_none() && self.expires_at.is_none_or(|end| now < end)
    }
}

impl Aggregate for AccessToken {
    const TYPE: &'static str = TOKEN_AGGREGATE_TYPE;
    type Command = AccessTokenCommand;
    type Event = AccessTokenEvent;
    type Error = AccessTokenError;
    type Services = ();

    async fn handle(
        &mut self,
        command: Self::Command,
        _services: &Self::Services,
        sink: &EventSink<Self>,
    ) -> Result<(), Self::Error> {
        let event = match command {
            AccessTokenCommand::Create {
                name,
                role,
                tenant,
                secret_sha256,
                expires_at,
                allowed_from,
                at,
            } => {
                if self.created {
                    return Err(AccessTokenError::AlreadyExists);
                }
                let role = TokenRole::parse(&role).ok_or_else(|| {
                    AccessTokenError::UnknownRole(role.chars().take(40).collect())
                })?;
                check_name(&name, role)?;
                check_tenant(role, tenant.as_deref())?;
                if expires_at.is_some_and(|end| end <= at) {
                    return Err(AccessTokenError::ExpiresInThePast);
                }
                let allowed_from = parse_prefixes(&allowed_from)?
                    .iter()
                    .map(IpNet::to_string)
                    .collect();
                AccessTokenEvent::TokenCreated {
                    name,
                    role: role.as_str().to_owned(),
                    tenant,
                    secret_sha256,
                    expires_at,
                    allowed_from,
                    created_at: at,
                }
            }
            AccessTokenCommand::Revoke { at } => {
                if !self.created {
                    return Err(AccessTokenError::NotFound);
                }
                if self.revoked_at.is_some() {
                    return Err(AccessTokenError::Revoked);
                }
                AccessTokenEvent::TokenRevoked { revoked_at: at }
            }
        };
        sink.write(event, self).await;
        Ok(())
    }

    fn apply(&mut self, event: Self::Event) {
        match event {
            AccessTokenEvent::TokenCreated {
                name,
                role,
                tenant,
                secret_sha256,
                expires_at,
                allowed_from,
                created_at,
            } => {
                self.created = true;
                self.name = name;
                self.role = TokenRole::parse(&role);
                self.tenant = tenant;
                self.secret_sha256 = secret_sha256;
                self.expires_at = expires_at;
                self.allowed_from = allowed_from;
                self.created_at = Some(created_at);
            }
            AccessTokenEvent::TokenRevoked { revoked_at } => self.revoked_at = Some(revoked_at),
        }
    }
}

#[cfg(test)]
mod tests;
