//! Domain health: checking what the DNS says of a domain's names now (routing, delegation,
//! CAA) and recording it, which the aggregate does only when an outcome changed. Called alike
//! by the periodic checker and by `POST /domains/{id}/health`.

use chrono::{DateTime, Utc};
use cqrs_es::AggregateError;
use dns_handling_events::{HealthReport, NameCheck, Validation};
use dns_handling_projections::DomainView;

use super::caa::caa_identities;
use super::command::execute;
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
    let moved_after =
        chrono::Duration::from_std(state.settings.moved_after).unwrap_or(chrono::Duration::MAX);
    let command = CustomDomainCommand::RecordHealth {
        report: report.clone(),
        moved_after,
        at: checked_at,
    };
    let recorded = execute(state, domain_id, command, origin).await;
    METRICS.health_check(if recorded.is_ok() {
        "recorded"
    } else {
        "failed"
    });
    recorded?;
    let after = live_view::<HealthError>(state, domain_id).await?;
    Ok((HealthCheck { report, checked_at }, after))
}

/// What the DNS says of the domain's names now: routing when `ROUTING_TARGETS` is set,
/// delegation when the domain's last order was delegated, CAA unless `CAA_CHECK=off`.
pub async fn health_report(state: &AppState, view: &DomainView) -> HealthReport {
    let names = view.names();
    let (routing, delegation, caa) = futures::future::join3(
        routing(state, &names),
        delegation(state, view),
        caa(state, &names),
    )
    .await;
    HealthReport {
        routing,
        delegation,
        caa,
    }
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

/// Each name's relevant CAA records, judged for the configured CAs whose identities are known.
async fn caa(state: &AppState, names: &[String]) -> Vec<NameCheck> {
    if state.settings.caa_check == CaaCheck::Off {
        return Vec::new();
    }
    let lookups = names
        .iter()
        .map(|name| relevant_caa(state.dns.as_ref(), name));
    let found = futures::future::join_all(lookups).await;
    let relevant: Vec<_> = names
        .iter()
        .zip(&found)
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
        .zip(&found)
        .map(|(name, lookup)| match lookup {
            CaaLookup::Failed(error) => caa_check(name, Err(&error.to_string()), &cas),
            found => match found.for_name(name) {
                Some(relevant) => caa_check(name, Ok(&relevant), &cas),
                None => caa_check(name, Err("lookup failed"), &cas),
            },
        })
        .collect()
}
