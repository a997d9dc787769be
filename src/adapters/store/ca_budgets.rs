//! The budgets kept for the CA, shared by every replica: what was spent, when, and whether
//! one more unit fits in the window.

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
    /// When the oldest of them leaves the window.
    pub frees_at: DateTime<Utc>,
}

fn parse_time(text: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(text)
        .map(|time| time.with_timezone(&Utc))
        .unwrap_or_default()
}

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
    ) -> Result<Result<(), DateTime<Utc>>, StoreError> {
        let now = Utc::now();
        let since = sortable_time(now - window);
        let oldest = "SELECT spent_at FROM ca_budget_spend WHERE budget = $1 AND subject = $2 \
                      AND spent_at > $3 ORDER BY spent_at LIMIT 1 OFFSET $4";
        let insert = "INSERT INTO ca_budget_spend (budget, subject, spent_at) VALUES ($1, $2, $3)";
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
                // The unit that must leave the window before one more fits: with `limit`
                // spent, the oldest; the window holds no more than that.
                let blocking: Option<String> = sqlx::query_scalar(oldest)
                    .bind(budget)
                    .bind(subject)
                    .bind(&since)
                    .bind(i64::from(limit.saturating_sub(1)))
                    .fetch_optional(&mut *tx)
                    .await?;
                if limit == 0 || blocking.is_some() {
                    let first: Option<String> = sqlx::query_scalar(oldest)
                        .bind(budget)
                        .bind(subject)
                        .bind(&since)
                        .bind(0i64)
                        .fetch_optional(&mut *tx)
                        .await?;
                    let frees_at = first.map_or(now + window, |at| parse_time(&at) + window);
                    refused = Some(refused.map_or(frees_at, |known: DateTime<Utc>| known.min(frees_at)));
                }
            }
            if refused.is_none() {
                for subject in subjects {
                    sqlx::query(insert)
                        .bind(budget)
                        .bind(subject)
                        .bind(sortable_time(now))
                        .execute(&mut *tx)
                        .await?;
                }
                tx.commit().await?;
            }
            refused
        });
        Ok(match outcome {
            Some(frees_at) => Err(frees_at),
            None => Ok(()),
        })
    }

    /// Whether `subject` has a unit of `budget` left; when not, when it has one again.
    pub async fn budget_left(
        &self,
        budget: &str,
        subject: &str,
        limit: u32,
        window: chrono::Duration,
    ) -> Result<Result<(), DateTime<Utc>>, StoreError> {
        let now = Utc::now();
        let spent = self.budget_use(budget, window).await?;
        Ok(match spent.iter().find(|used| used.subject == subject) {
            Some(used) if used.spent >= limit => Err(used.frees_at),
            None if limit == 0 => Err(now + window),
            _ => Ok(()),
        })
    }

    /// Records one unit of `budget` spent by `subject` now, whatever is left.
    pub async fn record_budget_spend(&self, budget: &str, subject: &str) -> Result<(), StoreError> {
        let sql = "INSERT INTO ca_budget_spend (budget, subject, spent_at) VALUES ($1, $2, $3)";
        on_pool!(self, pool => sqlx::query(sql)
            .bind(budget)
            .bind(subject)
            .bind(sortable_time(Utc::now()))
            .execute(pool)
            .await?
            .rows_affected());
        Ok(())
    }

    /// Every subject that spent some of `budget` in the window, most spent first.
    pub async fn budget_use(
        &self,
        budget: &str,
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
            .map(|row| -> Result<BudgetUse, sqlx::Error> {
                let spent: i64 = row.try_get("spent")?;
                let oldest: String = row.try_get("oldest")?;
                Ok(BudgetUse {
                    subject: row.try_get("subject")?,
                    spent: u32::try_from(spent).unwrap_or(u32::MAX),
                    frees_at: parse_time(&oldest) + window,
                })
            })
            .collect::<Result<Vec<_>, _>>()?);
        Ok(rows)
    }
}
