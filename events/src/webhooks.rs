//! The events of webhook endpoints: each endpoint is an aggregate of its own, stored in the
//! `webhook_events` table beside the domains' log and hash-chained the same way. Its signing
//! secrets are never in an event: an event names a secret by its id, and the secret itself is
//! sealed in the store (as certificate keys are).

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// The aggregate type name under which every webhook endpoint's events are stored.
pub const WEBHOOK_AGGREGATE_TYPE: &str = "WebhookEndpoint";

/// Every fact recorded about a webhook endpoint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub enum WebhookEndpointEvent {
    /// The endpoint was created; it is sent what happens after `starts_after_position`.
    EndpointCreated {
        /// Where messages are POSTed.
        url: String,
        /// The notification types it is sent (empty: every type).
        event_types: Vec<String>,
        /// What it is for, in the operator's words.
        description: String,
        /// The id of its signing secret (the secret is sealed in the store).
        secret_id: String,
        /// The feed position it starts after: nothing before its creation is sent.
        starts_after_position: i64,
        /// When.
        created_at: DateTime<Utc>,
    },
    /// A new signing secret replaced the current one; the previous one signs beside it until
    /// `previous_valid_until`, so a receiver can switch without losing a message.
    SecretRotated {
        /// The new secret's id.
        secret_id: String,
        /// The replaced secret's id.
        previous_secret_id: String,
        /// Until when the replaced secret signs too.
        previous_valid_until: DateTime<Utc>,
        /// When.
        rotated_at: DateTime<Utc>,
    },
    /// The endpoint was disabled: its receiver answered `410 Gone`. Nothing more is sent.
    EndpointDisabled {
        /// Why, in words.
        reason: String,
        /// When.
        disabled_at: DateTime<Utc>,
    },
    /// The endpoint was deleted.
    EndpointDeleted {
        /// When.
        deleted_at: DateTime<Utc>,
    },
}

impl WebhookEndpointEvent {
    /// The event's type name as stored.
    pub fn type_name(&self) -> &'static str {
        match self {
            Self::EndpointCreated { .. } => "EndpointCreated",
            Self::SecretRotated { .. } => "SecretRotated",
            Self::EndpointDisabled { .. } => "EndpointDisabled",
            Self::EndpointDeleted { .. } => "EndpointDeleted",
        }
    }
}

impl cqrs_es::DomainEvent for WebhookEndpointEvent {
    fn event_type(&self) -> String {
        self.type_name().to_owned()
    }

    fn event_version(&self) -> String {
        crate::INITIAL_EVENT_VERSION.to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_endpoint_event_is_stored_under_its_type_name() {
        let at = Utc::now();
        for event in [
            WebhookEndpointEvent::EndpointCreated {
                url: "https://hooks.example/a".into(),
                event_types: vec![],
                description: String::new(),
                secret_id: "s1".into(),
                starts_after_position: 7,
                created_at: at,
            },
            WebhookEndpointEvent::SecretRotated {
                secret_id: "s2".into(),
                previous_secret_id: "s1".into(),
                previous_valid_until: at,
                rotated_at: at,
            },
            WebhookEndpointEvent::EndpointDisabled {
                reason: "410".into(),
                disabled_at: at,
            },
            WebhookEndpointEvent::EndpointDeleted { deleted_at: at },
        ] {
            let json = serde_json::to_value(&event).expect("serialises");
            let keys: Vec<&String> = json.as_object().expect("an object").keys().collect();
            assert_eq!(keys, [event.type_name()]);
            let back: WebhookEndpointEvent = serde_json::from_value(json).expect("reads back");
            assert_eq!(back, event);
        }
    }
}
