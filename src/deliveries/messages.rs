//! Webhook messages, made from the feed once for every endpoint: one follower of the feed
//! ([`crate::read::feed_follower`]) reads each event once, folds the domain's views around it
//! once, and stores each live endpoint's messages (its outbox, `webhook_messages`) with its own
//! position, in one transaction per batch. An event no endpoint is told of costs no more than
//! reading it, however many endpoints there are.
//!
//! Where each endpoint stands: the follower's position (`webhook_feed`) for every endpoint with
//! a cursor row, or that row when it is further (an endpoint starts after the feed's last
//! position when it is created). An endpoint seen for the first time has no row: its messages
//! from where it starts up to the follower's position are made on their own, and its row is
//! written with them, in one transaction; then it goes along with the others. A message is
//! stored once per endpoint and event (its primary key), so a batch made again, after a crash
//! or by another replica's follower, stores nothing twice and keeps the first ids.
//!
//! An event it cannot read (a type of a later release, a payload it cannot decode, or one in
//! the history of the domain it reports) stops it there, loudly, under every endpoint's name
//! (`webhook:<id>`): nothing after it is made until it reads.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use dns_handling_events::CustomDomainEvent;
use dns_handling_projections::DomainView;

use crate::adapters::store::{EndpointMessages, FeedRow, NewMessage, StoreError};
use crate::app_state::AppState;
use crate::domain::notifications::{notifications, Notification};
use crate::domain::webhook_endpoint::WebhookEndpoint;
use crate::read::feed_follower::{
    FeedConsumer, FeedFollower, FeedRecord, Handed, Handled, Undecodable, Wait,
};
use crate::use_cases::webhook_endpoints::webhook_endpoint;

/// Feed events read per batch.
const FEED_BATCH: u32 = 500;

/// How often the endpoints are looked at again (new ones, rotated secrets, removals).
const REFRESH_EVERY: Duration = Duration::from_secs(1);

/// How often, at most, a position that moved past events telling nobody anything is stored.
const STORE_POSITION_EVERY: Duration = Duration::from_secs(5);

/// How long the follower waits for a commit before looking at the feed again anyway.
const LONGEST_WAIT: Duration = Duration::from_secs(1);

/// An endpoint's name in `feed_consumer_stuck` and `/readyz`.
pub fn consumer_of(endpoint_id: &str) -> String {
    format!("webhook:{endpoint_id}")
}

/// Makes every endpoint's messages from the feed, for as long as the process runs. It starts
/// following the feed once there is an endpoint (until then it asks every second), so that a
/// service without webhooks pays for them one query a second.
pub async fn make_messages(state: Arc<AppState>) {
    loop {
        // After the start's own burst of queries, not in it.
        tokio::time::sleep(REFRESH_EVERY).await;
        match state.store.webhook_endpoint_versions().await {
            Ok(endpoints) if !endpoints.is_empty() => break,
            Ok(_) => {}
            Err(error) => tracing::warn!(%error, "could not list the webhook endpoints"),
        }
    }
    let maker = MessageMaker {
        state: state.clone(),
        endpoints: HashMap::new(),
        ended: HashMap::new(),
        refreshed: None,
        position: 0,
        stored: 0,
        stored_at: None,
        made: Vec::new(),
    };
    FeedFollower::new(state.store.clone(), maker).follow().await;
}

/// A live endpoint the follower makes messages for.
struct Following {
    /// The sequence of its last event when it was loaded.
    version: i64,
    endpoint: WebhookEndpoint,
    /// Its messages are made for the events after this position.
    after: i64,
}

/// The feed consumer that makes the messages.
struct MessageMaker {
    state: Arc<AppState>,
    endpoints: HashMap<String, Following>,
    /// Endpoints deleted or disabled, by the version they were seen so at.
    ended: HashMap<String, i64>,
    refreshed: Option<Instant>,
    /// The position up to which every endpoint's messages are made (stored, or made of
    /// events that told nobody anything).
    position: i64,
    /// The position stored in `webhook_feed`, and when.
    stored: i64,
    stored_at: Option<Instant>,
    /// Messages made since the last store.
    made: Vec<EndpointMessages>,
}

impl MessageMaker {
    /// Looks at the endpoints again when due: loads the ones that changed, joins new ones.
    async fn refresh(&mut self) -> Result<(), StoreError> {
        if self
            .refreshed
            .is_some_and(|at| at.elapsed() < REFRESH_EVERY)
        {
            return Ok(());
        }
        let store = self.state.store.clone();
        let mut cursors = None;
        for (id, version) in store.webhook_endpoint_versions().await? {
            let known = self.endpoints.get(&id).map(|following| following.version);
            if known == Some(version) || self.ended.get(&id) == Some(&version) {
                continue;
            }
            let endpoint = webhook_endpoint(&self.state, &id).await.map_err(|error| {
                StoreError::other(format!("loading webhook endpoint {id}"), error)
            })?;
            if !endpoint.is_active() {
                self.endpoints.remove(&id);
                self.ended.insert(id.clone(), version);
                crate::read::stuck::reads_on(&consumer_of(&id));
                continue;
            }
            if let Some(following) = self.endpoints.get_mut(&id) {
                following.version = version;
                following.endpoint = endpoint;
                continue;
            }
            if cursors.is_none() {
                cursors = Some(store.webhook_cursors().await?);
            }
            let row = cursors.as_ref().and_then(|rows| rows.get(&id).copied());
            let after = match row {
                Some(row) => row.max(endpoint.starts_after_position),
                None => self.join(&id, &endpoint).await?,
            };
            let following = Following {
                version,
                endpoint,
                after,
            };
            self.endpoints.insert(id, following);
        }
        self.refreshed = Some(Instant::now());
        Ok(())
    }

    /// Makes a new endpoint's messages from where it starts up to the follower's position, and
    /// stores them with its cursor row; answers the position it now stands at.
    async fn join(&self, id: &str, endpoint: &WebhookEndpoint) -> Result<i64, StoreError> {
        let store = &self.state.store;
        let mut made = Vec::new();
        let mut read = endpoint.starts_after_position;
        while read < self.position {
            let batch = store.feed_batch(read, FEED_BATCH).await?;
            let Some(last) = batch.last().map(|row| row.position) else {
                break;
            };
            for row in batch.iter().filter(|row| row.position <= self.position) {
                if !may_notify(&row.event_type) {
                    continue;
                }
                let event = FeedRecord::decode(row)
                    .map_err(|why| StoreError::other("decoding a feed event", why))?;
                let told = match told_of(&self.state, row, &event).await? {
                    Ok(told) => told,
                    Err(why) => {
                        return Err(StoreError::other("reading what a webhook is told", why))
                    }
                };
                made.extend(messages_for(id, endpoint, row.position, &told));
            }
            read = last;
        }
        let position = self.position.max(endpoint.starts_after_position);
        store.join_webhook_feed(id, &made, position).await?;
        Ok(position)
    }
}

#[async_trait]
impl FeedConsumer for MessageMaker {
    type Record = FeedRow;

    fn names(&self) -> Vec<String> {
        self.endpoints.keys().map(|id| consumer_of(id)).collect()
    }

    fn batch_size(&self) -> u32 {
        FEED_BATCH
    }

    fn wait(&self) -> Wait {
        if self.endpoints.is_empty() {
            // Nobody to make messages for: commits need not wake it; it looks for endpoints
            // (and moves its position) every second.
            Wait::After(REFRESH_EVERY)
        } else {
            Wait::ForCommitOrAfter(LONGEST_WAIT)
        }
    }

    async fn load_position(&mut self) -> Result<i64, StoreError> {
        let store = &self.state.store;
        self.position = match store.webhook_feed_position().await? {
            Some(position) => position,
            // The first start: every endpoint with a row stands at least there; one without
            // joins from where it starts.
            None => match store.webhook_cursors().await?.values().min() {
                Some(lowest) => *lowest,
                None => store.feed_head().await?,
            },
        };
        self.stored = self.position;
        self.made.clear();
        self.refreshed = None;
        self.endpoints.clear();
        Ok(self.position)
    }

    fn reads(&self, row: &FeedRow) -> bool {
        // A type of a later release may be one that notifies: it is read, and stops the
        // follower until it can be.
        may_notify(&row.event_type) || !is_known_type(&row.event_type)
    }

    async fn handle(&mut self, rows: Vec<Handed<'_, FeedRow>>) -> Result<Handled, StoreError> {
        self.refresh().await?;
        for handed in &rows {
            let (row, Some(event)) = (handed.row, &handed.decoded) else {
                continue;
            };
            let wanting: Vec<(&String, &Following)> = self
                .endpoints
                .iter()
                .filter(|(_, following)| following.after < row.position)
                .collect();
            if wanting.is_empty() {
                continue;
            }
            let told = match told_of(&self.state, row, event).await? {
                Ok(told) => told,
                Err(why) => {
                    return Ok(Handled::StoppedAt {
                        position: row.position,
                        why,
                    })
                }
            };
            for (id, following) in wanting {
                self.made
                    .extend(messages_for(id, &following.endpoint, row.position, &told));
            }
        }
        Ok(Handled::All)
    }

    async fn save_position(&mut self, position: i64) -> Result<(), StoreError> {
        // A batch that made no message moves the stored position at most every few seconds:
        // a commit that tells nobody anything then costs no write (on SQLite, no wait for the
        // one writer). Reading those events again after a restart makes nothing twice.
        let due = self
            .stored_at
            .is_none_or(|at| at.elapsed() >= STORE_POSITION_EVERY);
        if !self.made.is_empty() || (position != self.stored && due) {
            let store = &self.state.store;
            store.store_webhook_messages(&self.made, position).await?;
            if !self.made.is_empty() {
                super::sending::messages_stored();
            }
            self.made.clear();
            self.stored = position;
            self.stored_at = Some(Instant::now());
        }
        self.position = position;
        // New endpoints join while the feed is quiet too.
        self.refresh().await
    }

    async fn undecodable(&mut self, _position: i64, _why: &str) -> Undecodable {
        Undecodable::StayOnIt
    }
}

/// The messages of one event for one endpoint: those of the notifications it wants.
fn messages_for(
    id: &str,
    endpoint: &WebhookEndpoint,
    position: i64,
    told: &[Notification],
) -> Option<EndpointMessages> {
    let messages: Vec<NewMessage> = told
        .iter()
        .filter(|notification| endpoint.wants(notification.kind))
        .map(|notification| NewMessage {
            message_id: format!("msg_{}", uuid::Uuid::now_v7().simple()),
            message_type: notification.kind.as_str().to_owned(),
            body: notification.body().to_string(),
        })
        .collect();
    (!messages.is_empty()).then(|| EndpointMessages {
        endpoint_id: id.to_owned(),
        position,
        messages,
    })
}

/// What an event tells the platform, from the domain's views just before and after it; none
/// when the domain has no view. The inner error says which event of the domain's history does
/// not decode.
async fn told_of(
    state: &AppState,
    row: &FeedRow,
    event: &CustomDomainEvent,
) -> Result<Result<Vec<Notification>, String>, StoreError> {
    let sequence = u64::try_from(row.sequence).unwrap_or(0);
    let around = match views_around(state, &row.aggregate_id, sequence).await? {
        Ok(around) => around,
        Err(why) => {
            return Ok(Err(format!(
                "{} {}: {why}",
                row.event_type, row.event_version
            )))
        }
    };
    let Some((before, after)) = around else {
        tracing::warn!(position = row.position, "no view of the domain; no webhook");
        return Ok(Ok(Vec::new()));
    };
    Ok(Ok(notifications(
        event,
        before.as_ref(),
        &after,
        row.position,
    )))
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
/// history: exactly as it was then, whatever happened since. Once per event, for every
/// endpoint. The inner error says which event of the history does not decode.
async fn views_around(
    state: &AppState,
    domain_id: &str,
    sequence: u64,
) -> Result<Result<ViewsAround, String>, StoreError> {
    let history = state.store.domain_history(domain_id).await?;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_events_that_can_be_told_are_decoded() {
        assert!(may_notify("CertificateIssued"));
        assert!(may_notify("RenewalRequested"));
        assert!(!may_notify("ChallengeRecordObserved"));
        assert!(!may_notify("PrivateKeyRead"));
    }
}
