//! `FeedEvent`: one event as the global feed, the history endpoint and exports carry it.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// One stored event with its place in the global order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct FeedEvent {
    /// Stable position in the one total order of all events (strictly increasing in commit
    /// order; numbers may skip, events never are).
    pub position: i64,
    /// The domain (stream) the event belongs to.
    pub aggregate_id: String,
    /// Position in the domain's own stream, from 1.
    pub sequence: i64,
    /// Event type, e.g. `CertificateIssued`.
    pub event_type: String,
    /// Version of the payload as stored.
    pub event_version: String,
    /// When the event was stored (RFC 3339, UTC).
    pub recorded_at: String,
    /// The payload as stored (pass it through [`crate::upcast::upcast`] to read it as current).
    pub payload: Value,
    /// Who caused it (request id, role, client address, actor) plus the hash chain.
    pub metadata: Value,
}

impl FeedEvent {
    /// The payload decoded as the current event type, after upcasting.
    pub fn decode(&self) -> Result<crate::CustomDomainEvent, serde_json::Error> {
        let (payload, _) =
            crate::upcast::upcast(&self.event_type, &self.event_version, self.payload.clone());
        serde_json::from_value(payload)
    }
}
