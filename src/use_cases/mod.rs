//! The use cases: what the service does for a caller, each one function that the HTTP
//! handlers and the renewal scheduler call alike (the CLI's operator commands run no domain
//! command; `dns-handling domains …` goes through the HTTP API). A use case reads what it must, asks
//! the aggregate, the CA and DNS, records the outcome and hands an order to the pollers; it
//! answers its own error, which keeps its cause (the HTTP layer maps it to a status in
//! `http/use_case_errors.rs`).
//!
//! The parts:
//! - `command.rs`: executing a command (decided again after a lost race), and asking the
//!   aggregate what it would answer before anything is spent.
//! - `register.rs`: registering a domain, and replacing its alt names (the claims on names).
//! - `verify.rs`: proving ownership through DNS.
//! - `issue.rs`: a first issuance, and putting a failed one back.
//! - `place_order.rs`: placing one order with the first CA that takes it (delegation, fallback,
//!   budgets); `budgets.rs`: the budgets kept for the CA; `caa.rs`: the CAs CAA lets issue.
//! - `renew.rs`: starting a renewal, under the domain's renewal lease (`work_lease.rs`).
//! - `revoke.rs`: revoking at the CA that issued a certificate, and ordering its replacement.
//! - `remove.rs`: removing a domain (revoking first, when asked).
//! - `keys.rs`: handing out a certificate's private key, recorded first.
//! - `edge_certificate.rs`: the certificate and key serving a TLS edge's handshake name.
//! - `webhook_endpoints.rs`: reading a webhook endpoint as its events make it.
//! - `access_tokens.rs`: making and revoking the tokens the service manages.
//! - `tests/`: the use cases and the scheduler in process, with a scripted CA and a real
//!   SQLite file.

use dns_handling_events::OrderDetails;
use dns_handling_projections::DomainView;

use crate::adapters::store::StoreError;
use crate::app_state::AppState;

pub mod access_tokens;
pub mod budgets;
pub mod caa;
pub mod command;
pub mod edge_certificate;
pub mod health;
pub mod issue;
pub mod keys;
pub mod place_order;
pub mod register;
pub mod remove;
pub mod renew;
pub mod revoke;
pub mod verify;
pub mod webhook_endpoints;
pub mod work_lease;

#[cfg(test)]
pub(crate) mod tests;

pub use command::{execute, refusal};

/// Who carries a recorded order to its end: the supervisor and its pollers in the service.
pub trait Pollers: Send + Sync {
    /// Start polling `order` of `domain_id` (a renewal's when `renewal`), if this replica gets
    /// its lease.
    fn start(&self, domain_id: &str, domain_name: &str, order: &OrderDetails, renewal: bool);

    /// Stop polling `domain_id`'s order at once (the domain was removed).
    fn stop(&self, domain_id: &str);
}

/// A domain that is not there to act on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DomainMissing {
    /// No domain has this id.
    #[error("no domain with id {0}")]
    Unknown(String),
    /// The domain was removed.
    #[error("domain {0} was removed")]
    Removed(String),
}

/// The view of domain `id`, unless it is unknown or removed.
pub async fn live_view<E>(state: &AppState, id: &str) -> Result<DomainView, E>
where
    E: From<DomainMissing> + From<StoreError>,
{
    match state.views.domain_view(id).await? {
        Some(view) if view.removed => Err(DomainMissing::Removed(id.to_owned()).into()),
        Some(view) => Ok(view),
        None => Err(DomainMissing::Unknown(id.to_owned()).into()),
    }
}
