//! Key custody: who read a certificate's private key, and that an order's key was destroyed.

use chrono::{DateTime, Utc};
use dns_handling_events::{CustomDomainEvent, DomainStatus, KeyDisposal};

use super::{CustomDomain, DomainError};

/// How an edge's key reads are recorded: `edge:<name>`, its name in `EDGE_TOKENS`.
pub fn edge_reader(edge_name: &str) -> String {
    format!("{EDGE_READER}{edge_name}")
}

/// The prefix of an edge's reader.
const EDGE_READER: &str = "edge:";

/// The commands.
impl CustomDomain {
    /// Recorded for a removed domain too: its keys are destroyed after the removal.
    pub(super) fn record_key_destroyed(
        &self,
        order_id: String,
        certificate_id: Option<String>,
        why: KeyDisposal,
        at: DateTime<Utc>,
    ) -> Result<CustomDomainEvent, DomainError> {
        if !self.registered {
            return Err(DomainError::NotRegistered);
        }
        if self.destroyed_keys.contains(&order_id) {
            return Err(DomainError::KeyAlreadyDestroyed { order_id });
        }
        Ok(CustomDomainEvent::CertificateKeyDestroyed {
            order_id,
            certificate_id,
            why,
            destroyed_at: at,
        })
    }

    /// An edge's first read of the current certificate's key is recorded; its later reads of
    /// the same certificate record nothing (`Ok(None)`), so that an edge asking at every
    /// handshake does not grow the domain's stream. Anyone else's read is recorded each time.
    pub(super) fn record_key_read(
        &self,
        certificate_id: String,
        reader: String,
        at: DateTime<Utc>,
    ) -> Result<Option<CustomDomainEvent>, DomainError> {
        self.require_status(DomainStatus::Active)?;
        let current = self.current_certificate.as_ref();
        let of_current = current.is_some_and(|c| c.certificate_id == certificate_id);
        if of_current && !current.is_some_and(|c| c.revoked) && self.edge_readers.contains(&reader)
        {
            return Ok(None);
        }
        if current.is_some_and(|c| c.certificate_id == certificate_id && c.revoked) {
            // Revoked: no edge should serve it any more (and after `keyCompromise` its key is
            // destroyed).
            return Err(DomainError::KeyUnavailable {
                certificate_id,
                reason: "it was revoked".to_owned(),
            });
        }
        if current.map(|c| c.certificate_id.as_str()) != Some(certificate_id.as_str()) {
            // A certificate it replaced stays readable, key included, until its own end (edges
            // may still serve it), unless it was revoked or its key destroyed.
            let Some(previous) = self
                .previous_certificates
                .iter()
                .find(|c| c.certificate_id == certificate_id)
            else {
                return Err(DomainError::NotCurrentCertificate { certificate_id });
            };
            let gone = if at >= previous.not_after {
                Some(format!("it expired at {}", previous.not_after))
            } else if previous.revoked {
                Some("it was revoked".to_owned())
            } else if self.destroyed_keys.contains(&previous.order_id) {
                Some("its key was destroyed".to_owned())
            } else {
                None
            };
            if let Some(reason) = gone {
                return Err(DomainError::KeyUnavailable {
                    certificate_id,
                    reason,
                });
            }
        }
        Ok(Some(CustomDomainEvent::PrivateKeyRead {
            certificate_id,
            reader,
            read_at: at,
        }))
    }
}

/// The fold.
impl CustomDomain {
    pub(super) fn fold_key_destroyed(&mut self, order_id: String) {
        self.destroyed_keys.push(order_id);
    }

    pub(super) fn fold_key_read(&mut self, certificate_id: String, reader: String) {
        let of_current = self
            .current_certificate
            .as_ref()
            .is_some_and(|c| c.certificate_id == certificate_id);
        if of_current && reader.starts_with(EDGE_READER) {
            self.edge_readers.insert(reader);
        }
    }
}
