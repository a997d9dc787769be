//! Keeps this replica's table of the access tokens the service manages, so that a request's
//! token is checked without a query: every replica keeps its own, from the tokens' log.
//!
//! At start the table is built from the whole log, aside, and put in place when caught up
//! (until then managed tokens are refused and `/readyz` says why). Then the log is followed,
//! each commit of any replica waking the follower (the trigger on `token_events` notifies the
//! channel the domains' events do, see `commit_signal`), so a revocation on one replica is
//! refused by every other one as soon as its follower wakes (`FEED_POLL_INTERVAL` at the latest
//! if a notification is lost). Its position is kept in memory.
//!
//! The table is keyed by the SHA-256 of each token's secret: a presented token is hashed and
//! looked up. The lookup compares digests, never secrets, so its timing can tell a caller only
//! how its own guess's digest compares with stored digests, which leads to no secret (a digest
//! of 256 random bits has no preimage to search for); the digest found is compared once more
//! in constant time all the same.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use dns_handling_events::tokens::AccessTokenEvent;
use ipnet::IpNet;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::adapters::store::{Store, StoreError, TokenRow};
use crate::domain::access_token::{parse_prefixes, TokenRole};
use crate::read::built_aside::{self, FollowedModel, LiveModel};
use crate::read::feed_follower::FeedRecord;

/// The follower's name in `feed_consumer_stuck` and `/readyz`.
const CONSUMER: &str = "token_table";

/// How often, at most, one replica notes that one token was used: `last_used_at` is to the
/// minute or so, and a request does not write.
pub const USE_NOTED_EVERY_SECONDS: i64 = 60;

/// The prefix of every managed token's secret, so that secret scanners can find leaked ones.
pub const SECRET_PREFIX: &str = "dnsh_";

/// SHA-256 of a token's secret.
pub type SecretDigest = [u8; 32];

/// The digest of `secret`. A plain SHA-256 is enough: a secret is 256 random bits, so no
/// dictionary or brute force can find it from its digest, which is what a slow hash guards
/// against for passwords people choose.
pub fn digest_of(secret: &str) -> SecretDigest {
    Sha256::digest(secret.as_bytes()).into()
}

/// A managed token as the requests' checks need it.
#[derive(Debug)]
pub struct ManagedToken {
    /// Its id.
    pub id: Arc<str>,
    /// Its name (an edge token's is the edge's).
    pub name: Arc<str>,
    /// Its role.
    pub role: TokenRole,
    /// The tenant of a `tenant` token.
    pub tenant: Option<String>,
    /// When it stops being accepted.
    pub expires_at: Option<DateTime<Utc>>,
    /// The networks its caller's address must be in (empty: any).
    pub allowed_from: Vec<IpNet>,
    digest: SecretDigest,
    /// When this replica last noted a use of it (Unix seconds; 0: never).
    use_noted_at: AtomicI64,
}

impl ManagedToken {
    /// Whether it is past its end at `now`.
    pub fn is_expired(&self, now: DateTime<Utc>) -> bool {
        self.expires_at.is_some_and(|end| now >= end)
    }

    /// Whether a caller at `address` may present it.
    pub fn admits(&self, address: Option<IpAddr>) -> bool {
        if self.allowed_from.is_empty() {
            return true;
        }
        // An IPv4 caller on a dual-stack socket shows as `::ffff:a.b.c.d`.
        let address = address.map(|ip| match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            IpAddr::V4(_) => ip,
        });
        address.is_some_and(|ip| self.allowed_from.iter().any(|net| net.contains(&ip)))
    }

    /// Whether a use at `now` should be noted in the store: true at most once per
    /// [`USE_NOTED_EVERY_SECONDS`] per token on this replica.
    pub fn use_due(&self, now: DateTime<Utc>) -> bool {
        let now = now.timestamp();
        let noted = self.use_noted_at.load(Ordering::Relaxed);
        now - noted >= USE_NOTED_EVERY_SECONDS
            && self
                .use_noted_at
                .compare_exchange(noted, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
    }
}

/// The tokens live now (revoked ones are dropped), by digest and by id.
#[derive(Debug, Default)]
pub(crate) struct Tokens {
    by_digest: HashMap<SecretDigest, Arc<ManagedToken>>,
    digest_of_id: HashMap<Arc<str>, SecretDigest>,
}

impl Tokens {
    /// Applies one event of token `id`.
    fn apply(&mut self, id: &str, event: AccessTokenEvent) {
        match event {
            AccessTokenEvent::TokenCreated {
                name,
                role,
                tenant,
                secret_sha256,
                expires_at,
                allowed_from,
                ..
            } => {
                let digest = hex_digest(&secret_sha256);
                let prefixes = parse_prefixes(&allowed_from).ok();
                // Each was checked when the token was made; a token whose record no longer
                // reads is refused rather than accepted with less than it said.
                let (Some(digest), Some(role), Some(allowed_from)) =
                    (digest, TokenRole::parse(&role), prefixes)
                else {
                    tracing::warn!(
                        token = id,
                        "a token's creation does not read; it is refused"
                    );
                    return;
                };
                let id: Arc<str> = id.into();
                let token = ManagedToken {
                    id: id.clone(),
                    name: name.into(),
                    role,
                    tenant,
                    expires_at,
                    allowed_from,
                    digest,
                    use_noted_at: AtomicI64::new(0),
                };
                self.by_digest.insert(digest, Arc::new(token));
                self.digest_of_id.insert(id, digest);
            }
            AccessTokenEvent::TokenRevoked { .. } => {
                if let Some(digest) = self.digest_of_id.remove(id) {
                    self.by_digest.remove(&digest);
                }
            }
        }
    }
}

fn hex_digest(text: &str) -> Option<SecretDigest> {
    let mut digest = [0u8; 32];
    if text.len() != 64 {
        return None;
    }
    for (i, byte) in digest.iter_mut().enumerate() {
        *byte = u8::from_str_radix(text.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(digest)
}

/// The table the requests' checks read, shared by the middleware and the follower.
#[derive(Debug, Default)]
pub struct TokenTable {
    tokens: RwLock<Tokens>,
    /// Whether the table was built from the log since the start.
    ready: AtomicBool,
}

impl TokenTable {
    /// The live (not revoked) managed token whose secret is `presented`, expired or not.
    pub fn find(&self, presented: &str) -> Option<Arc<ManagedToken>> {
        if !presented.starts_with(SECRET_PREFIX) {
            return None;
        }
        let digest = digest_of(presented);
        let tokens = self
            .tokens
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let found = tokens.by_digest.get(&digest)?;
        bool::from(found.digest.ct_eq(&digest)).then(|| found.clone())
    }

    /// Whether it holds token `id` (made, not revoked).
    pub fn holds(&self, id: &str) -> bool {
        self.read().digest_of_id.contains_key(id)
    }

    /// How many live tokens it holds.
    pub fn len(&self) -> usize {
        self.read().by_digest.len()
    }

    /// Whether it holds none.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Why managed tokens cannot be checked yet: the table is not built from the log.
    pub fn readiness_problem(&self) -> Option<String> {
        (!self.ready.load(Ordering::Acquire)).then(|| {
            format!("{CONSUMER}: the table of access tokens is not caught up with their log yet")
        })
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Tokens> {
        self.tokens
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl LiveModel for TokenTable {
    type Model = Tokens;

    fn replace(&self, built: Tokens) {
        *self.write() = built;
        self.ready.store(true, Ordering::Release);
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Tokens> {
        self.tokens
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

#[async_trait]
impl FeedRecord for TokenRow {
    type Decoded = AccessTokenEvent;

    async fn read(store: Store, position: i64, limit: u32) -> Result<Vec<Self>, StoreError> {
        store.token_batch(position, limit).await
    }

    fn position(&self) -> i64 {
        self.position
    }

    fn decode(&self) -> Result<AccessTokenEvent, String> {
        serde_json::from_str(&self.payload).map_err(|error| format!("{}: {error}", self.event_type))
    }
}

/// Builds the table from the tokens' log, puts it in `table` (ready from then on), then follows
/// the log for as long as the process runs, waking at each commit or after `fallback_poll`.
pub async fn follow(store: Store, table: Arc<TokenTable>, fallback_poll: Duration) {
    built_aside::follow(store, table, fallback_poll).await;
}

impl FollowedModel for TokenTable {
    type Record = TokenRow;
    const CONSUMER: &'static str = CONSUMER;
    const WHAT: &'static str = "the table of access tokens";

    fn apply(tokens: &mut Tokens, row: &TokenRow, event: AccessTokenEvent) {
        tokens.apply(&row.aggregate_id, event);
    }
}

#[cfg(test)]
mod tests;
