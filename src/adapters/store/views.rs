//! The read projections: domain and certificate views, written a batch at a time with the
//! checkpoint of how far they have applied the feed, and read back for the API, the supervisor
//! and the metrics.

use dns_handling_events::{DomainStatus, AGGREGATE_TYPE};
use dns_handling_projections::{CertificateView, DomainView};
use sqlx::Row;

use super::health_counts::health_column;
use super::{sortable_time, Param, Store, StoreError, BATCH_ROWS};

/// The `status` column of a removed domain's view row.
pub(super) const REMOVED_STATUS: &str = "removed";

/// What one projection batch writes (see [`Store::write_projection`]).
#[derive(Debug, Default)]
pub struct ProjectionWrite<'a> {
    /// Domain views to store.
    pub views: &'a [DomainView],
    /// Certificate views to store (one per domain: the current certificate).
    pub certificates: &'a [CertificateView],
    /// Domains removed in this batch, whose names become free.
    pub removed: &'a [&'a str],
    /// Domains whose alt names were replaced in this batch, with every name they have now:
    /// their claims on any other name are given back.
    pub renamed: &'a [(String, Vec<String>)],
    /// Certificate keys whose fate became known in this batch: when each is to be destroyed.
    pub key_disposals: &'a [KeyDisposalMark],
    /// The checkpoint to move, as (projection name, position).
    pub checkpoint: Option<(&'a str, i64)>,
}

/// When a certificate key is to be destroyed, and why: one order's key, or every key of a
/// removed domain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyDisposalMark {
    /// The domain.
    pub domain_id: String,
    /// The order whose key it is. `None` with a `certificate_id`: the key of that certificate;
    /// `None` with neither: every key of the domain.
    pub order_id: Option<String>,
    /// The certificate the key served, if any.
    pub certificate_id: Option<String>,
    /// Why.
    pub why: dns_handling_events::KeyDisposal,
    /// From when.
    pub after: chrono::DateTime<chrono::Utc>,
}

/// The `status` column of a view: removed domains keep their row (for the history) under a
/// status no listing asks for.
fn view_status(view: &DomainView) -> &'static str {
    if view.removed {
        REMOVED_STATUS
    } else {
        view.status.as_str()
    }
}

/// The end of validity of the certificate a domain serves (or served, once `expired`).
fn current_not_after(view: &DomainView) -> Option<chrono::DateTime<chrono::Utc>> {
    let serving = !view.removed
        && matches!(
            view.status,
            DomainStatus::Active | DomainStatus::Expired | DomainStatus::Moved
        );
    view.certificate
        .as_ref()
        .filter(|_| serving)
        .map(|certificate| certificate.not_after)
}

/// How many certificates in service end within each of a few horizons.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExpiryCounts {
    /// Already past their end.
    pub expired: i64,
    /// Ending within a day (expired ones included).
    pub within_1d: i64,
    /// Ending within 7 days (expired ones included).
    pub within_7d: i64,
    /// Ending within 30 days (expired ones included).
    pub within_30d: i64,
    /// Every certificate in service.
    pub all: i64,
}

impl Store {
    /// The figures `GET /metrics` reports from the store, as of `now`.
    pub async fn scrape_figures(
        &self,
        now: chrono::DateTime<chrono::Utc>,
    ) -> Result<crate::metrics::ScrapeFigures, StoreError> {
        let expiring = self.expiry_counts(now).await?;
        Ok(crate::metrics::ScrapeFigures {
            domains_by_status: self.domain_counts_by_status().await?,
            domains_by_health: self.domain_counts_by_health().await?,
            certificates_expiring: [
                ("expired", expiring.expired),
                ("1d", expiring.within_1d),
                ("7d", expiring.within_7d),
                ("30d", expiring.within_30d),
                ("all", expiring.all),
            ],
            renewal_lag_seconds: self
                .most_overdue_wake(now)
                .await?
                .map_or(0, |wake| (now - wake).num_seconds().max(0)),
            renewals_waiting_for_records: self.renewals_waiting().await?,
        })
    }
}

/// Which domains `GET /domains` lists (removed ones never, unless asked by status).
#[derive(Debug, Clone, Copy, Default)]
pub struct DomainFilter<'a> {
    /// Only domains in this status.
    pub status: Option<DomainStatus>,
    /// Only domains whose name contains this text (host-name characters only).
    pub name_contains: Option<&'a str>,
    /// Only the domains of this tenant.
    pub tenant: Option<&'a str>,
}

/// One page of domain views.
#[derive(Debug, Clone)]
pub struct DomainPage {
    /// The views, in id order (ids are time-ordered, so this is registration order).
    pub items: Vec<DomainView>,
    /// The cursor to pass for the next page, if there may be one.
    pub next_cursor: Option<String>,
}

impl Store {
    /// Writes one batch of projection results in one transaction: the domain views (a stored
    /// view is only replaced by one at a higher sequence), the certificate views, the names
    /// freed by removals, and the checkpoint, which therefore never gets ahead of the views.
    pub async fn write_projection(&self, write: ProjectionWrite<'_>) -> Result<(), StoreError> {
        let mut statements: Vec<(String, Vec<Param>)> = Vec::new();
        for chunk in write.views.chunks(BATCH_ROWS) {
            let mut params = Vec::with_capacity(chunk.len() * 10);
            for view in chunk {
                params.push(Param::Text(view.id.clone()));
                params.push(Param::Text(view.domain_name.clone()));
                params.push(Param::Text(view_status(view).to_owned()));
                params.push(Param::Int(
                    i64::try_from(view.last_sequence).unwrap_or(i64::MAX),
                ));
                params.push(Param::Text(serde_json::to_string(view)?));
                params.push(Param::OptionalText(
                    view.open_order().map(|order| order.order_id.clone()),
                ));
                params.push(Param::OptionalText(view.wake_at().map(sortable_time)));
                params.push(Param::OptionalText(
                    current_not_after(view).map(sortable_time),
                ));
                params.push(Param::OptionalText(view.tenant.clone()));
                params.push(Param::OptionalText(health_column(view)));
            }
            statements.push((
                format!(
                    "INSERT INTO domain_views \
                     (id, domain_name, status, last_sequence, payload, open_order, wake_at, not_after, \
                     tenant, health) \
                     VALUES {} ON CONFLICT (id) DO UPDATE SET domain_name = excluded.domain_name, \
                     status = excluded.status, last_sequence = excluded.last_sequence, \
                     payload = excluded.payload, open_order = excluded.open_order, \
                     wake_at = excluded.wake_at, not_after = excluded.not_after, \
                     tenant = excluded.tenant, health = excluded.health \
                     WHERE domain_views.last_sequence < excluded.last_sequence",
                    self.value_rows(chunk.len(), 10)
                ),
                params,
            ));
        }
        for chunk in write.certificates.chunks(BATCH_ROWS) {
            let mut params = Vec::with_capacity(chunk.len() * 2);
            for view in chunk {
                params.push(Param::Text(view.domain_id.clone()));
                params.push(Param::Text(serde_json::to_string(view)?));
            }
            statements.push((
                format!(
                    "INSERT INTO certificate_views (domain_id, payload) VALUES {} \
                     ON CONFLICT (domain_id) DO UPDATE SET payload = excluded.payload",
                    self.value_rows(chunk.len(), 2)
                ),
                params,
            ));
        }
        for id in write.removed {
            statements.push((
                "DELETE FROM domain_names WHERE domain_id = $1".to_owned(),
                vec![Param::Text((*id).to_owned())],
            ));
        }
        for mark in write.key_disposals {
            let why = serde_json::to_value(mark.why)?
                .as_str()
                .unwrap_or_default()
                .to_owned();
            statements.push(match (&mark.order_id, &mark.certificate_id) {
                (None, Some(certificate_id)) => (
                    "UPDATE certificate_keys SET destroy_after = $1, destroy_reason = $2 \
                     WHERE certificate_id = $3 AND domain_id = $4"
                        .to_owned(),
                    vec![
                        Param::Text(sortable_time(mark.after)),
                        Param::Text(why),
                        Param::Text(certificate_id.clone()),
                        Param::Text(mark.domain_id.clone()),
                    ],
                ),
                (Some(order_id), _) => (
                    "UPDATE certificate_keys SET destroy_after = $1, destroy_reason = $2, \
                     certificate_id = $3 WHERE order_id = $4"
                        .to_owned(),
                    vec![
                        Param::Text(sortable_time(mark.after)),
                        Param::Text(why),
                        Param::OptionalText(mark.certificate_id.clone()),
                        Param::Text(order_id.clone()),
                    ],
                ),
                (None, None) => (
                    "UPDATE certificate_keys SET destroy_after = $1, destroy_reason = $2 \
                     WHERE domain_id = $3 AND (destroy_after IS NULL OR destroy_after > $1)"
                        .to_owned(),
                    vec![
                        Param::Text(sortable_time(mark.after)),
                        Param::Text(why),
                        Param::Text(mark.domain_id.clone()),
                    ],
                ),
            });
        }
        for (id, names) in write.renamed {
            let mut params = vec![Param::Text(id.clone())];
            params.extend(names.iter().cloned().map(Param::Text));
            let kept = (2..=params.len())
                .map(|n| format!("${n}"))
                .collect::<Vec<_>>()
                .join(", ");
            statements.push((
                format!(
                    "DELETE FROM domain_names WHERE domain_id = $1 AND domain_name NOT IN ({kept})"
                ),
                params,
            ));
        }
        if let Some((name, position)) = write.checkpoint {
            statements.push((
                "INSERT INTO projection_checkpoints (name, position) VALUES ($1, $2) \
                 ON CONFLICT (name) DO UPDATE SET position = excluded.position \
                 WHERE projection_checkpoints.position < excluded.position"
                    .to_owned(),
                vec![Param::Text(name.to_owned()), Param::Int(position)],
            ));
        }
        on_pool!(self, pool => {
            let mut tx = pool.begin().await?;
            for (sql, params) in &statements {
                let mut query = sqlx::query(sql);
                for param in params {
                    query = match param {
                        Param::Text(text) => query.bind(text.as_str()),
                        Param::Int(number) => query.bind(*number),
                        Param::OptionalText(text) => query.bind(text.as_deref()),
                    };
                }
                query.execute(&mut *tx).await?;
            }
            tx.commit().await?;
        });
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

    /// A page of domain views, optionally of one status and with `name_contains` in their
    /// name, after `cursor` (an id).
    pub async fn list_domain_views(
        &self,
        status: Option<DomainStatus>,
        name_contains: Option<&str>,
        limit: u32,
        cursor: Option<&str>,
    ) -> Result<DomainPage, StoreError> {
        let filter = DomainFilter {
            status,
            name_contains,
            tenant: None,
        };
        self.list_domains(filter, limit, cursor).await
    }

    /// One page of the domains `filter` keeps, in id order, after `cursor`.
    pub async fn list_domains(
        &self,
        filter: DomainFilter<'_>,
        limit: u32,
        cursor: Option<&str>,
    ) -> Result<DomainPage, StoreError> {
        // `name_contains` is checked by the caller to hold only host-name characters, so it
        // carries no LIKE wildcard of its own.
        let sql = "SELECT payload FROM domain_views \
                   WHERE (status = $1 OR ($1 = '' AND status <> 'removed')) AND id > $2 \
                   AND ($4 = '' OR domain_name LIKE $5) AND ($6 = '' OR tenant = $6) \
                   ORDER BY id LIMIT $3";
        let status = filter.status.map(DomainStatus::as_str).unwrap_or("");
        let cursor = cursor.unwrap_or("");
        let name_contains = filter.name_contains.unwrap_or("");
        let pattern = format!("%{name_contains}%");
        let tenant = filter.tenant.unwrap_or("");
        let payloads: Vec<String> = on_pool!(self, pool => sqlx::query(sql)
            .bind(status)
            .bind(cursor)
            .bind(i64::from(limit))
            .bind(name_contains)
            .bind(pattern.as_str())
            .bind(tenant)
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

    /// Every domain with an open order (a first issuance or a renewal): what the supervisor
    /// resumes on start. Read through the partial index of `open_order`, a page at a time.
    pub async fn pending_domain_views(&self) -> Result<Vec<DomainView>, StoreError> {
        let sql = "SELECT id, payload FROM domain_views \
                   WHERE open_order IS NOT NULL AND id > $1 ORDER BY id LIMIT 500";
        let mut pending = Vec::new();
        let mut cursor = String::new();
        loop {
            let rows: Vec<(String, String)> = on_pool!(self, pool => sqlx::query(sql)
                .bind(cursor.as_str())
                .fetch_all(pool)
                .await?
                .iter()
                .map(|row| Ok((row.try_get("id")?, row.try_get("payload")?)))
                .collect::<Result<_, sqlx::Error>>()?);
            let Some((last, _)) = rows.last() else {
                return Ok(pending);
            };
            cursor = last.clone();
            for (_, payload) in &rows {
                pending.push(serde_json::from_str(payload)?);
            }
        }
    }

    /// Up to `limit` domains the renewal scheduler must look at by `now` (a renewal or a retry
    /// due, a certificate expired, or no renewal scheduled yet), the longest waiting first: an
    /// index range scan of `wake_at`, however many domains there are.
    pub async fn due_domain_views(
        &self,
        now: chrono::DateTime<chrono::Utc>,
        limit: u32,
    ) -> Result<Vec<DomainView>, StoreError> {
        let sql = "SELECT payload FROM domain_views \
                   WHERE wake_at IS NOT NULL AND wake_at <= $1 ORDER BY wake_at LIMIT $2";
        let payloads: Vec<String> = on_pool!(self, pool => sqlx::query(sql)
            .bind(sortable_time(now))
            .bind(i64::from(limit))
            .fetch_all(pool)
            .await?
            .iter()
            .map(|row| row.try_get("payload"))
            .collect::<Result<_, _>>()?);
        payloads
            .iter()
            .map(|text| Ok(serde_json::from_str(text)?))
            .collect()
    }

    /// Certificates in service by time to expiry at `now`: one pass over the `not_after` index.
    pub async fn expiry_counts(
        &self,
        now: chrono::DateTime<chrono::Utc>,
    ) -> Result<ExpiryCounts, StoreError> {
        let sql = "SELECT \
                   COALESCE(SUM(CASE WHEN not_after <= $1 THEN 1 ELSE 0 END), 0) AS expired, \
                   COALESCE(SUM(CASE WHEN not_after <= $2 THEN 1 ELSE 0 END), 0) AS within_1d, \
                   COALESCE(SUM(CASE WHEN not_after <= $3 THEN 1 ELSE 0 END), 0) AS within_7d, \
                   COALESCE(SUM(CASE WHEN not_after <= $4 THEN 1 ELSE 0 END), 0) AS within_30d, \
                   COUNT(*) AS all_count \
                   FROM domain_views WHERE not_after IS NOT NULL";
        let day = chrono::Duration::days(1);
        let counts = on_pool!(self, pool => {
            let row = sqlx::query(sql)
                .bind(sortable_time(now))
                .bind(sortable_time(now + day))
                .bind(sortable_time(now + day * 7))
                .bind(sortable_time(now + day * 30))
                .fetch_one(pool)
                .await?;
            ExpiryCounts {
                expired: row.try_get("expired")?,
                within_1d: row.try_get("within_1d")?,
                within_7d: row.try_get("within_7d")?,
                within_30d: row.try_get("within_30d")?,
                all: row.try_get("all_count")?,
            }
        });
        Ok(counts)
    }

    /// Renewals waiting for their records (an order open on a domain that has a certificate):
    /// each needs its TXT records published, by a person where they are published by hand.
    pub async fn renewals_waiting(&self) -> Result<i64, StoreError> {
        let sql = "SELECT COUNT(*) AS waiting FROM domain_views \
                   WHERE open_order IS NOT NULL AND status IN ('active', 'expired')";
        Ok(on_pool!(self, pool => sqlx::query(sql)
            .fetch_one(pool)
            .await?
            .try_get("waiting")?))
    }

    /// The earliest `wake_at` that has passed: how far the renewal scheduler is behind.
    pub async fn most_overdue_wake(
        &self,
        now: chrono::DateTime<chrono::Utc>,
    ) -> Result<Option<chrono::DateTime<chrono::Utc>>, StoreError> {
        let sql = "SELECT wake_at FROM domain_views \
                   WHERE wake_at IS NOT NULL AND wake_at <= $1 ORDER BY wake_at LIMIT 1";
        let wake: Option<String> = on_pool!(self, pool => sqlx::query(sql)
            .bind(sortable_time(now))
            .fetch_optional(pool)
            .await?
            .map(|row| row.try_get("wake_at"))
            .transpose()?);
        Ok(wake
            .and_then(|text| chrono::DateTime::parse_from_rfc3339(&text).ok())
            .map(|time| time.with_timezone(&chrono::Utc)))
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

    /// The stored views of `ids` (those that exist).
    pub async fn domain_views_by_ids(&self, ids: &[&str]) -> Result<Vec<DomainView>, StoreError> {
        let mut views = Vec::with_capacity(ids.len());
        for chunk in ids.chunks(BATCH_ROWS) {
            let sql = format!(
                "SELECT payload FROM domain_views WHERE id IN ({})",
                self.placeholders(chunk.len(), 1).join(",")
            );
            let payloads: Vec<String> = on_pool!(self, pool => {
                let mut query = sqlx::query(&sql);
                for id in chunk {
                    query = query.bind(*id);
                }
                query
                    .fetch_all(pool)
                    .await?
                    .iter()
                    .map(|row| row.try_get("payload"))
                    .collect::<Result<_, _>>()?
            });
            for payload in payloads {
                views.push(serde_json::from_str(&payload)?);
            }
        }
        Ok(views)
    }

    /// Ids of stored domain views whose domain has no event at all.
    pub async fn view_ids_without_events(&self) -> Result<Vec<String>, StoreError> {
        let sql = "SELECT id FROM domain_views WHERE id NOT IN \
                   (SELECT aggregate_id FROM events WHERE aggregate_type = $1) ORDER BY id";
        let ids = on_pool!(self, pool => sqlx::query_scalar(sql)
            .bind(AGGREGATE_TYPE)
            .fetch_all(pool)
            .await?);
        Ok(ids)
    }

    /// How far projection `name` has applied the feed.
    pub async fn checkpoint(&self, name: &str) -> Result<i64, StoreError> {
        let sql = "SELECT position FROM projection_checkpoints WHERE name = $1";
        Ok(on_pool!(self, pool => sqlx::query(sql)
            .bind(name)
            .fetch_optional(pool)
            .await?
            .map(|row| row.try_get("position"))
            .transpose()?)
        .unwrap_or(0))
    }

    /// Empties every read projection and its checkpoint, for a rebuild from zero.
    pub async fn clear_projections(&self) -> Result<(), StoreError> {
        on_pool!(self, pool => {
            let mut tx = pool.begin().await?;
            for sql in [
                "DELETE FROM domain_views",
                "DELETE FROM certificate_views",
                "DELETE FROM projection_checkpoints",
            ] {
                sqlx::query(sql).execute(&mut *tx).await?;
            }
            tx.commit().await?;
        });
        Ok(())
    }

    /// How many domains are in each status (removed ones under `removed`), for the metrics.
    pub async fn domain_counts_by_status(&self) -> Result<Vec<(String, i64)>, StoreError> {
        let sql = "SELECT status, count(*) AS domains FROM domain_views GROUP BY status";
        let counts = on_pool!(self, pool => sqlx::query(sql)
            .fetch_all(pool)
            .await?
            .iter()
            .map(|row| Ok((row.try_get("status")?, row.try_get("domains")?)))
            .collect::<Result<Vec<(String, i64)>, sqlx::Error>>()?);
        Ok(counts)
    }
}
