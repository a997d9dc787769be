//! Domains by health, for `domains_health{check,outcome}`: each view row carries, in its
//! `health` column, the worst outcome of each check over the domain's names
//! (`routing:ok caa:forbidden`), written with the view; a scrape counts the rows by that column
//! (a pass over its index, as the status gauge's over the status index), never the payloads.

use dns_handling_events::{CheckOutcome, NameCheck};
use dns_handling_projections::DomainView;
use sqlx::Row;

use super::{Store, StoreError};

/// The `health` column of a view: each check the domain has names for, with its worst outcome
/// (`None` for a removed domain or one never checked).
pub(super) fn health_column(view: &DomainView) -> Option<String> {
    let health = view.health.as_ref().filter(|_| !view.removed)?;
    let checks = [
        ("routing", &health.routing),
        ("delegation", &health.delegation),
        ("caa", &health.caa),
    ];
    let summary: Vec<String> = checks
        .into_iter()
        .filter_map(|(check, names)| Some(format!("{check}:{}", worst(names)?.as_str())))
        .collect();
    (!summary.is_empty()).then(|| summary.join(" "))
}

/// The outcome a domain counts under for one check: its worst name's, a problem found over a
/// failed lookup, a failed lookup over `ok`.
fn worst(names: &[NameCheck]) -> Option<CheckOutcome> {
    let rank = |outcome: &CheckOutcome| match outcome {
        CheckOutcome::Ok => 0,
        CheckOutcome::Unknown => 1,
        CheckOutcome::Elsewhere => 2,
        CheckOutcome::Missing => 3,
        CheckOutcome::Forbidden => 4,
    };
    names.iter().map(|name| name.outcome).max_by_key(rank)
}

impl Store {
    /// Live domains by each check's worst outcome, as `((check, outcome), domains)`.
    pub async fn domain_counts_by_health(
        &self,
    ) -> Result<Vec<((String, String), i64)>, StoreError> {
        let sql = "SELECT health, count(*) AS domains FROM domain_views \
                   WHERE health IS NOT NULL GROUP BY health";
        let rows = on_pool!(self, pool => sqlx::query(sql)
            .fetch_all(pool)
            .await?
            .iter()
            .map(|row| Ok((row.try_get::<String, _>("health")?, row.try_get::<i64, _>("domains")?)))
            .collect::<Result<Vec<(String, i64)>, sqlx::Error>>()?);
        let mut counts: Vec<((String, String), i64)> = Vec::new();
        for (health, domains) in rows {
            for check in health.split(' ') {
                let Some((check, outcome)) = check.split_once(':') else {
                    continue;
                };
                let key = (check.to_owned(), outcome.to_owned());
                match counts.iter_mut().find(|(known, _)| *known == key) {
                    Some((_, count)) => *count += domains,
                    None => counts.push((key, domains)),
                }
            }
        }
        Ok(counts)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(outcome: CheckOutcome) -> NameCheck {
        NameCheck {
            name: "shop.example.com".into(),
            outcome,
            expected: String::new(),
            found: String::new(),
        }
    }

    #[test]
    fn a_domain_counts_under_its_worst_name_for_each_check() {
        use CheckOutcome::*;
        assert_eq!(worst(&[check(Ok), check(Unknown)]), Some(Unknown));
        assert_eq!(
            worst(&[check(Unknown), check(Elsewhere), check(Ok)]),
            Some(Elsewhere)
        );
        assert_eq!(worst(&[check(Missing), check(Elsewhere)]), Some(Missing));
        assert_eq!(worst(&[]), None);
    }
}
