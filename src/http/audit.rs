//! Signed checkpoints of the log, for auditors to keep copies of elsewhere.

use actix_web::{web, HttpResponse};
use serde::{Deserialize, Serialize};

use super::bodies::{CallerErrors, ChangeErrors};
use super::{ApiError, SharedState};
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
