//! The access tokens' log as the service reads it beside cqrs-es: its events in position order
//! (for each replica's table of tokens), the tokens' ids, and when each token was last used.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use sqlx::Row;

use super::{sortable_time, Store, StoreError};

/// An event of the access tokens' log as the token table reads it.
#[derive(Debug, Clone)]
pub struct TokenRow {
    /// Position in the tokens' log (commit order).
    pub position: i64,
    /// The token's id.
    pub aggregate_id: String,
    /// Event type.
    pub event_type: String,
    /// The payload as stored, as JSON text.
    pub payload: String,
}

impl Store {
    /// Up to `limit` events of the tokens' log after `position`, in position order.
    pub async fn token_batch(
        &self,
        position: i64,
        limit: u32,
    ) -> Result<Vec<TokenRow>, StoreError> {
        let sql = "SELECT position, aggregate_id, event_type, CAST(payload AS TEXT) AS payload \
                   FROM token_events WHERE position > $1 ORDER BY position LIMIT $2";
        Ok(on_pool!(self, pool => sqlx::query(sql)
            .bind(position)
            .bind(i64::from(limit))
            .fetch_all(pool)
            .await?
            .iter()
            .map(|row| {
                Ok(TokenRow {
                    position: row.try_get("position")?,
                    aggregate_id: row.try_get("aggregate_id")?,
                    event_type: row.try_get("event_type")?,
                    payload: row.try_get("payload")?,
                })
            })
            .collect::<Result<Vec<_>, sqlx::Error>>()?))
    }

    /// Every access token's id (revoked ones too), in id order (ids are UUIDv7: creation order).
    pub async fn token_ids(&self) -> Result<Vec<String>, StoreError> {
        let sql = "SELECT DISTINCT aggregate_id FROM token_events ORDER BY aggregate_id";
        Ok(on_pool!(self, pool => sqlx::query_scalar(sql).fetch_all(pool).await?))
    }

    /// Notes that `token_id` was used at `at` (a later use already noted stays).
    pub async fn record_token_use(
        &self,
        token_id: &str,
        at: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let sql = "INSERT INTO token_uses (token_id, last_used_at) VALUES ($1, $2) \
                   ON CONFLICT (token_id) DO UPDATE SET last_used_at = excluded.last_used_at \
                   WHERE token_uses.last_used_at < excluded.last_used_at";
        on_pool!(self, pool => sqlx::query(sql)
            .bind(token_id)
            .bind(sortable_time(at))
            .execute(pool)
            .await
            .map(|_| ())?);
        Ok(())
    }

    /// When each token was last used, as noted.
    pub async fn token_uses(&self) -> Result<HashMap<String, DateTime<Utc>>, StoreError> {
        let sql = "SELECT token_id, last_used_at FROM token_uses";
        let rows: Vec<(String, String)> = on_pool!(self, pool => sqlx::query(sql)
            .fetch_all(pool)
            .await?
            .iter()
            .map(|row| Ok((row.try_get("token_id")?, row.try_get("last_used_at")?)))
            .collect::<Result<Vec<_>, sqlx::Error>>()?);
        Ok(rows
            .into_iter()
            .filter_map(|(id, at)| {
                let at = DateTime::parse_from_rfc3339(&at).ok()?;
                Some((id, at.with_timezone(&Utc)))
            })
            .collect())
    }
}
