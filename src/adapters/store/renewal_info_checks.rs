//! When to ask the CA again for each certificate's renewal window (ARI): one row per domain,
//! found by an index range scan of `check_at`.

use chrono::{DateTime, Utc};
use sqlx::Row;

use super::{sortable_time, Store, StoreError};

impl Store {
    /// Asks again for `certificate_id`'s window at `check_at` (replacing the domain's row).
    pub async fn set_renewal_info_check(
        &self,
        domain_id: &str,
        certificate_id: &str,
        check_at: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let sql = "INSERT INTO renewal_info_checks (domain_id, certificate_id, check_at) \
                   VALUES ($1, $2, $3) ON CONFLICT (domain_id) DO UPDATE \
                   SET certificate_id = excluded.certificate_id, check_at = excluded.check_at";
        on_pool!(self, pool => sqlx::query(sql)
            .bind(domain_id)
            .bind(certificate_id)
            .bind(sortable_time(check_at))
            .execute(pool)
            .await?
            .rows_affected());
        Ok(())
    }

    /// Stops asking for `certificate_id`'s window (it is no longer the domain's current
    /// certificate, or the CA stopped offering). A row that names another certificate by now
    /// (the next one's, planned meanwhile) stays.
    pub async fn clear_renewal_info_check(
        &self,
        domain_id: &str,
        certificate_id: &str,
    ) -> Result<(), StoreError> {
        let sql = "DELETE FROM renewal_info_checks WHERE domain_id = $1 AND certificate_id = $2";
        on_pool!(self, pool => sqlx::query(sql)
            .bind(domain_id)
            .bind(certificate_id)
            .execute(pool)
            .await?
            .rows_affected());
        Ok(())
    }

    /// Moves `certificate_id`'s next check to `check_at`, if the domain's row still names it:
    /// a check planned meanwhile for the next certificate is neither moved nor replaced.
    pub async fn postpone_renewal_info_check(
        &self,
        domain_id: &str,
        certificate_id: &str,
        check_at: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let sql = "UPDATE renewal_info_checks SET check_at = $3 \
                   WHERE domain_id = $1 AND certificate_id = $2";
        on_pool!(self, pool => sqlx::query(sql)
            .bind(domain_id)
            .bind(certificate_id)
            .bind(sortable_time(check_at))
            .execute(pool)
            .await?
            .rows_affected());
        Ok(())
    }

    /// Up to `limit` (domain id, certificate id) whose window is to be asked for again by `now`.
    pub async fn due_renewal_info_checks(
        &self,
        now: DateTime<Utc>,
        limit: u32,
    ) -> Result<Vec<(String, String)>, StoreError> {
        let sql = "SELECT domain_id, certificate_id FROM renewal_info_checks \
                   WHERE check_at <= $1 ORDER BY check_at LIMIT $2";
        let rows = on_pool!(self, pool => sqlx::query(sql)
            .bind(sortable_time(now))
            .bind(i64::from(limit))
            .fetch_all(pool)
            .await?
            .iter()
            .map(|row| Ok((row.try_get("domain_id")?, row.try_get("certificate_id")?)))
            .collect::<Result<Vec<(String, String)>, sqlx::Error>>()?);
        Ok(rows)
    }
}
