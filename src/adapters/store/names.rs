//! Name claims: a name (a domain's own, or one of its alt names, wildcards as `*.name`) belongs
//! to one live domain at a time, claimed before the registration or the new set of alt names
//! is recorded and given back when it does not go through (a removal frees the names, and a
//! replaced set the names it dropped, with the projection write that records it, see
//! `views.rs`).

use chrono::Utc;

use super::leases::TENANT_LIMIT_LOCK;
use super::{sortable_time, Store, StoreError};

/// The tenant names are claimed for, and how many live domains it may hold (none: no limit).
#[derive(Debug, Clone, Copy)]
pub struct TenantClaim<'a> {
    /// The tenant's id.
    pub tenant: &'a str,
    /// `TENANT_DOMAIN_LIMIT`.
    pub limit: Option<u32>,
}

/// What came of claiming names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NameClaim {
    /// Every name is now the domain's.
    Claimed,
    /// Another live domain holds this name; nothing was claimed.
    Taken(String),
    /// The tenant holds as many domains as it may; nothing was claimed.
    TenantFull,
}

impl Store {
    /// Claims every name of `names` for `domain_id`, all or none: `Ok(None)` when all are now
    /// the domain's (names it already holds count), `Ok(Some(name))` naming the first one
    /// another live domain holds, with nothing claimed.
    ///
    /// A claim is taken before the registration is recorded, so a crash in between would leave
    /// a claim without a domain. Such a claim (no events, older than a minute, while recording
    /// a registration takes milliseconds) is taken over instead of blocking the name forever.
    pub async fn reserve_names(
        &self,
        names: &[String],
        domain_id: &str,
    ) -> Result<Option<String>, StoreError> {
        match self.claim_names(names, domain_id, None).await? {
            NameClaim::Claimed => Ok(None),
            NameClaim::Taken(name) => Ok(Some(name)),
            // Only a tenant's claim has a limit.
            NameClaim::TenantFull => Ok(None),
        }
    }

    /// Claims every name of `names` for `domain_id` as [`Store::reserve_names`] does, for
    /// `tenant` when given: then, with a `limit`, refused with nothing claimed when the tenant
    /// already holds that many domains (a domain is held from its claims until its removal is
    /// projected; a claim without a registration counts for its minute).
    pub async fn claim_names(
        &self,
        names: &[String],
        domain_id: &str,
        tenant: Option<TenantClaim<'_>>,
    ) -> Result<NameClaim, StoreError> {
        let sql = "INSERT INTO domain_names (domain_name, domain_id, reserved_at, tenant) \
                   VALUES ($1, $2, $3, $5) \
                   ON CONFLICT (domain_name) DO UPDATE \
                   SET domain_id = excluded.domain_id, reserved_at = excluded.reserved_at, \
                   tenant = excluded.tenant \
                   WHERE domain_names.domain_id = excluded.domain_id \
                   OR (domain_names.reserved_at < $4 AND NOT EXISTS \
                   (SELECT 1 FROM events WHERE events.aggregate_id = domain_names.domain_id))";
        let held = "SELECT COUNT(DISTINCT domain_id) FROM domain_names \
                    WHERE tenant = $1 AND domain_id <> $2 AND (reserved_at >= $3 OR EXISTS \
                    (SELECT 1 FROM events WHERE events.aggregate_id = domain_names.domain_id))";
        let now = Utc::now();
        let stale_before = now - chrono::Duration::seconds(60);
        let limited = tenant.and_then(|claim| claim.limit.map(|limit| (claim.tenant, limit)));
        let outcome = on_pool!(self, pool => {
            let mut tx = pool.begin().await?;
            let mut outcome = NameClaim::Claimed;
            if let Some((tenant, limit)) = limited {
                // The count and the claims must see one state: PostgreSQL takes turns on an
                // advisory lock; SQLite's transaction starts as a writer (a statement that
                // writes nothing still takes the write lock, waiting its busy timeout), since
                // a reader that writes after another writer's commit is refused outright.
                let take_turns = match self {
                    Store::Postgres(_) => "SELECT pg_advisory_xact_lock($1)",
                    Store::Sqlite(_) => "UPDATE domain_names SET tenant = tenant WHERE $1 = 0",
                };
                sqlx::query(take_turns)
                    .bind(TENANT_LIMIT_LOCK)
                    .execute(&mut *tx)
                    .await?;
                let count: i64 = sqlx::query_scalar(held)
                    .bind(tenant)
                    .bind(domain_id)
                    .bind(sortable_time(stale_before))
                    .fetch_one(&mut *tx)
                    .await?;
                if count >= i64::from(limit) {
                    outcome = NameClaim::TenantFull;
                }
            }
            if matches!(outcome, NameClaim::Claimed) {
                for name in names {
                    let claimed = sqlx::query(sql)
                        .bind(name.as_str())
                        .bind(domain_id)
                        .bind(sortable_time(now))
                        .bind(sortable_time(stale_before))
                        .bind(tenant.map(|claim| claim.tenant))
                        .execute(&mut *tx)
                        .await?
                        .rows_affected();
                    if claimed != 1 {
                        outcome = NameClaim::Taken(name.clone());
                        break;
                    }
                }
            }
            if matches!(outcome, NameClaim::Claimed) {
                tx.commit().await?;
            }
            outcome
        });
        Ok(outcome)
    }

    /// Gives names back: after a registration that did not go through, or the names a domain
    /// no longer has. Only the domain's own claims are touched.
    pub async fn release_names(&self, names: &[String], domain_id: &str) -> Result<(), StoreError> {
        let sql = "DELETE FROM domain_names WHERE domain_name = $1 AND domain_id = $2";
        on_pool!(self, pool => {
            let mut tx = pool.begin().await?;
            for name in names {
                sqlx::query(sql).bind(name.as_str()).bind(domain_id).execute(&mut *tx).await?;
            }
            tx.commit().await?;
        });
        Ok(())
    }
}
