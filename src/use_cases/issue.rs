//! A domain's first certificate: placing one order for all its names, recording it and handing
//! it to the pollers; and putting a failed issuance back to `verified`.

use chrono::Utc;
use cqrs_es::AggregateError;
use dns_handling_events::{OrderDetails, Validation};
use dns_handling_projections::DomainView;

use super::caa::CaaForbids;
use super::command::{execute, refusal};
use super::health::check_before_order;
use super::place_order::{place_order, PlaceOrderError};
use super::{live_view, DomainMissing, Pollers};
use crate::adapters::acme::AcmeError;
use crate::adapters::store::StoreError;
use crate::app_state::{AppState, CommandOrigin};
use crate::domain::aggregate::{CustomDomainCommand, DomainError};

/// Why no certificate was asked for.
#[derive(Debug, thiserror::Error)]
pub enum IssueError {
    /// The domain is unknown or removed.
    #[error(transparent)]
    Missing(#[from] DomainMissing),
    /// The aggregate refuses an order now (the domain is not verified, its names changed):
    /// asked before the CA, so nothing was spent.
    #[error(transparent)]
    Refused(DomainError),
    /// No CA placed the order (refused, unreachable, rate limited, or a budget spent).
    #[error(transparent)]
    Ca(#[from] AcmeError),
    /// CAA forbids every configured CA: nothing was asked of any.
    #[error(transparent)]
    Caa(#[from] CaaForbids),
    /// The order could not be recorded (a lost race, the store).
    #[error(transparent)]
    Command(AggregateError<DomainError>),
    /// The domain could not be read.
    #[error(transparent)]
    Store(#[from] StoreError),
}

super::command::refusals_apart!(IssueError);

impl From<PlaceOrderError> for IssueError {
    fn from(error: PlaceOrderError) -> Self {
        match error {
            PlaceOrderError::Ca(error) => Self::Ca(error),
            PlaceOrderError::Caa(forbids) => Self::Caa(forbids),
        }
    }
}

/// A first issuance begun: the domain as it was read, and the order placed and recorded.
#[derive(Debug, Clone)]
pub struct Issuance {
    /// The domain, as read before the order.
    pub view: DomainView,
    /// The order, as the aggregate recorded it.
    pub order: OrderDetails,
}

/// Places one ACME order for the domain and all its alt names, records it and hands it to
/// `pollers`. One at a time per domain within this process (its `DomainLocks`), so concurrent
/// calls do not place one order each.
pub async fn issue(
    state: &AppState,
    pollers: &dyn Pollers,
    domain_id: &str,
    origin: CommandOrigin,
) -> Result<Issuance, IssueError> {
    let lock = state.domain_locks.lock_for(domain_id);
    let _held = lock.lock().await;
    let view = live_view::<IssueError>(state, domain_id).await?;
    // The aggregate decides whether it would record an order for these names now; asked
    // first, so that a domain it refuses (not verified, say) spends nothing of the CA's budget.
    let probe = CustomDomainCommand::RequestCertificate {
        order: order_for(&view),
        at: Utc::now(),
    };
    refusal(state, domain_id, probe).await?;
    let caa = Box::pin(check_before_order(state, &view, origin.clone())).await;
    let settings = &state.settings;
    let order = place_order(state, &view, &caa, None, settings.poll_timeout).await?;
    // The order URL is persisted before any poller exists: from here on a crash resumes this
    // order instead of creating a second one.
    let command = CustomDomainCommand::RequestCertificate {
        order: order.clone(),
        at: Utc::now(),
    };
    execute(state, domain_id, command, origin).await?;
    pollers.start(&view.id, &view.domain_name, &order, false);
    Ok(Issuance { view, order })
}

/// Puts a failed domain back to `verified`, ready for another `issue`.
pub async fn retry(
    state: &AppState,
    domain_id: &str,
    origin: CommandOrigin,
) -> Result<(), IssueError> {
    live_view::<IssueError>(state, domain_id).await?;
    let command = CustomDomainCommand::RetryIssuance { at: Utc::now() };
    execute(state, domain_id, command, origin).await?;
    Ok(())
}

/// An order for the domain's names as `view` has them, placed nowhere: what a question to the
/// aggregate about an order carries (the aggregate looks at its names alone).
pub(super) fn order_for(view: &DomainView) -> OrderDetails {
    OrderDetails {
        order_id: String::new(),
        order_url: String::new(),
        names: view.names(),
        challenges: Vec::new(),
        account_id: String::new(),
        poll_interval_ms: 0,
        deadline: Utc::now(),
        key_type: Default::default(),
        validation: Validation::Manual,
        delegation_problem: None,
        ca_directory: String::new(),
    }
}
