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
use cqrs_es::persist::{
    PersistedEventRepository, PersistenceError, ReplayStream, SerializedEvent, SerializedSnapshot,
};
use cqrs_es::Aggregate;
use dns_handling_events::{CustomDomainEvent, DomainStatus, AGGREGATE_TYPE};
use dns_handling_projections::{CertificateView, DomainView};
use postgres_es::PostgresEventRepository;
use serde_json::Value;
use sqlite_es::SqliteEventRepository;
use sqlx::postgres::PgPoolOptions;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{PgPool, Row, SqlitePool};

/// A failure of the database.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database refused or could not be reached.
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    /// A stored row could not be read back.
    #[error("stored data is corrupt: {0}")]
    Corrupt(#[from] serde_json::Error),
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

/// A UTC time as text that sorts like the time itself (fixed width, always `Z`).
fn sortable_time(time: chrono::DateTime<Utc>) -> String {
    time.to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
}

/// The `status` column of a removed domain's view row.
const REMOVED_STATUS: &str = "removed";

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
    /// Connects to `database_url`: PostgreSQL for `postgres://…`, otherwise a SQLite file that is
    /// created when missing.
    pub async fn connect(database_url: &str) -> Result<Store, StoreError> {
        if database_url.starts_with("postgres://") || database_url.starts_with("postgresql://") {
            let pool = PgPoolOptions::new()
                .max_connections(16)
                .acquire_timeout(Duration::from_secs(10))
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
            .connect_with(options)
            .await?;
        Ok(Store::Sqlite(pool))
    }

    /// Creates the tables when they do not exist yet. Every statement is idempotent, so running
    /// this on every start is safe.
    pub async fn migrate(&self) -> Result<(), StoreError> {
        match self {
            Store::Postgres(pool) => {
                // Several replicas may start at once: one lock makes their migrations take turns.
                let mut tx = pool.begin().await?;
                sqlx::query("SELECT pg_advisory_xact_lock(7246001)")
                    .execute(&mut *tx)
                    .await?;
                sqlx::raw_sql(include_str!("migrations/postgres/0001_initial.sql"))
                    .execute(&mut *tx)
                    .await?;
                tx.commit().await?;
            }
            Store::Sqlite(pool) => {
                sqlx::raw_sql(include_str!("migrations/sqlite/0001_initial.sql"))
                    .execute(pool)
                    .await?;
            }
        }
        Ok(())
    }

    /// Checks that the database answers.
    pub async fn ping(&self) -> Result<(), StoreError> {
        on_pool!(self, pool => sqlx::query("SELECT 1").execute(pool).await?.rows_affected());
        Ok(())
    }

    /// The cqrs-es event repository over the same pool.
    pub fn event_repository(&self) -> EventRepository {
        match self {
            Store::Postgres(pool) => {
                EventRepository::Postgres(PostgresEventRepository::new(pool.clone()))
            }
            Store::Sqlite(pool) => {
                EventRepository::Sqlite(SqliteEventRepository::new(pool.clone()))
            }
        }
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

    /// Frees every name held by a domain (after its removal).
    pub async fn release_names_of(&self, domain_id: &str) -> Result<(), StoreError> {
        let sql = "DELETE FROM domain_names WHERE domain_id = $1";
        on_pool!(self, pool => sqlx::query(sql).bind(domain_id).execute(pool).await?.rows_affected());
        Ok(())
    }

    /// Ids of the domains whose view is behind their events (a crash between an event's commit
    /// and its view update leaves one behind).
    pub async fn aggregates_behind_their_views(&self) -> Result<Vec<String>, StoreError> {
        let sql = "SELECT e.aggregate_id AS id FROM events e \
                   LEFT JOIN domain_views v ON v.id = e.aggregate_id \
                   WHERE e.aggregate_type = $1 \
                   GROUP BY e.aggregate_id, v.last_sequence \
                   HAVING MAX(e.sequence) > COALESCE(v.last_sequence, 0)";
        Ok(on_pool!(self, pool => sqlx::query(sql)
            .bind(AGGREGATE_TYPE)
            .fetch_all(pool)
            .await?
            .iter()
            .map(|row| row.try_get("id"))
            .collect::<Result<Vec<String>, _>>()?))
    }

    /// Every event of one domain, in order, as (sequence, event).
    pub async fn domain_events(
        &self,
        aggregate_id: &str,
    ) -> Result<Vec<(u64, CustomDomainEvent)>, StoreError> {
        let sql = "SELECT sequence, CAST(payload AS TEXT) AS payload FROM events \
                   WHERE aggregate_type = $1 AND aggregate_id = $2 ORDER BY sequence";
        let rows: Vec<(i64, String)> = on_pool!(self, pool => sqlx::query(sql)
            .bind(AGGREGATE_TYPE)
            .bind(aggregate_id)
            .fetch_all(pool)
            .await?
            .iter()
            .map(|row| Ok((row.try_get("sequence")?, row.try_get("payload")?)))
            .collect::<Result<_, sqlx::Error>>()?);
        rows.into_iter()
            .map(|(sequence, payload)| {
                Ok((
                    u64::try_from(sequence).unwrap_or(0),
                    serde_json::from_str(&payload)?,
                ))
            })
            .collect()
    }

    /// Gives a name back (after a registration that did not go through).
    pub async fn release_name(&self, domain_name: &str, domain_id: &str) -> Result<(), StoreError> {
        let sql = "DELETE FROM domain_names WHERE domain_name = $1 AND domain_id = $2";
        on_pool!(self, pool => sqlx::query(sql).bind(domain_name).bind(domain_id).execute(pool).await?.rows_affected());
        Ok(())
    }

    /// Writes a domain view, unless a newer one is already stored (views only move forward).
    pub async fn save_domain_view(&self, view: &DomainView) -> Result<(), StoreError> {
        let sql = "INSERT INTO domain_views (id, domain_name, status, last_sequence, payload) \
                   VALUES ($1, $2, $3, $4, $5) \
                   ON CONFLICT (id) DO UPDATE SET domain_name = excluded.domain_name, \
                   status = excluded.status, last_sequence = excluded.last_sequence, \
                   payload = excluded.payload \
                   WHERE domain_views.last_sequence < excluded.last_sequence";
        let payload = serde_json::to_string(view)?;
        let sequence = i64::try_from(view.last_sequence).unwrap_or(i64::MAX);
        // Removed domains keep their row (for the history) under a status no listing asks for.
        let status = if view.removed {
            REMOVED_STATUS
        } else {
            view.status.as_str()
        };
        on_pool!(self, pool => sqlx::query(sql)
            .bind(&view.id)
            .bind(&view.domain_name)
            .bind(status)
            .bind(sequence)
            .bind(&payload)
            .execute(pool)
            .await?
            .rows_affected());
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

    /// Writes a certificate view (the domain's current certificate).
    pub async fn save_certificate_view(&self, view: &CertificateView) -> Result<(), StoreError> {
        let sql = "INSERT INTO certificate_views (domain_id, payload) VALUES ($1, $2) \
                   ON CONFLICT (domain_id) DO UPDATE SET payload = excluded.payload";
        let payload = serde_json::to_string(view)?;
        on_pool!(self, pool => sqlx::query(sql).bind(&view.domain_id).bind(&payload).execute(pool).await?.rows_affected());
        Ok(())
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

    /// Number of events stored for one aggregate (used by tests and diagnostics).
    pub async fn event_count(&self, aggregate_id: &str) -> Result<i64, StoreError> {
        let sql = "SELECT COUNT(*) AS n FROM events WHERE aggregate_id = $1";
        Ok(on_pool!(self, pool => sqlx::query(sql)
            .bind(aggregate_id)
            .fetch_one(pool)
            .await?
            .try_get("n")?))
    }
}

/// The cqrs-es repository of whichever database is configured.
pub enum EventRepository {
    /// postgres-es.
    Postgres(PostgresEventRepository),
    /// sqlite-es.
    Sqlite(SqliteEventRepository),
}

impl PersistedEventRepository for EventRepository {
    async fn get_events<A: Aggregate>(
        &self,
        aggregate_id: &str,
    ) -> Result<Vec<SerializedEvent>, PersistenceError> {
        match self {
            Self::Postgres(repo) => repo.get_events::<A>(aggregate_id).await,
            Self::Sqlite(repo) => repo.get_events::<A>(aggregate_id).await,
        }
    }

    async fn get_last_events<A: Aggregate>(
        &self,
        aggregate_id: &str,
        last_sequence: usize,
    ) -> Result<Vec<SerializedEvent>, PersistenceError> {
        match self {
            Self::Postgres(repo) => repo.get_last_events::<A>(aggregate_id, last_sequence).await,
            Self::Sqlite(repo) => repo.get_last_events::<A>(aggregate_id, last_sequence).await,
        }
    }

    async fn get_snapshot<A: Aggregate>(
        &self,
        aggregate_id: &str,
    ) -> Result<Option<SerializedSnapshot>, PersistenceError> {
        match self {
            Self::Postgres(repo) => repo.get_snapshot::<A>(aggregate_id).await,
            Self::Sqlite(repo) => repo.get_snapshot::<A>(aggregate_id).await,
        }
    }

    async fn persist<A: Aggregate>(
        &self,
        events: &[SerializedEvent],
        snapshot_update: Option<(String, Value, usize)>,
    ) -> Result<(), PersistenceError> {
        match self {
            Self::Postgres(repo) => repo.persist::<A>(events, snapshot_update).await,
            Self::Sqlite(repo) => repo.persist::<A>(events, snapshot_update).await,
        }
    }

    async fn stream_events<A: Aggregate>(
        &self,
        aggregate_id: &str,
    ) -> Result<ReplayStream, PersistenceError> {
        match self {
            Self::Postgres(repo) => repo.stream_events::<A>(aggregate_id).await,
            Self::Sqlite(repo) => repo.stream_events::<A>(aggregate_id).await,
        }
    }

    async fn stream_all_events<A: Aggregate>(&self) -> Result<ReplayStream, PersistenceError> {
        match self {
            Self::Postgres(repo) => repo.stream_all_events::<A>().await,
            Self::Sqlite(repo) => repo.stream_all_events::<A>().await,
        }
    }
}
