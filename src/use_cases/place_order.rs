//! Placing one ACME order for every name of a domain, with the first CA that takes it: the
//! CAA check, the delegation decision, the fallback from CA to CA, and the budgets kept for
//! each.

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use dns_handling_events::{OrderDetails, Validation};
use dns_handling_projections::DomainView;
use instant_acme::CertificateIdentifier;

use super::budgets::{check_name_budgets, refund_order_budget, spend_order_budget};
use super::caa::{permitted_cas, CaaForbids};
use crate::adapters::acme::{AcmeError, CertificateAuthority, CreatedOrder};
use crate::adapters::caa::CaaLookup;
use crate::app_state::AppState;
use crate::domain::delegation::{DelegationRecord, DelegationZone};

/// What a renewal names as the certificate it replaces (ARI), and the directory of the CA that
/// issued it: the only CA told.
pub type Replaces<'a> = (&'a CertificateIdentifier<'static>, &'a str);

/// Why no order was placed.
#[derive(Debug, thiserror::Error)]
pub enum PlaceOrderError {
    /// No CA placed the order (refused, unreachable, rate limited, or a budget spent).
    #[error(transparent)]
    Ca(#[from] AcmeError),
    /// CAA forbids every configured CA (`CAA_CHECK=enforce`): no CA was asked.
    #[error(transparent)]
    Caa(#[from] CaaForbids),
}

/// Places one ACME order for every name of the domain (a renewal names the certificate it
/// `replaces`) and gives what the aggregate records of it: polled every `POLL_INTERVAL`,
/// waiting for its records for `wait`. With delegated validation on, the order is `delegated`
/// when every name's `_acme-challenge` is a CNAME to its record in the service's zone, and
/// `manual`, saying why, when one is not. Only CAs the names' CAA records (`caa`, each name's
/// as the health check before the order found them) permit are asked.
pub async fn place_order(
    state: &AppState,
    view: &DomainView,
    caa: &[CaaLookup],
    replaces: Option<Replaces<'_>>,
    wait: Duration,
) -> Result<OrderDetails, PlaceOrderError> {
    let names = view.names();
    // Before anything is asked of a CA: an order CAA forbids would be spent for nothing.
    let permitted = Box::pin(permitted_cas(state, &names, caa)).await?;
    // Each step boxed: inline, their futures made a request's future overflow the stack of an
    // actix worker.
    let delegation = match state.settings.delegation() {
        Some(zone) => Some((
            Box::pin(delegation_problems(state, &zone, view)).await,
            zone,
        )),
        None => None,
    };
    let (created, ca) =
        Box::pin(create_order_somewhere(state, &names, &permitted, replaces)).await?;
    let settings = &state.settings;
    let mut challenges = created.challenges;
    let (validation, delegation_problem) = match delegation {
        Some((problems, zone)) if problems.is_empty() => {
            for challenge in &mut challenges {
                let record = zone.record_for(&view.verification_token, &challenge.identifier);
                challenge.delegated_to = Some(record.target);
            }
            (Validation::Delegated, None)
        }
        Some((problems, _)) => (Validation::Manual, Some(problems.join("; "))),
        None => (Validation::Manual, None),
    };
    Ok(OrderDetails {
        order_id: uuid::Uuid::now_v7().to_string(),
        order_url: created.order_url,
        names,
        challenges,
        account_id: created.account_id,
        poll_interval_ms: u64::try_from(settings.poll_interval.as_millis()).unwrap_or(u64::MAX),
        deadline: Utc::now()
            + chrono::Duration::from_std(wait).unwrap_or_else(|_| chrono::Duration::minutes(5)),
        key_type: settings.cert_key_type,
        validation,
        delegation_problem,
        ca_directory: ca.directory_url().to_owned(),
    })
}

/// Places the order with the first CA that takes it, within that CA's budget: the next CA is
/// tried when one is unreachable, refuses for now (rate limits, `503`), or its budget is spent;
/// a refusal on policy (the names, the account) is the answer. A renewal that names what it
/// `replaces` (ARI) names it only to the CA that issued it (`replaces`' directory), and only
/// that order is exempt from the budget. When every CA fails, the answer is the first "not
/// now" met (a client can retry after it), else the last failure.
///
/// A CA that said when to come back, or did not answer a moment ago, is skipped without
/// spending its budget; a unit spent for an order the CA never got (it refused, or could not
/// be reached) is given back, so an outage does not spend the budget. A CA not `permitted`
/// (by CAA, at its place among the configured) is passed over.
async fn create_order_somewhere(
    state: &AppState,
    names: &[String],
    permitted: &[bool],
    replaces: Option<Replaces<'_>>,
) -> Result<(CreatedOrder, Arc<dyn CertificateAuthority>), AcmeError> {
    Box::pin(check_name_budgets(state, names)).await?;
    let mut not_now = None;
    let mut last_error = None;
    let configured = state.issuers.configured().iter().enumerate();
    let cas = configured.filter(|(place, _)| permitted.get(*place).copied().unwrap_or(true));
    for (_, ca) in cas {
        let replaces = replaces
            .filter(|(_, directory)| {
                state
                    .issuers
                    .configured_at(directory)
                    .is_some_and(|issuer| issuer.directory_url() == ca.directory_url())
            })
            .map(|(identifier, _)| identifier);
        let attempt = async {
            if let Some(paused) = ca.new_orders_paused() {
                return Err(paused);
            }
            let spent = Box::pin(spend_order_budget(
                state,
                ca.directory_url(),
                replaces.is_some(),
            ))
            .await?;
            let created = Box::pin(ca.create_order(names, replaces)).await;
            if let Err(error) = &created {
                if !error.may_have_placed_order() {
                    refund_order_budget(state, &spent).await;
                }
            }
            created
        };
        match attempt.await {
            Ok(created) => return Ok((created, ca.clone())),
            Err(error @ AcmeError::Refused(_)) => return Err(error),
            Err(error) => {
                tracing::warn!(
                    directory = ca.directory_url(), %error,
                    "this CA cannot take the order now"
                );
                match error {
                    AcmeError::RateLimited { .. } | AcmeError::BudgetSpent { .. }
                        if not_now.is_none() =>
                    {
                        not_now = Some(error);
                    }
                    other => last_error = Some(other),
                }
            }
        }
    }
    Err(not_now
        .or(last_error)
        .unwrap_or_else(|| AcmeError::OrderCreation {
            context: "no CA configured".into(),
            source: None,
        }))
}

/// What stops the domain's names from being validated by delegation: for each distinct
/// `_acme-challenge` name, its CNAME missing, pointing elsewhere, or not looked up. Checked
/// through the configured resolvers, as the CA will follow it.
async fn delegation_problems(
    state: &AppState,
    zone: &DelegationZone,
    view: &DomainView,
) -> Vec<String> {
    let mut records: Vec<DelegationRecord> = Vec::new();
    for name in view.names() {
        let record = zone.record_for(&view.verification_token, &name);
        if !records.contains(&record) {
            records.push(record);
        }
    }
    let lookups = records
        .iter()
        .map(|record| state.dns.cname_target(&record.name));
    let seen = futures::future::join_all(lookups).await;
    records
        .iter()
        .zip(seen)
        .filter_map(|(record, seen)| match seen {
            Ok(seen) => DelegationZone::problem_with(record, seen.as_deref()),
            Err(error) => Some(error.to_string()),
        })
        .collect()
}
