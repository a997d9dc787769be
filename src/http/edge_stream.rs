//! `GET /edge/certificates`: the certificate stream edges that keep certificates in memory
//! (and `dns-handling edge sync`) follow. The stream itself is `read::edge_stream`.

use actix_web::web::Bytes;
use actix_web::{web, HttpRequest, HttpResponse};
use serde::Deserialize;

use super::auth::Role;
use super::bodies::CallerErrors;
use super::{ApiError, SharedState};
use crate::read::edge_stream::{EdgeStreamSource, KeyReceiver};

/// Query of `GET /edge/certificates`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct EdgeStreamQuery {
    /// The last position the edge applied (the `position` of the last line it read). `0` or
    /// absent: start from a snapshot; so does a position this database never handed out (past
    /// the feed's head).
    #[param(minimum = 0)]
    after: Option<i64>,
    /// Keep the stream open and send each change as it commits (on any replica); without it
    /// the stream ends once caught up.
    follow: Option<bool>,
}

/// `GET /edge/certificates?after=&follow=`: NDJSON, one line per change of what the edges
/// serve. From a snapshot (`snapshot_begins`, a `served` line per certificate served then,
/// `snapshot_ends`) when `after` is `0`, absent or past the feed's head; then the changes after
/// that position in commit order: `served` (a certificate issued, with the one it `replaces`)
/// and `withdrawn` (revoked, expired, its key destroyed, the domain removed; no key). Every
/// line carries the `position` to resume from. Every key sent is recorded for the asker
/// (`edge:<name>`, or `admin`) before the chunk carrying it leaves: its first delivery, in
/// `GET /audit/edge-deliveries`.
#[utoipa::path(
    get, path = "/edge/certificates", operation_id = "edgeCertificateStream", tag = "edge",
    params(EdgeStreamQuery),
    responses(
        (status = 200, description = "The stream: one JSON line each (`kind`: `snapshot_begins`, `served`, `withdrawn`, `snapshot_ends`); an error mid-way ends it early, and the edge resumes from the last position it read",
            content_type = "application/x-ndjson", body = String),
        CallerErrors
    ),
    security(("bearer" = []), ("basic" = []))
)]
pub async fn stream(
    state: SharedState,
    request: HttpRequest,
    query: web::Query<EdgeStreamQuery>,
) -> Result<HttpResponse, ApiError> {
    let after = query.after.unwrap_or(0);
    if after < 0 {
        return Err(ApiError::BadRequest("after must be 0 or a position".into()));
    }
    let source = EdgeStreamSource {
        store: state.store.clone(),
        vault: state.vault.clone(),
        poll_interval: state.settings.feed_poll_interval,
        stopping: state.stopping.clone(),
        receiver: match Role::of(&request) {
            Role::Edge(name) => KeyReceiver::Edge(name.to_string()),
            // Auditors are refused on the edge routes: anyone else here is the admin.
            _ => KeyReceiver::Admin,
        },
    };
    let stream = source.open(after, query.follow.unwrap_or(false));
    let chunks = futures::stream::unfold(stream, |mut stream| async move {
        let chunk = stream.next().await?;
        let chunk = chunk.map(Bytes::from).map_err(ApiError::from);
        Some((chunk.map_err(actix_web::Error::from), stream))
    });
    Ok(HttpResponse::Ok()
        .content_type("application/x-ndjson")
        .streaming(chunks))
}
