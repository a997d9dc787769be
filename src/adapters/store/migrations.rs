//! The schema: the migrations of each database, applied in order on every start.
//!
//! The SQL lives in `migrations/postgres/` and `migrations/sqlite/`, one file per version and
//! the same versions on both sides; the two lists below are the only place that tells them
//! apart.

use chrono::Utc;

use super::leases::MIGRATION_LOCK;
use super::{sortable_time, Store, StoreError};

/// The PostgreSQL schema, in order; never edit one that has shipped, add the next.
const POSTGRES_MIGRATIONS: [(i64, &str); 16] = [
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
    (
        6,
        include_str!("migrations/postgres/0006_names_and_renewals.sql"),
    ),
    (7, include_str!("migrations/postgres/0007_webhooks.sql")),
    (8, include_str!("migrations/postgres/0008_ca_budgets.sql")),
    (
        9,
        include_str!("migrations/postgres/0009_activity_index.sql"),
    ),
    (
        11,
        include_str!("migrations/postgres/0011_unmarked_keys_index.sql"),
    ),
    (
        13,
        include_str!("migrations/postgres/0013_zone_followers.sql"),
    ),
    (
        14,
        include_str!("migrations/postgres/0014_webhook_feed.sql"),
    ),
    (
        15,
        include_str!("migrations/postgres/0015_edge_key_deliveries.sql"),
    ),
    (
        17,
        include_str!("migrations/postgres/0017_access_tokens.sql"),
    ),
    (
        19,
        include_str!("migrations/postgres/0019_domain_tenants.sql"),
    ),
    (
        26,
        include_str!("migrations/postgres/0026_domain_health.sql"),
    ),
];

/// The SQLite schema, in order; never edit one that has shipped, add the next.
const SQLITE_MIGRATIONS: [(i64, &str); 16] = [
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
    (
        6,
        include_str!("migrations/sqlite/0006_names_and_renewals.sql"),
    ),
    (7, include_str!("migrations/sqlite/0007_webhooks.sql")),
    (8, include_str!("migrations/sqlite/0008_ca_budgets.sql")),
    (9, include_str!("migrations/sqlite/0009_activity_index.sql")),
    (
        11,
        include_str!("migrations/sqlite/0011_unmarked_keys_index.sql"),
    ),
    (
        13,
        include_str!("migrations/sqlite/0013_zone_followers.sql"),
    ),
    (14, include_str!("migrations/sqlite/0014_webhook_feed.sql")),
    (
        15,
        include_str!("migrations/sqlite/0015_edge_key_deliveries.sql"),
    ),
    (17, include_str!("migrations/sqlite/0017_access_tokens.sql")),
    (
        19,
        include_str!("migrations/sqlite/0019_domain_tenants.sql"),
    ),
    (26, include_str!("migrations/sqlite/0026_domain_health.sql")),
];

impl Store {
    /// Applies the migrations this database has not had yet, each in its own transaction and
    /// recorded in `schema_migrations`, so running this on every start is safe.
    pub async fn migrate(&self) -> Result<(), StoreError> {
        const CREATE: &str = "CREATE TABLE IF NOT EXISTS schema_migrations \
                              (version bigint NOT NULL PRIMARY KEY, applied_at text NOT NULL)";
        const APPLIED: &str = "SELECT version FROM schema_migrations WHERE version = $1";
        const RECORD: &str = "INSERT INTO schema_migrations (version, applied_at) VALUES ($1, $2)";
        // Several PostgreSQL replicas may start at once: one lock makes them take turns. A
        // SQLite database has one process (see `lock_sqlite_exclusively`), so nobody to wait for.
        let (migrations, lock): (&[(i64, &str)], Option<i64>) = match self {
            Store::Postgres(_) => (&POSTGRES_MIGRATIONS, Some(MIGRATION_LOCK)),
            Store::Sqlite(_) => (&SQLITE_MIGRATIONS, None),
        };
        for (version, sql) in migrations {
            on_pool!(self, pool => {
                let mut tx = pool.begin().await?;
                if let Some(lock) = lock {
                    sqlx::query("SELECT pg_advisory_xact_lock($1)")
                        .bind(lock)
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
}
