//! Starting a renewal: one order for every name the domain has now, naming the certificate it
//! `replaces` where the CA offers ARI, recorded and handed to the pollers, under the domain's
//! renewal lease. The renewal scheduler starts the due ones; a request starts one now.

use chrono::Utc;
use cqrs_es::AggregateError;
use dns_handling_events::{OrderDetails, RenewalReason};
use dns_handling_projections::DomainView;

use super::caa::CaaForbids;
use super::command::{execute, refusal};
use super::health::check_before_order;
use super::issue::order_for;
use super::place_order::{place_order, PlaceOrderError};
use super::work_lease::WorkLease;
use super::{live_view, DomainMissing, Pollers};
use crate::adapters::acme::{certificate_identifier, AcmeError};
use crate::adapters::store::StoreError;
use crate::app_state::{AppState, CommandOrigin};
use crate::domain::aggregate::{CustomDomainCommand, DomainError};
use crate::metrics::METRICS;

/// Why a renewal was not started.
#[derive(Debug, thiserror::Error)]
pub enum RenewError {
    /// The domain is unknown or removed.
    #[error(transparent)]
    Missing(#[from] DomainMissing),
    /// The aggregate refuses a renewal now (no certificate, a renewal open, not due).
    #[error(transparent)]
    Refused(DomainError),
    /// The CA could not be asked for an order (nothing is recorded for a manual renewal; a
    /// scheduled one records the failed attempt).
    #[error(transparent)]
    Ca(#[from] AcmeError),
    /// CAA forbids every configured CA: nothing was asked of any (a scheduled renewal records
    /// the failed attempt).
    #[error(transparent)]
    Caa(#[from] CaaForbids),
    /// The order could not be recorded (a lost race, the store).
    #[error(transparent)]
    Command(AggregateError<DomainError>),
    /// Another replica or request is starting this domain's renewal now, or the domain moved
    /// on since it was read (renewing, renewed, removed): nothing was asked of the CA.
    #[error("{0}")]
    Busy(&'static str),
    /// The store could not be read, or the renewal's lease not taken.
    #[error(transparent)]
    Store(#[from] StoreError),
}

super::command::refusals_apart!(RenewError);

impl From<PlaceOrderError> for RenewError {
    fn from(error: PlaceOrderError) -> Self {
        match error {
            PlaceOrderError::Ca(error) => Self::Ca(error),
            PlaceOrderError::Caa(forbids) => Self::Caa(forbids),
        }
    }
}

/// A renewal begun at a request: the domain as it was read, and the order placed.
#[derive(Debug, Clone)]
pub struct Renewal {
    /// The domain, as read before the order.
    pub view: DomainView,
    /// The renewal order, as the aggregate recorded it.
    pub order: OrderDetails,
}

/// Renews the domain's certificate now, whatever its schedule says (`manual`), under the
/// domain's lock in this process. The certificate in service stays until the new one is issued.
pub async fn renew_now(
    state: &AppState,
    pollers: &dyn Pollers,
    domain_id: &str,
    origin: CommandOrigin,
) -> Result<Renewal, RenewError> {
    let lock = state.domain_locks.lock_for(domain_id);
    let _held = lock.lock().await;
    let view = live_view::<RenewError>(state, domain_id).await?;
    // The aggregate decides whether it would take a renewal now (a certificate, no renewal
    // open), before the CA is asked anything.
    let probe = CustomDomainCommand::RequestRenewal {
        order: order_for(&view),
        reason: RenewalReason::Manual,
        replaces: None,
        at: Utc::now(),
    };
    refusal(state, domain_id, probe).await?;
    let order = start_renewal(state, pollers, &view, RenewalReason::Manual, origin).await?;
    Ok(Renewal { view, order })
}

/// The work lease of a domain's renewal work (`<domain>#renewal`): scheduling and starting a
/// renewal, by the scheduler or a request, on any replica, one at a time. A row of its own,
/// never the domain's order lease: a replica acting on a stale view must not take the lease of
/// the order another replica has just placed and is polling.
pub fn renewal_lease(domain_id: &str) -> String {
    format!("{domain_id}#renewal")
}

/// Places a renewal order for every name the domain has now, records it, and hands it to
/// `pollers`. The order names the certificate it `replaces` where the CA offers ARI.
///
/// Holds the domain's renewal lease throughout (on every replica, one start at a time), and
/// decides on the domain as the store has it once the lease is had: a renewal another replica
/// has just started, or a certificate renewed since `view` was read, is [`RenewError::Busy`]
/// and nothing is asked of the CA.
pub async fn start_renewal(
    state: &AppState,
    pollers: &dyn Pollers,
    view: &DomainView,
    reason: RenewalReason,
    origin: CommandOrigin,
) -> Result<OrderDetails, RenewError> {
    let certificate = view.certificate.as_ref().map_or("", |c| c.id.as_str());
    let Some(lease) = WorkLease::take(state, renewal_lease(&view.id), certificate).await? else {
        return Err(RenewError::Busy(
            "another replica or request is starting this domain's renewal",
        ));
    };
    let started = start_renewal_holding_lease(state, pollers, view, reason, origin).await;
    lease.release().await;
    started
}

/// [`start_renewal`]'s work, under the lease.
async fn start_renewal_holding_lease(
    state: &AppState,
    pollers: &dyn Pollers,
    view: &DomainView,
    reason: RenewalReason,
    origin: CommandOrigin,
) -> Result<OrderDetails, RenewError> {
    let wanted = view.certificate.as_ref().map(|c| c.id.clone());
    let fresh = state.store.domain_view(&view.id).await?;
    let Some(view) = fresh.filter(|fresh| !fresh.removed) else {
        return Err(RenewError::Busy("the domain was removed"));
    };
    if view.renewal.as_ref().is_some_and(|r| r.in_progress) {
        return Err(RenewError::Busy("a renewal is in progress already"));
    }
    if wanted.as_ref() != view.certificate.as_ref().map(|c| &c.id) {
        return Err(RenewError::Busy("the certificate was renewed meanwhile"));
    }
    let view = &view;
    // The domain's health checked and recorded first; a check that finds it moved leaves it
    // unrenewed (the aggregate, asked again, refuses), before anything is asked of a CA.
    let caa = Box::pin(check_before_order(state, view, origin.clone())).await;
    let probe = CustomDomainCommand::RequestRenewal {
        order: order_for(view),
        reason,
        replaces: None,
        at: Utc::now(),
    };
    refusal(state, &view.id, probe).await?;
    // What the renewal replaces, and the CA that issued it: the only one told (ARI).
    let replaces = match state.store.certificate_view(&view.id).await {
        Ok(Some(certificate))
            if ari_offered(state, &certificate.ca_directory, &certificate.chain_pem).await =>
        {
            certificate_identifier(&certificate.chain_pem)
                .ok()
                .map(|identifier| (identifier, certificate.ca_directory))
        }
        _ => None,
    };
    let order = place_order(
        state,
        view,
        &caa,
        replaces
            .as_ref()
            .map(|(identifier, directory)| (identifier, directory.as_str())),
        state.settings.renewal_txt_timeout,
    )
    .await?;
    // Recorded only when the order went to the CA it was named to.
    let replaces = replaces
        .filter(|(_, directory)| {
            state
                .issuers
                .configured_at(directory)
                .is_some_and(|issuer| issuer.directory_url() == order.ca_directory)
        })
        .map(|(identifier, _)| identifier.to_string());
    let command = CustomDomainCommand::RequestRenewal {
        order: order.clone(),
        reason,
        replaces,
        at: Utc::now(),
    };
    execute(state, &view.id, command, origin).await?;
    METRICS.renewal_started(reason.as_str());
    pollers.start(&view.id, &view.domain_name, &order, true);
    Ok(order)
}

/// Whether the CA offers renewal information for this certificate (its directory lists
/// `renewalInfo`); only then does a renewal order name what it replaces. A request for it that
/// fails does not say the CA offers none: during an outage an ARI renewal keeps its exemption
/// from the new-order budget (and an order the CA never gets spends nothing anyway).
async fn ari_offered(state: &AppState, ca_directory: &str, chain_pem: &str) -> bool {
    let ca = state.issuers.at(ca_directory);
    !matches!(ca.renewal_info(chain_pem).await, Ok(None))
}
