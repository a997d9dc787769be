//! Executing a domain's command, and asking the aggregate beforehand what it would answer.

use cqrs_es::event_sink::EventSink;
use cqrs_es::{Aggregate, AggregateContext, AggregateError, EventStore};
use dns_handling_events::CustomDomainEvent;

use crate::app_state::{AppState, CommandOrigin};
use crate::domain::aggregate::{CustomDomainCommand, DomainError};
use crate::domain::renewal::RenewalPolicy;

/// How many times a command is decided again after its append lost a race.
const CONFLICT_RETRIES: u32 = 4;

/// Executes a command on one domain, recording `origin` with its events.
///
/// Another writer may append to the domain between the load and the append (the renewal
/// scheduler, a poller, another replica): the append is then refused as a conflict and
/// nothing is recorded. The command is decided again on the domain as it now stands, a few
/// times, before the conflict reaches the caller: a request should not fail because
/// background work recorded something a moment earlier.
pub async fn execute(
    state: &AppState,
    domain_id: &str,
    command: CustomDomainCommand,
    origin: CommandOrigin,
) -> Result<(), AggregateError<DomainError>> {
    let mut conflicts = 0;
    loop {
        let result = state
            .cqrs
            .execute_with_metadata(domain_id, command.clone(), origin.0.clone())
            .await;
        match result {
            Err(AggregateError::AggregateConflict) if conflicts < CONFLICT_RETRIES => {
                conflicts += 1;
            }
            other => return other,
        }
    }
}

/// What the aggregate answers `command` on the domain as its events make it now, recording
/// nothing: `Ok` when it would take it. A use case asks this before work the command's refusal
/// would waste (a CA's budget, an order at the CA, a DNS lookup), so that the rule stays the
/// aggregate's alone.
pub async fn refusal(
    state: &AppState,
    domain_id: &str,
    command: CustomDomainCommand,
) -> Result<(), AggregateError<DomainError>> {
    decide(state, domain_id, command).await.map(drop)
}

/// The events the aggregate would record for `command` on the domain as its events make it
/// now, recording nothing (none: the command changes nothing). A use case whose command
/// usually changes nothing asks this first and executes only on a change, which spares the
/// usual case the command's transaction and a second load of the domain's events.
pub async fn decide(
    state: &AppState,
    domain_id: &str,
    command: CustomDomainCommand,
) -> Result<Vec<CustomDomainEvent>, AggregateError<DomainError>> {
    let mut context = state.domain_events.load_aggregate(domain_id).await?;
    let mut domain = context.aggregate().clone();
    let policy = RenewalPolicy {
        retry_schedule: state.settings.renewal_retry_schedule.clone(),
    };
    let sink = EventSink::default();
    domain
        .handle(command, &policy, &sink)
        .await
        .map_err(AggregateError::UserError)?;
    Ok(sink.collect().await)
}

/// `From<AggregateError<DomainError>>` for a use case's error: the aggregate's refusal as its
/// `Refused`, any other failure of the command side (a lost race, the store) as its `Command`.
macro_rules! refusals_apart {
    ($error:ty) => {
        impl From<cqrs_es::AggregateError<crate::domain::aggregate::DomainError>> for $error {
            fn from(error: cqrs_es::AggregateError<crate::domain::aggregate::DomainError>) -> Self {
                match error {
                    cqrs_es::AggregateError::UserError(refusal) => Self::Refused(refusal),
                    other => Self::Command(other),
                }
            }
        }
    };
}
pub(crate) use refusals_apart;
