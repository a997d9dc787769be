//! The event log as the service reads it beside cqrs-es: the global feed in commit order, one
//! stream's history, every stream for the hash chains, the stored hash of one event, and the
//! wake-ups of feed followers when other replicas commit.
//!
//! The events are written by the cqrs-es repositories (see `event_repository`); these are the
//! reads the repositories do not offer, in SQL both databases understand.

use std::future::Future;

use dns_handling_events::chain::HASH_KEY;
use dns_handling_events::feed::FeedEvent;
use dns_handling_events::AGGREGATE_TYPE;
use sqlx::Row;

use super::{Store, StoreError};
use crate::adapters::commit_signal;

/// A table of hash-chained events.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventTable {
    /// The domains' log: the global feed.
    Events,
    /// The webhook endpoints' log.
    WebhookEvents,
    /// The access tokens' log.
    TokenEvents,
}

impl EventTable {
    /// The table's name.
    pub fn name(self) -> &'static str {
        match self {
            Self::Events => "events",
            Self::WebhookEvents => "webhook_events",
            Self::TokenEvents => "token_events",
        }
    }
}

/// The columns of a feed row, for every query that reads events as `FeedEvent`s.
const FEED_COLUMNS: &str = "SELECT position, aggregate_id, sequence, event_type, event_version, \
     COALESCE(recorded_at, '') AS recorded_at, CAST(payload AS TEXT) AS payload, \
     CAST(metadata AS TEXT) AS metadata FROM events";

/// Reads one feed row (works on either database's row type).
fn feed_row<R: Row>(row: &R) -> Result<FeedEvent, StoreError>
where
    for<'a> &'a str: sqlx::ColumnIndex<R>,
    i64: for<'r> sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    String: for<'r> sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
{
    let payload: String = row.try_get("payload")?;
    let metadata: String = row.try_get("metadata")?;
    Ok(FeedEvent {
        position: row.try_get("position")?,
        aggregate_id: row.try_get("aggregate_id")?,
        sequence: row.try_get("sequence")?,
        event_type: row.try_get("event_type")?,
        event_version: row.try_get("event_version")?,
        recorded_at: row.try_get("recorded_at")?,
        payload: serde_json::from_str(&payload)?,
        metadata: serde_json::from_str(&metadata)?,
    })
}

/// An event of the global feed as its followers read it (the projector, the delegation zone,
/// webhook messages): no metadata, the payload as stored text, decoded by the follower.
#[derive(Debug, Clone)]
pub struct FeedRow {
    /// Global position.
    pub position: i64,
    /// The stream.
    pub aggregate_id: String,
    /// Position in the stream.
    pub sequence: i64,
    /// Event type.
    pub event_type: String,
    /// Version as stored.
    pub event_version: String,
    /// The payload as stored, as JSON text.
    pub payload: String,
}

impl FeedRow {
    /// Reads one row of the `events` table that selects these columns (either database's row).
    pub(super) fn read<R: Row>(row: &R) -> Result<Self, sqlx::Error>
    where
        for<'a> &'a str: sqlx::ColumnIndex<R>,
        i64: for<'r> sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
        String: for<'r> sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    {
        Ok(Self {
            position: row.try_get("position")?,
            aggregate_id: row.try_get("aggregate_id")?,
            sequence: row.try_get("sequence")?,
            event_type: row.try_get("event_type")?,
            event_version: row.try_get("event_version")?,
            payload: row.try_get("payload")?,
        })
    }

    /// The payload as the current event version: straight from the text when it is current,
    /// through the upcasters when it is older.
    pub fn decode(&self) -> Result<dns_handling_events::CustomDomainEvent, serde_json::Error> {
        if dns_handling_events::upcast::needs_upcast(&self.event_type, &self.event_version) {
            let stored: serde_json::Value = serde_json::from_str(&self.payload)?;
            let (payload, _) =
                dns_handling_events::upcast::upcast(&self.event_type, &self.event_version, stored);
            serde_json::from_value(payload)
        } else {
            serde_json::from_str(&self.payload)
        }
    }
}

impl Store {
    /// The stored hash of one event of a stream of the domains' log (`None` when absent or
    /// unhashed).
    pub async fn event_hash(
        &self,
        aggregate_type: &str,
        aggregate_id: &str,
        sequence: i64,
    ) -> Result<Option<String>, StoreError> {
        self.event_hash_in(EventTable::Events, aggregate_type, aggregate_id, sequence)
            .await
    }

    /// The stored hash of one event of a stream of `table` (`None` when absent or unhashed).
    pub async fn event_hash_in(
        &self,
        table: EventTable,
        aggregate_type: &str,
        aggregate_id: &str,
        sequence: i64,
    ) -> Result<Option<String>, StoreError> {
        let sql = format!(
            "SELECT CAST(metadata AS TEXT) AS metadata FROM {} \
             WHERE aggregate_type = $1 AND aggregate_id = $2 AND sequence = $3",
            table.name()
        );
        let metadata: Option<String> = on_pool!(self, pool => sqlx::query(&sql)
            .bind(aggregate_type)
            .bind(aggregate_id)
            .bind(sequence)
            .fetch_optional(pool)
            .await?
            .map(|row| row.try_get("metadata"))
            .transpose()?);
        let Some(metadata) = metadata else {
            return Ok(None);
        };
        let metadata: serde_json::Value = serde_json::from_str(&metadata)?;
        Ok(metadata[HASH_KEY].as_str().map(str::to_owned))
    }

    /// Up to `limit` events after `position`, in the global order.
    pub async fn events_after(
        &self,
        position: i64,
        limit: u32,
    ) -> Result<Vec<FeedEvent>, StoreError> {
        // No filter on the aggregate type: the feed is every event, and such a filter steers
        // SQLite's planner to the primary key and a sort of the whole table for every page.
        let sql = format!("{FEED_COLUMNS} WHERE position > $1 ORDER BY position LIMIT $2");
        let rows = on_pool!(self, pool => sqlx::query(&sql)
            .bind(position)
            .bind(i64::from(limit))
            .fetch_all(pool)
            .await?
            .iter()
            .map(feed_row)
            .collect::<Result<Vec<_>, StoreError>>()?);
        Ok(rows)
    }

    /// Up to `limit` events after `position` in the global order, with only what a feed follower
    /// needs (no metadata, payload left as text): the fast path of catch-up and replay.
    pub async fn feed_batch(&self, position: i64, limit: u32) -> Result<Vec<FeedRow>, StoreError> {
        let sql = "SELECT position, aggregate_id, sequence, event_type, event_version, \
                   CAST(payload AS TEXT) AS payload FROM events \
                   WHERE position > $1 ORDER BY position LIMIT $2";
        Ok(on_pool!(self, pool => sqlx::query(sql)
            .bind(position)
            .bind(i64::from(limit))
            .fetch_all(pool)
            .await?
            .iter()
            .map(FeedRow::read)
            .collect::<Result<Vec<_>, sqlx::Error>>()?))
    }

    /// Every event of one domain, in stream order.
    pub async fn domain_history(&self, aggregate_id: &str) -> Result<Vec<FeedEvent>, StoreError> {
        let sql = format!(
            "{FEED_COLUMNS} WHERE aggregate_type = $1 AND aggregate_id = $2 ORDER BY sequence"
        );
        let rows = on_pool!(self, pool => sqlx::query(&sql)
            .bind(AGGREGATE_TYPE)
            .bind(aggregate_id)
            .fetch_all(pool)
            .await?
            .iter()
            .map(feed_row)
            .collect::<Result<Vec<_>, StoreError>>()?);
        Ok(rows)
    }

    /// Every event, stream by stream, for walking the hash chains.
    pub async fn all_streams_in_order(
        &self,
        after_id: &str,
        limit: u32,
    ) -> Result<Vec<FeedEvent>, StoreError> {
        let sql = format!(
            "{FEED_COLUMNS} WHERE aggregate_type = $1 AND aggregate_id > $2 \
             AND aggregate_id IN (SELECT DISTINCT aggregate_id FROM events \
             WHERE aggregate_type = $1 AND aggregate_id > $2 ORDER BY aggregate_id LIMIT $3) \
             ORDER BY aggregate_id, sequence"
        );
        let rows = on_pool!(self, pool => sqlx::query(&sql)
            .bind(AGGREGATE_TYPE)
            .bind(after_id)
            .bind(i64::from(limit))
            .fetch_all(pool)
            .await?
            .iter()
            .map(feed_row)
            .collect::<Result<Vec<_>, StoreError>>()?);
        Ok(rows)
    }

    /// The highest position in the feed (0 when empty) and the number of events.
    pub async fn feed_extent(&self) -> Result<(i64, i64), StoreError> {
        let sql = "SELECT COALESCE(MAX(position), 0) AS last, COUNT(*) AS n FROM events \
                   WHERE aggregate_type = $1";
        Ok(on_pool!(self, pool => {
            let row = sqlx::query(sql).bind(AGGREGATE_TYPE).fetch_one(pool).await?;
            (row.try_get("last")?, row.try_get("n")?)
        }))
    }

    /// The last position of the feed (0 when empty): where a console starts following it.
    /// `MAX` over the whole table, with no `WHERE`: both databases read it from the end of the
    /// `position` index, where SQLite, given `WHERE aggregate_type = …`, scanned every event
    /// (0.4 s at 500,000). Only the service writes this table, and only domains' events; a row
    /// written around it is found by `audit verify`, not here.
    pub async fn feed_head(&self) -> Result<i64, StoreError> {
        let sql = "SELECT COALESCE(MAX(position), 0) AS last FROM events";
        Ok(on_pool!(self, pool => sqlx::query(sql)
            .fetch_one(pool)
            .await?
            .try_get("last")?))
    }

    /// The task that hears the commits of other replicas and wakes this process's feed
    /// followers, to run for as long as the process does: on PostgreSQL, a `LISTEN` on the
    /// events trigger's channel ([`commit_signal::listen_on_postgres`]); none on SQLite, whose
    /// one process signals its own commits as it makes them.
    pub fn commit_listener(&self) -> Option<impl Future<Output = ()> + 'static> {
        match self {
            Store::Postgres(pool) => Some(commit_signal::listen_on_postgres(pool.clone())),
            Store::Sqlite(_) => None,
        }
    }
}
