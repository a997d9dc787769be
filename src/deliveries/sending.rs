//! Sending webhook messages: one driver per endpoint with a message to send, on whichever
//! replica holds the endpoint's lease.
//!
//! A driver sends its endpoint's messages one at a time, in feed order (`webhook_messages`,
//! state `pending`, by position and ordinal), each until a `2xx` or until its retries are
//! spent. Everything it needs after a crash is in the store (the messages with their attempts
//! and next attempt time), so a restarted replica, or another replica once the lease lapses,
//! carries on where it stood: at least once, in order. A message can go out twice only when a
//! replica dies between a receiver's answer and its record; the same `webhook-id` tells the
//! receiver.
//!
//! Endpoints are independent: each has its own driver, so a slow or failing receiver holds up
//! only its own messages. An endpoint with nothing to send costs nothing: the dispatcher asks
//! the store once which endpoints have messages waiting (when messages were stored here, and
//! every second for those stored by another replica), and a driver with nothing left to send
//! gives its lease back and ends.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use chrono::{DateTime, Utc};
use rand::Rng as _;
use tokio::sync::Notify;

use crate::adapters::store::{AttemptRecord, MessageFate, StoreError, StoredMessage};
use crate::app_state::{AppState, CommandOrigin};
use crate::domain::webhook_endpoint::{WebhookEndpoint, WebhookEndpointCommand};
use crate::metrics::{OutcomeLabel, METRICS};
use crate::tasks::AbortOnDrop;
use crate::use_cases::webhook_endpoints::webhook_endpoint;

/// How often the dispatcher looks for endpoints with messages to send that it has no driver
/// for (messages stored by another replica, a driver that ended, a lease that lapsed).
const DISCOVERY_INTERVAL: Duration = Duration::from_secs(1);

/// How long a driver waits after a store failure.
const RETRY_AFTER: Duration = Duration::from_secs(1);

/// Said by the messages' follower of this process when it stored messages.
static MESSAGES_STORED: LazyLock<Notify> = LazyLock::new(Notify::new);

/// Wakes the dispatcher: messages were stored.
pub fn messages_stored() {
    MESSAGES_STORED.notify_one();
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
/// endpoint (or when it has nothing to send) and gives its lease back; until then (at most `LEASE_TTL`, which outlasts any
/// send) this waits for its lease to be given back or to lapse.
pub async fn wait_for_sends_to_end(state: &AppState, endpoint_id: &str) {
    drop(send_lock(endpoint_id).lock().await);
    let lease = lease_of(endpoint_id);
    let deadline = tokio::time::Instant::now() + state.settings.lease_ttl;
    while tokio::time::Instant::now() < deadline {
        match state
            .store
            .lease_held_by_another(&lease, &state.replica_id)
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

/// Why a driver ended.
#[derive(Debug, PartialEq, Eq)]
enum DriverEnd {
    /// Nothing left to send, or its lease went to another replica.
    Idle,
    /// The endpoint is deleted or disabled: nothing more is sent to it.
    EndpointGone,
}

/// A running driver, and how to tell it that its endpoint has messages to send.
struct Driver {
    task: AbortOnDrop<DriverEnd>,
    poke: Arc<Notify>,
}

/// Runs for as long as the process does: starts a driver for every live endpoint with a
/// message to send whose lease this replica takes.
pub async fn send_messages(state: Arc<AppState>) {
    let mut drivers: HashMap<String, Driver> = HashMap::new();
    // Deleted and disabled endpoints stay so: their messages left pending are not sent.
    let mut ended: HashSet<String> = HashSet::new();
    loop {
        // Waits first: after the start's own burst of queries, not in it.
        tokio::select! {
            () = MESSAGES_STORED.notified() => {}
            () = tokio::time::sleep(DISCOVERY_INTERVAL) => {}
        }
        // A driver that panicked is counted here and started again below, like one that ended.
        drivers.retain(|id, driver| {
            if !driver.task.0.is_finished() {
                return true;
            }
            match futures::FutureExt::now_or_never(&mut driver.task.0) {
                Some(Ok(DriverEnd::EndpointGone)) => {
                    ended.insert(id.clone());
                }
                Some(Err(error)) if error.is_panic() => {
                    crate::tasks::BACKGROUND.panicked("webhook-driver", &error);
                }
                _ => {}
            }
            false
        });
        match state.store.endpoints_with_messages_to_send().await {
            Ok(ids) => {
                for id in ids {
                    if ended.contains(&id) {
                        continue;
                    }
                    if let Some(driver) = drivers.get(&id) {
                        driver.poke.notify_one();
                        continue;
                    }
                    if claim(&state, &id).await {
                        let poke = Arc::new(Notify::new());
                        let task = tokio::spawn(drive(state.clone(), id.clone(), poke.clone()));
                        let task = AbortOnDrop(task);
                        drivers.insert(id, Driver { task, poke });
                    }
                }
            }
            Err(error) => tracing::warn!(%error, "could not list the webhook messages to send"),
        }
    }
}

/// The lease of an endpoint's delivery (a work lease: see `Store::claim_leases`).
fn lease_of(endpoint_id: &str) -> String {
    format!("{endpoint_id}#webhook")
}

/// Takes, or extends, this replica's lease on the endpoint's delivery.
async fn claim(state: &AppState, endpoint_id: &str) -> bool {
    let lease = lease_of(endpoint_id);
    let claims = [(lease.as_str(), "webhook")];
    match state
        .store
        .claim_leases(&claims, &state.replica_id, state.settings.lease_ttl)
        .await
    {
        Ok(granted) => granted.contains(&lease),
        Err(error) => {
            tracing::warn!(%endpoint_id, %error, "could not claim a webhook lease");
            false
        }
    }
}

/// Delivers one endpoint's messages while this replica holds its lease, the endpoint lives
/// and it has messages to send.
async fn drive(state: Arc<AppState>, endpoint_id: String, poke: Arc<Notify>) -> DriverEnd {
    let lease_ttl = state.settings.lease_ttl;
    let renew_every = lease_ttl / 3;
    let mut lease_claimed = tokio::time::Instant::now();
    // Set when the receiver answered 410 and the endpoint is not disabled yet: nothing is sent
    // until disabling it succeeds.
    let mut gone: Option<String> = None;
    tracing::debug!(%endpoint_id, "webhook driver started");
    loop {
        if lease_claimed.elapsed() >= renew_every {
            if !claim(&state, &endpoint_id).await {
                tracing::info!(%endpoint_id, "webhook lease lost; another replica delivers");
                return DriverEnd::Idle;
            }
            lease_claimed = tokio::time::Instant::now();
        }
        match webhook_endpoint(&state, &endpoint_id).await {
            Ok(endpoint) if endpoint.is_active() => {}
            Ok(_) => {
                release(&state, &endpoint_id).await;
                tracing::info!(%endpoint_id, "webhook endpoint no longer live; driver stops");
                return DriverEnd::EndpointGone;
            }
            Err(error) => {
                tracing::warn!(%endpoint_id, %error, "could not load the webhook endpoint");
                tokio::time::sleep(RETRY_AFTER).await;
                continue;
            }
        };
        if let Some(reason) = &gone {
            if disable(&state, &endpoint_id, reason).await {
                gone = None;
            } else {
                tokio::time::sleep(RETRY_AFTER).await;
            }
            continue;
        }
        let next = state.store.next_webhook_message(&endpoint_id).await;
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
                    _ if !claim(&state, &endpoint_id).await => {
                        tracing::info!(%endpoint_id, "webhook lease lost before a send");
                        return DriverEnd::Idle;
                    }
                    _ => {
                        lease_claimed = tokio::time::Instant::now();
                        let lock = send_lock(&endpoint_id);
                        let _sending = lock.lock().await;
                        // Looked at again under the lock: a deletion recorded before this
                        // point is seen here; one recorded after it waits for this send.
                        match webhook_endpoint(&state, &endpoint_id).await {
                            Ok(endpoint) if endpoint.is_active() => {
                                match send(&state, &endpoint_id, &endpoint, &message).await {
                                    Ok(answered_gone) => {
                                        gone = answered_gone;
                                        Ok(())
                                    }
                                    Err(error) => Err(error),
                                }
                            }
                            // No longer live: the next turn stops the driver.
                            Ok(_) => Ok(()),
                            Err(error) => {
                                Err(StoreError::other("loading the webhook endpoint", error))
                            }
                        }
                    }
                }
            }
            Ok(None) => {
                // Nothing to send: wait for the dispatcher to say there is, until the lease
                // would need renewing; then give it back and end.
                let left = renew_every.saturating_sub(lease_claimed.elapsed());
                let poked = tokio::time::timeout(left, poke.notified()).await.is_ok();
                if !poked {
                    release(&state, &endpoint_id).await;
                    return DriverEnd::Idle;
                }
                Ok(())
            }
            Err(error) => Err(error),
        };
        if let Err(error) = outcome {
            tracing::warn!(%endpoint_id, %error, "webhook delivery step failed; trying again");
            tokio::time::sleep(RETRY_AFTER).await;
        }
    }
}

/// Gives the endpoint's lease back.
async fn release(state: &AppState, endpoint_id: &str) {
    let lease = lease_of(endpoint_id);
    let _ = state.store.release_lease(&lease, &state.replica_id).await;
}

/// Sends one message, records the attempt, and decides what comes next for the message: the
/// next one after a `2xx` or a spent schedule, a retry after a wait otherwise. Answers the
/// reason to disable the endpoint with when the receiver answered `410`.
async fn send(
    state: &AppState,
    endpoint_id: &str,
    endpoint: &WebhookEndpoint,
    message: &StoredMessage,
) -> Result<Option<String>, StoreError> {
    let now = Utc::now();
    let mut secrets = Vec::new();
    for secret_id in endpoint.signing_secrets(now) {
        match state.vault.webhook_secret(&secret_id).await {
            Ok(Some(secret)) => secrets.push(secret),
            Ok(None) => tracing::error!(%endpoint_id, %secret_id, "a signing secret is missing"),
            Err(error) => return Err(StoreError::other("the key vault failed", error)),
        }
    }
    let attempt = state
        .webhook_sender
        .send(&endpoint.url, &message.message_id, &message.body, &secrets)
        .await;
    let number = message.attempts + 1;
    let schedule = &state.settings.webhook_retry_schedule;
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
        replica: state.replica_id.clone(),
    };
    let lease = lease_of(endpoint_id);
    if !state
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
async fn disable(state: &AppState, endpoint_id: &str, reason: &str) -> bool {
    let command = WebhookEndpointCommand::Disable {
        reason: reason.to_owned(),
        at: Utc::now(),
    };
    let origin = CommandOrigin::actor("webhook-dispatcher");
    match state
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
}
