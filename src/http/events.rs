//! The history of one domain and the global feed, for auditors and analytics.

use std::sync::Arc;

use actix_web::http::header::ACCEPT;
use actix_web::web::Bytes;
use actix_web::{web, HttpRequest, HttpResponse};
use dns_handling_events::chain::{HASH_KEY, PREV_HASH_KEY};
use dns_handling_events::feed::FeedEvent;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::bodies::{CallerErrors, NotFoundError};
use super::ApiError;
use crate::adapters::commit_signal::CommitWaiter;
use crate::app_state::AppState;

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
pub async fn history(
    services: SharedState,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let events = services.store.domain_history(&id).await?;
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

/// `GET /events?after=&limit=&follow=`: the global feed. A consumer that keeps the last
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
    services: SharedState,
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
    if !wants_ndjson {
        let limit = super::page_limit(query.limit, 100, 1000)?;
        let items = services.store.events_after(after, limit).await?;
        let next_after = items.last().map_or(after, |event| event.position);
        return Ok(HttpResponse::Ok().json(FeedPage { items, next_after }));
    }
    let stream = ndjson_stream(services.get_ref().clone(), after, query.limit, follow);
    Ok(HttpResponse::Ok()
        .content_type("application/x-ndjson")
        .streaming(stream))
}

/// One event per line from `after` on: up to `limit` events, then ends, unless `follow`, in
/// which case it waits for new events until the client goes away: it looks again as soon as
/// events are committed (see `commit_signal`), or every `FEED_POLL_INTERVAL` at the latest.
///
/// An event that cannot be encoded ends the stream with an error after the events before it,
/// never skipped: a consumer resuming from the last position it read asks for it again.
fn ndjson_stream(
    services: Arc<AppState>,
    after: i64,
    limit: Option<u32>,
    follow: bool,
) -> impl futures::Stream<Item = Result<Bytes, actix_web::Error>> {
    struct State {
        services: Arc<AppState>,
        after: i64,
        remaining: Option<u64>,
        commits: CommitWaiter,
        /// An error to end the stream with, once the lines before it are sent.
        failure: Option<ApiError>,
    }
    let state = State {
        services,
        after,
        remaining: limit.map(u64::from),
        // Made before the first read, so a commit between that read and the first wait is seen.
        commits: CommitWaiter::new(),
        failure: None,
    };
    futures::stream::unfold(state, move |mut state| async move {
        loop {
            if let Some(failure) = state.failure.take() {
                state.remaining = Some(0);
                return Some((Err(failure.into()), state));
            }
            if state.remaining == Some(0) {
                return None;
            }
            let batch = state.remaining.map_or(1000, |left| left.min(1000) as u32);
            let events = match state.services.store.events_after(state.after, batch).await {
                Ok(events) => events,
                Err(error) => {
                    state.failure = Some(ApiError::internal_from("reading the feed", error));
                    continue;
                }
            };
            if events.is_empty() {
                if !follow {
                    return None;
                }
                let interval = state.services.settings.feed_poll_interval;
                state.commits.wait(interval).await;
                continue;
            }
            let encoded = encode_lines(&events, |event| event.position);
            if let Some(failure) = encoded.failure {
                tracing::error!(error = %failure, after = ?encoded.last_position, "a feed event could not be encoded; the stream ends");
                state.failure = Some(ApiError::internal(format!(
                    "the event after position {} could not be encoded: {failure}",
                    encoded.last_position.unwrap_or(state.after)
                )));
            }
            state.after = encoded.last_position.unwrap_or(state.after);
            state.remaining = state
                .remaining
                .map(|left| left.saturating_sub(encoded.count as u64));
            if encoded.lines.is_empty() {
                continue;
            }
            return Some((Ok(Bytes::from(encoded.lines)), state));
        }
    })
}

/// NDJSON lines of a batch, up to the first event that failed to encode.
struct EncodedLines {
    /// One line per event encoded.
    lines: Vec<u8>,
    /// How many events the lines hold.
    count: usize,
    /// The position of the last event encoded.
    last_position: Option<i64>,
    /// Why the next event could not be encoded, if one could not.
    failure: Option<String>,
}

/// Encodes `events` one per line, stopping at the first that fails: the events after it are
/// not sent either, since a consumer's position may only move past events it has received.
fn encode_lines<E: Serialize>(events: &[E], position: impl Fn(&E) -> i64) -> EncodedLines {
    let mut encoded = EncodedLines {
        lines: Vec::with_capacity(events.len() * 512),
        count: 0,
        last_position: None,
        failure: None,
    };
    for event in events {
        let line = match serde_json::to_vec(event) {
            Ok(line) => line,
            Err(error) => {
                encoded.failure = Some(error.to_string());
                break;
            }
        };
        encoded.lines.extend_from_slice(&line);
        encoded.lines.push(b'\n');
        encoded.count += 1;
        encoded.last_position = Some(position(event));
    }
    encoded
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An event whose encoding fails when `fails` is set.
    struct Event {
        position: i64,
        fails: bool,
    }

    impl Serialize for Event {
        fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
            if self.fails {
                return Err(serde::ser::Error::custom("cannot encode"));
            }
            serializer.serialize_i64(self.position)
        }
    }

    fn event(position: i64, fails: bool) -> Event {
        Event { position, fails }
    }

    #[test]
    fn an_event_that_fails_to_encode_stops_the_batch_without_moving_past_it() {
        let events = [event(4, false), event(5, true), event(6, false)];
        let encoded = encode_lines(&events, |event| event.position);
        assert_eq!(encoded.lines, b"4\n");
        assert_eq!(encoded.count, 1);
        assert_eq!(encoded.last_position, Some(4));
        assert_eq!(encoded.failure.as_deref(), Some("cannot encode"));
    }

    #[test]
    fn a_first_event_that_fails_to_encode_sends_nothing_and_keeps_the_position() {
        let encoded = encode_lines(&[event(7, true)], |event| event.position);
        assert!(encoded.lines.is_empty());
        assert_eq!(encoded.last_position, None);
        assert!(encoded.failure.is_some());
    }

    #[test]
    fn a_batch_that_encodes_moves_to_its_last_position() {
        let encoded = encode_lines(&[event(1, false), event(2, false)], |event| event.position);
        assert_eq!(encoded.lines, b"1\n2\n");
        assert_eq!(encoded.last_position, Some(2));
        assert!(encoded.failure.is_none());
    }
}
