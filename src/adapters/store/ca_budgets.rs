//! The budgets kept for the CA, shared by every replica: what was spent, when, and whether
//! one more unit fits in the window.
//!
//! A unit is one row of `ca_budget_spend`. Rows older than their budget's window are deleted
//! whenever that budget is spent again, so the table holds about one window of each budget.

use chrono::{DateTime, Utc};
use sqlx::Row;

use super::leases::BUDGET_LOCK;
use super::{sortable_time, Store, StoreError};

/// How much of one budget a subject spent in the window.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BudgetUse {
    /// The subject (the ACME directory, or a name).
    pub subject: String,
    /// Units spent in the window.
    pub spent: u32,
    /// When one more unit fits (with fewer than `limit` spent: when the oldest leaves the
    /// window).
    pub frees_at: DateTime<Utc>,
}

/// Units spent by [`Store::spend_budget`], to be given back with [`Store::refund_budget`] when
/// what they were spent for did not happen.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SpentUnits(Vec<i64>);

fn parse_time(text: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(text)
        .map(|time| time.with_timezone(&Utc))
        .unwrap_or_default()
}

/// `$first, $first+1, …` for `count` bound values.
fn placeholders(first: usize, count: usize) -> String {
    (first..first + count)
        .map(|n| format!("${n}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The spent unit that must leave the window before one more fits: the
/// `(spent - limit)`-th oldest (from 0); the window holds at least that many.
const BLOCKING_UNIT: &str = "SELECT spent_at FROM ca_budget_spend WHERE budget = $1 \
     AND subject = $2 AND spent_at > $3 ORDER BY spent_at LIMIT 1 OFFSET $4";

impl Store {
    /// Spends one unit of `budget` for each of `subjects` if every one has a unit left in the
    /// window (`limit` per `window`); otherwise spends nothing and answers when the first
    /// spent-out subject has a unit again. One transaction, serialised across replicas.
    pub async fn spend_budget(
        &self,
        budget: &str,
        subjects: &[&str],
        limit: u32,
        window: chrono::Duration,
    ) -> Result<Result<SpentUnits, DateTime<Utc>>, StoreError> {
        let now = Utc::now();
        let since = sortable_time(now - window);
        let insert = "INSERT INTO ca_budget_spend (budget, subject, spent_at) VALUES ($1, $2, $3) \
                      RETURNING id";
        let forget = "DELETE FROM ca_budget_spend WHERE budget = $1 AND spent_at <= $2";
        let outcome = on_pool!(self, pool => {
            let mut tx = pool.begin().await?;
            if matches!(self, Store::Postgres(_)) {
                sqlx::query("SELECT pg_advisory_xact_lock($1)")
                    .bind(BUDGET_LOCK)
                    .execute(&mut *tx)
                    .await?;
            }
            sqlx::query(forget).bind(budget).bind(&since).execute(&mut *tx).await?;
            let mut refused = None;
            for subject in subjects {
                let blocking: Option<String> = sqlx::query_scalar(BLOCKING_UNIT)
                    .bind(budget)
                    .bind(subject)
                    .bind(&since)
                    .bind(i64::from(limit.saturating_sub(1)))
                    .fetch_optional(&mut *tx)
                    .await?;
                if limit == 0 || blocking.is_some() {
                    let frees_at = blocking.map_or(now + window, |at| parse_time(&at) + window);
                    refused = Some(refused.map_or(frees_at, |known: DateTime<Utc>| known.min(frees_at)));
                }
            }
            match refused {
                Some(frees_at) => Err(frees_at),
                None => {
                    let mut spent = Vec::with_capacity(subjects.len());
                    for subject in subjects {
                        let id: i64 = sqlx::query_scalar(insert)
                            .bind(budget)
                            .bind(subject)
                            .bind(sortable_time(now))
                            .fetch_one(&mut *tx)
                            .await?;
                        spent.push(id);
                    }
                    tx.commit().await?;
                    Ok(SpentUnits(spent))
                }
            }
        });
        Ok(outcome)
    }

    /// Gives back units spent for something that did not happen (an order the CA never got).
    pub async fn refund_budget(&self, units: &SpentUnits) -> Result<(), StoreError> {
        if units.0.is_empty() {
            return Ok(());
        }
        let sql = format!(
            "DELETE FROM ca_budget_spend WHERE id IN ({})",
            placeholders(1, units.0.len())
        );
        on_pool!(self, pool => {
            let mut query = sqlx::query(&sql);
            for id in &units.0 {
                query = query.bind(id);
            }
            query.execute(pool).await?;
        });
        Ok(())
    }

    /// Whether every one of `subjects` has a unit of `budget` left; when one has not, which one
    /// and when it has one again (the soonest of them). One indexed query for any number of
    /// subjects (and one more per spent-out subject).
    pub async fn budget_left(
        &self,
        budget: &str,
        subjects: &[String],
        limit: u32,
        window: chrono::Duration,
    ) -> Result<Result<(), (String, DateTime<Utc>)>, StoreError> {
        let now = Utc::now();
        let Some(first) = subjects.first() else {
            return Ok(Ok(()));
        };
        if limit == 0 {
            return Ok(Err((first.clone(), now + window)));
        }
        let since = sortable_time(now - window);
        let sql = format!(
            "SELECT subject, COUNT(*) AS spent FROM ca_budget_spend \
             WHERE budget = $1 AND spent_at > $2 AND subject IN ({}) GROUP BY subject",
            placeholders(3, subjects.len())
        );
        let counts: Vec<(String, i64)> = on_pool!(self, pool => {
            let mut query = sqlx::query_as(&sql).bind(budget).bind(&since);
            for subject in subjects {
                query = query.bind(subject);
            }
            query.fetch_all(pool).await?
        });
        let mut spent_out: Option<(String, DateTime<Utc>)> = None;
        for (subject, spent) in counts {
            if spent < i64::from(limit) {
                continue;
            }
            let at = self
                .unit_blocking(budget, &subject, spent, limit, &since)
                .await?
                .map_or(now + window, |at| at + window);
            if spent_out.as_ref().is_none_or(|(_, known)| at < *known) {
                spent_out = Some((subject, at));
            }
        }
        Ok(spent_out.map_or(Ok(()), Err))
    }

    /// When the unit of `subject` that must leave the window before one more fits was spent,
    /// with `spent` units spent of `limit`.
    async fn unit_blocking(
        &self,
        budget: &str,
        subject: &str,
        spent: i64,
        limit: u32,
        since: &str,
    ) -> Result<Option<DateTime<Utc>>, StoreError> {
        let offset = (spent - i64::from(limit)).max(0);
        let at: Option<String> = on_pool!(self, pool => sqlx::query_scalar(BLOCKING_UNIT)
            .bind(budget)
            .bind(subject)
            .bind(since)
            .bind(offset)
            .fetch_optional(pool)
            .await?);
        Ok(at.as_deref().map(parse_time))
    }

    /// Records one unit of `budget` spent by `subject` now, whatever is left, and forgets the
    /// units of `budget` that left the `window`.
    pub async fn record_budget_spend(
        &self,
        budget: &str,
        subject: &str,
        window: chrono::Duration,
    ) -> Result<(), StoreError> {
        let now = Utc::now();
        let insert = "INSERT INTO ca_budget_spend (budget, subject, spent_at) VALUES ($1, $2, $3)";
        let forget = "DELETE FROM ca_budget_spend WHERE budget = $1 AND spent_at <= $2";
        on_pool!(self, pool => {
            let mut tx = pool.begin().await?;
            sqlx::query(forget)
                .bind(budget)
                .bind(sortable_time(now - window))
                .execute(&mut *tx)
                .await?;
            sqlx::query(insert)
                .bind(budget)
                .bind(subject)
                .bind(sortable_time(now))
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
        });
        Ok(())
    }

    /// The subjects that spent most of `budget` in the window (at most 100, most spent
    /// first), each with when one more unit fits under `limit`.
    pub async fn budget_use(
        &self,
        budget: &str,
        limit: u32,
        window: chrono::Duration,
    ) -> Result<Vec<BudgetUse>, StoreError> {
        let sql = "SELECT subject, COUNT(*) AS spent, MIN(spent_at) AS oldest \
                   FROM ca_budget_spend WHERE budget = $1 AND spent_at > $2 \
                   GROUP BY subject ORDER BY COUNT(*) DESC, subject LIMIT 100";
        let since = sortable_time(Utc::now() - window);
        let rows = on_pool!(self, pool => sqlx::query(sql)
            .bind(budget)
            .bind(&since)
            .fetch_all(pool)
            .await?
            .iter()
            .map(|row| -> Result<(String, i64, String), sqlx::Error> {
                Ok((row.try_get("subject")?, row.try_get("spent")?, row.try_get("oldest")?))
            })
            .collect::<Result<Vec<_>, _>>()?);
        let mut used = Vec::with_capacity(rows.len());
        for (subject, spent, oldest) in rows {
            let frees_at = if spent > i64::from(limit) && limit > 0 {
                self.unit_blocking(budget, &subject, spent, limit, &since)
                    .await?
                    .unwrap_or_else(|| parse_time(&oldest))
                    + window
            } else {
                parse_time(&oldest) + window
            };
            used.push(BudgetUse {
                subject,
                spent: u32::try_from(spent).unwrap_or(u32::MAX),
                frees_at,
            });
        }
        Ok(used)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A migrated store in a fresh SQLite file.
    async fn store() -> (Store, std::path::PathBuf) {
        let path = std::env::temp_dir().join(format!("budgets-{}.db", uuid::Uuid::new_v4()));
        let url = format!("sqlite://{}", path.display());
        let store = Store::connect_with(&url, std::time::Duration::from_secs(5))
            .await
            .expect("a store");
        store.migrate().await.expect("migrated");
        (store, path)
    }

    async fn spend_at(store: &Store, budget: &str, subject: &str, at: DateTime<Utc>) {
        on_pool!(store, pool => sqlx::query(
            "INSERT INTO ca_budget_spend (budget, subject, spent_at) VALUES ($1, $2, $3)",
        )
        .bind(budget)
        .bind(subject)
        .bind(sortable_time(at))
        .execute(pool)
        .await
        .expect("inserted")
        .rows_affected());
    }

    async fn rows(store: &Store, budget: &str) -> i64 {
        on_pool!(store, pool => sqlx::query_scalar(
            "SELECT COUNT(*) FROM ca_budget_spend WHERE budget = $1",
        )
        .bind(budget)
        .fetch_one(pool)
        .await
        .expect("counted"))
    }

    #[tokio::test]
    async fn a_name_past_the_hundred_most_spent_is_still_held_to_its_budget() {
        let (store, _dir) = store().await;
        let hour = chrono::Duration::hours(1);
        let now = Utc::now();
        // 150 names with two failures each: they fill /ca's hundred and push out the last.
        for n in 0..150 {
            for _ in 0..2 {
                spend_at(&store, "failed", &format!("busy{n:03}.test"), now).await;
            }
        }
        spend_at(&store, "failed", "zzz.test", now).await;
        let names = vec!["zzz.test".to_owned(), "fresh.test".to_owned()];
        let left = store
            .budget_left("failed", &names, 1, hour)
            .await
            .expect("read");
        assert!(left.is_err(), "zzz.test spent its one unit");
        let left = store
            .budget_left("failed", &names[1..], 1, hour)
            .await
            .expect("read");
        assert_eq!(left, Ok(()));
    }

    #[tokio::test]
    async fn a_subject_over_its_limit_frees_a_unit_only_when_enough_units_leave_the_window() {
        let (store, _dir) = store().await;
        let hour = chrono::Duration::hours(1);
        let now = Utc::now();
        // Four spent with a limit of two: a unit fits again when the third oldest leaves.
        for minutes in [50, 40, 30, 20] {
            spend_at(
                &store,
                "failed",
                "n.test",
                now - chrono::Duration::minutes(minutes),
            )
            .await;
        }
        let left = store
            .budget_left("failed", &["n.test".to_owned()], 2, hour)
            .await
            .expect("read");
        let (_, frees_at) = left.expect_err("spent");
        let expected = now - chrono::Duration::minutes(30) + hour;
        assert!(
            (frees_at - expected).num_seconds().abs() <= 1,
            "{frees_at} vs {expected}"
        );
        let used = store.budget_use("failed", 2, hour).await.expect("read");
        assert!((used[0].frees_at - expected).num_seconds().abs() <= 1);
    }

    #[tokio::test]
    async fn recording_a_failed_validation_forgets_those_that_left_the_window() {
        let (store, _dir) = store().await;
        let hour = chrono::Duration::hours(1);
        let old = Utc::now() - chrono::Duration::hours(2);
        for n in 0..5 {
            spend_at(&store, "failed", &format!("old{n}.test"), old).await;
        }
        store
            .record_budget_spend("failed", "new.test", hour)
            .await
            .expect("recorded");
        assert_eq!(rows(&store, "failed").await, 1);
    }

    #[tokio::test]
    async fn a_refunded_unit_is_left_again() {
        let (store, _dir) = store().await;
        let hour = chrono::Duration::hours(1);
        let spent = store
            .spend_budget("orders", &["ca"], 1, hour)
            .await
            .expect("spent")
            .expect("a unit left");
        assert!(store
            .spend_budget("orders", &["ca"], 1, hour)
            .await
            .expect("read")
            .is_err());
        store.refund_budget(&spent).await.expect("refunded");
        assert!(store
            .spend_budget("orders", &["ca"], 1, hour)
            .await
            .expect("read")
            .is_ok());
    }
}
