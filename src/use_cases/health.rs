//! Domain health: checking what the DNS says of a domain's names now (routing, delegation,
//! CAA) and recording it, which the aggregate does only when an outcome changed. Called alike
//! by the periodic checker, by `POST /domains/{id}/health` and before every order.

use chrono::{DateTime, Utc};
use cqrs_es::AggregateError;
use dns_handling_events::{HealthReport, NameCheck, Validation};
use dns_handling_projections::DomainView;

use super::caa::caa_identities;
use super::command::{decide, execute};
use super::{live_view, DomainMissing};
use crate::adapters::caa::{relevant_caa, CaaLookup};
use crate::adapters::store::StoreError;
use crate::app_state::{AppState, CommandOrigin};
use crate::domain::aggregate::{CustomDomainCommand, DomainError};
use crate::domain::caa::CaaCa;
use crate::domain::health::{caa_check, delegation_check, routed_names, routing_check, Resolution};
use crate::metrics::METRICS;
use crate::settings::CaaCheck;

/// Why a health check was not recorded.
#[derive(Debug, thiserror::Error)]
pub enum HealthError {
    /// The domain is unknown or removed.
    #[error(transparent)]
    Missing(#[from] DomainMissing),
    /// The aggregate refused the report.
    #[error(transparent)]
    Refused(DomainError),
    /// The report could not be recorded (a lost race, the store).
    #[error(transparent)]
    Command(AggregateError<DomainError>),
    /// The domain could not be read.
    #[error(transparent)]
    Store(#[from] StoreError),
}

super::command::refusals_apart!(HealthError);

/// A check just made: what it found, and when.
#[derive(Debug, Clone)]
pub struct HealthCheck {
    /// What the checks found (a failed lookup as `unknown`, whatever was recorded before).
    pub report: HealthReport,
    /// When the checks were made.
    pub checked_at: DateTime<Utc>,
}

/// Checks domain `domain_id` now and records what changed; answers the check and the domain
/// as it stands after.
pub async fn check_domain(
    state: &AppState,
    domain_id: &str,
    origin: CommandOrigin,
) -> Result<(HealthCheck, DomainView), HealthError> {
    let view = live_view::<HealthError>(state, domain_id).await?;
    let checked_at = Utc::now();
    let report = Box::pin(health_report(state, &view)).await;
    let recorded = record(state, domain_id, report.clone(), checked_at, origin).await?;
    // Most checks find what the last one found and record nothing: the view read before the
    // check is then the domain as it stands, and reading it again would be a third statement
    // per check where two do (at a thousand checks a second, PostgreSQL's API p99 felt it).
    let after = if recorded {
        live_view::<HealthError>(state, domain_id).await?
    } else {
        view
    };
    Ok((HealthCheck { report, checked_at }, after))
}

/// The full check made before every order (first issuance, renewal, manual renewal): recorded
/// like a periodic one (only what changed), and its CAA lookups answered, so that the decision
/// of which CAs may take the order (`caa::permitted_cas`) looks no name up twice. A report that
/// cannot be recorded never holds the order back: it is logged and counted.
pub(super) async fn check_before_order(
    state: &AppState,
    view: &DomainView,
    origin: CommandOrigin,
) -> Vec<CaaLookup> {
    let checked_at = Utc::now();
    let (report, caa) = Box::pin(health_report_and_caa(state, view)).await;
    if let Err(error) = record(state, &view.id, report, checked_at, origin).await {
        tracing::warn!(domain_id = %view.id, %error, "the health check before an order could not be recorded; the order goes on");
    }
    caa
}

/// Gives a report found at `checked_at` to the aggregate (which records only a change), and
/// counts the check; answers whether anything was recorded. The aggregate is asked first and
/// the command executed only on a change: a check that changes nothing costs one load of the
/// domain's events, no transaction.
async fn record(
    state: &AppState,
    domain_id: &str,
    report: HealthReport,
    checked_at: DateTime<Utc>,
    origin: CommandOrigin,
) -> Result<bool, HealthError> {
    let moved_after =
        chrono::Duration::from_std(state.settings.moved_after).unwrap_or(chrono::Duration::MAX);
    let command = CustomDomainCommand::RecordHealth {
        report,
        moved_after,
        at: checked_at,
    };
    let recorded = match decide(state, domain_id, command.clone()).await {
        Ok(events) if events.is_empty() => Ok(false),
        Ok(_) => execute(state, domain_id, command, origin)
            .await
            .map(|()| true),
        Err(error) => Err(error),
    };
    METRICS.health_check(if recorded.is_ok() {
        "recorded"
    } else {
        "failed"
    });
    Ok(recorded?)
}

/// What the DNS says of the domain's names now: routing when `ROUTING_TARGETS` is set,
/// delegation when the domain's last order was delegated, CAA unless `CAA_CHECK=off`.
pub async fn health_report(state: &AppState, view: &DomainView) -> HealthReport {
    Box::pin(health_report_and_caa(state, view)).await.0
}

/// [`health_report`], and the CAA lookup of each name it was made of (none with
/// `CAA_CHECK=off`).
async fn health_report_and_caa(
    state: &AppState,
    view: &DomainView,
) -> (HealthReport, Vec<CaaLookup>) {
    let names = view.names();
    let (routing, delegation, caa) = futures::future::join3(
        routing(state, &names),
        delegation(state, view),
        caa_lookups(state, &names),
    )
    .await;
    let report = HealthReport {
        routing,
        delegation,
        caa: Box::pin(caa_checks(state, &names, &caa)).await,
    };
    (report, caa)
}

/// Each name but the wildcards, resolved through the service's resolvers.
async fn routing(state: &AppState, names: &[String]) -> Vec<NameCheck> {
    let targets = &state.settings.routing_targets;
    if targets.is_empty() {
        return Vec::new();
    }
    let names = routed_names(names);
    let lookups = names.iter().map(|name| state.dns.resolve_addresses(name));
    let resolved = futures::future::join_all(lookups).await;
    names
        .iter()
        .zip(resolved)
        .map(|(name, resolution)| {
            let resolution =
                resolution.unwrap_or_else(|error| Resolution::Failed(error.to_string()));
            routing_check(targets, name, &resolution)
        })
        .collect()
}

/// Each distinct `_acme-challenge` name of a delegated domain (a wildcard shares its base
/// name's), its CNAME looked up.
async fn delegation(state: &AppState, view: &DomainView) -> Vec<NameCheck> {
    let Some(zone) = state.settings.delegation() else {
        return Vec::new();
    };
    let delegated = view
        .order
        .as_ref()
        .is_some_and(|order| order.validation == Validation::Delegated);
    if !delegated {
        return Vec::new();
    }
    let mut records = Vec::new();
    for name in view.names() {
        let record = zone.record_for(&view.verification_token, &name);
        if !records.iter().any(|(_, known)| *known == record) {
            records.push((name, record));
        }
    }
    let lookups = records
        .iter()
        .map(|(_, record)| state.dns.cname_target(&record.name));
    let seen = futures::future::join_all(lookups).await;
    records
        .iter()
        .zip(seen)
        .map(|((name, record), seen)| {
            let reason = seen.as_ref().err().map(ToString::to_string);
            let seen = match (&seen, &reason) {
                (Ok(target), _) => Ok(target.as_deref()),
                (Err(_), Some(reason)) => Err(reason.as_str()),
                (Err(_), None) => Err("lookup failed"),
            };
            delegation_check(name, record, seen)
        })
        .collect()
}

/// Each name's relevant CAA records (none looked up with `CAA_CHECK=off`).
async fn caa_lookups(state: &AppState, names: &[String]) -> Vec<CaaLookup> {
    if state.settings.caa_check == CaaCheck::Off {
        return Vec::new();
    }
    let lookups = names
        .iter()
        .map(|name| relevant_caa(state.dns.as_ref(), name));
    futures::future::join_all(lookups).await
}

/// Each name's relevant CAA records (`found`, in the order of `names`), judged for the
/// configured CAs whose identities are known.
async fn caa_checks(state: &AppState, names: &[String], found: &[CaaLookup]) -> Vec<NameCheck> {
    let relevant: Vec<_> = names
        .iter()
        .zip(found)
        .filter_map(|(name, lookup)| lookup.for_name(name))
        .collect();
    // The CAs' identities are asked for only when some name has records to judge them by.
    let cas: Vec<CaaCa> = if relevant.iter().any(|name| !name.records.is_empty()) {
        Box::pin(caa_identities(state, &relevant))
            .await
            .into_iter()
            .flatten()
            .collect()
    } else {
        Vec::new()
    };
    names
        .iter()
        .zip(found)
        .map(|(name, lookup)| match lookup {
            CaaLookup::Failed(error) => caa_check(name, Err(&error.to_string()), &cas),
            found => match found.for_name(name) {
                Some(relevant) => caa_check(name, Ok(&relevant), &cas),
                None => caa_check(name, Err("lookup failed"), &cas),
            },
        })
        .collect()
}
