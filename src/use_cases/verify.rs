//! Proving ownership of a domain: its token in DNS, or (with delegated validation on) its
//! delegation CNAME.

use chrono::Utc;
use cqrs_es::AggregateError;
use dns_handling_projections::DomainView;

use super::command::{execute, refusal};
use super::{live_view, DomainMissing};
use crate::adapters::dns::DnsError;
use crate::adapters::store::StoreError;
use crate::app_state::{AppState, CommandOrigin};
use crate::domain::aggregate::{CustomDomainCommand, DomainError};

/// Why ownership was not recorded.
#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    /// The domain is unknown or removed.
    #[error(transparent)]
    Missing(#[from] DomainMissing),
    /// The aggregate refused: not pending, or the proof is not in DNS.
    #[error(transparent)]
    Refused(DomainError),
    /// The DNS lookup itself failed.
    #[error(transparent)]
    Lookup(#[from] DnsError),
    /// The proof could not be recorded (a lost race, the store).
    #[error(transparent)]
    Command(AggregateError<DomainError>),
    /// The domain could not be read.
    #[error(transparent)]
    Store(#[from] StoreError),
}

super::command::refusals_apart!(VerifyError);

/// Looks the token up in DNS (or, with delegated validation on, the domain's delegation CNAME)
/// and records what was seen; the aggregate decides whether it proves ownership. Answers the
/// domain as it stands after.
pub async fn verify(
    state: &AppState,
    domain_id: &str,
    origin: CommandOrigin,
) -> Result<DomainView, VerifyError> {
    let view = live_view::<VerifyError>(state, domain_id).await?;
    // Whether the aggregate would take the proof at all (the domain still pending), before
    // DNS is asked: the token itself, as if it were found.
    let probe = CustomDomainCommand::VerifyOwnership {
        observed_values: vec![view.verification_token.clone()],
        delegation: None,
        at: Utc::now(),
    };
    refusal(state, domain_id, probe).await?;
    let zone = state.settings.delegation();
    let values = match state.dns.txt_values(&view.verification_record_name).await {
        Ok(values) => values,
        // With delegation on, the CNAME may prove ownership whatever became of the TXT lookup
        // (with the CNAME in place, that lookup is a lookup in the delegation zone).
        Err(_) if zone.is_some() => Vec::new(),
        Err(error) => return Err(error.into()),
    };
    // The delegation CNAME is looked up only when the token is not there: either proves
    // ownership, and the token is what most owners publish.
    let delegation = match zone {
        Some(zone) if !values.contains(&view.verification_token) => {
            let record = zone.record_for(&view.verification_token, &view.domain_name);
            let seen = state.dns.cname_target(&record.name).await?;
            Some((record, seen))
        }
        _ => None,
    };
    let command = CustomDomainCommand::VerifyOwnership {
        observed_values: values,
        delegation,
        at: Utc::now(),
    };
    execute(state, domain_id, command, origin).await?;
    live_view(state, domain_id).await
}
