//! The two stores behind one interface: PostgreSQL (production, postgres-es) and SQLite (the
//! embedded default, sqlite-es).
//!
//! Events go through the cqrs-es repositories of each crate; everything else the service keeps
//! (read projections, name reservations, the ACME account, certificate keys) is plain SQL that
//! both databases understand, written once with `$n` placeholders (which sqlx's SQLite driver
//! accepts too) and run on whichever pool is configured.

use std::str::FromStr;
use std::time::Duration;

use chrono::Utc;

use crate::adapters::event_repository::EventRepository;
use crate::settings::Settings;
use dns_handling_events::chain::HASH_KEY;
use dns_handling_events::feed::FeedEvent;
use dns_handling_events::{DomainStatus, AGGREGATE_TYPE};
use dns_handling_projections::{CertificateView, DomainView};
use sqlx::postgres::PgPoolOptions;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{PgPool, Row, SqlitePool};

/// A failure of the database.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database refused or could not be reached.
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    /// The database could not be reached: what [`StoreError::is_unavailable`] found, passed on
    /// as text to several waiting readers (a `sqlx::Error` cannot be cloned).
    #[error("{0}")]
    Unavailable(String),
    /// Another process holds this SQLite database.
    #[error("{0}")]
    Locked(String),
    /// A file next to the database could not be used.
    #[error("{0}")]
    Io(String),
    /// A stored row could not be read back.
    #[error("stored data is corrupt: {0}")]
    Corrupt(#[from] serde_json::Error),
}

impl StoreError {
    /// True when the database could not be reached: a condition to wait out and retry (`503`),
    /// not a fault of the request or of the service.
    pub fn is_unavailable(&self) -> bool {
        match self {
            StoreError::Database(error) => is_unreachable(error),
            StoreError::Unavailable(_) => true,
            StoreError::Locked(_) | StoreError::Io(_) | StoreError::Corrupt(_) => false,
        }
    }
}

/// True when a sqlx error means the database could not be reached:
/// - no connection became free within `STORE_TIMEOUT` (`PoolTimedOut`: while PostgreSQL is down
///   the pool keeps retrying refused connections until then), or the pool is closed;
/// - the connection failed (`Io`: refused, reset, closed by the server) or its TLS setup did;
/// - PostgreSQL said it cannot serve connections now: class 08 (connection exception), 53300
///   (too many connections), 57P01–57P03 (shutting down, crashed, starting up).
///
/// Every other error (a constraint, a bad statement, undecodable data, sqlx's `Protocol`, which
/// it raises only for messages it does not understand) is a fault, not an outage.
pub fn is_unreachable(error: &sqlx::Error) -> bool {
    match error {
        sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::Io(_)
        | sqlx::Error::Tls(_) => true,
        sqlx::Error::Database(error) => error
            .try_downcast_ref::<sqlx::postgres::PgDatabaseError>()
            .is_some_and(|error| {
                let code = error.code();
                code.starts_with("08") || matches!(code, "53300" | "57P01" | "57P02" | "57P03")
            }),
        _ => false,
    }
}

/// True when an error as cqrs-es passes it on (boxed in `AggregateError` or
/// `PersistenceError`), or one of its sources, is an unreachable database: postgres-es and
/// sqlite-es box the `sqlx::Error` itself, our `EventRepository` a `StoreError`.
pub fn is_unreachable_cause(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut next = Some(error);
    while let Some(error) = next {
        if let Some(error) = error.downcast_ref::<sqlx::Error>() {
            if is_unreachable(error) {
                return true;
            }
        }
        if let Some(error) = error.downcast_ref::<StoreError>() {
            if error.is_unavailable() {
                return true;
            }
        }
        next = error.source();
    }
    false
}

/// Runs the same expression on whichever pool the store holds.
macro_rules! on_pool {
    ($store:expr, $pool:ident => $body:expr) => {
        match $store {
            Store::Postgres($pool) => $body,
            Store::Sqlite($pool) => $body,
        }
    };
}

mod checkpoints;

/// The PostgreSQL schema, in order; never edit one that has shipped, add the next.
const POSTGRES_MIGRATIONS: [(i64, &str); 5] = [
    (1, include_str!("migrations/postgres/0001_initial.sql")),
    (2, include_str!("migrations/postgres/0002_global_feed.sql")),
    (3, include_str!("migrations/postgres/0003_order_leases.sql")),
    (
        4,
        include_str!("migrations/postgres/0004_commit_notifications.sql"),
    ),
    (
        5,
        include_str!("migrations/postgres/0005_audit_checkpoints.sql"),
    ),
];

/// The SQLite schema, in order; never edit one that has shipped, add the next.
const SQLITE_MIGRATIONS: [(i64, &str); 5] = [
    (1, include_str!("migrations/sqlite/0001_initial.sql")),
    (2, include_str!("migrations/sqlite/0002_global_feed.sql")),
    (3, include_str!("migrations/sqlite/0003_order_leases.sql")),
    (
        4,
        include_str!("migrations/sqlite/0004_commit_notifications.sql"),
    ),
    (
        5,
        include_str!("migrations/sqlite/0005_audit_checkpoints.sql"),
    ),
];

/// Rows per multi-row statement: well under SQLite's and PostgreSQL's parameter limits.
const BATCH_ROWS: usize = 500;

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

/// The `status` column of a view: removed domains keep their row (for the history) under a
/// status no listing asks for.
fn view_status(view: &DomainView) -> &'static str {
    if view.removed {
        REMOVED_STATUS
    } else {
        view.status.as_str()
    }
}

/// A UTC time as text that sorts like the time itself (fixed width, always `Z`).
fn sortable_time(time: chrono::DateTime<Utc>) -> String {
    time.to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
}

/// The file of a SQLite database URL (`sqlite://path?…`, `sqlite:path`, or a bare path);
/// `None` for an in-memory database.
pub fn sqlite_path(database_url: &str) -> Option<std::path::PathBuf> {
    if database_url.starts_with("postgres://") || database_url.starts_with("postgresql://") {
        return None;
    }
    let path = database_url
        .strip_prefix("sqlite://")
        .or_else(|| database_url.strip_prefix("sqlite:"))
        .unwrap_or(database_url);
    let path = path.split('?').next().unwrap_or(path);
    if path.is_empty() || path.contains(":memory:") {
        return None;
    }
    Some(std::path::PathBuf::from(path))
}

/// Holds a SQLite database for one process for as long as it lives (an OS file lock on
/// `<database>.lock`, released by the OS when the process ends, however it ends).
#[derive(Debug)]
pub struct SqliteReplicaLock {
    _file: std::fs::File,
}

/// Takes the single-replica lock of a SQLite database: SQLite mode is one process, because the
/// pollers of two processes would both work on every pending order.
pub fn lock_sqlite_exclusively(
    database_url: &str,
) -> Result<Option<SqliteReplicaLock>, StoreError> {
    let Some(database) = sqlite_path(database_url) else {
        return Ok(None);
    };
    let path = std::path::PathBuf::from(format!("{}.lock", database.display()));
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| StoreError::Io(format!("cannot open {}: {e}", path.display())))?;
    match file.try_lock() {
        Ok(()) => Ok(Some(SqliteReplicaLock { _file: file })),
        Err(std::fs::TryLockError::WouldBlock) => Err(StoreError::Locked(format!(
            "another dns-handling process is using {}: SQLite mode runs one process; use \
             PostgreSQL (DATABASE_URL=postgres://…) for several replicas",
            database.display()
        ))),
        Err(std::fs::TryLockError::Error(e)) => Err(StoreError::Io(format!(
            "cannot lock {}: {e}",
            path.display()
        ))),
    }
}

/// The `status` column of a removed domain's view row.
const REMOVED_STATUS: &str = "removed";

/// What one projection batch writes (see [`Store::write_projection`]).
#[derive(Debug, Default)]
pub struct ProjectionWrite<'a> {
    /// Domain views to store.
    pub views: &'a [DomainView],
    /// Certificate views to store (one per domain: the current certificate).
    pub certificates: &'a [CertificateView],
    /// Domains removed in this batch, whose names become free.
    pub removed: &'a [&'a str],
    /// The checkpoint to move, as (projection name, position).
    pub checkpoint: Option<(&'a str, i64)>,
}

/// A bound parameter of a statement built at run time.
enum Param {
    Text(String),
    Int(i64),
}

/// The placeholders of a statement built at run time, with thousands of parameters.
///
/// PostgreSQL numbers them (`$1, $2, …`). SQLite gets anonymous `?`: sqlx asks SQLite for the
/// name of every parameter it binds, and SQLite finds a numbered parameter's name by scanning
/// all of the statement's named parameters, which makes binding a multi-row insert quadratic
/// (15 % of the CPU of a replay went there); an anonymous parameter has no name to look up.
fn placeholders(postgres: bool, count: usize, first: usize) -> Vec<String> {
    (first..first + count)
        .map(|n| {
            if postgres {
                format!("${n}")
            } else {
                "?".to_owned()
            }
        })
        .collect()
}

/// `($1, $2), ($3, $4), …` (or `(?, ?), …` for SQLite): `rows` rows of `columns` placeholders.
fn value_rows(postgres: bool, rows: usize, columns: usize) -> String {
    (0..rows)
        .map(|row| {
            format!(
                "({})",
                placeholders(postgres, columns, row * columns + 1).join(", ")
            )
        })
        .collect::<Vec<_>>()
        .join(",")
}

/// A table that holds sealed secrets (see `vault`), each value bound to its row's key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SecretTable {
    /// Certificate private keys, by order id.
    CertificateKeys,
    /// ACME account credentials, by directory URL.
    AcmeAccounts,
}

impl SecretTable {
    /// The table's name (also the first part of each value's sealing context).
    pub fn name(self) -> &'static str {
        match self {
            SecretTable::CertificateKeys => "certificate_keys",
            SecretTable::AcmeAccounts => "acme_accounts",
        }
    }

    /// The key column and the sealed column.
    fn columns(self) -> (&'static str, &'static str) {
        match self {
            SecretTable::CertificateKeys => ("order_id", "private_key"),
            SecretTable::AcmeAccounts => ("directory_url", "credentials"),
        }
    }
}

/// An event as a projection reads it.
#[derive(Debug, Clone)]
pub struct ProjectionRow {
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

impl ProjectionRow {
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

/// One page of domain views.
#[derive(Debug, Clone)]
pub struct DomainPage {
    /// The views, in id order (ids are time-ordered, so this is registration order).
    pub items: Vec<DomainView>,
    /// The cursor to pass for the next page, if there may be one.
    pub next_cursor: Option<String>,
}

/// The configured database.
#[derive(Debug, Clone)]
pub enum Store {
    /// PostgreSQL, for production and for several replicas.
    Postgres(PgPool),
    /// SQLite, embedded, for a single process.
    Sqlite(SqlitePool),
}

impl Store {
    /// Connects to `database_url` with the default `STORE_TIMEOUT` (see [`Store::connect_with`]).
    pub async fn connect(database_url: &str) -> Result<Store, StoreError> {
        Self::connect_with(database_url, Settings::default().store_timeout).await
    }

    /// Connects to `database_url`: PostgreSQL for `postgres://…`, otherwise a SQLite file that is
    /// created when missing. A query waits at most `acquire_timeout` (`STORE_TIMEOUT`) for a
    /// connection: while the database is unreachable, requests fail that fast instead of
    /// piling up.
    pub async fn connect_with(
        database_url: &str,
        acquire_timeout: Duration,
    ) -> Result<Store, StoreError> {
        if database_url.starts_with("postgres://") || database_url.starts_with("postgresql://") {
            let pool = PgPoolOptions::new()
                .max_connections(16)
                .acquire_timeout(acquire_timeout)
                .connect(database_url)
                .await?;
            return Ok(Store::Postgres(pool));
        }
        let url = if database_url.starts_with("sqlite:") {
            database_url.to_owned()
        } else {
            format!("sqlite://{database_url}")
        };
        let options = SqliteConnectOptions::from_str(&url)?
            .create_if_missing(true)
            // WAL lets readers proceed while one writer commits; NORMAL sync is durable in WAL
            // mode against process crashes, which is what "nothing is lost" asks of SQLite here.
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(Duration::from_secs(10))
            .foreign_keys(true);
        let pool = SqlitePoolOptions::new()
            .max_connections(8)
            .acquire_timeout(acquire_timeout)
            .connect_with(options)
            .await?;
        Ok(Store::Sqlite(pool))
    }

    /// Applies the migrations this database has not had yet, each in its own transaction and
    /// recorded in `schema_migrations`, so running this on every start is safe.
    pub async fn migrate(&self) -> Result<(), StoreError> {
        const CREATE: &str = "CREATE TABLE IF NOT EXISTS schema_migrations \
                              (version bigint NOT NULL PRIMARY KEY, applied_at text NOT NULL)";
        const APPLIED: &str = "SELECT version FROM schema_migrations WHERE version = $1";
        const RECORD: &str = "INSERT INTO schema_migrations (version, applied_at) VALUES ($1, $2)";
        let migrations: &[(i64, &str)] = match self {
            Store::Postgres(_) => &POSTGRES_MIGRATIONS,
            Store::Sqlite(_) => &SQLITE_MIGRATIONS,
        };
        for (version, sql) in migrations {
            on_pool!(self, pool => {
                let mut tx = pool.begin().await?;
                if matches!(self, Store::Postgres(_)) {
                    // Several replicas may start at once: one lock makes them take turns.
                    sqlx::query("SELECT pg_advisory_xact_lock(7246001)")
                        .execute(&mut *tx)
                        .await?;
                }
                sqlx::query(CREATE).execute(&mut *tx).await?;
                let applied = sqlx::query(APPLIED)
                    .bind(version)
                    .fetch_optional(&mut *tx)
                    .await?
                    .is_some();
                if !applied {
                    sqlx::raw_sql(sql).execute(&mut *tx).await?;
                    sqlx::query(RECORD)
                        .bind(version)
                        .bind(sortable_time(Utc::now()))
                        .execute(&mut *tx)
                        .await?;
                    tracing::info!(version, "applied migration");
                }
                tx.commit().await?;
            });
        }
        Ok(())
    }

    /// Claims the leases of pending orders, each `(domain_id, order_id)`, for `owner`: a claim
    /// is granted when nobody holds the domain's lease, when `owner` already does, when the
    /// holder stopped renewing, or when the lease is for an older order of the domain. Answers
    /// the domains granted. One statement for the whole batch: claimed one by one (a round trip
    /// and a commit each), 20,000 pending orders took seconds to resume. SQLite mode is
    /// single-replica, so there every claim is granted.
    pub async fn claim_leases(
        &self,
        claims: &[(&str, &str)],
        owner: &str,
        ttl: Duration,
    ) -> Result<Vec<String>, StoreError> {
        let Store::Postgres(pool) = self else {
            return Ok(claims
                .iter()
                .map(|(domain_id, _)| (*domain_id).to_owned())
                .collect());
        };
        let sql = "INSERT INTO order_leases (domain_id, order_id, owner, expires_at) \
                   SELECT claim.domain_id, claim.order_id, $3, now() + make_interval(secs => $4) \
                   FROM UNNEST($1::text[], $2::text[]) AS claim(domain_id, order_id) \
                   ON CONFLICT (domain_id) DO UPDATE SET order_id = excluded.order_id, \
                   owner = excluded.owner, expires_at = excluded.expires_at \
                   WHERE order_leases.owner = excluded.owner \
                   OR order_leases.expires_at < now() \
                   OR order_leases.order_id <> excluded.order_id \
                   RETURNING domain_id";
        let domain_ids: Vec<&str> = claims.iter().map(|(domain_id, _)| *domain_id).collect();
        let order_ids: Vec<&str> = claims.iter().map(|(_, order_id)| *order_id).collect();
        let granted = sqlx::query(sql)
            .bind(&domain_ids)
            .bind(&order_ids)
            .bind(owner)
            .bind(ttl.as_secs_f64())
            .fetch_all(pool)
            .await?
            .iter()
            .map(|row| row.try_get("domain_id"))
            .collect::<Result<Vec<String>, sqlx::Error>>()?;
        Ok(granted)
    }

    /// Extends every lease `owner` still holds; returns the domains of those leases (an order
    /// missing from the answer was taken over by another replica).
    pub async fn renew_leases(
        &self,
        owner: &str,
        ttl: Duration,
        held: &[String],
    ) -> Result<Vec<String>, StoreError> {
        let Store::Postgres(pool) = self else {
            return Ok(held.to_vec());
        };
        let sql = "UPDATE order_leases SET expires_at = now() + make_interval(secs => $2) \
                   WHERE owner = $1 RETURNING domain_id";
        Ok(sqlx::query(sql)
            .bind(owner)
            .bind(ttl.as_secs_f64())
            .fetch_all(pool)
            .await?
            .iter()
            .map(|row| row.try_get("domain_id"))
            .collect::<Result<_, _>>()?)
    }

    /// Whether `owner` holds an unexpired lease on the domain's order (always, in SQLite mode).
    pub async fn holds_lease(&self, domain_id: &str, owner: &str) -> Result<bool, StoreError> {
        let Store::Postgres(pool) = self else {
            return Ok(true);
        };
        let sql = "SELECT 1 FROM order_leases WHERE domain_id = $1 AND owner = $2 \
                   AND expires_at > now()";
        Ok(sqlx::query(sql)
            .bind(domain_id)
            .bind(owner)
            .fetch_optional(pool)
            .await?
            .is_some())
    }

    /// Gives a lease back once its order is done with.
    pub async fn release_lease(&self, domain_id: &str, owner: &str) -> Result<(), StoreError> {
        if let Store::Postgres(pool) = self {
            sqlx::query("DELETE FROM order_leases WHERE domain_id = $1 AND owner = $2")
                .bind(domain_id)
                .bind(owner)
                .execute(pool)
                .await?;
        }
        Ok(())
    }

    /// Runs `work` while holding the cluster-wide ACME-account lock (a PostgreSQL session
    /// advisory lock on a connection of its own, released when `work` ends, or by the server
    /// if this process dies), so that replicas starting at once register one account.
    pub async fn with_account_lock<T, F>(&self, work: F) -> Result<T, StoreError>
    where
        F: std::future::Future<Output = T>,
    {
        let Store::Postgres(pool) = self else {
            return Ok(work.await);
        };
        let mut connection = pool.acquire().await?;
        sqlx::query("SELECT pg_advisory_lock(7246003)")
            .execute(&mut *connection)
            .await?;
        let result = work.await;
        let unlocked = sqlx::query("SELECT pg_advisory_unlock(7246003)")
            .execute(&mut *connection)
            .await;
        if unlocked.is_err() {
            // Never hand a connection that may still hold the lock back to the pool.
            connection.detach();
        }
        Ok(result)
    }

    /// True for PostgreSQL, false for SQLite.
    fn is_postgres(&self) -> bool {
        matches!(self, Store::Postgres(_))
    }

    /// Checks that the database answers.
    pub async fn ping(&self) -> Result<(), StoreError> {
        on_pool!(self, pool => sqlx::query("SELECT 1").execute(pool).await?.rows_affected());
        Ok(())
    }

    /// How many domains are in each status (removed ones under `removed`), for the metrics.
    pub async fn domain_counts_by_status(&self) -> Result<Vec<(String, i64)>, StoreError> {
        let sql = "SELECT status, count(*) AS domains FROM domain_views GROUP BY status";
        let counts = on_pool!(self, pool => sqlx::query(sql)
            .fetch_all(pool)
            .await?
            .iter()
            .map(|row| Ok((row.try_get("status")?, row.try_get("domains")?)))
            .collect::<Result<Vec<(String, i64)>, sqlx::Error>>()?);
        Ok(counts)
    }

    /// The cqrs-es event repository over the same pool.
    pub fn event_repository(&self) -> EventRepository {
        EventRepository::new(self.clone())
    }

    /// Claims `domain_name` for `domain_id`; false when another live domain holds it.
    ///
    /// A claim is taken before the registration is recorded, so a crash in between would leave
    /// a claim without a domain. Such a claim (no events, older than a minute, while recording
    /// a registration takes milliseconds) is taken over instead of blocking the name forever.
    pub async fn reserve_name(
        &self,
        domain_name: &str,
        domain_id: &str,
    ) -> Result<bool, StoreError> {
        let sql = "INSERT INTO domain_names (domain_name, domain_id, reserved_at) \
                   VALUES ($1, $2, $3) \
                   ON CONFLICT (domain_name) DO UPDATE \
                   SET domain_id = excluded.domain_id, reserved_at = excluded.reserved_at \
                   WHERE domain_names.reserved_at < $4 AND NOT EXISTS \
                   (SELECT 1 FROM events WHERE events.aggregate_id = domain_names.domain_id)";
        let now = Utc::now();
        let stale_before = now - chrono::Duration::seconds(60);
        let claimed = on_pool!(self, pool => sqlx::query(sql)
            .bind(domain_name)
            .bind(domain_id)
            .bind(sortable_time(now))
            .bind(sortable_time(stale_before))
            .execute(pool)
            .await?
            .rows_affected());
        Ok(claimed == 1)
    }

    /// The stored hash of one event of a stream (`None` when absent or unhashed).
    pub async fn event_hash(
        &self,
        aggregate_type: &str,
        aggregate_id: &str,
        sequence: i64,
    ) -> Result<Option<String>, StoreError> {
        let sql = "SELECT CAST(metadata AS TEXT) AS metadata FROM events \
                   WHERE aggregate_type = $1 AND aggregate_id = $2 AND sequence = $3";
        let metadata: Option<String> = on_pool!(self, pool => sqlx::query(sql)
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

    /// Up to `limit` events after `position` in the global order, with only what a projection
    /// needs (no metadata, payload left as text): the fast path of catch-up and replay.
    pub async fn projection_batch(
        &self,
        position: i64,
        limit: u32,
    ) -> Result<Vec<ProjectionRow>, StoreError> {
        let sql = "SELECT position, aggregate_id, sequence, event_type, event_version, \
                   CAST(payload AS TEXT) AS payload FROM events \
                   WHERE position > $1 ORDER BY position LIMIT $2";
        Ok(on_pool!(self, pool => sqlx::query(sql)
            .bind(position)
            .bind(i64::from(limit))
            .fetch_all(pool)
            .await?
            .iter()
            .map(|row| {
                Ok(ProjectionRow {
                    position: row.try_get("position")?,
                    aggregate_id: row.try_get("aggregate_id")?,
                    sequence: row.try_get("sequence")?,
                    event_type: row.try_get("event_type")?,
                    event_version: row.try_get("event_version")?,
                    payload: row.try_get("payload")?,
                })
            })
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

    /// How far projection `name` has applied the feed.
    pub async fn checkpoint(&self, name: &str) -> Result<i64, StoreError> {
        let sql = "SELECT position FROM projection_checkpoints WHERE name = $1";
        Ok(on_pool!(self, pool => sqlx::query(sql)
            .bind(name)
            .fetch_optional(pool)
            .await?
            .map(|row| row.try_get("position"))
            .transpose()?)
        .unwrap_or(0))
    }

    /// Empties every read projection and its checkpoint, for a rebuild from zero.
    pub async fn clear_projections(&self) -> Result<(), StoreError> {
        on_pool!(self, pool => {
            let mut tx = pool.begin().await?;
            for sql in [
                "DELETE FROM domain_views",
                "DELETE FROM certificate_views",
                "DELETE FROM projection_checkpoints",
            ] {
                sqlx::query(sql).execute(&mut *tx).await?;
            }
            tx.commit().await?;
        });
        Ok(())
    }

    /// The stored views of `ids` (those that exist).
    pub async fn domain_views_by_ids(&self, ids: &[&str]) -> Result<Vec<DomainView>, StoreError> {
        let mut views = Vec::with_capacity(ids.len());
        for chunk in ids.chunks(BATCH_ROWS) {
            let sql = format!(
                "SELECT payload FROM domain_views WHERE id IN ({})",
                placeholders(self.is_postgres(), chunk.len(), 1).join(",")
            );
            let payloads: Vec<String> = on_pool!(self, pool => {
                let mut query = sqlx::query(&sql);
                for id in chunk {
                    query = query.bind(*id);
                }
                query
                    .fetch_all(pool)
                    .await?
                    .iter()
                    .map(|row| row.try_get("payload"))
                    .collect::<Result<_, _>>()?
            });
            for payload in payloads {
                views.push(serde_json::from_str(&payload)?);
            }
        }
        Ok(views)
    }

    /// Ids of stored domain views whose domain has no event at all.
    pub async fn view_ids_without_events(&self) -> Result<Vec<String>, StoreError> {
        let sql = "SELECT id FROM domain_views WHERE id NOT IN \
                   (SELECT aggregate_id FROM events WHERE aggregate_type = $1) ORDER BY id";
        let ids = on_pool!(self, pool => sqlx::query_scalar(sql)
            .bind(AGGREGATE_TYPE)
            .fetch_all(pool)
            .await?);
        Ok(ids)
    }

    /// Gives a name back (after a registration that did not go through).
    pub async fn release_name(&self, domain_name: &str, domain_id: &str) -> Result<(), StoreError> {
        let sql = "DELETE FROM domain_names WHERE domain_name = $1 AND domain_id = $2";
        on_pool!(self, pool => sqlx::query(sql).bind(domain_name).bind(domain_id).execute(pool).await?.rows_affected());
        Ok(())
    }

    /// Writes one batch of projection results in one transaction: the domain views (a stored
    /// view is only replaced by one at a higher sequence), the certificate views, the names
    /// freed by removals, and the checkpoint, which therefore never gets ahead of the views.
    pub async fn write_projection(&self, write: ProjectionWrite<'_>) -> Result<(), StoreError> {
        let mut statements: Vec<(String, Vec<Param>)> = Vec::new();
        for chunk in write.views.chunks(BATCH_ROWS) {
            let mut params = Vec::with_capacity(chunk.len() * 5);
            for view in chunk {
                params.push(Param::Text(view.id.clone()));
                params.push(Param::Text(view.domain_name.clone()));
                params.push(Param::Text(view_status(view).to_owned()));
                params.push(Param::Int(
                    i64::try_from(view.last_sequence).unwrap_or(i64::MAX),
                ));
                params.push(Param::Text(serde_json::to_string(view)?));
            }
            statements.push((
                format!(
                    "INSERT INTO domain_views (id, domain_name, status, last_sequence, payload) \
                     VALUES {} ON CONFLICT (id) DO UPDATE SET domain_name = excluded.domain_name, \
                     status = excluded.status, last_sequence = excluded.last_sequence, \
                     payload = excluded.payload \
                     WHERE domain_views.last_sequence < excluded.last_sequence",
                    value_rows(self.is_postgres(), chunk.len(), 5)
                ),
                params,
            ));
        }
        for chunk in write.certificates.chunks(BATCH_ROWS) {
            let mut params = Vec::with_capacity(chunk.len() * 2);
            for view in chunk {
                params.push(Param::Text(view.domain_id.clone()));
                params.push(Param::Text(serde_json::to_string(view)?));
            }
            statements.push((
                format!(
                    "INSERT INTO certificate_views (domain_id, payload) VALUES {} \
                     ON CONFLICT (domain_id) DO UPDATE SET payload = excluded.payload",
                    value_rows(self.is_postgres(), chunk.len(), 2)
                ),
                params,
            ));
        }
        for id in write.removed {
            statements.push((
                "DELETE FROM domain_names WHERE domain_id = $1".to_owned(),
                vec![Param::Text((*id).to_owned())],
            ));
        }
        if let Some((name, position)) = write.checkpoint {
            statements.push((
                "INSERT INTO projection_checkpoints (name, position) VALUES ($1, $2) \
                 ON CONFLICT (name) DO UPDATE SET position = excluded.position \
                 WHERE projection_checkpoints.position < excluded.position"
                    .to_owned(),
                vec![Param::Text(name.to_owned()), Param::Int(position)],
            ));
        }
        on_pool!(self, pool => {
            let mut tx = pool.begin().await?;
            for (sql, params) in &statements {
                let mut query = sqlx::query(sql);
                for param in params {
                    query = match param {
                        Param::Text(text) => query.bind(text.as_str()),
                        Param::Int(number) => query.bind(*number),
                    };
                }
                query.execute(&mut *tx).await?;
            }
            tx.commit().await?;
        });
        Ok(())
    }

    /// The view of one domain.
    pub async fn domain_view(&self, id: &str) -> Result<Option<DomainView>, StoreError> {
        let sql = "SELECT payload FROM domain_views WHERE id = $1";
        let payload: Option<String> = on_pool!(self, pool => sqlx::query(sql)
            .bind(id)
            .fetch_optional(pool)
            .await?
            .map(|row| row.try_get("payload"))
            .transpose()?);
        Ok(payload
            .map(|text| serde_json::from_str(&text))
            .transpose()?)
    }

    /// A page of domain views, optionally of one status, after `cursor` (an id).
    pub async fn list_domain_views(
        &self,
        status: Option<DomainStatus>,
        limit: u32,
        cursor: Option<&str>,
    ) -> Result<DomainPage, StoreError> {
        let sql = "SELECT payload FROM domain_views \
                   WHERE (status = $1 OR ($1 = '' AND status <> 'removed')) AND id > $2 \
                   ORDER BY id LIMIT $3";
        let status = status.map(DomainStatus::as_str).unwrap_or("");
        let cursor = cursor.unwrap_or("");
        let payloads: Vec<String> = on_pool!(self, pool => sqlx::query(sql)
            .bind(status)
            .bind(cursor)
            .bind(i64::from(limit))
            .fetch_all(pool)
            .await?
            .iter()
            .map(|row| row.try_get("payload"))
            .collect::<Result<_, _>>()?);
        let items = payloads
            .iter()
            .map(|text| serde_json::from_str(text))
            .collect::<Result<Vec<DomainView>, _>>()?;
        let next_cursor = if items.len() == limit as usize {
            items.last().map(|view| view.id.clone())
        } else {
            None
        };
        Ok(DomainPage { items, next_cursor })
    }

    /// Every domain waiting for its challenge record: what the supervisor resumes on start.
    pub async fn pending_domain_views(&self) -> Result<Vec<DomainView>, StoreError> {
        let mut pending = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let page = self
                .list_domain_views(
                    Some(DomainStatus::CertificatePending),
                    500,
                    cursor.as_deref(),
                )
                .await?;
            pending.extend(page.items);
            match page.next_cursor {
                Some(next) => cursor = Some(next),
                None => return Ok(pending),
            }
        }
    }

    /// The current certificate of a domain.
    pub async fn certificate_view(
        &self,
        domain_id: &str,
    ) -> Result<Option<CertificateView>, StoreError> {
        let sql = "SELECT payload FROM certificate_views WHERE domain_id = $1";
        let payload: Option<String> = on_pool!(self, pool => sqlx::query(sql)
            .bind(domain_id)
            .fetch_optional(pool)
            .await?
            .map(|row| row.try_get("payload"))
            .transpose()?);
        Ok(payload
            .map(|text| serde_json::from_str(&text))
            .transpose()?)
    }

    /// The stored ACME account credentials (JSON) for a directory, if any.
    pub async fn acme_account(&self, directory_url: &str) -> Result<Option<String>, StoreError> {
        let sql = "SELECT credentials FROM acme_accounts WHERE directory_url = $1";
        Ok(on_pool!(self, pool => sqlx::query(sql)
            .bind(directory_url)
            .fetch_optional(pool)
            .await?
            .map(|row| row.try_get("credentials"))
            .transpose()?))
    }

    /// Stores new ACME account credentials unless another process stored some first; returns
    /// the credentials that are now the account of record.
    pub async fn insert_acme_account(
        &self,
        directory_url: &str,
        account_id: &str,
        credentials: &str,
    ) -> Result<String, StoreError> {
        let sql = "INSERT INTO acme_accounts (directory_url, account_id, credentials, created_at) \
                   VALUES ($1, $2, $3, $4) ON CONFLICT (directory_url) DO NOTHING";
        let now = Utc::now().to_rfc3339();
        on_pool!(self, pool => sqlx::query(sql)
            .bind(directory_url)
            .bind(account_id)
            .bind(credentials)
            .bind(&now)
            .execute(pool)
            .await?
            .rows_affected());
        Ok(self
            .acme_account(directory_url)
            .await?
            .unwrap_or_else(|| credentials.to_owned()))
    }

    /// The private key (PEM) stored for an order, if any.
    pub async fn certificate_key(&self, order_id: &str) -> Result<Option<String>, StoreError> {
        let sql = "SELECT private_key FROM certificate_keys WHERE order_id = $1";
        Ok(on_pool!(self, pool => sqlx::query(sql)
            .bind(order_id)
            .fetch_optional(pool)
            .await?
            .map(|row| row.try_get("private_key"))
            .transpose()?))
    }

    /// Up to `limit` rows of a secrets table after row key `after`, in key order: `(key, sealed)`.
    pub async fn sealed_secrets(
        &self,
        table: SecretTable,
        after: &str,
        limit: u32,
    ) -> Result<Vec<(String, String)>, StoreError> {
        let (key, sealed) = table.columns();
        let sql = format!(
            "SELECT {key}, {sealed} FROM {} WHERE {key} > $1 ORDER BY {key} LIMIT $2",
            table.name()
        );
        let rows = on_pool!(self, pool => sqlx::query_as(&sql)
            .bind(after)
            .bind(i64::from(limit))
            .fetch_all(pool)
            .await?);
        Ok(rows)
    }

    /// Replaces sealed values, each `(key, the value read, its replacement)`, in one
    /// transaction; a row whose value is no longer the one read (written meanwhile) fails it
    /// all, so nothing is overwritten unseen.
    pub async fn replace_secrets(
        &self,
        table: SecretTable,
        replacements: &[(String, String, String)],
    ) -> Result<(), StoreError> {
        if replacements.is_empty() {
            return Ok(());
        }
        let (key, sealed) = table.columns();
        let sql = format!(
            "UPDATE {} SET {sealed} = $1 WHERE {key} = $2 AND {sealed} = $3",
            table.name()
        );
        on_pool!(self, pool => {
            let mut tx = pool.begin().await?;
            for (row, read, replacement) in replacements {
                let updated = sqlx::query(&sql)
                    .bind(replacement)
                    .bind(row)
                    .bind(read)
                    .execute(&mut *tx)
                    .await?
                    .rows_affected();
                if updated != 1 {
                    return Err(StoreError::Io(format!(
                        "{}/{row} changed while it was re-sealed; nothing in its batch was \
                         written, run again",
                        table.name()
                    )));
                }
            }
            tx.commit().await?;
        });
        Ok(())
    }

    /// Stores an order's private key unless one is stored already; returns the key of record, so
    /// that an order resumed after a crash finalizes with the same key it may already have used.
    pub async fn insert_certificate_key(
        &self,
        order_id: &str,
        domain_id: &str,
        private_key_pem: &str,
    ) -> Result<String, StoreError> {
        let sql = "INSERT INTO certificate_keys (order_id, domain_id, private_key, created_at) \
                   VALUES ($1, $2, $3, $4) ON CONFLICT (order_id) DO NOTHING";
        let now = Utc::now().to_rfc3339();
        on_pool!(self, pool => sqlx::query(sql)
            .bind(order_id)
            .bind(domain_id)
            .bind(private_key_pem)
            .bind(&now)
            .execute(pool)
            .await?
            .rows_affected());
        Ok(self
            .certificate_key(order_id)
            .await?
            .unwrap_or_else(|| private_key_pem.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A migrated store on a fresh SQLite file, and the file's path (for removing it).
    async fn sqlite_store() -> (Store, std::path::PathBuf) {
        let path = std::env::temp_dir().join(format!("store-test-{}.db", uuid::Uuid::new_v4()));
        let store = Store::connect(&format!("sqlite://{}", path.display()))
            .await
            .expect("connects");
        store.migrate().await.expect("migrates");
        (store, path)
    }

    #[tokio::test]
    async fn a_secret_written_meanwhile_fails_its_whole_replacement_batch() {
        let (store, path) = sqlite_store().await;
        for order in ["o1", "o2"] {
            store
                .insert_certificate_key(order, "d", &format!("sealed-{order}"))
                .await
                .expect("stored");
        }
        let table = SecretTable::CertificateKeys;
        let read = store.sealed_secrets(table, "", 10).await.expect("read");
        assert_eq!(
            read,
            vec![
                ("o1".to_owned(), "sealed-o1".to_owned()),
                ("o2".to_owned(), "sealed-o2".to_owned())
            ]
        );
        // o2's replacement was computed from a value that is no longer the stored one.
        let stale = [
            ("o1".to_owned(), "sealed-o1".to_owned(), "new-o1".to_owned()),
            (
                "o2".to_owned(),
                "an-older-o2".to_owned(),
                "new-o2".to_owned(),
            ),
        ];
        let error = store
            .replace_secrets(table, &stale)
            .await
            .expect_err("refused");
        assert!(
            error.to_string().contains("certificate_keys/o2 changed"),
            "{error}"
        );
        assert_eq!(
            store.sealed_secrets(table, "", 10).await.expect("read"),
            read,
            "o1 was not replaced either"
        );
        let fresh = [("o1".to_owned(), "sealed-o1".to_owned(), "new-o1".to_owned())];
        store
            .replace_secrets(table, &fresh)
            .await
            .expect("replaced");
        assert_eq!(
            store.certificate_key("o1").await.expect("read").as_deref(),
            Some("new-o1")
        );
        assert_eq!(
            store.sealed_secrets(table, "o1", 10).await.expect("read"),
            vec![("o2".to_owned(), "sealed-o2".to_owned())],
            "pages start after the given key"
        );
        drop(store);
        for suffix in ["", "-wal", "-shm"] {
            let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
        }
    }
}
