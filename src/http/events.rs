//! The history of one domain and the global feed, for auditors and analytics.

use std::sync::Arc;

use actix_web::http::header::ACCEPT;
use actix_web::web::Bytes;
use actix_web::{web, HttpRequest, HttpResponse};
use async_trait::async_trait;
use dns_handling_events::chain::{HASH_KEY, PREV_HASH_KEY};
use dns_handling_events::feed::FeedEvent;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::auth::Role;
use super::bodies::{CallerErrors, NotFoundError};
use super::ApiError;
use crate::adapters::store::StoreError;
use crate::app_state::AppState;
use crate::domain::tenant::Scope;
use crate::read::feed_follower::{FeedConsumer, FeedFollower, Handed, Handled, Undecodable, Wait};
use crate::read::tenant_filter::TenantFilter;
use crate::tasks::AbortOnDrop;

use super::SharedState;

/// One entry of `GET /domains/{id}/events`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct HistoryEntry {
    /// Position in the domain's stream, from 1.
    pub sequence: i64,
    /// Position in the global feed.
    pub position: i64,
    /// Event type.
    pub event_type: String,
    /// Payload version as stored.
    pub event_version: String,
    /// When it was stored.
    pub recorded_at: String,
    /// The payload as stored.
    pub payload: Value,
    /// Who caused it: request id, role, client address, actor.
    pub metadata: Value,
    /// SHA-256 over this event's canonical content and `prev_hash`.
    pub hash: Option<String>,
    /// The previous event's hash (all zeros for the first).
    pub prev_hash: Option<String>,
}

impl From<FeedEvent> for HistoryEntry {
    fn from(event: FeedEvent) -> Self {
        let mut metadata = event.metadata;
        let mut take = |key: &str| {
            metadata
                .as_object_mut()
                .and_then(|map| map.remove(key))
                .and_then(|value| value.as_str().map(str::to_owned))
        };
        let hash = take(HASH_KEY);
        let prev_hash = take(PREV_HASH_KEY);
        Self {
            sequence: event.sequence,
            position: event.position,
            event_type: event.event_type,
            event_version: event.event_version,
            recorded_at: event.recorded_at,
            payload: event.payload,
            metadata,
            hash,
            prev_hash,
        }
    }
}

/// `GET /domains/{id}/events`: every event of one domain, in order (also of a removed one).
#[utoipa::path(
    get, path = "/domains/{id}/events", operation_id = "domainHistory", tag = "events",
    params(("id" = String, Path, description = "The domain's id")),
    responses(
        (status = 200, description = "Every event of the domain, in order", body = Vec<HistoryEntry>),
        CallerErrors, NotFoundError
    ),
    security(("bearer" = []))
)]
pub async fn history(state: SharedState, id: web::Path<String>) -> Result<HttpResponse, ApiError> {
    let events = state.store.domain_history(&id).await?;
    if events.is_empty() {
        return Err(ApiError::NotFound(format!("no domain with id {id}")));
    }
    let entries: Vec<HistoryEntry> = events.into_iter().map(HistoryEntry::from).collect();
    Ok(HttpResponse::Ok().json(entries))
}

/// Query of `GET /events`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct FeedQuery {
    /// The last position already processed (default 0: from the start).
    #[param(minimum = 0)]
    after: Option<i64>,
    /// Page size, 1 to 1000 (default 100); with NDJSON, how many events to stream at most.
    #[param(minimum = 1)]
    limit: Option<u32>,
    /// Keep an NDJSON stream open for new events, each sent as soon as it commits (on any
    /// replica).
    follow: Option<bool>,
}

/// `200` body of `GET /events` as JSON.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct FeedPage {
    /// Events after `after`, in the global order.
    pub items: Vec<FeedEvent>,
    /// Pass as `after` to continue: the last position of this page (or `after` if empty).
    pub next_after: i64,
}

/// `GET /events?after=&limit=&follow=`: the global feed (a tenant token's: its domains' events
/// only, so its page may hold fewer than `limit`; `next_after` is past every event read). A consumer that keeps the last
/// position it processed and asks again from it never misses or repeats an event: positions
/// are handed out in commit order (see the migrations).
#[utoipa::path(
    get, path = "/events", operation_id = "eventFeed", tag = "events",
    params(FeedQuery),
    responses(
        (status = 200, description = "Events after `after`: a JSON page, or NDJSON with `Accept: application/x-ndjson`",
            content((FeedPage = "application/json"), (String = "application/x-ndjson"))),
        CallerErrors
    ),
    security(("bearer" = []))
)]
pub async fn feed(
    state: SharedState,
    request: HttpRequest,
    query: web::Query<FeedQuery>,
) -> Result<HttpResponse, ApiError> {
    let after = query.after.unwrap_or(0);
    if after < 0 {
        return Err(ApiError::BadRequest("after must be 0 or a position".into()));
    }
    let wants_ndjson = request
        .headers()
        .get(ACCEPT)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|accept| accept.contains("application/x-ndjson"));
    let follow = query.follow.unwrap_or(false);
    if follow && !wants_ndjson {
        return Err(ApiError::BadRequest(
            "follow=true streams: send Accept: application/x-ndjson".into(),
        ));
    }
    // A tenant's feed: its domains' events only.
    let mut filter = match Role::of(&request).scope() {
        Scope::All => None,
        Scope::Tenant(tenant) => Some(TenantFilter::new(
            tenant,
            state.views.clone(),
            state.store.clone(),
        )),
    };
    if !wants_ndjson {
        let limit = super::page_limit(query.limit, 100, 1000)?;
        let items = state.store.events_after(after, limit).await?;
        // Past every event read, kept or not, so a tenant's next page goes on from there.
        let next_after = items.last().map_or(after, |event| event.position);
        let items = match filter.as_mut() {
            Some(filter) => filter.keep(items).await?,
            None => items,
        };
        return Ok(HttpResponse::Ok().json(FeedPage { items, next_after }));
    }
    let stream = ndjson_stream(state.get_ref().clone(), after, query.limit, follow, filter);
    Ok(HttpResponse::Ok()
        .content_type("application/x-ndjson")
        .streaming(stream))
}

/// One event per line from `after` on: up to `limit` events, then ends, unless `follow`, in
/// which case it waits for new events until the client goes away or the process stops: it
/// looks again as soon as events are committed (see `commit_signal`), or every
/// `FEED_POLL_INTERVAL` at the latest.
/// A feed follower (`read::feed_follower`) does the reading, in a task that ends with the
/// stream.
///
/// An event that cannot be encoded ends the stream with an error after the events before it,
/// never skipped: a consumer resuming from the last position it read asks for it again.
fn ndjson_stream(
    state: Arc<AppState>,
    after: i64,
    limit: Option<u32>,
    follow: bool,
    filter: Option<TenantFilter>,
) -> impl futures::Stream<Item = Result<Bytes, actix_web::Error>> {
    // One batch in hand and one waiting at most: the client's pace paces the reads.
    let (lines, receiver) = tokio::sync::mpsc::channel(1);
    let stream = StreamConsumer {
        after,
        remaining: limit.map(u64::from),
        follow,
        poll_interval: state.settings.feed_poll_interval,
        lines,
        filter,
    };
    let follower = FeedFollower::new(state.store.clone(), stream);
    let stopping = state.stopping.clone();
    // Stopping drops the follower, and with it the sender of the lines: the response ends after
    // the lines already handed over (see `tasks::Stopping`).
    let task = AbortOnDrop(actix_web::rt::spawn(async move {
        tokio::select! {
            () = follower.follow() => {}
            () = stopping.wait() => {}
        }
    }));
    futures::stream::unfold((receiver, task), |(mut receiver, task)| async move {
        let item = receiver.recv().await?;
        Some((item.map_err(actix_web::Error::from), (receiver, task)))
    })
}

/// A `GET /events` stream as a consumer of the feed: its position is the client's, kept in
/// memory; it hands the lines to the response, and ends when the client goes away, when it
/// sent `limit` events, or (without `follow`) at the end of the feed.
struct StreamConsumer {
    /// The last position sent.
    after: i64,
    /// Events still to send, when limited.
    remaining: Option<u64>,
    follow: bool,
    poll_interval: std::time::Duration,
    lines: tokio::sync::mpsc::Sender<Result<Bytes, ApiError>>,
    /// A tenant's stream: the events of its domains only.
    filter: Option<TenantFilter>,
}

#[async_trait]
impl FeedConsumer for StreamConsumer {
    type Record = FeedEvent;

    fn names(&self) -> Vec<String> {
        vec!["events-stream".to_owned()]
    }

    fn batch_size(&self) -> u32 {
        self.remaining
            .map_or(1000, |left| left.clamp(1, 1000) as u32)
    }

    fn wait(&self) -> Wait {
        if self.follow {
            Wait::ForCommitOrAfter(self.poll_interval)
        } else {
            Wait::Ends
        }
    }

    async fn load_position(&mut self) -> Result<i64, StoreError> {
        Ok(self.after)
    }

    async fn handle(&mut self, rows: Vec<Handed<'_, FeedEvent>>) -> Result<Handled, StoreError> {
        let mut lines = Vec::with_capacity(rows.len() * 512);
        let mut sent = 0u64;
        for handed in &rows {
            if let Some(filter) = self.filter.as_mut() {
                if !filter.admits(handed.row).await? {
                    continue;
                }
            }
            lines.extend(handed.decoded.iter().flatten());
            sent += 1;
        }
        // A tenant's batch may hold none of its events: nothing to send then.
        if !lines.is_empty() && self.lines.send(Ok(Bytes::from(lines))).await.is_err() {
            return Ok(Handled::Finished);
        }
        self.remaining = self.remaining.map(|left| left.saturating_sub(sent));
        Ok(match self.remaining {
            Some(0) => Handled::Finished,
            _ => Handled::All,
        })
    }

    async fn save_position(&mut self, position: i64) -> Result<(), StoreError> {
        self.after = position;
        Ok(())
    }

    async fn failed(&mut self, error: &StoreError) -> bool {
        // The stream ends with the error; the client resumes from the last position it read.
        let _ = self
            .lines
            .send(Err(ApiError::internal(format!(
                "reading the feed: {error}"
            ))))
            .await;
        false
    }

    async fn undecodable(&mut self, position: i64, why: &str) -> Undecodable {
        tracing::error!(error = %why, after = self.after, position, "a feed event could not be encoded; the stream ends");
        // Sent by `failed`, which the follower calls with this error.
        Undecodable::Stop(StoreError::other(
            format!(
                "the event after position {} could not be encoded",
                self.after
            ),
            why.to_owned(),
        ))
    }
}
