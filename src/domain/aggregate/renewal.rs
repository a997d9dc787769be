//! Renewal: the current certificate's renewal is scheduled, requested when due, and its
//! attempts fail and retry on the policy's schedule; a certificate not renewed in time expires.

use chrono::{DateTime, Utc};
use dns_handling_events::{
    CustomDomainEvent, DomainStatus, FailureReason, OrderDetails, RenewalReason, RenewalWindow,
};

use super::{CurrentCertificate, CustomDomain, DomainError};
use crate::domain::renewal::RenewalPolicy;

/// The commands.
impl CustomDomain {
    /// The domain has a certificate in service (or had one, now expired) and no open order.
    pub(super) fn require_renewable(&self) -> Result<&CurrentCertificate, DomainError> {
        self.require_registered()?;
        if !matches!(self.status, DomainStatus::Active | DomainStatus::Expired) {
            return Err(DomainError::WrongStatus {
                required: DomainStatus::Active,
                actual: self.status,
            });
        }
        if let Some(order) = &self.open_order {
            return Err(DomainError::RenewalInProgress {
                order_id: order.order_id.clone(),
            });
        }
        self.current_certificate
            .as_ref()
            .ok_or(DomainError::NoRenewalScheduled)
    }

    pub(super) fn schedule_renewal(
        &self,
        certificate_id: String,
        due_at: DateTime<Utc>,
        reason: RenewalReason,
        window: Option<RenewalWindow>,
        at: DateTime<Utc>,
    ) -> Result<Option<CustomDomainEvent>, DomainError> {
        self.require_registered()?;
        let current = self.current_certificate.as_ref();
        if current.map(|c| c.certificate_id.as_str()) != Some(certificate_id.as_str()) {
            return Err(DomainError::NotCurrentCertificate { certificate_id });
        }
        // The same schedule again (a scheduler on another replica, or after a restart): once.
        // And a revoked certificate's replacement is due now, whatever a scheduler that read
        // the domain before the revocation decided.
        let revoked = current.is_some_and(|c| c.revoked);
        if self.renewal_due == Some((due_at, reason)) || revoked {
            return Ok(None);
        }
        Ok(Some(CustomDomainEvent::RenewalScheduled {
            certificate_id,
            due_at,
            reason,
            window,
            scheduled_at: at,
        }))
    }

    pub(super) fn request_renewal(
        &self,
        order: OrderDetails,
        reason: RenewalReason,
        replaces: Option<String>,
        at: DateTime<Utc>,
    ) -> Result<CustomDomainEvent, DomainError> {
        let current = self.require_renewable()?;
        if !matches!(reason, RenewalReason::Manual | RenewalReason::Revoked) {
            let (due_at, _) = self.renewal_due.ok_or(DomainError::NoRenewalScheduled)?;
            let due_at = self
                .renewal_retry_at
                .map_or(due_at, |retry| retry.max(due_at));
            if at < due_at {
                return Err(DomainError::RenewalNotDue { due_at });
            }
        }
        self.require_order_for_current_names(&order)?;
        Ok(CustomDomainEvent::RenewalRequested {
            renews_certificate_id: current.certificate_id.clone(),
            order,
            reason,
            replaces,
            requested_at: at,
        })
    }

    pub(super) fn record_renewal_attempt_failure(
        &self,
        reason: FailureReason,
        not_before: Option<DateTime<Utc>>,
        at: DateTime<Utc>,
        policy: &RenewalPolicy,
    ) -> Result<CustomDomainEvent, DomainError> {
        self.require_renewable()?;
        let mut failed = self.renewal_failed(None, reason, at, policy);
        // The schedule's next try, but never before the time the CA gave.
        if let (
            CustomDomainEvent::RenewalFailed {
                next_attempt_at, ..
            },
            Some(not_before),
        ) = (&mut failed, not_before)
        {
            *next_attempt_at = (*next_attempt_at).max(not_before);
        }
        Ok(failed)
    }

    /// A failed renewal attempt: the certificate in service stays, the next attempt follows
    /// the policy's schedule.
    pub(super) fn renewal_failed(
        &self,
        order_id: Option<String>,
        reason: FailureReason,
        at: DateTime<Utc>,
        policy: &RenewalPolicy,
    ) -> CustomDomainEvent {
        let attempt = self.renewal_attempts.saturating_add(1);
        CustomDomainEvent::RenewalFailed {
            order_id,
            reason,
            attempt,
            next_attempt_at: policy.next_attempt(attempt, at),
            failed_at: at,
        }
    }

    pub(super) fn expire(
        &self,
        certificate_id: String,
        at: DateTime<Utc>,
    ) -> Result<CustomDomainEvent, DomainError> {
        self.require_status(DomainStatus::Active)?;
        let current = self.current_certificate.as_ref();
        let Some(current) = current.filter(|c| c.certificate_id == certificate_id) else {
            return Err(DomainError::NotCurrentCertificate { certificate_id });
        };
        if at < current.not_after {
            return Err(DomainError::NotExpiredYet {
                not_after: current.not_after,
            });
        }
        Ok(CustomDomainEvent::CertificateExpired {
            certificate_id,
            not_after: current.not_after,
            expired_at: at,
        })
    }
}

/// The fold.
impl CustomDomain {
    pub(super) fn fold_renewal_scheduled(&mut self, due_at: DateTime<Utc>, reason: RenewalReason) {
        self.renewal_due = Some((due_at, reason));
    }

    pub(super) fn fold_renewal_requested(&mut self, order: OrderDetails) {
        self.open_order = Some(order);
        self.renewing = true;
        self.record_observed = false;
    }

    pub(super) fn fold_renewal_failed(&mut self, attempt: u32, next_attempt_at: DateTime<Utc>) {
        self.open_order = None;
        self.renewing = false;
        self.renewal_attempts = attempt;
        self.renewal_retry_at = Some(next_attempt_at);
    }

    pub(super) fn fold_certificate_expired(&mut self) {
        self.status = DomainStatus::Expired;
    }
}
