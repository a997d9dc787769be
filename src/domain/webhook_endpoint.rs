//! The `WebhookEndpoint` aggregate: a receiver the platform registered, what it is sent, which
//! secrets sign its messages, and whether it is still sent anything.

use chrono::{DateTime, Utc};
use cqrs_es::event_sink::EventSink;
use cqrs_es::Aggregate;
use dns_handling_events::webhooks::{WebhookEndpointEvent, WEBHOOK_AGGREGATE_TYPE};
use serde::{Deserialize, Serialize};

use super::notifications::NotificationType;

/// What can be asked of a webhook endpoint.
#[derive(Debug, Clone, PartialEq)]
pub enum WebhookEndpointCommand {
    /// Create it (its URL checked by the caller, its first secret sealed already).
    Create {
        /// Where messages are POSTed.
        url: String,
        /// The notification types it is sent (empty: every type).
        event_types: Vec<NotificationType>,
        /// What it is for.
        description: String,
        /// Its first secret's id.
        secret_id: String,
        /// The feed position it starts after.
        starts_after_position: i64,
        /// When.
        at: DateTime<Utc>,
    },
    /// Sign with a new secret; the current one signs beside it until `previous_valid_until`.
    RotateSecret {
        /// The new secret's id (sealed already).
        secret_id: String,
        /// Until when the replaced secret signs too.
        previous_valid_until: DateTime<Utc>,
        /// When.
        at: DateTime<Utc>,
    },
    /// Stop sending: the receiver answered `410 Gone`.
    Disable {
        /// Why.
        reason: String,
        /// When.
        at: DateTime<Utc>,
    },
    /// Delete it.
    Delete {
        /// When.
        at: DateTime<Utc>,
    },
}

/// Why a command was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WebhookEndpointError {
    /// The endpoint exists already.
    #[error("webhook endpoint exists already")]
    AlreadyExists,
    /// No endpoint with this id.
    #[error("no such webhook endpoint")]
    NotFound,
    /// The endpoint was deleted.
    #[error("the webhook endpoint was deleted")]
    Deleted,
    /// The endpoint is disabled (its receiver answered 410).
    #[error("the webhook endpoint is disabled: {0}")]
    Disabled(String),
}

/// One webhook endpoint, rebuilt from its events.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct WebhookEndpoint {
    /// Whether it was created.
    pub created: bool,
    /// Where messages are POSTed.
    pub url: String,
    /// The notification types it is sent (empty: every type).
    pub event_types: Vec<String>,
    /// What it is for.
    pub description: String,
    /// The secret that signs now.
    pub secret_id: String,
    /// The replaced secret and until when it signs too.
    pub previous_secret: Option<(String, DateTime<Utc>)>,
    /// The feed position it started after.
    pub starts_after_position: i64,
    /// When it was created.
    pub created_at: Option<DateTime<Utc>>,
    /// Why it is disabled, since when.
    pub disabled: Option<(String, DateTime<Utc>)>,
    /// When it was deleted.
    pub deleted_at: Option<DateTime<Utc>>,
}

impl WebhookEndpoint {
    /// Whether messages are sent to it.
    pub fn is_active(&self) -> bool {
        self.created && self.disabled.is_none() && self.deleted_at.is_none()
    }

    /// Whether it is sent notifications of `kind`.
    pub fn wants(&self, kind: NotificationType) -> bool {
        self.event_types.is_empty() || self.event_types.iter().any(|t| t == kind.as_str())
    }

    /// The ids of the secrets that sign a message sent at `at`: the current one, and the
    /// replaced one during its overlap.
    pub fn signing_secrets(&self, at: DateTime<Utc>) -> Vec<String> {
        let mut secrets = vec![self.secret_id.clone()];
        if let Some((previous, until)) = &self.previous_secret {
            if at < *until {
                secrets.push(previous.clone());
            }
        }
        secrets
    }

    fn require_live(&self) -> Result<(), WebhookEndpointError> {
        if !self.created {
            return Err(WebhookEndpointError::NotFound);
        }
        if self.deleted_at.is_some() {
            return Err(WebhookEndpointError::Deleted);
        }
        Ok(())
    }
}

impl Aggregate for WebhookEndpoint {
    const TYPE: &'static str = WEBHOOK_AGGREGATE_TYPE;
    type Command = WebhookEndpointCommand;
    type Event = WebhookEndpointEvent;
    type Error = WebhookEndpointError;
    type Services = ();

    async fn handle(
        &mut self,
        command: Self::Command,
        _services: &Self::Services,
        sink: &EventSink<Self>,
    ) -> Result<(), Self::Error> {
        let event = match command {
            WebhookEndpointCommand::Create {
                url,
                event_types,
                description,
                secret_id,
                starts_after_position,
                at,
            } => {
                if self.created {
                    return Err(WebhookEndpointError::AlreadyExists);
                }
                WebhookEndpointEvent::EndpointCreated {
                    url,
                    event_types: event_types.iter().map(|t| t.as_str().to_owned()).collect(),
                    description,
                    secret_id,
                    starts_after_position,
                    created_at: at,
                }
            }
            WebhookEndpointCommand::RotateSecret {
                secret_id,
                previous_valid_until,
                at,
            } => {
                self.require_live()?;
                WebhookEndpointEvent::SecretRotated {
                    secret_id,
                    previous_secret_id: self.secret_id.clone(),
                    previous_valid_until,
                    rotated_at: at,
                }
            }
            WebhookEndpointCommand::Disable { reason, at } => {
                self.require_live()?;
                if let Some((reason, _)) = &self.disabled {
                    return Err(WebhookEndpointError::Disabled(reason.clone()));
                }
                WebhookEndpointEvent::EndpointDisabled {
                    reason,
                    disabled_at: at,
                }
            }
            WebhookEndpointCommand::Delete { at } => {
                self.require_live()?;
                WebhookEndpointEvent::EndpointDeleted { deleted_at: at }
            }
        };
        sink.write(event, self).await;
        Ok(())
    }

    fn apply(&mut self, event: Self::Event) {
        match event {
            WebhookEndpointEvent::EndpointCreated {
                url,
                event_types,
                description,
                secret_id,
                starts_after_position,
                created_at,
            } => {
                self.created = true;
                self.url = url;
                self.event_types = event_types;
                self.description = description;
                self.secret_id = secret_id;
                self.starts_after_position = starts_after_position;
                self.created_at = Some(created_at);
            }
            WebhookEndpointEvent::SecretRotated {
                secret_id,
                previous_secret_id,
                previous_valid_until,
                ..
            } => {
                self.secret_id = secret_id;
                self.previous_secret = Some((previous_secret_id, previous_valid_until));
            }
            WebhookEndpointEvent::EndpointDisabled {
                reason,
                disabled_at,
            } => self.disabled = Some((reason, disabled_at)),
            WebhookEndpointEvent::EndpointDeleted { deleted_at } => {
                self.deleted_at = Some(deleted_at);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Duration;
    use cqrs_es::test::TestFramework;

    type EndpointTest = TestFramework<WebhookEndpoint>;

    fn created(at: DateTime<Utc>) -> WebhookEndpointEvent {
        WebhookEndpointEvent::EndpointCreated {
            url: "https://hooks.example/a".into(),
            event_types: vec!["certificate.issued".into()],
            description: "edge".into(),
            secret_id: "s1".into(),
            starts_after_position: 10,
            created_at: at,
        }
    }

    #[test]
    fn a_rotation_keeps_the_replaced_secret_signing_until_its_overlap_ends() {
        let at = Utc::now();
        let until = at + Duration::hours(24);
        EndpointTest::with(())
            .given(vec![created(at)])
            .when(WebhookEndpointCommand::RotateSecret {
                secret_id: "s2".into(),
                previous_valid_until: until,
                at,
            })
            .then_expect_events(vec![WebhookEndpointEvent::SecretRotated {
                secret_id: "s2".into(),
                previous_secret_id: "s1".into(),
                previous_valid_until: until,
                rotated_at: at,
            }]);
        let mut endpoint = WebhookEndpoint::default();
        endpoint.apply(created(at));
        endpoint.apply(WebhookEndpointEvent::SecretRotated {
            secret_id: "s2".into(),
            previous_secret_id: "s1".into(),
            previous_valid_until: until,
            rotated_at: at,
        });
        assert_eq!(endpoint.signing_secrets(at), ["s2", "s1"]);
        assert_eq!(endpoint.signing_secrets(until), ["s2"]);
    }

    #[test]
    fn a_deleted_endpoint_can_be_neither_rotated_nor_deleted_again() {
        let at = Utc::now();
        EndpointTest::with(())
            .given(vec![
                created(at),
                WebhookEndpointEvent::EndpointDeleted { deleted_at: at },
            ])
            .when(WebhookEndpointCommand::Delete { at })
            .then_expect_error(WebhookEndpointError::Deleted);
    }

    #[test]
    fn an_endpoint_that_does_not_exist_is_not_found() {
        EndpointTest::with(())
            .given_no_previous_events()
            .when(WebhookEndpointCommand::Delete { at: Utc::now() })
            .then_expect_error(WebhookEndpointError::NotFound);
    }

    #[test]
    fn a_disabled_endpoint_is_not_disabled_twice_and_is_sent_nothing() {
        let at = Utc::now();
        let disabled = WebhookEndpointEvent::EndpointDisabled {
            reason: "410 Gone".into(),
            disabled_at: at,
        };
        EndpointTest::with(())
            .given(vec![created(at), disabled.clone()])
            .when(WebhookEndpointCommand::Disable {
                reason: "410 Gone".into(),
                at,
            })
            .then_expect_error(WebhookEndpointError::Disabled("410 Gone".into()));
        let mut endpoint = WebhookEndpoint::default();
        endpoint.apply(created(at));
        endpoint.apply(disabled);
        assert!(!endpoint.is_active());
    }

    #[test]
    fn an_endpoint_is_sent_only_the_types_it_asked_for_or_every_type() {
        let mut endpoint = WebhookEndpoint::default();
        endpoint.apply(created(Utc::now()));
        assert!(endpoint.wants(NotificationType::CertificateIssued));
        assert!(!endpoint.wants(NotificationType::DomainRemoved));
        endpoint.event_types.clear();
        assert!(endpoint.wants(NotificationType::DomainRemoved));
    }
}
