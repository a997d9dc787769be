//! Reading a webhook endpoint as its events make it, for its handlers and its driver.

use cqrs_es::{AggregateContext, AggregateError, EventStore};

use crate::app_state::AppState;
use crate::domain::webhook_endpoint::{WebhookEndpoint, WebhookEndpointError};

/// The webhook endpoint `id` as its events make it (a default, not created, when it has none).
pub async fn webhook_endpoint(
    state: &AppState,
    id: &str,
) -> Result<WebhookEndpoint, AggregateError<WebhookEndpointError>> {
    Ok(state
        .webhook_events
        .load_aggregate(id)
        .await?
        .aggregate()
        .clone())
}
