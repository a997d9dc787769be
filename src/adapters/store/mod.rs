//! The two stores behind one interface: PostgreSQL (production, postgres-es) and SQLite (the
//! embedded default, sqlite-es).
//!
//! Events go through the cqrs-es repositories of each crate; everything else the service keeps
//! (read projections, name reservations, the ACME account, certificate keys) is plain SQL that
//! both databases understand, written once with `$n` placeholders (which sqlx's SQLite driver
//! accepts too) and run on whichever pool is configured.
//!
//! The parts, one concern each; where the two databases differ, the difference is in the part
//! of its concern, in one place:
//! - `mod.rs` (this file): [`Store`], [`StoreError`], connecting (which database a URL names,
//!   and each pool's settings), and the statement helpers the parts share: `on_pool!` and the
//!   placeholders of statements built at run time (numbered for PostgreSQL, anonymous for
//!   SQLite).
//! - `migrations.rs`: the schema of each database (the SQL in `migrations/`), applied on start.
//! - `leases.rs`: who works on what: order leases, the PostgreSQL advisory locks (their
//!   numbers, all in one place), the SQLite process lock.
//! - `feed.rs`: the event log beside cqrs-es: the global feed, histories, stored hashes, and
//!   the listener for other replicas' commits.
//! - `names.rs`: domain-name claims.
//! - `renewal_info_checks.rs`: when to ask the CA again for a certificate's renewal window.
//! - `views.rs`: the read projections, their writes, reads and checkpoints.
//! - `overview.rs`: the figures of the console's overview, each through an index.
//! - `secrets.rs`: the sealed ACME credentials and certificate keys, and re-sealing them.
//! - `checkpoints.rs`: the signed checkpoints of the audit log.
//! - `ca_budgets.rs`: the budgets kept for the CA (new orders, failed validations), shared by
//!   every replica.
//! - `zone_followers.rs`: how far each replica's delegation zone has applied the feed, and
//!   where a delegated order was opened.
//! - `edge_certificates.rs`: what the TLS edges are handed: the current certificates of a
//!   batch of domains with their sealed keys (one statement), and for the certificate stream
//!   a snapshot of the views
//!   as of one feed position, read in pages in one read transaction, and what its change lines
//!   need from a domain's stream.
//! - `edge_deliveries.rs`: the receipts of the keys that stream hands out (which receiver
//!   first got which certificate's key, and when), written before each chunk leaves.
//! - `tokens.rs`: the access tokens' log in position order, and when each token was last used.
//! - `webhooks.rs`: webhook delivery: each endpoint's feed cursor, its outbox of messages, every
//!   attempt, the sealed signing secrets.

use std::str::FromStr;
use std::time::Duration;

use chrono::Utc;

use crate::settings::Settings;
use sqlx::postgres::PgPoolOptions;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{PgPool, SqlitePool};

/// A failure of the database, or of work done on its behalf; each keeps its cause as its
/// `source`, for the log (the HTTP layer never shows it to a client).
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database refused or could not be reached.
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    /// One failure handed to several waiting readers (a `sqlx::Error` cannot be cloned): the
    /// same error, shared, meaning what it meant (unavailable or not).
    #[error(transparent)]
    Shared(std::sync::Arc<StoreError>),
    /// Another process holds this SQLite database.
    #[error("{0}")]
    Locked(String),
    /// A file next to the database could not be used.
    #[error("{context}")]
    Io {
        /// What was being done, naming the file.
        context: String,
        /// Why it failed.
        #[source]
        source: std::io::Error,
    },
    /// A row changed under a rewrite of it: nothing of the rewrite was written.
    #[error("{0}")]
    Changed(String),
    /// Work for the store that failed outside the database: a write task that did not finish,
    /// the key vault a stored secret is opened with.
    #[error("{context}")]
    Other {
        /// What was being done.
        context: String,
        /// Why it failed.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync + 'static>,
    },
    /// A stored row could not be read back.
    #[error("stored data is corrupt: {0}")]
    Corrupt(#[from] serde_json::Error),
}

impl StoreError {
    /// A file next to the database could not be used for `context`.
    pub fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        Self::Io {
            context: context.into(),
            source,
        }
    }

    /// Work for the store, `context`, failed outside the database.
    pub fn other(
        context: impl Into<String>,
        source: impl Into<Box<dyn std::error::Error + Send + Sync + 'static>>,
    ) -> Self {
        Self::Other {
            context: context.into(),
            source: source.into(),
        }
    }

    /// True when the database could not be reached: a condition to wait out and retry (`503`),
    /// not a fault of the request or of the service.
    pub fn is_unavailable(&self) -> bool {
        match self {
            StoreError::Database(error) => is_unreachable(error),
            StoreError::Shared(error) => error.is_unavailable(),
            StoreError::Locked(_)
            | StoreError::Io { .. }
            | StoreError::Changed(_)
            | StoreError::Other { .. }
            | StoreError::Corrupt(_) => false,
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

mod ca_budgets;
mod checkpoints;
pub use checkpoints::Checkpoint;
mod edge_certificates;
mod edge_deliveries;
mod feed;
mod health_counts;
mod leases;
mod migrations;
mod names;
mod overview;
mod renewal_info_checks;
mod secrets;
mod tokens;
mod views;
mod webhooks;
mod zone_followers;

pub use ca_budgets::{BudgetUse, SpentUnits};
pub use edge_certificates::{EdgeMaterialRow, EdgeSnapshot, EdgeSnapshotRow};
pub use edge_deliveries::{recorded_receiver, DeliveriesOf, EdgeKeyDelivery, KeyDelivery};
pub use feed::{EventTable, FeedRow};
pub use leases::{lock_sqlite_exclusively, SqliteReplicaLock};
pub use names::{NameClaim, TenantClaim};
pub use overview::DayActivity;
pub use secrets::SecretTable;
pub use tokens::TokenRow;
pub use views::{DomainFilter, DomainPage, ExpiryCounts, KeyDisposalMark, ProjectionWrite};
pub use webhooks::{AttemptRecord, EndpointMessages, MessageFate, NewMessage, StoredMessage};
pub use zone_followers::LaggingFollower;

/// Rows per multi-row statement: well under SQLite's and PostgreSQL's parameter limits.
const BATCH_ROWS: usize = 500;

/// A UTC time as text that sorts like the time itself (fixed width, always `Z`).
fn sortable_time(time: chrono::DateTime<Utc>) -> String {
    time.to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
}

pub use crate::settings::is_postgres_url;

/// The file of a SQLite database URL (`sqlite://path?…`, `sqlite:path`, or a bare path);
/// `None` for an in-memory database.
pub fn sqlite_path(database_url: &str) -> Option<std::path::PathBuf> {
    if is_postgres_url(database_url) {
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

/// A bound parameter of a statement built at run time.
enum Param {
    Text(String),
    Int(i64),
    /// A text that may be SQL `NULL`.
    OptionalText(Option<String>),
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

    /// Connects as [`Store::connect_pooled`] does, with the default `STORE_CONNECTIONS`.
    pub async fn connect_with(
        database_url: &str,
        acquire_timeout: Duration,
    ) -> Result<Store, StoreError> {
        let connections = Settings::default().store_connections;
        Self::connect_pooled(database_url, acquire_timeout, connections).await
    }

    /// Connects to `database_url`: PostgreSQL for `postgres://…` (at most `connections` of them:
    /// `STORE_CONNECTIONS`, since every replica's pool counts against the server's
    /// `max_connections`), otherwise a SQLite file that is created when missing. A query waits
    /// at most `acquire_timeout` (`STORE_TIMEOUT`) for a connection: while the database is
    /// unreachable, requests fail that fast instead of piling up.
    pub async fn connect_pooled(
        database_url: &str,
        acquire_timeout: Duration,
        connections: usize,
    ) -> Result<Store, StoreError> {
        if is_postgres_url(database_url) {
            let pool = PgPoolOptions::new()
                .max_connections(u32::try_from(connections).unwrap_or(u32::MAX))
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

    /// Checks that the database answers.
    pub async fn ping(&self) -> Result<(), StoreError> {
        on_pool!(self, pool => sqlx::query("SELECT 1").execute(pool).await?.rows_affected());
        Ok(())
    }

    /// The placeholders of a statement built at run time, with thousands of parameters.
    ///
    /// PostgreSQL numbers them (`$1, $2, …`). SQLite gets anonymous `?`: sqlx asks SQLite for
    /// the name of every parameter it binds, and SQLite finds a numbered parameter's name by
    /// scanning all of the statement's named parameters, which makes binding a multi-row insert
    /// quadratic (15 % of the CPU of a replay went there); an anonymous parameter has no name
    /// to look up.
    fn placeholders(&self, count: usize, first: usize) -> Vec<String> {
        let numbered = matches!(self, Store::Postgres(_));
        (first..first + count)
            .map(|n| {
                if numbered {
                    format!("${n}")
                } else {
                    "?".to_owned()
                }
            })
            .collect()
    }

    /// `($1, $2), ($3, $4), …` (or `(?, ?), …` for SQLite): `rows` rows of `columns`
    /// placeholders.
    fn value_rows(&self, rows: usize, columns: usize) -> String {
        (0..rows)
            .map(|row| {
                format!(
                    "({})",
                    self.placeholders(columns, row * columns + 1).join(", ")
                )
            })
            .collect::<Vec<_>>()
            .join(",")
    }
}
