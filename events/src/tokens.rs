//! The events of access tokens: each token the service manages is an aggregate of its own,
//! stored in the `token_events` table beside the domains' log, hash-chained the same way and
//! outside the global feed (the feed is what webhook endpoints are sent and what `GET /events`
//! shows). A token's secret is never in an event: only its SHA-256, from which the secret
//! cannot be found (it is 256 random bits).

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// The aggregate type name under which every access token's events are stored.
pub const TOKEN_AGGREGATE_TYPE: &str = "AccessToken";

/// Every fact recorded about an access token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub enum AccessTokenEvent {
    /// The token was made; it is accepted from now until it expires or is revoked.
    TokenCreated {
        /// What it is for, in the operator's words (an edge token's name is the edge's).
        name: String,
        /// `admin`, `auditor`, `edge` or `tenant`.
        role: String,
        /// The tenant a `tenant` token acts for; `null` for the other roles.
        tenant: Option<String>,
        /// SHA-256 of the secret, lower-case hex: all that is kept of it.
        secret_sha256: String,
        /// When it stops being accepted; `null`: never.
        expires_at: Option<DateTime<Utc>>,
        /// The prefixes (CIDR) its caller's address must be in; empty: any address.
        allowed_from: Vec<String>,
        /// When.
        created_at: DateTime<Utc>,
    },
    /// The token was revoked: it is refused from now on, on every replica.
    TokenRevoked {
        /// When.
        revoked_at: DateTime<Utc>,
    },
}

impl AccessTokenEvent {
    /// The event's type name as stored.
    pub fn type_name(&self) -> &'static str {
        match self {
            Self::TokenCreated { .. } => "TokenCreated",
            Self::TokenRevoked { .. } => "TokenRevoked",
        }
    }
}

impl cqrs_es::DomainEvent for AccessTokenEvent {
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
    fn every_token_event_is_stored_under_its_type_name_and_reads_back() {
        let at = Utc::now();
        for event in [
            AccessTokenEvent::TokenCreated {
                name: "deploys".into(),
                role: "admin".into(),
                tenant: None,
                secret_sha256: "ab".repeat(32),
                expires_at: Some(at),
                allowed_from: vec!["10.0.0.0/8".into()],
                created_at: at,
            },
            AccessTokenEvent::TokenRevoked { revoked_at: at },
        ] {
            let json = serde_json::to_value(&event).expect("serialises");
            let keys: Vec<&String> = json.as_object().expect("an object").keys().collect();
            assert_eq!(keys, [event.type_name()]);
            let back: AccessTokenEvent = serde_json::from_value(json).expect("reads back");
            assert_eq!(back, event);
        }
    }
}
