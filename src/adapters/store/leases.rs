//! Who works on what: the leases of pending orders, the PostgreSQL advisory locks, and the
//! SQLite process lock.
//!
//! This is where replicas differ. On PostgreSQL several replicas share the database, so a
//! pending order is polled by whoever holds its lease, and the few things that must happen once
//! (the schema, the ACME account) happen under an advisory lock. A SQLite database is held by one
//! process (the OS file lock below), so there every lease is granted and no lock is needed.

use std::time::Duration;

use sqlx::Row;

use super::{sqlite_path, Store, StoreError};

// The PostgreSQL advisory locks, all here so that no two uses ever share a number: an advisory
// lock is nothing but a number, and one number taken for two purposes would make unrelated
// work wait on each other (or, worse, exclude each other).

/// Taken by [`Store::migrate`] for each migration's transaction: replicas starting at once apply
/// the schema in turn.
pub(super) const MIGRATION_LOCK: i64 = 7246001;

/// Taken by the trigger that gives events their global position (migration 0002), until the
/// inserting transaction commits, so positions are handed out in commit order. The number is
/// written in that migration's SQL, which never changes once shipped; it is named here so that
/// it is not taken again.
#[cfg_attr(not(test), allow(dead_code))]
pub(super) const FEED_POSITION_LOCK: i64 = 7246002;

/// Taken by [`Store::with_account_lock`] on a connection of its own: replicas starting at once
/// register one ACME account.
pub(super) const ACCOUNT_LOCK: i64 = 7246003;

/// Serialises spending the CA budgets across replicas (a transaction lock), so that two
/// replicas checking at once cannot both take the last unit.
pub(super) const BUDGET_LOCK: i64 = 7246004;

/// Taken by the trigger that gives access tokens' events their position (migration 0017), as
/// [`FEED_POSITION_LOCK`] is for the domains' events; named here so it is not taken again.
#[cfg_attr(not(test), allow(dead_code))]
pub(super) const TOKEN_POSITION_LOCK: i64 = 7246017;

/// Serialises claiming a tenant's names while `TENANT_DOMAIN_LIMIT` is set (a transaction
/// lock), so that two replicas registering for one tenant at once cannot both take its last
/// place.
pub(super) const TENANT_LIMIT_LOCK: i64 = 7246019;

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
        .map_err(|e| StoreError::io(format!("cannot open {}", path.display()), e))?;
    match file.try_lock() {
        Ok(()) => Ok(Some(SqliteReplicaLock { _file: file })),
        Err(std::fs::TryLockError::WouldBlock) => Err(StoreError::Locked(format!(
            "another dns-handling process is using {}: SQLite mode runs one process; use \
             PostgreSQL (DATABASE_URL=postgres://…) for several replicas",
            database.display()
        ))),
        Err(std::fs::TryLockError::Error(e)) => {
            Err(StoreError::io(format!("cannot lock {}", path.display()), e))
        }
    }
}

impl Store {
    /// Whether other replicas may work on this database's orders at the same time: true for
    /// PostgreSQL, where the leases decide who polls which order; false for SQLite, which one
    /// process holds (see [`lock_sqlite_exclusively`]), so every order is this process's.
    pub fn is_shared_by_replicas(&self) -> bool {
        matches!(self, Store::Postgres(_))
    }

    /// Claims the leases of pending orders, each `(domain_id, order_id)`, for `owner`: a claim
    /// is granted when nobody holds the domain's lease, when `owner` already does, when the
    /// holder stopped renewing, or when the lease is for an older order of the domain. Answers
    /// the domains granted. One statement for the whole batch: claimed one by one (a round trip
    /// and a commit each), 20,000 pending orders took seconds to resume. SQLite mode is
    /// single-replica, so there every claim is granted.
    ///
    /// The same rows guard one-off work too: a "domain" of the form `<domain id>#<work>` (the
    /// renewal scheduler's `…#renewal`) is a work lease, never renewed, deleted once lapsed.
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
        // Work leases (`<domain>#…`, see `claim_leases`) are not renewed: they guard one step
        // and lapse after it.
        let sql = "UPDATE order_leases SET expires_at = now() + make_interval(secs => $2) \
                   WHERE owner = $1 AND domain_id NOT LIKE '%#%' RETURNING domain_id";
        Ok(sqlx::query(sql)
            .bind(owner)
            .bind(ttl.as_secs_f64())
            .fetch_all(pool)
            .await?
            .iter()
            .map(|row| row.try_get("domain_id"))
            .collect::<Result<_, _>>()?)
    }

    /// Takes the work lease `lease` (`<domain id>#<work>`) for `owner` when nobody holds it or
    /// its holder stopped renewing it; never over a live holder, not even `owner` itself (one
    /// piece of work at a time, in this process too). `work` names what is done under it. In
    /// SQLite mode (one process) the lease lives in this process's memory.
    pub async fn claim_work_lease(
        &self,
        lease: &str,
        work: &str,
        owner: &str,
        ttl: Duration,
    ) -> Result<bool, StoreError> {
        let Store::Postgres(pool) = self else {
            let mut local = local_work_leases();
            let now = std::time::Instant::now();
            local.retain(|_, expires| *expires > now);
            if local.contains_key(lease) {
                return Ok(false);
            }
            local.insert(lease.to_owned(), now + ttl);
            return Ok(true);
        };
        let sql = "INSERT INTO order_leases (domain_id, order_id, owner, expires_at) \
                   VALUES ($1, $2, $3, now() + make_interval(secs => $4)) \
                   ON CONFLICT (domain_id) DO UPDATE SET order_id = excluded.order_id, \
                   owner = excluded.owner, expires_at = excluded.expires_at \
                   WHERE order_leases.expires_at < now() \
                   RETURNING domain_id";
        Ok(sqlx::query(sql)
            .bind(lease)
            .bind(work)
            .bind(owner)
            .bind(ttl.as_secs_f64())
            .fetch_optional(pool)
            .await?
            .is_some())
    }

    /// Extends the work lease `lease` that `owner` holds; `false` when it no longer does.
    pub async fn renew_work_lease(
        &self,
        lease: &str,
        owner: &str,
        ttl: Duration,
    ) -> Result<bool, StoreError> {
        let Store::Postgres(pool) = self else {
            let mut local = local_work_leases();
            return Ok(match local.get_mut(lease) {
                Some(expires) => {
                    *expires = std::time::Instant::now() + ttl;
                    true
                }
                None => false,
            });
        };
        let sql = "UPDATE order_leases SET expires_at = now() + make_interval(secs => $3) \
                   WHERE domain_id = $1 AND owner = $2 AND expires_at > now() RETURNING domain_id";
        Ok(sqlx::query(sql)
            .bind(lease)
            .bind(owner)
            .bind(ttl.as_secs_f64())
            .fetch_optional(pool)
            .await?
            .is_some())
    }

    /// Gives back the work lease `lease` that `owner` holds.
    pub async fn release_work_lease(&self, lease: &str, owner: &str) -> Result<(), StoreError> {
        match self {
            Store::Postgres(_) => self.release_lease(lease, owner).await,
            Store::Sqlite(_) => {
                local_work_leases().remove(lease);
                Ok(())
            }
        }
    }

    /// Deletes the work leases (`<domain>#…`) that have lapsed: each guarded one step, which
    /// is over.
    pub async fn forget_lapsed_work_leases(&self) -> Result<(), StoreError> {
        if let Store::Postgres(pool) = self {
            sqlx::query(
                "DELETE FROM order_leases WHERE domain_id LIKE '%#%' AND expires_at < now()",
            )
            .execute(pool)
            .await?;
        }
        Ok(())
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
        sqlx::query("SELECT pg_advisory_lock($1)")
            .bind(ACCOUNT_LOCK)
            .execute(&mut *connection)
            .await?;
        let result = work.await;
        let unlocked = sqlx::query("SELECT pg_advisory_unlock($1)")
            .bind(ACCOUNT_LOCK)
            .execute(&mut *connection)
            .await;
        if unlocked.is_err() {
            // Never hand a connection that may still hold the lock back to the pool.
            connection.detach();
        }
        Ok(result)
    }
}

/// The work leases of a SQLite process (one process per database: see
/// [`lock_sqlite_exclusively`]), each with when it lapses.
fn local_work_leases(
) -> std::sync::MutexGuard<'static, std::collections::HashMap<String, std::time::Instant>> {
    static LEASES: std::sync::LazyLock<
        std::sync::Mutex<std::collections::HashMap<String, std::time::Instant>>,
    > = std::sync::LazyLock::new(Default::default);
    LEASES
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_advisory_lock_has_a_number_of_its_own() {
        let locks = [
            MIGRATION_LOCK,
            FEED_POSITION_LOCK,
            ACCOUNT_LOCK,
            BUDGET_LOCK,
            TOKEN_POSITION_LOCK,
            TENANT_LIMIT_LOCK,
        ];
        for (i, lock) in locks.iter().enumerate() {
            assert!(!locks[i + 1..].contains(lock), "{lock} is taken twice");
        }
        let feed = include_str!("migrations/postgres/0002_global_feed.sql");
        assert!(
            feed.contains(&format!("pg_advisory_xact_lock({FEED_POSITION_LOCK})")),
            "the feed's trigger takes the lock named here"
        );
        let tokens = include_str!("migrations/postgres/0017_access_tokens.sql");
        assert!(
            tokens.contains(&format!("pg_advisory_xact_lock({TOKEN_POSITION_LOCK})")),
            "the tokens' trigger takes the lock named here"
        );
    }
}
