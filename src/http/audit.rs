//! What auditors read beside the events: the signed checkpoints of the log, to keep copies of
//! elsewhere, and the keys the certificate stream handed out (its receipts).

use actix_web::{web, HttpResponse};
use serde::{Deserialize, Serialize};

use super::bodies::{CallerErrors, ChangeErrors, ErrorBody};
use super::{ApiError, SharedState};
use crate::adapters::store::{recorded_receiver, DeliveriesOf, EdgeKeyDelivery};
use crate::audit::checkpoints::{sign_checkpoint, Checkpoint, CheckpointError};

/// Query of `GET /audit/checkpoints`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct CheckpointQuery {
    /// Only checkpoints of positions before this one (the `next_before` of the previous page).
    #[param(minimum = 0)]
    before: Option<i64>,
    /// Page size, 1 to 1000 (default 100).
    #[param(minimum = 1)]
    limit: Option<u32>,
}

/// `200` body of `GET /audit/checkpoints`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct CheckpointPage {
    /// Checkpoints, latest first.
    pub items: Vec<Checkpoint>,
    /// Pass as `before` for the next (older) page; `null` after the last.
    pub next_before: Option<i64>,
}

/// `GET /audit/checkpoints`: the signed checkpoints, latest first.
#[utoipa::path(
    get, path = "/audit/checkpoints", operation_id = "listCheckpoints", tag = "events",
    params(CheckpointQuery),
    responses(
        (status = 200, description = "Signed checkpoints of the log, latest first", body = CheckpointPage),
        CallerErrors
    ),
    security(("bearer" = []))
)]
pub async fn list(
    state: SharedState,
    query: web::Query<CheckpointQuery>,
) -> Result<HttpResponse, ApiError> {
    let limit = super::page_limit(query.limit, 100, 1000)?;
    if query.before.is_some_and(|before| before < 0) {
        return Err(ApiError::BadRequest(
            "before must be 0 or a position".into(),
        ));
    }
    let items = state.store.audit_checkpoints(query.before, limit).await?;
    let next_before = (items.len() == limit as usize)
        .then(|| items.last().map(|checkpoint| checkpoint.position))
        .flatten();
    Ok(HttpResponse::Ok().json(CheckpointPage { items, next_before }))
}

/// `POST /audit/checkpoints`: sign a checkpoint of the log now.
#[utoipa::path(
    post, path = "/audit/checkpoints", operation_id = "signCheckpoint", tag = "events",
    responses(
        (status = 201, description = "A new checkpoint, covering every event committed so far", body = Checkpoint),
        (status = 200, description = "No event was added since the latest checkpoint: that one", body = Checkpoint),
        CallerErrors, ChangeErrors
    ),
    security(("bearer" = []))
)]
pub async fn sign(state: SharedState) -> Result<HttpResponse, ApiError> {
    let (checkpoint, new) = match sign_checkpoint(&state.store, &state.signer).await {
        Ok(signed) => signed,
        Err(CheckpointError::Store(error)) => return Err(error.into()),
        Err(refused @ CheckpointError::Refused(_)) => {
            crate::metrics::METRICS.checkpoint_refusals.inc();
            return Err(ApiError::internal_from("signing a checkpoint", refused));
        }
    };
    Ok(if new {
        HttpResponse::Created().json(checkpoint)
    } else {
        HttpResponse::Ok().json(checkpoint)
    })
}

/// Query of `GET /audit/edge-deliveries`: one of `edge` and `certificate_id`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct DeliveriesQuery {
    /// The receiver whose deliveries to list: an edge's name in `EDGE_TOKENS` (or as recorded,
    /// `edge:<name>`), or `admin`. Listed by certificate id.
    edge: Option<String>,
    /// The certificate whose receivers to list. Listed by receiver.
    certificate_id: Option<String>,
    /// The `next_after` of the previous page.
    after: Option<String>,
    /// Page size, 1 to 1000 (default 100).
    #[param(minimum = 1)]
    limit: Option<u32>,
}

/// `200` body of `GET /audit/edge-deliveries`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct DeliveryPage {
    /// First deliveries, by certificate id (for an `edge`) or by receiver (for a
    /// `certificate_id`).
    pub items: Vec<EdgeKeyDelivery>,
    /// Pass as `after` for the next page; `null` after the last.
    pub next_after: Option<String>,
}

/// `GET /audit/edge-deliveries?edge=|certificate_id=`: the private keys the certificate stream
/// (`GET /edge/certificates`) handed out, each receiver's first delivery of each certificate's
/// key. (`GET /edge/certificate` records its reads as `PrivateKeyRead` events instead.)
#[utoipa::path(
    get, path = "/audit/edge-deliveries", operation_id = "listEdgeKeyDeliveries", tag = "events",
    params(DeliveriesQuery),
    responses(
        (status = 200, description = "The first delivery of each certificate's key to each receiver, one page", body = DeliveryPage),
        (status = 403, description = "An edge token: this is not an edge route", body = ErrorBody),
        CallerErrors
    ),
    security(("bearer" = []))
)]
pub async fn edge_deliveries(
    state: SharedState,
    query: web::Query<DeliveriesQuery>,
) -> Result<HttpResponse, ApiError> {
    let limit = super::page_limit(query.limit, 100, 1000)?;
    let receiver = query.edge.as_deref().map(recorded_receiver);
    let of = match (&receiver, &query.certificate_id) {
        (Some(receiver), None) => DeliveriesOf::Receiver(receiver),
        (None, Some(certificate_id)) => DeliveriesOf::Certificate(certificate_id),
        _ => {
            return Err(ApiError::BadRequest(
                "give one of edge and certificate_id".into(),
            ))
        }
    };
    let after = query.after.as_deref().unwrap_or("");
    let items = state.store.key_deliveries(of, after, limit).await?;
    let next_after = (items.len() == limit as usize)
        .then(|| items.last())
        .flatten()
        .map(|last| match of {
            DeliveriesOf::Receiver(_) => last.certificate_id.clone(),
            DeliveriesOf::Certificate(_) => last.edge.clone(),
        });
    Ok(HttpResponse::Ok().json(DeliveryPage { items, next_after }))
}
