//! Handlers of `/webhooks…`: the endpoints the platform is told of events at, their secrets and
//! their delivery record. Creating, deleting and rotating are admin-only (a read-only token
//! gets `403`, as on every write); a secret is shown once, when it is made.

use actix_web::{web, HttpRequest, HttpResponse};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::bodies::{rfc3339, rfc3339_opt, CallerErrors, ChangeErrors, NotFoundError};
use super::origin::origin;
use super::{ApiError, SharedState};
use crate::adapters::webhook_sender::{check_target, new_secret};
use crate::app_state::AppState;
use crate::domain::notifications::NotificationType;
use crate::domain::webhook_endpoint::{WebhookEndpoint, WebhookEndpointCommand};
use crate::use_cases::webhook_endpoints::webhook_endpoint;

/// Body of `POST /webhooks`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateWebhook {
    /// Where messages are POSTed (`https://…`; `http://` too). Its host must not resolve to a
    /// loopback, private, link-local or metadata address.
    #[schema(example = "https://hooks.platform.example/certificates")]
    pub url: String,
    /// The notification types to send; omitted or empty: every type.
    #[schema(example = json!(["certificate.issued", "certificate.renewed"]))]
    pub events: Option<Vec<String>>,
    /// What the endpoint is for.
    pub description: Option<String>,
}

/// A webhook endpoint (never its secret).
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct WebhookBody {
    /// The endpoint's id.
    pub id: String,
    /// Where messages are POSTed.
    pub url: String,
    /// The notification types it is sent (empty: every type).
    pub events: Vec<String>,
    /// What it is for.
    pub description: String,
    /// `active`, or `disabled` (its receiver answered `410 Gone`).
    pub status: &'static str,
    /// Why it is disabled.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub disabled_reason: Option<String>,
    /// Until when the replaced secret signs beside the current one, after a rotation.
    #[serde(
        serialize_with = "rfc3339_opt",
        skip_serializing_if = "Option::is_none"
    )]
    pub previous_secret_valid_until: Option<DateTime<Utc>>,
    /// Messages waiting (the one being tried included).
    pub pending_messages: i64,
    /// Messages delivered.
    pub delivered_messages: i64,
    /// Messages failed for good (retries spent, or refused with `410`).
    pub failed_messages: i64,
    /// When it was created.
    #[serde(serialize_with = "rfc3339")]
    pub created_at: DateTime<Utc>,
}

/// `201` body of `POST /webhooks` and `200` body of `POST /webhooks/{id}/rotate-secret`: the
/// endpoint and its new secret, shown this once.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct WebhookWithSecret {
    /// The endpoint.
    #[serde(flatten)]
    pub endpoint: WebhookBody,
    /// The signing secret (`whsec_…`, Standard Webhooks): store it now, it is never shown again.
    #[schema(example = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")]
    pub secret: String,
}

/// `200` body of `GET /webhooks`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct WebhookList {
    /// Every endpoint not deleted, oldest first.
    pub items: Vec<WebhookBody>,
}

/// One delivery attempt.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct DeliveryBody {
    /// The attempt's id (pass as `before` for older ones).
    pub id: i64,
    /// The message (`webhook-id`: the same on every attempt of one message).
    pub message_id: String,
    /// The feed position of the event the message reports.
    pub position: i64,
    /// Which attempt of the message (1 for the first).
    pub attempt: i64,
    /// When it was made.
    #[serde(serialize_with = "rfc3339")]
    pub attempted_at: DateTime<Utc>,
    /// The receiver's status code; absent when it did not answer.
    pub status_code: Option<i64>,
    /// How long it took, in milliseconds.
    pub latency_ms: i64,
    /// What went wrong when there was no answer (refused, timed out, …).
    pub error: Option<String>,
}

/// `200` body of `GET /webhooks/{id}/deliveries`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct DeliveryPage {
    /// Attempts, newest first.
    pub items: Vec<DeliveryBody>,
    /// Pass as `before` for the next (older) page; `null` after the last.
    pub next_before: Option<i64>,
}

/// Query of `GET /webhooks/{id}/deliveries`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct DeliveryQuery {
    /// Only attempts before this id (the `next_before` of the previous page).
    #[param(minimum = 1)]
    before: Option<i64>,
    /// Page size, 1 to 500 (default 100).
    #[param(minimum = 1)]
    limit: Option<u32>,
}

/// The endpoint `id`, or `404` when it does not exist or was deleted.
async fn live(state: &AppState, id: &str) -> Result<WebhookEndpoint, ApiError> {
    let endpoint = webhook_endpoint(state, id).await?;
    if !endpoint.created || endpoint.deleted_at.is_some() {
        return Err(ApiError::NotFound(format!(
            "no webhook endpoint with id {id}"
        )));
    }
    Ok(endpoint)
}

async fn body_of(
    state: &AppState,
    id: &str,
    endpoint: WebhookEndpoint,
) -> Result<WebhookBody, ApiError> {
    let (pending, delivered, failed) = state.store.webhook_message_counts(id).await?;
    Ok(WebhookBody {
        id: id.to_owned(),
        status: if endpoint.disabled.is_some() {
            "disabled"
        } else {
            "active"
        },
        disabled_reason: endpoint.disabled.map(|(reason, _)| reason),
        previous_secret_valid_until: endpoint
            .previous_secret
            .map(|(_, until)| until)
            .filter(|until| *until > Utc::now()),
        url: endpoint.url,
        events: endpoint.event_types,
        description: endpoint.description,
        pending_messages: pending,
        delivered_messages: delivered,
        failed_messages: failed,
        created_at: endpoint.created_at.unwrap_or_default(),
    })
}

/// Records a command that gives the endpoint a new secret (sealed before, so the endpoint never
/// names a secret that is not stored) and answers `body`, the endpoint as it stands once the
/// command is recorded, built before: nothing that can fail comes after the commit, so a
/// secret that was recorded is always shown (it is shown only this once).
async fn record_with_secret(
    state: &AppState,
    request: &HttpRequest,
    id: &str,
    command: WebhookEndpointCommand,
    body: WebhookBody,
    secret: String,
    status: actix_web::http::StatusCode,
) -> Result<HttpResponse, ApiError> {
    state
        .webhooks
        .execute_with_metadata(id, command, origin(request).0)
        .await?;
    Ok(HttpResponse::build(status).json(WebhookWithSecret {
        endpoint: body,
        secret,
    }))
}

/// `POST /webhooks`: register an endpoint; it is sent what happens from now on.
#[utoipa::path(
    post, path = "/webhooks", operation_id = "createWebhook", tag = "webhooks",
    request_body = CreateWebhook,
    responses(
        (status = 201, description = "Created; the secret is shown this once", body = WebhookWithSecret),
        (status = 413, description = "Body too large", body = super::bodies::ErrorBody),
        (status = 415, description = "Body is not JSON", body = super::bodies::ErrorBody),
        CallerErrors, ChangeErrors
    ),
    security(("bearer" = []))
)]
pub async fn create(
    state: SharedState,
    request: HttpRequest,
    body: web::Json<CreateWebhook>,
) -> Result<HttpResponse, ApiError> {
    let body = body.into_inner();
    let mut event_types = Vec::new();
    for name in body.events.unwrap_or_default() {
        let Some(kind) = NotificationType::parse(&name) else {
            let known: Vec<&str> = NotificationType::ALL.iter().map(|k| k.as_str()).collect();
            return Err(ApiError::BadRequest(format!(
                "unknown event type {name:?}; use {}",
                known.join(", ")
            )));
        };
        if !event_types.contains(&kind) {
            event_types.push(kind);
        }
    }
    let description = body.description.unwrap_or_default();
    if description.chars().count() > 500 {
        return Err(ApiError::BadRequest(
            "description is longer than 500 characters".into(),
        ));
    }
    let url = check_target(&body.url, state.settings.webhook_allow_private_targets)
        .await
        .map_err(|refusal| ApiError::BadRequest(refusal.to_string()))?;
    let id = uuid::Uuid::now_v7().to_string();
    let (secret, secret_id) = (new_secret(), uuid::Uuid::now_v7().to_string());
    // Sealed before the endpoint exists: an endpoint never names a secret that is not stored.
    state
        .vault
        .store_webhook_secret(&secret_id, &id, &secret)
        .await?;
    let (starts_after_position, _) = state.store.feed_extent().await?;
    let at = Utc::now();
    // What the endpoint will be: new, so no messages yet.
    let body = WebhookBody {
        id: id.clone(),
        url: url.to_string(),
        events: event_types
            .iter()
            .map(|kind| kind.as_str().to_owned())
            .collect(),
        description: description.clone(),
        status: "active",
        disabled_reason: None,
        previous_secret_valid_until: None,
        pending_messages: 0,
        delivered_messages: 0,
        failed_messages: 0,
        created_at: at,
    };
    let command = WebhookEndpointCommand::Create {
        url: url.to_string(),
        event_types,
        description,
        secret_id,
        starts_after_position,
        at,
    };
    let status = actix_web::http::StatusCode::CREATED;
    record_with_secret(&state, &request, &id, command, body, secret, status).await
}

/// `GET /webhooks`: every endpoint not deleted.
#[utoipa::path(
    get, path = "/webhooks", operation_id = "listWebhooks", tag = "webhooks",
    responses((status = 200, description = "The endpoints, oldest first", body = WebhookList), CallerErrors),
    security(("bearer" = []))
)]
pub async fn list(state: SharedState) -> Result<HttpResponse, ApiError> {
    let mut items = Vec::new();
    for id in state.store.webhook_endpoint_ids().await? {
        let endpoint = webhook_endpoint(&state, &id).await?;
        if endpoint.created && endpoint.deleted_at.is_none() {
            items.push(body_of(&state, &id, endpoint).await?);
        }
    }
    items.sort_by_key(|item| item.created_at);
    Ok(HttpResponse::Ok().json(WebhookList { items }))
}

/// `GET /webhooks/{id}`: one endpoint and how its messages stand.
#[utoipa::path(
    get, path = "/webhooks/{id}", operation_id = "getWebhook", tag = "webhooks",
    params(("id" = String, Path, description = "The endpoint's id")),
    responses((status = 200, description = "The endpoint", body = WebhookBody), CallerErrors, NotFoundError),
    security(("bearer" = []))
)]
pub async fn get(state: SharedState, id: web::Path<String>) -> Result<HttpResponse, ApiError> {
    let endpoint = live(&state, &id).await?;
    Ok(HttpResponse::Ok().json(body_of(&state, &id, endpoint).await?))
}

/// `DELETE /webhooks/{id}`: nothing more is sent to it; its record stays in its events.
#[utoipa::path(
    delete, path = "/webhooks/{id}", operation_id = "deleteWebhook", tag = "webhooks",
    params(("id" = String, Path, description = "The endpoint's id")),
    responses((status = 204, description = "Deleted; answered once no send to it is under way"), CallerErrors, NotFoundError, ChangeErrors),
    security(("bearer" = []))
)]
pub async fn delete(
    state: SharedState,
    request: HttpRequest,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    live(&state, &id).await?;
    let command = WebhookEndpointCommand::Delete { at: Utc::now() };
    state
        .webhooks
        .execute_with_metadata(&id, command, origin(&request).0)
        .await?;
    // A send that was under way must not still go out once this answers.
    crate::deliveries::sending::wait_for_sends_to_end(&state, &id).await;
    Ok(HttpResponse::NoContent().finish())
}

/// `POST /webhooks/{id}/rotate-secret`: a new secret signs from now on; the replaced one signs
/// beside it for `WEBHOOK_SECRET_OVERLAP` (default 24 hours), so the receiver can switch
/// without losing a message.
#[utoipa::path(
    post, path = "/webhooks/{id}/rotate-secret", operation_id = "rotateWebhookSecret", tag = "webhooks",
    params(("id" = String, Path, description = "The endpoint's id")),
    responses(
        (status = 200, description = "The new secret, shown this once", body = WebhookWithSecret),
        CallerErrors, NotFoundError, ChangeErrors
    ),
    security(("bearer" = []))
)]
pub async fn rotate_secret(
    state: SharedState,
    request: HttpRequest,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let endpoint = live(&state, &id).await?;
    let (secret, secret_id) = (new_secret(), uuid::Uuid::now_v7().to_string());
    state
        .vault
        .store_webhook_secret(&secret_id, &id, &secret)
        .await?;
    let overlap = chrono::Duration::from_std(state.settings.webhook_secret_overlap)
        .unwrap_or_else(|_| chrono::Duration::days(1));
    let now = Utc::now();
    // Read before the rotation is recorded: a read that fails then leaves the old secret as
    // it was, instead of a new one recorded and never shown.
    let mut body = body_of(&state, &id, endpoint).await?;
    body.previous_secret_valid_until = Some(now + overlap);
    let command = WebhookEndpointCommand::RotateSecret {
        secret_id,
        previous_valid_until: now + overlap,
        at: now,
    };
    let status = actix_web::http::StatusCode::OK;
    record_with_secret(&state, &request, &id, command, body, secret, status).await
}

/// `GET /webhooks/{id}/deliveries`: every attempt, newest first.
#[utoipa::path(
    get, path = "/webhooks/{id}/deliveries", operation_id = "webhookDeliveries", tag = "webhooks",
    params(("id" = String, Path, description = "The endpoint's id"), DeliveryQuery),
    responses((status = 200, description = "Attempts, newest first", body = DeliveryPage), CallerErrors, NotFoundError),
    security(("bearer" = []))
)]
pub async fn deliveries(
    state: SharedState,
    id: web::Path<String>,
    query: web::Query<DeliveryQuery>,
) -> Result<HttpResponse, ApiError> {
    live(&state, &id).await?;
    let limit = super::page_limit(query.limit, 100, 500)?;
    let before = match query.before {
        Some(before) if before < 1 => {
            return Err(ApiError::BadRequest("before must be an attempt id".into()))
        }
        Some(before) => before,
        None => i64::MAX,
    };
    let rows = state.store.webhook_attempts(&id, before, limit).await?;
    let next_before = (rows.len() == limit as usize)
        .then(|| rows.last().map(|(attempt_id, _)| *attempt_id))
        .flatten();
    let items = rows
        .into_iter()
        .map(|(attempt_id, attempt)| DeliveryBody {
            id: attempt_id,
            message_id: attempt.message_id,
            position: attempt.position,
            attempt: attempt.attempt,
            attempted_at: attempt.attempted_at,
            status_code: attempt.status_code,
            latency_ms: attempt.latency_ms,
            error: attempt.error,
        })
        .collect();
    Ok(HttpResponse::Ok().json(DeliveryPage { items, next_before }))
}
