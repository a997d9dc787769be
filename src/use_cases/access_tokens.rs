//! Access tokens the service manages: making one (its secret made here and shown once, only
//! its digest recorded), revoking one, and reading them as their events make them.

use std::collections::HashMap;
use std::time::Duration;

use base64::Engine as _;
use chrono::{DateTime, Utc};
use cqrs_es::{AggregateContext, AggregateError, EventStore};
use rand::RngCore as _;

use crate::adapters::store::StoreError;
use crate::app_state::{AppState, CommandOrigin};
use crate::domain::access_token::{AccessToken, AccessTokenCommand, AccessTokenError};
use crate::read::token_table::{digest_of, SECRET_PREFIX};

/// What a token is asked to be.
#[derive(Debug, Clone)]
pub struct NewToken {
    /// What it is for (an edge token's name is the edge's name).
    pub name: String,
    /// `admin`, `auditor`, `edge` or `tenant`.
    pub role: String,
    /// The tenant of a `tenant` token.
    pub tenant: Option<String>,
    /// When it stops being accepted.
    pub expires_at: Option<DateTime<Utc>>,
    /// The prefixes (CIDR) its caller's address must be in.
    pub allowed_from: Vec<String>,
}

/// A token just made: its id, its secret (to show this once) and the token as recorded.
#[derive(Debug)]
pub struct CreatedToken {
    /// Its id.
    pub id: String,
    /// Its secret: never stored, never shown again.
    pub secret: String,
    /// The token as its creation makes it.
    pub token: AccessToken,
}

/// Why a token use case failed.
#[derive(Debug, thiserror::Error)]
pub enum AccessTokensError {
    /// The aggregate refused, or its store failed.
    #[error(transparent)]
    Command(#[from] AggregateError<AccessTokenError>),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// A new secret: 256 random bits from the OS's generator, base64url, after [`SECRET_PREFIX`].
pub fn new_secret() -> String {
    let mut bytes = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    let encoded = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);
    format!("{SECRET_PREFIX}{encoded}")
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

/// Makes a token as `new` asks, recorded with `origin`; refused (nothing stored) when the
/// aggregate refuses what was asked.
pub async fn create_token(
    state: &AppState,
    new: NewToken,
    origin: CommandOrigin,
) -> Result<CreatedToken, AccessTokensError> {
    let id = uuid::Uuid::now_v7().to_string();
    let secret = new_secret();
    let command = AccessTokenCommand::Create {
        name: new.name,
        role: new.role,
        tenant: new.tenant,
        secret_sha256: hex(&digest_of(&secret)),
        expires_at: new.expires_at,
        allowed_from: new.allowed_from,
        at: Utc::now(),
    };
    state
        .tokens
        .execute_with_metadata(&id, command, origin.0)
        .await?;
    let token = access_token(state, &id).await?;
    settle(state, &id, true).await;
    Ok(CreatedToken { id, secret, token })
}

/// How long a change waits for this replica's table of tokens to show it before answering.
const SETTLE_WITHIN: Duration = Duration::from_secs(2);

/// Waits (for [`SETTLE_WITHIN`] at most) until this replica's table of tokens holds token `id`
/// or not, as `held` says: a token made here is accepted here once its creation is answered,
/// and one revoked here refused. The other replicas follow on their own commit wake-ups.
async fn settle(state: &AppState, id: &str, held: bool) {
    let deadline = tokio::time::Instant::now() + SETTLE_WITHIN;
    while state.token_table.holds(id) != held && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Revokes token `id`, recorded with `origin`: every replica refuses it once its table of
/// tokens has read the revocation.
pub async fn revoke_token(
    state: &AppState,
    id: &str,
    origin: CommandOrigin,
) -> Result<(), AccessTokensError> {
    let command = AccessTokenCommand::Revoke { at: Utc::now() };
    state
        .tokens
        .execute_with_metadata(id, command, origin.0)
        .await?;
    settle(state, id, false).await;
    Ok(())
}

/// The token `id` as its events make it; refused as `NotFound` when it has none.
pub async fn access_token(state: &AppState, id: &str) -> Result<AccessToken, AccessTokensError> {
    let token = state
        .token_events
        .load_aggregate(id)
        .await?
        .aggregate()
        .clone();
    if !token.created {
        return Err(AggregateError::UserError(AccessTokenError::NotFound).into());
    }
    Ok(token)
}

/// Every token (revoked ones too), oldest first, with when each was last used.
pub async fn access_tokens(
    state: &AppState,
) -> Result<Vec<(String, AccessToken)>, AccessTokensError> {
    let mut tokens = Vec::new();
    for id in state.store.token_ids().await? {
        let token = access_token(state, &id).await?;
        tokens.push((id, token));
    }
    Ok(tokens)
}

/// When each token was last used (to the minute or so).
pub async fn last_uses(state: &AppState) -> Result<HashMap<String, DateTime<Utc>>, StoreError> {
    state.store.token_uses().await
}
