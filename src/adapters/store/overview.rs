//! The figures of the console's overview (`GET /overview`) that the views' metrics queries do
//! not give already, each read through an index: open orders, renewals due, and issuances and
//! failures per day. (The counts by status, which the overview reuses, read every view.)

use dns_handling_events::AGGREGATE_TYPE;
use sqlx::Row as _;

use super::{Store, StoreError};

/// Issuances and failures recorded on one day (UTC).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DayActivity {
    /// The day, `YYYY-MM-DD`.
    pub day: String,
    /// Certificates issued (first issuances and renewals).
    pub issued: i64,
    /// Orders that failed or timed out, and renewal attempts that failed.
    pub failed: i64,
}

/// The event types counted as a failure in [`DayActivity::failed`].
const FAILURE_TYPES: [&str; 3] = ["IssuanceFailed", "IssuanceTimedOut", "RenewalFailed"];

impl Store {
    /// Domains with an open order (a first issuance or a renewal): the partial index of
    /// `open_order`.
    pub async fn open_order_count(&self) -> Result<i64, StoreError> {
        let sql = "SELECT COUNT(*) AS n FROM domain_views WHERE open_order IS NOT NULL";
        Ok(on_pool!(self, pool => sqlx::query(sql)
            .fetch_one(pool)
            .await?
            .try_get("n")?))
    }

    /// Domains holding a certificate whose renewal (or retry) is due by `by`: the `wake_at`
    /// index, which holds each certificate's due time (or its expiry once it is past).
    pub async fn renewals_due_by(
        &self,
        by: chrono::DateTime<chrono::Utc>,
    ) -> Result<i64, StoreError> {
        let sql = "SELECT COUNT(*) AS n FROM domain_views \
                   WHERE wake_at IS NOT NULL AND wake_at <= $1 AND status IN ('active', 'expired')";
        Ok(on_pool!(self, pool => sqlx::query(sql)
            .bind(super::sortable_time(by))
            .fetch_one(pool)
            .await?
            .try_get("n")?))
    }

    /// Issuances and failures per day from `since_day` (`YYYY-MM-DD`, UTC) on, days without
    /// either left out, oldest first: the `(event_type, recorded_at)` index.
    pub async fn activity_since(&self, since_day: &str) -> Result<Vec<DayActivity>, StoreError> {
        let sql = "SELECT substr(recorded_at, 1, 10) AS day, \
                   SUM(CASE WHEN event_type = 'CertificateIssued' THEN 1 ELSE 0 END) AS issued, \
                   SUM(CASE WHEN event_type = 'CertificateIssued' THEN 0 ELSE 1 END) AS failed \
                   FROM events \
                   WHERE event_type IN ('CertificateIssued', $2, $3, $4) AND recorded_at >= $1 \
                   AND aggregate_type = $5 \
                   GROUP BY substr(recorded_at, 1, 10) ORDER BY day";
        let [failed, timed_out, renewal_failed] = FAILURE_TYPES;
        Ok(on_pool!(self, pool => sqlx::query(sql)
            .bind(since_day)
            .bind(failed)
            .bind(timed_out)
            .bind(renewal_failed)
            .bind(AGGREGATE_TYPE)
            .fetch_all(pool)
            .await?
            .iter()
            .map(|row| {
                Ok(DayActivity {
                    day: row.try_get("day")?,
                    issued: row.try_get("issued")?,
                    failed: row.try_get("failed")?,
                })
            })
            .collect::<Result<Vec<_>, sqlx::Error>>()?))
    }
}
