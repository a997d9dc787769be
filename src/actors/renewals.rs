//! `RenewalScheduler`: every `RENEWAL_CHECK_INTERVAL` it looks at the domains whose `wake_at`
//! has come (an index range scan, however many domains there are) and does what each needs:
//! records the expiry of a certificate past its end, schedules the renewal of a new
//! certificate (by the CA's ARI window when it offers one, else by lifetime), or starts a due
//! renewal, whose order then goes to a poller like any other.

use std::sync::Arc;

use actix::prelude::*;
use chrono::{DateTime, Utc};
use cqrs_es::AggregateError;
use dns_handling_events::{FailureReason, KeyDisposal, RenewalReason};
use dns_handling_projections::DomainView;
use futures::StreamExt;

use super::messages::Shutdown;
use super::supervisor::Supervisor;
use crate::adapters::acme::AcmeError;
use crate::app_state::{AppState, CommandOrigin};
use crate::domain::aggregate::{CustomDomainCommand, DomainError};
use crate::domain::renewal::{
    ari_recheck_after, due_by_lifetime, due_in_window, ARI_RECHECK_AFTER_ERROR,
};
use crate::metrics::METRICS;
use crate::use_cases::renew::{renewal_lease, start_renewal, RenewError};
use crate::use_cases::work_lease::WorkLease;
use crate::use_cases::{execute, Pollers};

mod ari_warnings;
use ari_warnings::ari_unavailable;

const ACTOR_NAME: &str = "renewal-scheduler";

/// Domains looked at per tick; the rest wait for the next one, the longest waiting first.
const DOMAINS_PER_TICK: u32 = 1_000;

/// Domains worked on at once within a tick (each is a few store round trips, and an ACME
/// order for a due renewal).
const CONCURRENCY: usize = 8;

/// The kinds of work a tick does, each on its own: a pass still running when the next tick
/// comes is skipped then, without holding the others back. Only [`Pass::Renewals`] and
/// [`Pass::Windows`] ask the CA, so a CA that does not answer delays nothing else.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Pass {
    /// Expiries, key destruction, lapsed work leases: the store alone.
    Custody,
    /// Scheduling and starting the renewals of the due domains.
    Renewals,
    /// Asking the CA again for renewal windows whose time has come.
    Windows,
}

impl Pass {
    const ALL: [Pass; 3] = [Pass::Custody, Pass::Renewals, Pass::Windows];
}

/// The actor that finds due work every tick.
pub struct RenewalScheduler {
    state: Arc<AppState>,
    supervisor: Addr<Supervisor>,
    /// The passes running: each is skipped at a tick rather than run twice at once.
    busy: std::collections::HashSet<Pass>,
}

impl RenewalScheduler {
    /// A scheduler that hands renewal orders to `supervisor`'s pollers.
    pub fn new(state: Arc<AppState>, supervisor: Addr<Supervisor>) -> Self {
        Self {
            state,
            supervisor,
            busy: std::collections::HashSet::new(),
        }
    }

    fn tick(&mut self, ctx: &mut Context<Self>) {
        for pass in Pass::ALL {
            if !self.busy.insert(pass) {
                continue;
            }
            let (state, supervisor) = (self.state.clone(), self.supervisor.clone());
            // Each pass runs as a task of its own: a panic in it (a CA's answer nobody foresaw)
            // ends that pass alone, counted and shown in `/readyz`, and the next tick comes as
            // usual.
            let work = async move { run_pass(pass, &state, &supervisor, Utc::now()).await };
            ctx.spawn(
                crate::tasks::contained(ACTOR_NAME, work)
                    .into_actor(self)
                    .map(move |_, scheduler, _| {
                        scheduler.busy.remove(&pass);
                    }),
            );
        }
    }
}

impl Actor for RenewalScheduler {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        self.tick(ctx);
        ctx.run_interval(
            self.state.settings.renewal_check_interval,
            |scheduler, ctx| {
                scheduler.tick(ctx);
            },
        );
    }
}

impl Handler<Shutdown> for RenewalScheduler {
    type Result = ();

    /// Stops ticking; a tick in progress ends with the actor (what it recorded stays, what it
    /// had not yet is found due again at the next start).
    fn handle(&mut self, _msg: Shutdown, ctx: &mut Self::Context) {
        ctx.stop();
    }
}

/// One pass of a tick over everything due by `now`, a bounded number at a time.
pub async fn run_pass(pass: Pass, state: &AppState, pollers: &dyn Pollers, now: DateTime<Utc>) {
    match pass {
        Pass::Windows => check_renewal_info(state, now).await,
        Pass::Custody => {
            if let Some(due) = due_domains(state, now).await {
                futures::stream::iter(due.iter())
                    .for_each_concurrent(CONCURRENCY, |view| record_expiry(state, view, now))
                    .await;
            }
            destroy_due_keys(state, now).await;
            if let Err(error) = state.store.forget_lapsed_work_leases().await {
                tracing::warn!(%error, "could not delete lapsed work leases");
            }
        }
        Pass::Renewals => {
            if let Some(due) = due_domains(state, now).await {
                futures::stream::iter(due)
                    .for_each_concurrent(CONCURRENCY, |view| tend(state, pollers, view, now))
                    .await;
            }
        }
    }
}

/// The domains with something due by `now`, the longest waiting first.
async fn due_domains(state: &AppState, now: DateTime<Utc>) -> Option<Vec<DomainView>> {
    match state.store.due_domain_views(now, DOMAINS_PER_TICK).await {
        Ok(due) => Some(due),
        Err(error) => {
            tracing::warn!(%error, "could not read the domains due; next tick");
            None
        }
    }
}

/// What one due domain needs.
async fn tend(state: &AppState, pollers: &dyn Pollers, view: DomainView, now: DateTime<Utc>) {
    let Some(certificate) = view.certificate.clone() else {
        return;
    };
    let renewal = view.renewal.clone().unwrap_or_default();
    let origin = || CommandOrigin::actor(ACTOR_NAME);
    if renewal.in_progress {
        return;
    }
    let Some(due_at) = renewal.due_at else {
        schedule_once(state, &view, &certificate, now).await;
        return;
    };
    let due_at = renewal
        .next_attempt_at
        .map_or(due_at, |retry| retry.max(due_at));
    if due_at > now {
        return;
    }
    let reason = renewal.reason.unwrap_or(RenewalReason::Lifetime);
    match start_renewal(state, pollers, &view, reason, origin()).await {
        Ok(order) => {
            tracing::info!(domain_id = %view.id, order_id = %order.order_id, reason = reason.as_str(), "renewal started");
        }
        Err(RenewError::Ca(error)) => {
            // No order: the attempt counts as failed, and the next one follows the schedule.
            tracing::warn!(domain_id = %view.id, %error, "could not place the renewal order");
            let not_before = match &error {
                AcmeError::RateLimited { retry_after, .. } => *retry_after,
                AcmeError::BudgetSpent { retry_after, .. } => Some(*retry_after),
                _ => None,
            };
            let reason = match error {
                AcmeError::Refused(reason) => reason,
                other => FailureReason::new(FailureReason::ACME_UNAVAILABLE, other.to_string()),
            };
            let command = CustomDomainCommand::RenewalAttemptFailed {
                reason,
                not_before,
                at: Utc::now(),
            };
            METRICS.renewal_finished("failed");
            report(
                execute(state, &view.id, command, origin()).await,
                &view.id,
                "failed attempt",
            );
        }
        Err(RenewError::Caa(forbids)) => {
            // No order: the attempt counts as failed for the reason CAA gives, and the next one
            // follows the schedule (the records may have changed by then).
            tracing::warn!(domain_id = %view.id, error = %forbids, "CAA forbids every CA the renewal could go to");
            let command = CustomDomainCommand::RenewalAttemptFailed {
                reason: FailureReason::new(FailureReason::CAA_FORBIDS, forbids.to_string()),
                not_before: None,
                at: Utc::now(),
            };
            METRICS.renewal_finished("failed");
            report(
                execute(state, &view.id, command, origin()).await,
                &view.id,
                "failed attempt",
            );
        }
        Err(RenewError::Refused(refusal)) => {
            report(Err(AggregateError::UserError(refusal)), &view.id, "renewal")
        }
        Err(RenewError::Command(error)) => report(Err(error), &view.id, "renewal"),
        Err(RenewError::Missing(missing)) => {
            tracing::debug!(domain_id = %view.id, %missing, "renewal left: the domain is gone");
        }
        Err(RenewError::Busy(why)) => {
            tracing::debug!(domain_id = %view.id, %why, "renewal left to whoever holds it");
        }
        Err(RenewError::Store(error)) => {
            tracing::warn!(domain_id = %view.id, %error, "could not start the renewal; next tick");
        }
    }
}

/// Schedules a new certificate's renewal under the domain's renewal lease, if it still has no
/// schedule when the lease is had (another replica may have just recorded one).
async fn schedule_once(
    state: &AppState,
    view: &DomainView,
    certificate: &dns_handling_projections::CertificateSummary,
    now: DateTime<Utc>,
) {
    let lease = match WorkLease::take(state, renewal_lease(&view.id), &certificate.id).await {
        Ok(Some(lease)) => lease,
        Ok(None) => return,
        Err(error) => {
            tracing::warn!(domain_id = %view.id, %error, "could not claim the renewal; next tick");
            return;
        }
    };
    match state.store.domain_view(&view.id).await {
        Ok(Some(fresh))
            if fresh.certificate.as_ref().map(|c| &c.id) == Some(&certificate.id)
                && fresh.renewal.as_ref().is_none_or(|r| r.due_at.is_none()) =>
        {
            schedule(state, &fresh, certificate, now).await;
        }
        Ok(_) => {}
        Err(error) => {
            tracing::warn!(domain_id = %view.id, %error, "could not read the domain; next tick");
        }
    }
    lease.release().await;
}

/// Records that a due domain's certificate is past its end. An expiry needs no lease: the
/// aggregate records it once, whoever reports it first (and a renewal in progress keeps its
/// poller's lease, which a claim here would take).
async fn record_expiry(state: &AppState, view: &DomainView, now: DateTime<Utc>) {
    let Some(certificate) = &view.certificate else {
        return;
    };
    if view.status != dns_handling_events::DomainStatus::Active || certificate.not_after > now {
        return;
    }
    let command = CustomDomainCommand::ExpireCertificate {
        certificate_id: certificate.id.clone(),
        at: now,
    };
    let origin = CommandOrigin::actor(ACTOR_NAME);
    report(
        execute(state, &view.id, command, origin).await,
        &view.id,
        "expiry",
    );
}

/// Records when a new certificate is to be renewed: inside the CA's suggested window where it
/// offers ARI (a uniformly drawn moment, at once if the window has passed), else by lifetime.
async fn schedule(
    state: &AppState,
    view: &DomainView,
    certificate: &dns_handling_projections::CertificateSummary,
    now: DateTime<Utc>,
) {
    let (chain, ca_directory) = match state.store.certificate_view(&view.id).await {
        Ok(Some(stored)) => (stored.chain_pem, stored.ca_directory),
        Ok(None) => return,
        Err(error) => {
            tracing::warn!(domain_id = %view.id, %error, "could not read the certificate; next tick");
            return;
        }
    };
    let by_lifetime = due_by_lifetime(
        certificate.not_before,
        certificate.not_after,
        state.settings.renew_before,
    );
    let ca = state.issuers.at(&ca_directory);
    let (due_at, reason, window, check_again) = match ca.renewal_info(&chain).await {
        Ok(Some(answer)) => (
            due_in_window(&answer.window, now, rand::random::<f64>()),
            RenewalReason::Ari,
            Some(answer.window),
            Some(ari_recheck_after(answer.retry_after)),
        ),
        Ok(None) => (by_lifetime, RenewalReason::Lifetime, None, None),
        Err(error) => {
            // Renew by lifetime meanwhile, and ask the CA again later.
            ari_unavailable(&view.id, &error, "renewing by lifetime until it answers");
            (
                by_lifetime,
                RenewalReason::Lifetime,
                None,
                Some(ARI_RECHECK_AFTER_ERROR),
            )
        }
    };
    if let Some(after) = check_again {
        plan_ari_check(state, &view.id, &certificate.id, now, after).await;
    }
    let command = CustomDomainCommand::ScheduleRenewal {
        certificate_id: certificate.id.clone(),
        due_at,
        reason,
        window,
        at: now,
    };
    report(
        execute(state, &view.id, command, CommandOrigin::actor(ACTOR_NAME)).await,
        &view.id,
        "schedule",
    );
}

/// Asks the CA again for a certificate's window `after` from `now`.
async fn plan_ari_check(
    state: &AppState,
    domain_id: &str,
    certificate_id: &str,
    now: DateTime<Utc>,
    after: std::time::Duration,
) {
    let at = now + chrono::Duration::from_std(after).unwrap_or(chrono::Duration::hours(6));
    if let Err(error) = state
        .store
        .set_renewal_info_check(domain_id, certificate_id, at)
        .await
    {
        tracing::warn!(%domain_id, %error, "could not plan the next renewal information check");
    }
}

/// Asks the CA again for the windows whose `Retry-After` has come, and moves a renewal whose
/// due time the new window no longer holds (ARI lets a CA pull renewals forward, e.g. before a
/// mass revocation).
async fn check_renewal_info(state: &AppState, now: DateTime<Utc>) {
    let due = match state
        .store
        .due_renewal_info_checks(now, DOMAINS_PER_TICK)
        .await
    {
        Ok(due) => due,
        Err(error) => {
            tracing::warn!(%error, "could not read the renewal information checks; next tick");
            return;
        }
    };
    futures::stream::iter(due)
        .for_each_concurrent(CONCURRENCY, |(domain_id, certificate_id)| async move {
            recheck(state, &domain_id, &certificate_id, now).await;
        })
        .await;
}

async fn recheck(state: &AppState, domain_id: &str, certificate_id: &str, now: DateTime<Utc>) {
    // A check that cannot be made now waits about a tick (at least a minute).
    let postpone_by = ari_recheck_after(state.settings.renewal_check_interval);
    let Some((view, stored)) =
        ari_check_to_make(&state.store, domain_id, certificate_id, now, postpone_by).await
    else {
        return;
    };
    let ca = state.issuers.at(&stored.ca_directory);
    match ca.renewal_info(&stored.chain_pem).await {
        Ok(Some(answer)) => {
            let renewal = view.renewal.clone().unwrap_or_default();
            let inside = renewal.reason == Some(RenewalReason::Ari)
                && renewal
                    .due_at
                    .is_some_and(|due| due >= answer.window.start && due <= answer.window.end);
            if !inside {
                let command = CustomDomainCommand::ScheduleRenewal {
                    certificate_id: certificate_id.to_owned(),
                    due_at: due_in_window(&answer.window, now, rand::random::<f64>()),
                    reason: RenewalReason::Ari,
                    window: Some(answer.window.clone()),
                    at: now,
                };
                let origin = CommandOrigin::actor(ACTOR_NAME);
                report(
                    execute(state, domain_id, command, origin).await,
                    domain_id,
                    "reschedule",
                );
            }
            let after = ari_recheck_after(answer.retry_after);
            postpone_ari_check(&state.store, domain_id, certificate_id, now, after).await;
        }
        Ok(None) => {
            let _ = state
                .store
                .clear_renewal_info_check(domain_id, certificate_id)
                .await;
        }
        Err(error) => {
            ari_unavailable(domain_id, &error, "asking again later");
            let after = ARI_RECHECK_AFTER_ERROR;
            postpone_ari_check(&state.store, domain_id, certificate_id, now, after).await;
        }
    }
}

/// The domain's views when a due ARI check of `certificate_id` is to be made now. Its row is
/// deleted only once the certificate is no longer current (renewed, or its domain removed):
/// while a renewal is open, or the views cannot be read (or disagree), the check is moved
/// `postpone_by` later instead, since a renewal may fail and leave the certificate in service,
/// and a store that failed once may answer at the next tick.
async fn ari_check_to_make(
    store: &crate::adapters::store::Store,
    domain_id: &str,
    certificate_id: &str,
    now: DateTime<Utc>,
    postpone_by: std::time::Duration,
) -> Option<(DomainView, dns_handling_projections::CertificateView)> {
    let view = match store.domain_view(domain_id).await {
        Ok(view) => view,
        Err(error) => {
            tracing::warn!(%domain_id, %error, "could not read the domain; its ARI check waits");
            postpone_ari_check(store, domain_id, certificate_id, now, postpone_by).await;
            return None;
        }
    };
    let current = view.filter(|view| {
        !view.removed
            && view
                .certificate
                .as_ref()
                .is_some_and(|c| c.id == certificate_id)
    });
    let Some(view) = current else {
        // Renewed or removed: the next certificate gets its own schedule.
        if let Err(error) = store
            .clear_renewal_info_check(domain_id, certificate_id)
            .await
        {
            tracing::warn!(%domain_id, %error, "could not drop the ARI check of a replaced certificate");
        }
        return None;
    };
    if view.renewal.as_ref().is_some_and(|r| r.in_progress) {
        postpone_ari_check(store, domain_id, certificate_id, now, postpone_by).await;
        return None;
    }
    match store.certificate_view(domain_id).await {
        Ok(Some(stored)) if stored.id == certificate_id => Some((view, stored)),
        Ok(_) => {
            // The certificate's view is not (or no longer) the one the domain's view names: the
            // next read settles which it is.
            postpone_ari_check(store, domain_id, certificate_id, now, postpone_by).await;
            None
        }
        Err(error) => {
            tracing::warn!(%domain_id, %error, "could not read the certificate; its ARI check waits");
            postpone_ari_check(store, domain_id, certificate_id, now, postpone_by).await;
            None
        }
    }
}

/// Moves `certificate_id`'s next ARI check to `after` from `now`, if its row still names it.
async fn postpone_ari_check(
    store: &crate::adapters::store::Store,
    domain_id: &str,
    certificate_id: &str,
    now: DateTime<Utc>,
    after: std::time::Duration,
) {
    let at = now + chrono::Duration::from_std(after).unwrap_or(chrono::Duration::hours(6));
    if let Err(error) = store
        .postpone_renewal_info_check(domain_id, certificate_id, at)
        .await
    {
        tracing::warn!(%domain_id, %error, "could not plan the next renewal information check");
    }
}

/// Destroys the certificate keys whose time has come (their order ended without a certificate,
/// their certificate expired, their domain was removed): the destruction is recorded first,
/// then the key deleted, so a crash in between only deletes it at the next tick.
async fn destroy_due_keys(state: &AppState, now: DateTime<Utc>) {
    let due = match state
        .store
        .keys_due_for_destruction(now, DOMAINS_PER_TICK)
        .await
    {
        Ok(due) => due,
        Err(error) => {
            tracing::warn!(%error, "could not read the keys due for destruction; next tick");
            return;
        }
    };
    for (order_id, domain_id, why, certificate_id) in due {
        let why: KeyDisposal =
            serde_json::from_value(serde_json::Value::from(why)).unwrap_or(KeyDisposal::OrderEnded);
        let command = CustomDomainCommand::RecordKeyDestroyed {
            order_id: order_id.clone(),
            certificate_id,
            why,
            at: Utc::now(),
        };
        let origin = CommandOrigin::actor(ACTOR_NAME);
        match execute(state, &domain_id, command, origin).await {
            Ok(()) | Err(AggregateError::UserError(DomainError::KeyAlreadyDestroyed { .. })) => {}
            Err(error) => {
                tracing::warn!(%domain_id, %order_id, %error, "key destruction not recorded; next tick");
                continue;
            }
        }
        match state.store.delete_certificate_key(&order_id).await {
            Ok(()) => tracing::info!(%domain_id, %order_id, ?why, "certificate key destroyed"),
            Err(error) => {
                tracing::warn!(%domain_id, %order_id, %error, "key not deleted; next tick")
            }
        }
    }
}

/// Logs what became of a command: a refusal means another replica or request got there first.
fn report(result: Result<(), AggregateError<DomainError>>, domain_id: &str, what: &str) {
    match result {
        Ok(()) => {}
        Err(AggregateError::UserError(refusal)) => {
            tracing::info!(%domain_id, %refusal, what, "renewal step refused; the domain moved on");
        }
        Err(error) => {
            tracing::warn!(%domain_id, %error, what, "renewal step not recorded; next tick")
        }
    }
}

#[cfg(test)]
mod tests;
