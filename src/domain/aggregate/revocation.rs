//! Revocation: the CA revoked a certificate (the current one, or one a renewal replaced), and
//! the current one's replacement is due at once.

use chrono::{DateTime, Utc};
use dns_handling_events::{CustomDomainEvent, RenewalReason, RevocationReason};

use super::{CustomDomain, DomainError};

/// The command.
impl CustomDomain {
    pub(super) fn revoke(
        &self,
        certificate_id: String,
        reason: RevocationReason,
        at: DateTime<Utc>,
    ) -> Result<CustomDomainEvent, DomainError> {
        self.require_registered()?;
        // The current certificate, or one a renewal replaced after the CA revoked it and before
        // this was recorded: the CA's revocation is a fact either way, and the replaced one's
        // key must not be handed out any more (or, after `keyCompromise`, kept).
        let revoked = self
            .current_certificate
            .iter()
            .chain(self.previous_certificates.iter())
            .find(|c| c.certificate_id == certificate_id)
            .ok_or_else(|| DomainError::NotCurrentCertificate {
                certificate_id: certificate_id.clone(),
            })?;
        if revoked.revoked {
            return Err(DomainError::AlreadyRevoked { certificate_id });
        }
        Ok(CustomDomainEvent::CertificateRevoked {
            certificate_id,
            reason,
            revoked_at: at,
        })
    }
}

/// The fold.
impl CustomDomain {
    pub(super) fn fold_certificate_revoked(
        &mut self,
        certificate_id: String,
        revoked_at: DateTime<Utc>,
    ) {
        let current = self
            .current_certificate
            .as_mut()
            .filter(|c| c.certificate_id == certificate_id);
        let Some(current) = current else {
            // One a renewal replaced: the certificate in service is another, whose
            // renewal stays as it was.
            let replaced = self.previous_certificates.iter_mut();
            if let Some(previous) = replaced.rev().find(|c| c.certificate_id == certificate_id) {
                previous.revoked = true;
            }
            return;
        };
        current.revoked = true;
        // Its replacement is due at once, whatever was scheduled, and starts a fresh
        // series of attempts: the failures that led up to the revocation must not make
        // the replacement of a compromised certificate wait a day after its first one.
        self.renewal_due = Some((revoked_at, RenewalReason::Revoked));
        self.renewal_attempts = 0;
        self.renewal_retry_at = None;
    }
}
