//! Webhook delivery, driven from the global feed: one driver per live endpoint, on whichever
//! replica holds the endpoint's lease.
//!
//! A driver reads the feed after its endpoint's cursor, turns the first event the endpoint
//! wants into its messages (stored with the cursor's move, in one transaction), and sends them
//! one at a time, in feed order, each until a `2xx` or until its retries are spent; then it reads
//! on. Everything it needs after a crash is in the store (cursor, messages with their attempts
//! and next attempt time), so a restarted replica, or another replica once the lease lapses,
//! carries on where it stood: at least once, in order. A message can go out twice only when a
//! replica dies between a receiver's answer and its record; the same `webhook-id` tells the
//! receiver.
//!
//! Endpoints are independent: each has its own driver, so a slow or failing receiver holds up
//! only its own messages.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use chrono::{DateTime, Utc};
use dns_handling_events::CustomDomainEvent;
use dns_handling_projections::DomainView;
use rand::Rng as _;

use crate::adapters::commit_signal::CommitWaiter;
use crate::adapters::store::{AttemptRecord, MessageFate, NewMessage, StoreError, StoredMessage};
use crate::app_state::{AppState, CommandOrigin};
use crate::domain::notifications::{notifications, Notification};
use crate::domain::webhook_endpoint::{WebhookEndpoint, WebhookEndpointCommand};
use crate::metrics::{OutcomeLabel, METRICS};
use crate::tasks::AbortOnDrop;
use crate::use_cases::webhook_endpoints::webhook_endpoint;

/// How often the dispatcher looks for endpoints without a driver (new ones, or ones whose
/// replica died).
const DISCOVERY_INTERVAL: Duration = Duration::from_secs(1);

/// Feed events read per batch by a driver.
const FEED_BATCH: u32 = 500;

/// How long a driver waits after a store failure.
const RETRY_AFTER: Duration = Duration::from_secs(1);

/// How long a driver stopped at an event it cannot read waits before reading it again.
const UNDECODABLE_RETRY_AFTER: Duration = Duration::from_secs(2);

/// The driver's name in `feed_consumer_stuck` and `/readyz`.
fn consumer_of(endpoint_id: &str) -> String {
    format!("webhook:{endpoint_id}")
}

/// One lock per endpoint, held by its driver (on this replica) from its last look at the
/// endpoint before a send until the send's outcome is recorded: `DELETE /webhooks/{id}` takes
/// it after recording the deletion, so it answers only once no send of this replica can still
/// go out (see [`wait_for_sends_to_end`]).
static SEND_LOCKS: LazyLock<std::sync::Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>> =
    LazyLock::new(Default::default);

fn send_lock(endpoint_id: &str) -> Arc<tokio::sync::Mutex<()>> {
    let mut locks = SEND_LOCKS
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    locks.entry(endpoint_id.to_owned()).or_default().clone()
}

/// Waits until no send to the endpoint can still go out: called once its deletion is
/// recorded. This replica's driver looks at the endpoint again under the send
/// lock before each send, so a send that was not under way when the lock is taken here sees
/// the deletion and is not made. A driver on another replica stops when it next looks at the
/// endpoint and gives its lease back; until then (at most `LEASE_TTL`, which outlasts any
/// send) this waits for its lease to be given back or to lapse.
pub async fn wait_for_sends_to_end(services: &AppState, endpoint_id: &str) {
    drop(send_lock(endpoint_id).lock().await);
    let lease = lease_of(endpoint_id);
    let deadline = tokio::time::Instant::now() + services.settings.lease_ttl;
    while tokio::time::Instant::now() < deadline {
        match services
            .store
            .lease_held_by_another(&lease, &services.replica_id)
            .await
        {
            Ok(false) => return,
            Ok(true) => tokio::time::sleep(Duration::from_millis(100)).await,
            Err(error) => {
                tracing::warn!(%endpoint_id, %error, "could not read the webhook lease; waiting for it to lapse");
                tokio::time::sleep(RETRY_AFTER).await;
            }
        }
    }
}

/// Clears the driver's stuck mark whenever it stops (lease lost, endpoint gone, aborted): a
/// driver that no longer runs here is not stuck here.
struct ClearStuckOnDrop(String);

impl Drop for ClearStuckOnDrop {
    fn drop(&mut self) {
        crate::read::stuck::reads_on(&self.0);
    }
}

/// Runs for as long as the process does: starts a driver for every live endpoint whose lease
/// this replica takes.
pub async fn dispatch(services: Arc<AppState>) {
    let mut drivers: HashMap<String, AbortOnDrop<()>> = HashMap::new();
    // Deleted and disabled endpoints stay so: they are not loaded again every second.
    let mut ended: HashSet<String> = HashSet::new();
    loop {
        // A driver that panicked is counted here and started again below, like one that ended.
        drivers.retain(|_, driver| {
            if !driver.0.is_finished() {
                return true;
            }
            if let Some(Err(error)) = futures::FutureExt::now_or_never(&mut driver.0) {
                if error.is_panic() {
                    crate::tasks::BACKGROUND.panicked("webhook-driver", &error);
                }
            }
            false
        });
        match services.store.webhook_endpoint_ids().await {
            Ok(ids) => {
                for id in ids {
                    if drivers.contains_key(&id) || ended.contains(&id) {
                        continue;
                    }
                    let live = match webhook_endpoint(&services, &id).await {
                        Ok(endpoint) if endpoint.created && !endpoint.is_active() => {
                            ended.insert(id);
                            continue;
                        }
                        Ok(endpoint) => endpoint.is_active(),
                        Err(_) => false,
                    };
                    if live && claim(&services, &id).await {
                        let driver = tokio::spawn(drive(services.clone(), id.clone()));
                        drivers.insert(id, AbortOnDrop(driver));
                    }
                }
            }
            Err(error) => tracing::warn!(%error, "could not list webhook endpoints"),
        }
        tokio::time::sleep(DISCOVERY_INTERVAL).await;
    }
}

/// The lease of an endpoint's delivery (a work lease: see `Store::claim_leases`).
fn lease_of(endpoint_id: &str) -> String {
    format!("{endpoint_id}#webhook")
}

/// Takes, or extends, this replica's lease on the endpoint's delivery.
async fn claim(services: &AppState, endpoint_id: &str) -> bool {
    let lease = lease_of(endpoint_id);
    let claims = [(lease.as_str(), "webhook")];
    match services
        .store
        .claim_leases(&claims, &services.replica_id, services.settings.lease_ttl)
        .await
    {
        Ok(granted) => granted.contains(&lease),
        Err(error) => {
            tracing::warn!(%endpoint_id, %error, "could not claim a webhook lease");
            false
        }
    }
}

/// Delivers one endpoint's messages while this replica holds its lease and the endpoint lives.
async fn drive(services: Arc<AppState>, endpoint_id: String) {
    let lease_ttl = services.settings.lease_ttl;
    let renew_every = lease_ttl / 3;
    let mut lease_claimed = tokio::time::Instant::now();
    let mut waiter = CommitWaiter::new();
    let consumer = ClearStuckOnDrop(consumer_of(&endpoint_id));
    // Set when the receiver answered 410 and the endpoint is not disabled yet: nothing is sent
    // until disabling it succeeds.
    let mut gone: Option<String> = None;
    tracing::info!(%endpoint_id, "webhook driver started");
    loop {
        if lease_claimed.elapsed() >= renew_every {
            if !claim(&services, &endpoint_id).await {
                tracing::info!(%endpoint_id, "webhook lease lost; another replica delivers");
                return;
            }
            lease_claimed = tokio::time::Instant::now();
        }
        let endpoint = match webhook_endpoint(&services, &endpoint_id).await {
            Ok(endpoint) if endpoint.is_active() => endpoint,
            Ok(_) => {
                let lease = lease_of(&endpoint_id);
                let _ = services
                    .store
                    .release_lease(&lease, &services.replica_id)
                    .await;
                tracing::info!(%endpoint_id, "webhook endpoint no longer live; driver stops");
                return;
            }
            Err(error) => {
                tracing::warn!(%endpoint_id, %error, "could not load the webhook endpoint");
                tokio::time::sleep(RETRY_AFTER).await;
                continue;
            }
        };
        if let Some(reason) = &gone {
            if disable(&services, &endpoint_id, reason).await {
                gone = None;
            } else {
                tokio::time::sleep(RETRY_AFTER).await;
            }
            continue;
        }
        let next = services.store.next_webhook_message(&endpoint_id).await;
        let outcome = match next {
            Ok(Some(message)) => {
                let due = message.next_attempt_at.unwrap_or_default();
                match (due - Utc::now()).to_std() {
                    // Not due yet: wait, but wake in time to keep the lease.
                    Ok(wait) if !wait.is_zero() => {
                        tokio::time::sleep(wait.min(renew_every)).await;
                        Ok(())
                    }
                    // The lease is taken again first: it then outlasts the send (the
                    // settings keep WEBHOOK_TIMEOUT under LEASE_TTL).
                    _ if !claim(&services, &endpoint_id).await => {
                        tracing::info!(%endpoint_id, "webhook lease lost before a send");
                        return;
                    }
                    _ => {
                        lease_claimed = tokio::time::Instant::now();
                        let lock = send_lock(&endpoint_id);
                        let _sending = lock.lock().await;
                        // Looked at again under the lock: a deletion recorded before this
                        // point is seen here; one recorded after it waits for this send.
                        match webhook_endpoint(&services, &endpoint_id).await {
                            Ok(endpoint) if endpoint.is_active() => {
                                match send(&services, &endpoint_id, &endpoint, &message).await {
                                    Ok(answered_gone) => {
                                        gone = answered_gone;
                                        Ok(())
                                    }
                                    Err(error) => Err(error),
                                }
                            }
                            // No longer live: the next turn stops the driver.
                            Ok(_) => Ok(()),
                            Err(error) => Err(StoreError::other("the key vault failed", error)),
                        }
                    }
                }
            }
            Ok(None) => match read_feed(&services, &endpoint_id, &endpoint).await {
                Ok(FeedRead::Moved) => {
                    crate::read::stuck::reads_on(&consumer.0);
                    Ok(())
                }
                Ok(FeedRead::Nothing) => {
                    crate::read::stuck::reads_on(&consumer.0);
                    waiter.wait(renew_every.min(DISCOVERY_INTERVAL)).await;
                    Ok(())
                }
                Ok(FeedRead::Undecodable { position, error }) => {
                    crate::read::stuck::stopped_at(&consumer.0, position, &error);
                    tokio::time::sleep(UNDECODABLE_RETRY_AFTER.min(renew_every)).await;
                    Ok(())
                }
                Err(error) => Err(error),
            },
            Err(error) => Err(error),
        };
        if let Err(error) = outcome {
            tracing::warn!(%endpoint_id, %error, "webhook delivery step failed; trying again");
            tokio::time::sleep(RETRY_AFTER).await;
        }
    }
}

/// What a driver found reading the feed after its cursor.
#[derive(Debug, PartialEq, Eq)]
enum FeedRead {
    /// Nothing after the cursor.
    Nothing,
    /// The cursor moved (messages stored, or a batch passed over that tells nothing).
    Moved,
    /// An event the driver cannot read (or whose domain's history it cannot read): the cursor
    /// moved up to just before it at most, and stays there until it reads.
    Undecodable { position: i64, error: String },
}

/// Reads the feed after the endpoint's cursor up to the first event it is told of, and stores
/// that event's messages; or moves the cursor past a batch that tells it nothing. An event it
/// cannot read stops it: the cursor moves to just before it, never past it.
async fn read_feed(
    services: &AppState,
    endpoint_id: &str,
    endpoint: &WebhookEndpoint,
) -> Result<FeedRead, StoreError> {
    let store = &services.store;
    let cursor = store
        .webhook_cursor(endpoint_id, endpoint.starts_after_position)
        .await?;
    let batch = store.projection_batch(cursor, FEED_BATCH).await?;
    let Some(last) = batch.last() else {
        return Ok(FeedRead::Nothing);
    };
    // The position of the last event passed over: where the cursor may move when stopped.
    let mut passed = cursor;
    for row in &batch {
        let stopped = |error: String| FeedRead::Undecodable {
            position: row.position,
            error: format!("{} {}: {error}", row.event_type, row.event_version),
        };
        if !may_notify(&row.event_type) {
            if !is_known_type(&row.event_type) {
                // A type of a later release may be one that notifies: not passed over.
                let error = stopped("an event type this release does not know".into());
                return stop_before(store, endpoint_id, passed, error).await;
            }
            passed = row.position;
            continue;
        }
        let event = match row.decode() {
            Ok(event) => event,
            Err(error) => {
                return stop_before(store, endpoint_id, passed, stopped(error.to_string())).await
            }
        };
        let sequence = u64::try_from(row.sequence).unwrap_or(0);
        let around = match views_around(services, &row.aggregate_id, sequence).await? {
            Ok(around) => around,
            Err(error) => return stop_before(store, endpoint_id, passed, stopped(error)).await,
        };
        let Some((before, after)) = around else {
            tracing::warn!(position = row.position, "no view of the domain; no webhook");
            continue;
        };
        let told: Vec<Notification> = notifications(&event, before.as_ref(), &after, row.position)
            .into_iter()
            .filter(|notification| endpoint.wants(notification.kind))
            .collect();
        if !told.is_empty() {
            let messages: Vec<NewMessage> = told
                .iter()
                .map(|notification| NewMessage {
                    message_id: format!("msg_{}", uuid::Uuid::now_v7().simple()),
                    message_type: notification.kind.as_str().to_owned(),
                    body: notification.body().to_string(),
                })
                .collect();
            store
                .enqueue_webhook_messages(endpoint_id, row.position, &messages)
                .await?;
            return Ok(FeedRead::Moved);
        }
        passed = row.position;
    }
    store
        .enqueue_webhook_messages(endpoint_id, last.position, &[])
        .await?;
    Ok(FeedRead::Moved)
}

/// Moves the cursor up to `passed` (the events before the unreadable one told nothing) and
/// answers `stopped`.
async fn stop_before(
    store: &crate::adapters::store::Store,
    endpoint_id: &str,
    passed: i64,
    stopped: FeedRead,
) -> Result<FeedRead, StoreError> {
    store
        .enqueue_webhook_messages(endpoint_id, passed, &[])
        .await?;
    Ok(stopped)
}

/// Whether this release knows the event type (then one that cannot notify is passed over
/// without being decoded).
fn is_known_type(event_type: &str) -> bool {
    dns_handling_events::schema::CURRENT_VERSIONS
        .iter()
        .any(|(known, _)| *known == event_type)
}

/// Whether an event of this type can make a notification (the others are passed over without
/// being decoded).
fn may_notify(event_type: &str) -> bool {
    matches!(
        event_type,
        "CertificateIssued"
            | "CertificateRevoked"
            | "IssuanceFailed"
            | "IssuanceTimedOut"
            | "RenewalFailed"
            | "RenewalRequested"
            | "CertificateExpired"
            | "DomainRemoved"
    )
}

/// The views around an event: the domain's view before it (if any) and after it.
type ViewsAround = Option<(Option<DomainView>, DomainView)>;

/// The domain's view just before and just after its event `sequence`, folded from its
/// history: exactly as it was then, whatever happened since. The inner error says which
/// event of the history does not decode.
async fn views_around(
    services: &AppState,
    domain_id: &str,
    sequence: u64,
) -> Result<Result<ViewsAround, String>, StoreError> {
    let history = services.store.domain_history(domain_id).await?;
    let mut decoded: Vec<(u64, CustomDomainEvent)> = Vec::with_capacity(history.len());
    for event in history.iter().filter(|e| e.sequence as u64 <= sequence) {
        match event.decode() {
            Ok(read) => decoded.push((event.sequence as u64, read)),
            Err(error) => {
                return Ok(Err(format!(
                    "event {} of the domain's history does not decode: {error}",
                    event.sequence
                )))
            }
        }
    }
    let fold = |up_to: u64| {
        DomainView::fold(
            domain_id,
            decoded
                .iter()
                .filter(|(at, _)| *at <= up_to)
                .map(|(at, event)| (*at, event)),
        )
    };
    Ok(Ok(fold(sequence).map(|after| (fold(sequence - 1), after))))
}

/// Sends one message, records the attempt, and decides what comes next for the message: the
/// next one after a `2xx` or a spent schedule, a retry after a wait otherwise. Answers the
/// reason to disable the endpoint with when the receiver answered `410`.
async fn send(
    services: &AppState,
    endpoint_id: &str,
    endpoint: &WebhookEndpoint,
    message: &StoredMessage,
) -> Result<Option<String>, StoreError> {
    let now = Utc::now();
    let mut secrets = Vec::new();
    for secret_id in endpoint.signing_secrets(now) {
        match services.vault.webhook_secret(&secret_id).await {
            Ok(Some(secret)) => secrets.push(secret),
            Ok(None) => tracing::error!(%endpoint_id, %secret_id, "a signing secret is missing"),
            Err(error) => return Err(StoreError::other("the key vault failed", error)),
        }
    }
    let attempt = services
        .webhook_sender
        .send(&endpoint.url, &message.message_id, &message.body, &secrets)
        .await;
    let number = message.attempts + 1;
    let schedule = &services.settings.webhook_retry_schedule;
    let (fate, outcome) = match attempt.status {
        Some(200..=299) => (MessageFate::Delivered, "delivered"),
        Some(410) => (MessageFate::Failed, "disabled"),
        _ => match schedule.get(usize::try_from(number - 1).unwrap_or(usize::MAX)) {
            Some(wait) => (MessageFate::RetryAt(now + jittered(*wait)), "retry"),
            None => (MessageFate::Failed, "failed"),
        },
    };
    let record = AttemptRecord {
        endpoint_id: endpoint_id.to_owned(),
        message_id: message.message_id.clone(),
        position: message.position,
        attempt: number,
        attempted_at: now,
        status_code: attempt.status.map(i64::from),
        latency_ms: i64::try_from(attempt.latency.as_millis()).unwrap_or(i64::MAX),
        error: attempt.error.clone(),
        replica: services.replica_id.clone(),
    };
    let lease = lease_of(endpoint_id);
    if !services
        .store
        .record_webhook_attempt(message, &record, fate, &lease)
        .await?
    {
        tracing::warn!(
            %endpoint_id, message_id = %message.message_id, attempt = number,
            status = ?attempt.status,
            "webhook attempt not recorded: this replica no longer holds the endpoint's lease, \
             or another holder recorded the message meanwhile"
        );
        return Ok(None);
    }
    METRICS
        .webhook_deliveries
        .get_or_create(&OutcomeLabel { outcome })
        .inc();
    if fate == MessageFate::Delivered && number == 1 {
        if let Some(lag) = lag_of(&message.body) {
            METRICS.webhook_delivery_lag.observe(lag);
        }
    }
    tracing::info!(
        %endpoint_id, message_id = %message.message_id, attempt = number,
        status = ?attempt.status, error = ?attempt.error, outcome, "webhook attempt"
    );
    Ok((outcome == "disabled").then(|| {
        format!(
            "the receiver answered 410 Gone to message {}",
            message.message_id
        )
    }))
}

/// Disables the endpoint after a `410`; answers whether it is done. The driver sends nothing
/// more until it is.
async fn disable(services: &AppState, endpoint_id: &str, reason: &str) -> bool {
    let command = WebhookEndpointCommand::Disable {
        reason: reason.to_owned(),
        at: Utc::now(),
    };
    let origin = CommandOrigin::actor("webhook-dispatcher");
    match services
        .webhooks
        .execute_with_metadata(endpoint_id, command, origin.0)
        .await
    {
        Ok(()) => true,
        Err(error) => {
            tracing::warn!(
                %endpoint_id, %error,
                "could not disable the webhook endpoint after its 410; nothing is sent until it is"
            );
            false
        }
    }
}

/// `wait`, give or take a tenth, so that endpoints that failed together are not retried
/// together.
fn jittered(wait: Duration) -> chrono::Duration {
    let factor = rand::thread_rng().gen_range(0.9..=1.1);
    chrono::Duration::from_std(wait.mul_f64(factor)).unwrap_or_else(|_| chrono::Duration::days(1))
}

/// Seconds since the event a message reports (its body's `timestamp`).
fn lag_of(body: &str) -> Option<f64> {
    let body: serde_json::Value = serde_json::from_str(body).ok()?;
    let at: DateTime<Utc> = body["timestamp"].as_str()?.parse().ok()?;
    (Utc::now() - at).to_std().ok().map(|lag| lag.as_secs_f64())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_retry_waits_its_scheduled_time_give_or_take_a_tenth() {
        for _ in 0..100 {
            let wait = jittered(Duration::from_secs(100));
            assert!(wait >= chrono::Duration::seconds(90), "{wait}");
            assert!(wait <= chrono::Duration::seconds(110), "{wait}");
        }
    }

    #[test]
    fn only_events_that_can_be_told_are_decoded() {
        assert!(may_notify("CertificateIssued"));
        assert!(may_notify("RenewalRequested"));
        assert!(!may_notify("ChallengeRecordObserved"));
        assert!(!may_notify("PrivateKeyRead"));
    }
}
