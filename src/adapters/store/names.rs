//! Name claims: a name (a domain's own, or one of its alt names, wildcards as `*.name`) belongs
//! to one live domain at a time, claimed before the registration or the new set of alt names
//! is recorded and given back when it does not go through (a removal frees the names, and a
//! replaced set the names it dropped, with the projection write that records it, see
//! `views.rs`).

use chrono::Utc;

use super::{sortable_time, Store, StoreError};

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
        let sql = "INSERT INTO domain_names (domain_name, domain_id, reserved_at) \
                   VALUES ($1, $2, $3) \
                   ON CONFLICT (domain_name) DO UPDATE \
                   SET domain_id = excluded.domain_id, reserved_at = excluded.reserved_at \
                   WHERE domain_names.domain_id = excluded.domain_id \
                   OR (domain_names.reserved_at < $4 AND NOT EXISTS \
                   (SELECT 1 FROM events WHERE events.aggregate_id = domain_names.domain_id))";
        let now = Utc::now();
        let stale_before = now - chrono::Duration::seconds(60);
        let taken = on_pool!(self, pool => {
            let mut tx = pool.begin().await?;
            let mut taken = None;
            for name in names {
                let claimed = sqlx::query(sql)
                    .bind(name.as_str())
                    .bind(domain_id)
                    .bind(sortable_time(now))
                    .bind(sortable_time(stale_before))
                    .execute(&mut *tx)
                    .await?
                    .rows_affected();
                if claimed != 1 {
                    taken = Some(name.clone());
                    break;
                }
            }
            if taken.is_none() {
                tx.commit().await?;
            }
            taken
        });
        Ok(taken)
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
