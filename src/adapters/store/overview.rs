//! The figures of the console's overview (`GET /overview`) that the views' metrics queries do
//! not give already, each read through an index: open orders, renewals due, and issuances and
//! failures per day. (The counts by status, which the overview reuses, read every view.)

use chrono::{DateTime, Utc};
use dns_handling_events::{DomainStatus, AGGREGATE_TYPE};
use dns_handling_projections::DomainView;
use sqlx::Row as _;

use crate::domain::renewal::due_by_lifetime;

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

    /// Domains holding a certificate whose renewal (or retry) is due by `by`, overdue ones
    /// included. The `wake_at` index narrows the rows (a view wakes no later than its renewal
    /// is due), and each is then judged by [`renewal_due_at`]: a certificate the scheduler has
    /// not planned yet wakes it at once, but its renewal is due only by its lifetime.
    pub async fn renewals_due_by(
        &self,
        by: DateTime<Utc>,
        renew_before: Option<std::time::Duration>,
    ) -> Result<i64, StoreError> {
        let sql = "SELECT payload FROM domain_views \
                   WHERE wake_at IS NOT NULL AND wake_at <= $1 AND status IN ('active', 'expired')";
        let payloads: Vec<String> = on_pool!(self, pool => sqlx::query(sql)
            .bind(super::sortable_time(by))
            .fetch_all(pool)
            .await?
            .iter()
            .map(|row| row.try_get("payload"))
            .collect::<Result<_, _>>()?);
        let mut due = 0;
        for payload in &payloads {
            let view: DomainView = serde_json::from_str(payload)?;
            if renewal_due_at(&view, renew_before).is_some_and(|at| at <= by) {
                due += 1;
            }
        }
        Ok(due)
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

/// When the renewal of the view's certificate is due: the scheduled time (or its failed
/// attempt's retry), else, for a certificate not scheduled yet, its due time by lifetime;
/// while it is `active`, no later than its expiry. `None` with no certificate, or with a
/// renewal under way and nothing to renew by.
fn renewal_due_at(
    view: &DomainView,
    renew_before: Option<std::time::Duration>,
) -> Option<DateTime<Utc>> {
    if view.removed || !matches!(view.status, DomainStatus::Active | DomainStatus::Expired) {
        return None;
    }
    let certificate = view.certificate.as_ref()?;
    let renewal = view.renewal.clone().unwrap_or_default();
    let due = if renewal.in_progress {
        None
    } else {
        Some(match (renewal.due_at, renewal.next_attempt_at) {
            (None, _) => {
                due_by_lifetime(certificate.not_before, certificate.not_after, renew_before)
            }
            (Some(due), None) => due,
            (Some(due), Some(retry)) => due.max(retry),
        })
    };
    let expiry = (view.status == DomainStatus::Active).then_some(certificate.not_after);
    match (due, expiry) {
        (Some(due), Some(expiry)) => Some(due.min(expiry)),
        (due, expiry) => due.or(expiry),
    }
}

#[cfg(test)]
mod tests {
    use chrono::Duration;
    use dns_handling_events::CustomDomainEvent;
    use dns_handling_projections::{CertificateSummary, RenewalView};

    use super::*;
    use crate::adapters::store::ProjectionWrite;

    /// An active domain whose certificate was issued `issued_ago` ago and lives `lifetime`;
    /// its renewal as given (`None`: not scheduled yet).
    fn active(
        id: &str,
        issued_ago: Duration,
        lifetime: Duration,
        renewal: Option<RenewalView>,
    ) -> DomainView {
        let now = Utc::now();
        let registered = CustomDomainEvent::DomainRegistered {
            domain_name: format!("{id}.overview.test"),
            verification_token: "token".into(),
            verification_record_name: format!("_verify.{id}.overview.test."),
            registered_at: now - issued_ago,
            alt_names: Vec::new(),
            tenant: None,
        };
        let mut view = DomainView::from_registration(id, 1, &registered).expect("a view");
        view.status = DomainStatus::Active;
        view.updated_at = now;
        view.last_sequence = 5;
        view.certificate = Some(CertificateSummary {
            id: format!("certificate-{id}"),
            not_before: now - issued_ago,
            not_after: now - issued_ago + lifetime,
            serial: "01".into(),
            revoked_at: None,
            revocation_reason: None,
        });
        view.renewal = renewal;
        view
    }

    fn scheduled(due_at: DateTime<Utc>) -> Option<RenewalView> {
        Some(RenewalView {
            due_at: Some(due_at),
            ..RenewalView::default()
        })
    }

    #[tokio::test]
    async fn a_fresh_certificate_not_yet_scheduled_is_not_a_renewal_due() {
        let path = std::env::temp_dir().join(format!("overview-{}.db", uuid::Uuid::new_v4()));
        let store = Store::connect(&format!("sqlite://{}", path.display()))
            .await
            .expect("connects");
        store.migrate().await.expect("migrates");
        let now = Utc::now();
        let minute = Duration::minutes(1);
        let five_years = Duration::days(5 * 365);
        let views = [
            // Issued a minute ago for five years, not scheduled yet: not due.
            active("fresh", minute, five_years, None),
            // Scheduled in three days: due within the week.
            active(
                "soon",
                Duration::days(60),
                Duration::days(90),
                scheduled(now + Duration::days(3)),
            ),
            // Scheduled in a month: not due.
            active(
                "later",
                minute,
                Duration::days(90),
                scheduled(now + Duration::days(30)),
            ),
            // Not scheduled, but 85 days into 90: due by its lifetime (overdue).
            active("old", Duration::days(85), Duration::days(90), None),
        ];
        store
            .write_projection(ProjectionWrite {
                views: &views,
                certificates: &[],
                removed: &[],
                renamed: &[],
                key_disposals: &[],
                checkpoint: None,
            })
            .await
            .expect("written");

        let due = store
            .renewals_due_by(now + Duration::days(7), None)
            .await
            .expect("counted");
        assert_eq!(
            due, 2,
            "the scheduled one within the week and the old one only"
        );
        // A configured RENEW_BEFORE of five years makes even the fresh one due.
        let renew_before = std::time::Duration::from_secs(5 * 365 * 86_400);
        let due = store
            .renewals_due_by(now + Duration::days(7), Some(renew_before))
            .await
            .expect("counted");
        assert_eq!(due, 3);
        let _ = std::fs::remove_file(path);
    }
}
