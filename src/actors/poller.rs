//! `OrderPoller`: one actor per pending order. It looks the challenge record up every poll
//! interval until the deadline, then finishes the order with the CA, reporting each fact back
//! to the aggregate as a command.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use chrono::Utc;
use cqrs_es::AggregateError;
use dns_handling_events::{FailureReason, OrderDetails, Validation};

use super::messages::{PendingOrder, PollerStopped, Shutdown};
use crate::adapters::acme::AcmeError;
use crate::app_state::{AppState, CommandOrigin};
use crate::domain::aggregate::{CustomDomainCommand, DomainError};
use crate::metrics::METRICS;
use crate::tasks::AbortOnDrop;
use crate::use_cases::execute;

const ACTOR_NAME: &str = "order-poller";

/// What one poll decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PollOutcome {
    /// Nothing final happened; poll again later.
    Waiting,
    /// The order reached an end (issued, failed, timed out, or superseded): stop polling.
    Finished,
}

/// What a poller remembers between polls (nothing that is not also derivable from events).
#[derive(Debug, Clone, Default)]
pub struct PollerMemory {
    /// Every record was seen and recorded; the order is with the CA now.
    record_seen: bool,
    /// The names whose value the last lookup did not find (`None` before the first lookup).
    unseen_names: Option<Vec<String>>,
    /// The last transient ACME failure, reported if the deadline passes before it clears.
    last_acme_error: Option<String>,
    /// Transient ACME failures in a row: the next attempt backs off exponentially.
    acme_failures_in_a_row: u32,
    /// Lookups that did not find every record yet.
    lookups_unseen: u32,
    /// The CA said not to come back before then (`Retry-After`).
    not_before: Option<chrono::DateTime<Utc>>,
    /// The order's failed validation was counted against its names' budget: a poll that
    /// runs again (its `OrderFailed` not recorded for a store error) does not count it twice.
    failed_validation_counted: bool,
    /// The feed position of the event that opened the order (a delegated order's, once read).
    opened_at: Option<i64>,
}

/// The first wait of a delegated order's lookups. The service publishes its records itself
/// (every replica's zone follows the feed within milliseconds), so the CA is told at once rather
/// than a poll interval later: lookups start this soon and double until they reach the interval.
const DELEGATED_FIRST_WAIT: Duration = Duration::from_millis(50);

impl PollerMemory {
    /// The wait before the next poll: the interval, doubled for each transient ACME failure in
    /// a row (up to 32 times), so an unavailable CA is not hammered.
    pub fn delay(&self, interval: Duration) -> Duration {
        interval.saturating_mul(1u32 << self.acme_failures_in_a_row.min(5))
    }

    /// The wait before the next lookup of a delegated order's records, until they are seen.
    pub fn delegated_delay(&self, interval: Duration) -> Duration {
        DELEGATED_FIRST_WAIT
            .saturating_mul(1u32 << self.lookups_unseen.min(16))
            .min(interval)
    }
}

/// How a refused command ends the poll: a refusal means the order is no longer this poller's
/// business (already issued, failed, or replaced by a newer order).
fn settle(result: Result<(), AggregateError<DomainError>>, domain_id: &str) -> PollOutcome {
    match result {
        Ok(()) => PollOutcome::Finished,
        Err(AggregateError::UserError(refusal)) => {
            tracing::info!(%domain_id, %refusal, "order no longer pending; poller stops");
            PollOutcome::Finished
        }
        Err(error) => {
            // The store did not answer (or another writer won a race): keep the order and try
            // again at the next poll, rather than dropping it.
            tracing::warn!(%domain_id, %error, "could not record the outcome; will retry");
            PollOutcome::Waiting
        }
    }
}

/// One poll of one order: time out, or look the record up and, once it is there, finish the
/// order with the CA.
///
/// The futures of the rare steps (recording a command, checking the lease, the ACME round
/// trips) are boxed: inline, they made every poll's future 18 kB, and all the pollers' polls
/// are alive at once while their lookups wait for a turn (360 MB for 20,000 pending orders).
pub async fn poll_once(
    state: Arc<AppState>,
    pending: PendingOrder,
    mut memory: PollerMemory,
) -> (PollOutcome, PollerMemory) {
    let origin = || CommandOrigin::actor(ACTOR_NAME);
    let domain_id = pending.domain_id.as_str();
    let order = &pending.order;
    let now = Utc::now();
    if now >= order.deadline {
        let command = match (&memory.record_seen, &memory.last_acme_error) {
            (true, last_error) => CustomDomainCommand::OrderFailed {
                order_id: order.order_id.clone(),
                reason: FailureReason::new(
                    FailureReason::ACME_UNAVAILABLE,
                    last_error
                        .clone()
                        .unwrap_or_else(|| "the CA did not complete the order in time".into()),
                ),
                at: now,
            },
            (false, _) => CustomDomainCommand::TimedOut {
                order_id: order.order_id.clone(),
                unseen_names: memory.unseen_names.clone().unwrap_or_else(|| {
                    order
                        .challenges
                        .iter()
                        .map(|c| c.identifier.clone())
                        .collect()
                }),
                at: now,
            },
        };
        let result = Box::pin(execute(&state, domain_id, command, origin())).await;
        if result.is_ok() && pending.renewal {
            METRICS.renewal_finished("failed");
        }
        return (settle(result, domain_id), memory);
    }

    if !memory.record_seen {
        let values = match look_up_challenge_records(&state, order).await {
            Ok(values) => values,
            Err(error) => {
                METRICS.txt_poll("lookup_failed");
                tracing::debug!(%domain_id, %error, "TXT lookup failed; polling on");
                // A failing lookup slows a delegated order's lookups down too, or a resolver
                // that fails fast would be asked every 50 ms until the deadline.
                memory.lookups_unseen += 1;
                return (PollOutcome::Waiting, memory);
            }
        };
        // Every value at its own name, all at once: the CA is told only when it can validate
        // every authorization, since one it finds missing fails the whole order.
        let unseen: Vec<String> = order
            .challenges
            .iter()
            .filter(|challenge| {
                !values
                    .get(&challenge.challenge_domain)
                    .is_some_and(|found| found.contains(&challenge.expected_txt_value))
            })
            .map(|challenge| challenge.identifier.clone())
            .collect();
        if !unseen.is_empty() {
            METRICS.txt_poll("not_found");
            memory.unseen_names = Some(unseen);
            memory.lookups_unseen += 1;
            return (PollOutcome::Waiting, memory);
        }
        METRICS.txt_poll("found");
        // Found on the nameserver asked; the CA may ask another replica's, which serves the
        // values only once its zone follower has applied the order's request.
        if order.validation == Validation::Delegated
            && !Box::pin(every_live_zone_serves(&state, &pending, &mut memory)).await
        {
            // Not yet served by every nameserver: a deadline now ends it as unseen records.
            let identifiers = order.challenges.iter().map(|c| c.identifier.clone());
            memory.unseen_names = Some(identifiers.collect());
            memory.lookups_unseen += 1;
            return (PollOutcome::Waiting, memory);
        }
        memory.unseen_names = Some(Vec::new());
        let observed = CustomDomainCommand::TxtObserved {
            order_id: order.order_id.clone(),
            observed_values: values,
            resolver: state.dns.describe(),
            at: Utc::now(),
        };
        match Box::pin(execute(&state, domain_id, observed, origin())).await {
            Ok(()) => memory.record_seen = true,
            Err(AggregateError::UserError(DomainError::DeadlinePassed { .. })) => {
                return (PollOutcome::Waiting, memory);
            }
            Err(other) => return (settle(Err(other), domain_id), memory),
        }
    }

    // Only the lease holder talks to the CA about an order: a replica that was stalled past
    // its lease (and may have been replaced) must not finalize the order a second time.
    match Box::pin(state.store.holds_lease(domain_id, &state.replica_id)).await {
        Ok(true) => {}
        Ok(false) => {
            tracing::warn!(%domain_id, "lease no longer held; leaving the order to its holder");
            return (PollOutcome::Finished, memory);
        }
        Err(error) => {
            tracing::warn!(%domain_id, %error, "could not check the lease; will retry");
            return (PollOutcome::Waiting, memory);
        }
    }
    // A task of its own, which stopping the poller does not end: once the CSR may have reached
    // the CA, a poller stopped meanwhile (its domain removed on this replica) must not abandon
    // the certificate the CA issues, which the completion records, or revokes when its domain
    // is gone. A panic in it is the poll's own, as before.
    let completion = actix_web::rt::spawn(complete(state.clone(), pending.clone(), memory));
    match completion.await {
        Ok(completed) => completed,
        Err(error) if error.is_panic() => std::panic::resume_unwind(error.into_panic()),
        Err(error) => {
            tracing::warn!(%domain_id, %error, "the completion of the order did not finish; will retry");
            let memory = PollerMemory {
                record_seen: true,
                ..PollerMemory::default()
            };
            (PollOutcome::Waiting, memory)
        }
    }
}

/// Finishes the order with the CA, once its records were seen and the lease checked, and
/// records the outcome.
async fn complete(
    state: Arc<AppState>,
    pending: PendingOrder,
    mut memory: PollerMemory,
) -> (PollOutcome, PollerMemory) {
    let origin = || CommandOrigin::actor(ACTOR_NAME);
    let domain_id = pending.domain_id.as_str();
    let order = &pending.order;
    tracing::info!(%domain_id, order_id = %order.order_id, "completing order with the CA");
    // The key is the custody's to keep (stored by order before any CSR is sent); the CA
    // conversation only asks for it when the order is ready to finalize.
    let key = state.certificate_keys.for_order(domain_id, order);
    let acme = state.issuers.at(&order.ca_directory);
    let command = match Box::pin(acme.complete_order(order, &key)).await {
        Ok(certificate) => CustomDomainCommand::OrderFinalized {
            certificate,
            at: Utc::now(),
        },
        Err(AcmeError::Refused(reason)) => {
            if reason.code == "challenge_invalid" && !memory.failed_validation_counted {
                spend_failed_validations(&state, order, &reason.detail).await;
                memory.failed_validation_counted = true;
            }
            CustomDomainCommand::OrderFailed {
                order_id: order.order_id.clone(),
                reason,
                at: Utc::now(),
            }
        }
        Err(AcmeError::RateLimited {
            detail,
            retry_after,
        }) => {
            tracing::warn!(%domain_id, %detail, ?retry_after, "the CA refused for now; waiting");
            memory.last_acme_error = Some(detail);
            memory.not_before = retry_after;
            memory.acme_failures_in_a_row += 1;
            return (PollOutcome::Waiting, memory);
        }
        Err(error) => {
            tracing::warn!(%domain_id, %error, "ACME step failed; retrying at the next poll");
            memory.last_acme_error = Some(error.to_string());
            memory.acme_failures_in_a_row += 1;
            return (PollOutcome::Waiting, memory);
        }
    };
    let issued_chain = match &command {
        CustomDomainCommand::OrderFinalized { certificate, .. } => {
            Some(certificate.chain_pem.clone())
        }
        _ => None,
    };
    let finalized = issued_chain.is_some();
    let result = Box::pin(execute(&state, domain_id, command, origin())).await;
    if let (Some(chain_pem), Err(AggregateError::UserError(DomainError::Removed))) =
        (&issued_chain, &result)
    {
        let outcome = Box::pin(revoke_orphan(&state, domain_id, order, chain_pem)).await;
        if outcome == PollOutcome::Waiting {
            memory.acme_failures_in_a_row += 1;
        }
        return (outcome, memory);
    }
    if result.is_ok() && pending.renewal {
        METRICS.renewal_finished(if finalized { "issued" } else { "failed" });
    } else if finalized && result.is_ok() {
        let elapsed = (Utc::now() - pending.requested_at).to_std();
        METRICS
            .issuance_duration
            .observe(elapsed.unwrap_or_default().as_secs_f64());
    }
    (settle(result, domain_id), memory)
}

/// Revokes a certificate the CA issued for an order of a domain removed meanwhile (on another
/// replica, or before this poller was stopped): the aggregate records nothing for a removed
/// domain, so nobody would ever serve, renew or revoke it. Its key goes with the domain's other
/// keys (the key-destruction pass finds every key of a removed domain). A CA that cannot be
/// reached now is asked again at the next poll, which downloads the certificate again.
async fn revoke_orphan(
    state: &AppState,
    domain_id: &str,
    order: &OrderDetails,
    chain_pem: &str,
) -> PollOutcome {
    let acme = state.issuers.at(&order.ca_directory);
    let reason = dns_handling_events::RevocationReason::CessationOfOperation;
    match acme.revoke(chain_pem, reason).await {
        Ok(()) => {
            tracing::info!(%domain_id, order_id = %order.order_id, "the certificate of a removed domain's order was revoked at the CA");
            PollOutcome::Finished
        }
        Err(AcmeError::Refused(refusal)) => {
            // Final (revoked already, say): asking again would not change it.
            let refusal = format!("{}: {}", refusal.code, refusal.detail);
            tracing::warn!(%domain_id, order_id = %order.order_id, %refusal, "the CA refused to revoke the certificate of a removed domain's order");
            PollOutcome::Finished
        }
        Err(error) => {
            tracing::warn!(%domain_id, order_id = %order.order_id, %error, "could not revoke the certificate of a removed domain's order; trying again");
            PollOutcome::Waiting
        }
    }
}

/// Counts a failed validation against the budget of the name the CA's refusal names (its detail
/// starts with the identifier), or of every name of the order when it names none.
async fn spend_failed_validations(state: &AppState, order: &OrderDetails, detail: &str) {
    let identifier = detail.split(": ").next().unwrap_or_default();
    let named: Vec<&String> = order
        .names
        .iter()
        .filter(|name| name.as_str() == identifier)
        .collect();
    let names = if named.is_empty() {
        order.names.iter().collect()
    } else {
        named
    };
    for name in names {
        if let Err(error) = state
            .store
            .record_budget_spend(
                crate::use_cases::budgets::FAILED_VALIDATIONS,
                name,
                state.settings.acme_failed_validation_budget.chrono_window(),
            )
            .await
        {
            tracing::warn!(%name, %error, "could not count a failed validation");
        }
    }
}

/// Whether every live replica's delegation zone has applied the event that opened the order,
/// and so serves its values (see `read::zone_lag`): the CA asks one nameserver of the zone,
/// any of them, and a validation it fails is spent. `false` (wait and ask again; the order's
/// deadline still applies) while one lags or the store cannot say.
async fn every_live_zone_serves(
    state: &AppState,
    pending: &PendingOrder,
    memory: &mut PollerMemory,
) -> bool {
    let (domain_id, order_id) = (pending.domain_id.as_str(), pending.order.order_id.as_str());
    let opened_at = match memory.opened_at {
        Some(position) => position,
        None => match state
            .store
            .order_request_position(domain_id, order_id)
            .await
        {
            Ok(Some(position)) => *memory.opened_at.insert(position),
            Ok(None) => {
                // Not among the domain's latest requests: superseded, which the next command
                // finds; nothing to wait for.
                tracing::warn!(%domain_id, %order_id, "the order's request is not in its domain's latest events");
                return true;
            }
            Err(error) => {
                tracing::warn!(%domain_id, %error, "could not read where the order was opened; will retry");
                return false;
            }
        },
    };
    match state
        .store
        .zone_followers_behind(opened_at, crate::read::zone_lag::LIVE_WITHIN)
        .await
    {
        Ok(behind) if behind.is_empty() => true,
        Ok(behind) => {
            tracing::debug!(%domain_id, %order_id, opened_at, ?behind, "waiting for other replicas' delegation zones");
            false
        }
        Err(error) => {
            tracing::warn!(%domain_id, %error, "could not read the replicas' delegation zones; will retry");
            false
        }
    }
}

/// The TXT values at each of the order's challenge domains (a domain and its wildcard share
/// one, looked up once).
async fn look_up_challenge_records(
    state: &AppState,
    order: &OrderDetails,
) -> Result<BTreeMap<String, Vec<String>>, crate::adapters::dns::DnsError> {
    let mut values = BTreeMap::new();
    for challenge in &order.challenges {
        if !values.contains_key(&challenge.challenge_domain) {
            let found = state.dns.txt_values(&challenge.challenge_domain).await?;
            values.insert(challenge.challenge_domain.clone(), found);
        }
    }
    Ok(values)
}

/// The actor that polls one order.
pub struct OrderPoller {
    state: Arc<AppState>,
    pending: PendingOrder,
    memory: Option<PollerMemory>,
    supervisor: Recipient<PollerStopped>,
    /// True once the order reached an end, or the poller was told to stop: only then is its
    /// stopping the end of the order's polling.
    finished: bool,
}

impl OrderPoller {
    /// A poller for `pending`, reporting its end to `supervisor`.
    pub fn new(
        state: Arc<AppState>,
        pending: PendingOrder,
        supervisor: Recipient<PollerStopped>,
    ) -> Self {
        Self {
            state,
            pending,
            memory: Some(PollerMemory::default()),
            supervisor,
            finished: false,
        }
    }

    /// Runs one poll as a task of its own, so that a poll that panics (or is cancelled) ends
    /// that task alone: the poller sees it, stops as not finished, and its supervisor starts
    /// the order's poller again.
    fn poll(&mut self, ctx: &mut Context<Self>) {
        let memory = self.memory.take().unwrap_or_default();
        let work = AbortOnDrop(actix_web::rt::spawn(poll_once(
            self.state.clone(),
            self.pending.clone(),
            memory,
        )));
        ctx.spawn(work.into_actor(self).map(|joined, actor, ctx| {
            let (outcome, memory) = match joined {
                Ok(polled) => polled,
                Err(error) => {
                    tracing::error!(
                        domain_id = %actor.pending.domain_id, %error,
                        "a poll died without finishing; the poller stops for its supervisor to restart it"
                    );
                    ctx.stop();
                    return;
                }
            };
            actor.memory = Some(memory);
            match outcome {
                PollOutcome::Finished => {
                    actor.finished = true;
                    ctx.stop();
                }
                PollOutcome::Waiting => {
                    let delay = actor.next_delay();
                    ctx.run_later(delay, |actor, ctx| actor.poll(ctx));
                }
            }
        }));
    }

    /// The next poll comes one interval later, but never later than the deadline, so a timeout
    /// is recorded on time.
    fn next_delay(&self) -> Duration {
        let interval = Duration::from_millis(self.pending.order.poll_interval_ms.max(1));
        let delegated = self.pending.order.validation == Validation::Delegated;
        let interval = match &self.memory {
            Some(memory) if delegated && !memory.record_seen => memory.delegated_delay(interval),
            Some(memory) => memory.delay(interval),
            None => interval,
        };
        // Never before the time the CA gave.
        let interval = match self.memory.as_ref().and_then(|memory| memory.not_before) {
            Some(not_before) => {
                interval.max((not_before - Utc::now()).to_std().unwrap_or_default())
            }
            None => interval,
        };
        match (self.pending.order.deadline - Utc::now()).to_std() {
            Ok(until_deadline) if !until_deadline.is_zero() => interval.min(until_deadline),
            // Past the deadline, only recording the end is left; if the store refused it (down,
            // or a broken chain), trying again at once would spin: wait an interval.
            _ => interval,
        }
    }
}

impl Actor for OrderPoller {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        tracing::info!(domain_id = %self.pending.domain_id, order_id = %self.pending.order.order_id, "poller started");
        METRICS.live_pollers.inc();
        self.poll(ctx);
    }

    fn stopped(&mut self, _ctx: &mut Self::Context) {
        METRICS.live_pollers.dec();
        self.supervisor.do_send(PollerStopped {
            domain_id: self.pending.domain_id.clone(),
            order_id: self.pending.order.order_id.clone(),
            finished: self.finished,
        });
    }
}

impl Handler<Shutdown> for OrderPoller {
    type Result = ();

    fn handle(&mut self, _msg: Shutdown, ctx: &mut Self::Context) {
        self.finished = true;
        ctx.stop();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transient_acme_failures_back_off_exponentially_up_to_32_intervals() {
        let interval = Duration::from_secs(1);
        let mut memory = PollerMemory::default();
        assert_eq!(memory.delay(interval), interval);
        memory.acme_failures_in_a_row = 3;
        assert_eq!(memory.delay(interval), Duration::from_secs(8));
        memory.acme_failures_in_a_row = 40;
        assert_eq!(memory.delay(interval), Duration::from_secs(32));
    }

    #[test]
    fn a_delegated_orders_lookups_start_within_milliseconds_and_slow_to_the_interval() {
        let interval = Duration::from_secs(10);
        let mut memory = PollerMemory::default();
        assert_eq!(memory.delegated_delay(interval), DELEGATED_FIRST_WAIT);
        memory.lookups_unseen = 2;
        assert_eq!(memory.delegated_delay(interval), DELEGATED_FIRST_WAIT * 4);
        memory.lookups_unseen = 60;
        assert_eq!(memory.delegated_delay(interval), interval);
    }
}
