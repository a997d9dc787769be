//! The store's side of signed checkpoints: keeping them and reading them back.

use serde::{Deserialize, Serialize};
use sqlx::Row;

use super::{Store, StoreError};

/// One signed checkpoint of the log, as stored (what it means, its message and its signature
/// check, is `audit/checkpoints.rs`'s).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Checkpoint {
    /// The feed position covered up to (inclusive); 0 for an empty log.
    pub position: i64,
    /// How many events the log holds up to `position`.
    pub event_count: i64,
    /// The running SHA-256 over every event up to `position`, in feed order (hex).
    pub log_hash: String,
    /// When it was signed (RFC 3339, UTC).
    pub signed_at: String,
    /// The Ed25519 public key that signed it (standard base64 of 32 bytes).
    pub public_key: String,
    /// The Ed25519 signature of [`Checkpoint::message`] (standard base64).
    pub signature: String,
}

const COLUMNS: &str = "position, event_count, log_hash, signed_at, public_key, signature";

/// Reads one checkpoint row (works on either database's row type).
fn checkpoint_row<R: Row>(row: &R) -> Result<Checkpoint, sqlx::Error>
where
    for<'a> &'a str: sqlx::ColumnIndex<R>,
    i64: for<'r> sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    String: for<'r> sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
{
    Ok(Checkpoint {
        position: row.try_get("position")?,
        event_count: row.try_get("event_count")?,
        log_hash: row.try_get("log_hash")?,
        signed_at: row.try_get("signed_at")?,
        public_key: row.try_get("public_key")?,
        signature: row.try_get("signature")?,
    })
}

impl Store {
    /// Keeps a signed checkpoint; answers false when one at that position is kept already
    /// (another replica signed the same log at the same moment).
    pub async fn insert_audit_checkpoint(
        &self,
        checkpoint: &Checkpoint,
    ) -> Result<bool, StoreError> {
        let sql = format!(
            "INSERT INTO audit_checkpoints ({COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6) \
             ON CONFLICT (position) DO NOTHING"
        );
        let inserted = on_pool!(self, pool => sqlx::query(&sql)
            .bind(checkpoint.position)
            .bind(checkpoint.event_count)
            .bind(&checkpoint.log_hash)
            .bind(&checkpoint.signed_at)
            .bind(&checkpoint.public_key)
            .bind(&checkpoint.signature)
            .execute(pool)
            .await?
            .rows_affected());
        Ok(inserted == 1)
    }

    /// Up to `limit` checkpoints before `before` (all when `None`), latest first.
    pub async fn audit_checkpoints(
        &self,
        before: Option<i64>,
        limit: u32,
    ) -> Result<Vec<Checkpoint>, StoreError> {
        let sql = format!(
            "SELECT {COLUMNS} FROM audit_checkpoints WHERE position < $1 \
             ORDER BY position DESC LIMIT $2"
        );
        let rows = on_pool!(self, pool => sqlx::query(&sql)
            .bind(before.unwrap_or(i64::MAX))
            .bind(i64::from(limit))
            .fetch_all(pool)
            .await?
            .iter()
            .map(checkpoint_row)
            .collect::<Result<Vec<_>, sqlx::Error>>()?);
        Ok(rows)
    }

    /// How many stored events no walk of the feed sees: those with no position, or one below
    /// 1, or of an aggregate type the log does not have (written around the service).
    pub async fn events_outside_the_feed(&self) -> Result<i64, StoreError> {
        let sql = "SELECT COUNT(*) AS n FROM events \
                   WHERE position IS NULL OR position < 1 OR aggregate_type <> $1";
        Ok(on_pool!(self, pool => sqlx::query(sql)
            .bind(dns_handling_events::AGGREGATE_TYPE)
            .fetch_one(pool)
            .await?
            .try_get("n")?))
    }

    /// How many events the feed holds from its start up to `position`, inclusive: what a
    /// checkpoint at `position` counted, if nothing was inserted or deleted below it since.
    pub async fn feed_events_up_to(&self, position: i64) -> Result<i64, StoreError> {
        let sql = "SELECT COUNT(*) AS n FROM events WHERE position > 0 AND position <= $1";
        Ok(on_pool!(self, pool => sqlx::query(sql)
            .bind(position)
            .fetch_one(pool)
            .await?
            .try_get("n")?))
    }

    /// Every checkpoint after `position`, oldest first.
    pub async fn audit_checkpoints_after(
        &self,
        position: i64,
    ) -> Result<Vec<Checkpoint>, StoreError> {
        let sql = format!(
            "SELECT {COLUMNS} FROM audit_checkpoints WHERE position > $1 ORDER BY position"
        );
        let rows = on_pool!(self, pool => sqlx::query(&sql)
            .bind(position)
            .fetch_all(pool)
            .await?
            .iter()
            .map(checkpoint_row)
            .collect::<Result<Vec<_>, sqlx::Error>>()?);
        Ok(rows)
    }

    /// The latest checkpoint, if any was signed.
    pub async fn latest_audit_checkpoint(&self) -> Result<Option<Checkpoint>, StoreError> {
        Ok(self.audit_checkpoints(None, 1).await?.pop())
    }
}
