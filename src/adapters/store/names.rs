//! Name claims: a domain name belongs to one live domain at a time, claimed before the
//! registration is recorded and given back when it does not go through (a removal frees the
//! name with the projection write that records it, see `views.rs`).

use chrono::Utc;

use super::{sortable_time, Store, StoreError};

impl Store {
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

    /// Gives a name back (after a registration that did not go through).
    pub async fn release_name(&self, domain_name: &str, domain_id: &str) -> Result<(), StoreError> {
        let sql = "DELETE FROM domain_names WHERE domain_name = $1 AND domain_id = $2";
        on_pool!(self, pool => sqlx::query(sql).bind(domain_name).bind(domain_id).execute(pool).await?.rows_affected());
        Ok(())
    }
}
