//! `RenewalScheduler`: every `RENEWAL_CHECK_INTERVAL` it looks at the domains whose `wake_at`
//! has come (an index range scan, however many domains there are) and does what each needs:
//! records the expiry of a certificate past its end, schedules the renewal of a new
//! certificate (by the CA's ARI window when it offers one, else by lifetime), or starts a due
//! renewal, whose order then goes to a poller like any other.

use std::sync::Arc;

use actix::prelude::*;
use chrono::{DateTime, Utc};
use cqrs_es::AggregateError;
use dns_handling_events::{FailureReason, KeyDisposal, OrderDetails, RenewalReason};
use dns_handling_projections::DomainView;
use futures::StreamExt;

use super::messages::{PendingOrder, Shutdown, StartPolling};
use super::supervisor::Supervisor;
use super::work_lease::WorkLease;
use crate::adapters::acme::{certificate_identifier, AcmeError};
use crate::adapters::store::StoreError;
use crate::app_state::{AppState, CommandOrigin};
use crate::domain::aggregate::{CustomDomainCommand, DomainError};
use crate::domain::renewal::{
    ari_recheck_after, due_by_lifetime, due_in_window, ARI_RECHECK_AFTER_ERROR,
};
use crate::metrics::METRICS;

const ACTOR_NAME: &str = "renewal-scheduler";

/// Domains looked at per tick; the rest wait for the next one, the longest waiting first.
const DOMAINS_PER_TICK: u32 = 1_000;

/// Domains worked on at once within a tick (each is a few store round trips, and an ACME
/// order for a due renewal).
const CONCURRENCY: usize = 8;

/// Why a renewal could not be started.
#[derive(Debug, thiserror::Error)]
pub enum RenewalStartError {
    /// The CA could not be asked for an order (nothing is recorded for a manual renewal; a
    /// scheduled one records the failed attempt).
    #[error(transparent)]
    Acme(#[from] AcmeError),
    /// The aggregate refused, or the store failed.
    #[error(transparent)]
    Command(#[from] AggregateError<DomainError>),
    /// Another replica or request is starting this domain's renewal now, or the domain moved
    /// on since it was read (renewing, renewed, removed): nothing was asked of the CA.
    #[error("{0}")]
    Busy(String),
    /// The store could not be read, or the renewal's lease not taken.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Places a renewal order for every name the domain has now, records it, and hands it to a
/// poller. The order names the certificate it `replaces` where the CA offers ARI.
///
/// Holds the domain's renewal lease throughout (on every replica, one start at a time), and
/// decides on the domain as the store has it once the lease is had: a renewal another replica
/// has just started, or a certificate renewed since `view` was read, is [`RenewalStartError::Busy`]
/// and nothing is asked of the CA.
pub async fn start_renewal(
    services: &AppState,
    supervisor: &Addr<Supervisor>,
    view: &DomainView,
    reason: RenewalReason,
    origin: CommandOrigin,
) -> Result<OrderDetails, RenewalStartError> {
    let certificate = view.certificate.as_ref().map_or("", |c| c.id.as_str());
    let Some(lease) = WorkLease::take(services, renewal_lease(&view.id), certificate).await? else {
        return Err(RenewalStartError::Busy(
            "another replica or request is starting this domain's renewal".into(),
        ));
    };
    let started = start_renewal_holding_lease(services, supervisor, view, reason, origin).await;
    lease.release().await;
    started
}

/// [`start_renewal`]'s work, under the lease.
async fn start_renewal_holding_lease(
    services: &AppState,
    supervisor: &Addr<Supervisor>,
    view: &DomainView,
    reason: RenewalReason,
    origin: CommandOrigin,
) -> Result<OrderDetails, RenewalStartError> {
    let wanted = view.certificate.as_ref().map(|c| c.id.clone());
    let fresh = services.store.domain_view(&view.id).await?;
    let Some(view) = fresh.filter(|fresh| !fresh.removed) else {
        return Err(RenewalStartError::Busy("the domain was removed".into()));
    };
    if view.renewal.as_ref().is_some_and(|r| r.in_progress) {
        return Err(RenewalStartError::Busy(
            "a renewal is in progress already".into(),
        ));
    }
    if wanted.as_ref() != view.certificate.as_ref().map(|c| &c.id) {
        return Err(RenewalStartError::Busy(
            "the certificate was renewed meanwhile".into(),
        ));
    }
    let view = &view;
    // What the renewal replaces, and the CA that issued it: the only one told (ARI).
    let replaces = match services.store.certificate_view(&view.id).await {
        Ok(Some(certificate))
            if ari_offered(services, &certificate.ca_directory, &certificate.chain_pem).await =>
        {
            certificate_identifier(&certificate.chain_pem)
                .ok()
                .map(|identifier| (identifier, certificate.ca_directory))
        }
        _ => None,
    };
    let order = services
        .place_order(
            view,
            replaces
                .as_ref()
                .map(|(identifier, directory)| (identifier, directory.as_str())),
            services.settings.renewal_txt_timeout,
        )
        .await?;
    // Recorded only when the order went to the CA it was named to.
    let replaces = replaces
        .filter(|(_, directory)| {
            services
                .configured_acme(directory)
                .is_some_and(|issuer| issuer.directory_url() == order.ca_directory)
        })
        .map(|(identifier, _)| identifier.to_string());
    let command = CustomDomainCommand::RequestRenewal {
        order: order.clone(),
        reason,
        replaces,
        at: Utc::now(),
    };
    services.execute(&view.id, command, origin).await?;
    METRICS.renewal_started(reason.as_str());
    supervisor.do_send(StartPolling(PendingOrder {
        domain_id: view.id.clone(),
        domain_name: view.domain_name.clone(),
        order: order.clone(),
        renewal: true,
        requested_at: Utc::now(),
    }));
    Ok(order)
}

/// Whether the CA offers renewal information for this certificate (its directory lists
/// `renewalInfo`); only then does a renewal order name what it replaces. A request for it that
/// fails does not say the CA offers none: during an outage an ARI renewal keeps its exemption
/// from the new-order budget (and an order the CA never gets spends nothing anyway).
async fn ari_offered(services: &AppState, ca_directory: &str, chain_pem: &str) -> bool {
    let acme = services.acme_for(ca_directory);
    !matches!(acme.renewal_info(chain_pem).await, Ok(None))
}

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
    services: Arc<AppState>,
    supervisor: Addr<Supervisor>,
    /// The passes running: each is skipped at a tick rather than run twice at once.
    busy: std::collections::HashSet<Pass>,
}

impl RenewalScheduler {
    /// A scheduler that hands renewal orders to `supervisor`'s pollers.
    pub fn new(services: Arc<AppState>, supervisor: Addr<Supervisor>) -> Self {
        Self {
            services,
            supervisor,
            busy: std::collections::HashSet::new(),
        }
    }

    fn tick(&mut self, ctx: &mut Context<Self>) {
        for pass in Pass::ALL {
            if !self.busy.insert(pass) {
                continue;
            }
            let (services, supervisor) = (self.services.clone(), self.supervisor.clone());
            // Each pass runs as a task of its own: a panic in it (a CA's answer nobody foresaw)
            // ends that pass alone, counted and shown in `/readyz`, and the next tick comes as
            // usual.
            let work = async move { run_pass(pass, &services, &supervisor, Utc::now()).await };
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
            self.services.settings.renewal_check_interval,
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
pub async fn run_pass(
    pass: Pass,
    services: &AppState,
    supervisor: &Addr<Supervisor>,
    now: DateTime<Utc>,
) {
    match pass {
        Pass::Windows => check_renewal_info(services, now).await,
        Pass::Custody => {
            if let Some(due) = due_domains(services, now).await {
                futures::stream::iter(due.iter())
                    .for_each_concurrent(CONCURRENCY, |view| record_expiry(services, view, now))
                    .await;
            }
            destroy_due_keys(services, now).await;
            if let Err(error) = services.store.forget_lapsed_work_leases().await {
                tracing::warn!(%error, "could not delete lapsed work leases");
            }
        }
        Pass::Renewals => {
            if let Some(due) = due_domains(services, now).await {
                futures::stream::iter(due)
                    .for_each_concurrent(CONCURRENCY, |view| tend(services, supervisor, view, now))
                    .await;
            }
        }
    }
}

/// The domains with something due by `now`, the longest waiting first.
async fn due_domains(services: &AppState, now: DateTime<Utc>) -> Option<Vec<DomainView>> {
    match services.store.due_domain_views(now, DOMAINS_PER_TICK).await {
        Ok(due) => Some(due),
        Err(error) => {
            tracing::warn!(%error, "could not read the domains due; next tick");
            None
        }
    }
}

/// What one due domain needs.
async fn tend(
    services: &AppState,
    supervisor: &Addr<Supervisor>,
    view: DomainView,
    now: DateTime<Utc>,
) {
    let Some(certificate) = view.certificate.clone() else {
        return;
    };
    let renewal = view.renewal.clone().unwrap_or_default();
    let origin = || CommandOrigin::actor(ACTOR_NAME);
    if renewal.in_progress {
        return;
    }
    let Some(due_at) = renewal.due_at else {
        schedule_once(services, &view, &certificate, now).await;
        return;
    };
    let due_at = renewal
        .next_attempt_at
        .map_or(due_at, |retry| retry.max(due_at));
    if due_at > now {
        return;
    }
    let reason = renewal.reason.unwrap_or(RenewalReason::Lifetime);
    match start_renewal(services, supervisor, &view, reason, origin()).await {
        Ok(order) => {
            tracing::info!(domain_id = %view.id, order_id = %order.order_id, reason = reason.as_str(), "renewal started");
        }
        Err(RenewalStartError::Acme(error)) => {
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
                services.execute(&view.id, command, origin()).await,
                &view.id,
                "failed attempt",
            );
        }
        Err(RenewalStartError::Command(error)) => report(Err(error), &view.id, "renewal"),
        Err(RenewalStartError::Busy(why)) => {
            tracing::debug!(domain_id = %view.id, %why, "renewal left to whoever holds it");
        }
        Err(RenewalStartError::Store(error)) => {
            tracing::warn!(domain_id = %view.id, %error, "could not start the renewal; next tick");
        }
    }
}

/// The work lease of a domain's renewal work (`<domain>#renewal`): scheduling and starting a
/// renewal, by the scheduler or a request, on any replica, one at a time. A row of its own,
/// never the domain's order lease: a replica acting on a stale view must not take the lease of
/// the order another replica has just placed and is polling.
fn renewal_lease(domain_id: &str) -> String {
    format!("{domain_id}#renewal")
}

/// Schedules a new certificate's renewal under the domain's renewal lease, if it still has no
/// schedule when the lease is had (another replica may have just recorded one).
async fn schedule_once(
    services: &AppState,
    view: &DomainView,
    certificate: &dns_handling_projections::CertificateSummary,
    now: DateTime<Utc>,
) {
    let lease = match WorkLease::take(services, renewal_lease(&view.id), &certificate.id).await {
        Ok(Some(lease)) => lease,
        Ok(None) => return,
        Err(error) => {
            tracing::warn!(domain_id = %view.id, %error, "could not claim the renewal; next tick");
            return;
        }
    };
    match services.store.domain_view(&view.id).await {
        Ok(Some(fresh))
            if fresh.certificate.as_ref().map(|c| &c.id) == Some(&certificate.id)
                && fresh.renewal.as_ref().is_none_or(|r| r.due_at.is_none()) =>
        {
            schedule(services, &fresh, certificate, now).await;
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
async fn record_expiry(services: &AppState, view: &DomainView, now: DateTime<Utc>) {
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
        services.execute(&view.id, command, origin).await,
        &view.id,
        "expiry",
    );
}

/// Records when a new certificate is to be renewed: inside the CA's suggested window where it
/// offers ARI (a uniformly drawn moment, at once if the window has passed), else by lifetime.
async fn schedule(
    services: &AppState,
    view: &DomainView,
    certificate: &dns_handling_projections::CertificateSummary,
    now: DateTime<Utc>,
) {
    let (chain, ca_directory) = match services.store.certificate_view(&view.id).await {
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
        services.settings.renew_before,
    );
    let acme = services.acme_for(&ca_directory);
    let (due_at, reason, window, check_again) = match acme.renewal_info(&chain).await {
        Ok(Some(answer)) => (
            due_in_window(&answer.window, now, rand::random::<f64>()),
            RenewalReason::Ari,
            Some(answer.window),
            Some(ari_recheck_after(answer.retry_after)),
        ),
        Ok(None) => (by_lifetime, RenewalReason::Lifetime, None, None),
        Err(error) => {
            // Renew by lifetime meanwhile, and ask the CA again later.
            tracing::warn!(domain_id = %view.id, %error, "renewal information unavailable; renewing by lifetime until it answers");
            (
                by_lifetime,
                RenewalReason::Lifetime,
                None,
                Some(ARI_RECHECK_AFTER_ERROR),
            )
        }
    };
    if let Some(after) = check_again {
        plan_ari_check(services, &view.id, &certificate.id, now, after).await;
    }
    let command = CustomDomainCommand::ScheduleRenewal {
        certificate_id: certificate.id.clone(),
        due_at,
        reason,
        window,
        at: now,
    };
    report(
        services
            .execute(&view.id, command, CommandOrigin::actor(ACTOR_NAME))
            .await,
        &view.id,
        "schedule",
    );
}

/// Asks the CA again for a certificate's window `after` from `now`.
async fn plan_ari_check(
    services: &AppState,
    domain_id: &str,
    certificate_id: &str,
    now: DateTime<Utc>,
    after: std::time::Duration,
) {
    let at = now + chrono::Duration::from_std(after).unwrap_or(chrono::Duration::hours(6));
    if let Err(error) = services
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
async fn check_renewal_info(services: &AppState, now: DateTime<Utc>) {
    let due = match services
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
            recheck(services, &domain_id, &certificate_id, now).await;
        })
        .await;
}

async fn recheck(services: &AppState, domain_id: &str, certificate_id: &str, now: DateTime<Utc>) {
    // A check that cannot be made now waits about a tick (at least a minute).
    let postpone_by = ari_recheck_after(services.settings.renewal_check_interval);
    let Some((view, stored)) =
        ari_check_to_make(&services.store, domain_id, certificate_id, now, postpone_by).await
    else {
        return;
    };
    let acme = services.acme_for(&stored.ca_directory);
    match acme.renewal_info(&stored.chain_pem).await {
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
                    services.execute(domain_id, command, origin).await,
                    domain_id,
                    "reschedule",
                );
            }
            let after = ari_recheck_after(answer.retry_after);
            postpone_ari_check(&services.store, domain_id, certificate_id, now, after).await;
        }
        Ok(None) => {
            let _ = services
                .store
                .clear_renewal_info_check(domain_id, certificate_id)
                .await;
        }
        Err(error) => {
            tracing::warn!(%domain_id, %error, "renewal information unavailable; asking again later");
            let after = ARI_RECHECK_AFTER_ERROR;
            postpone_ari_check(&services.store, domain_id, certificate_id, now, after).await;
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
async fn destroy_due_keys(services: &AppState, now: DateTime<Utc>) {
    let due = match services
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
        match services.execute(&domain_id, command, origin).await {
            Ok(()) | Err(AggregateError::UserError(DomainError::KeyAlreadyDestroyed { .. })) => {}
            Err(error) => {
                tracing::warn!(%domain_id, %order_id, %error, "key destruction not recorded; next tick");
                continue;
            }
        }
        match services.store.delete_certificate_key(&order_id).await {
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
