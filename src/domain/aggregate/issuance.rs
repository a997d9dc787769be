//! Issuance: a certificate is requested for a verified domain, its challenge records observed,
//! and the order finalized, failed or timed out; a failed domain may be retried.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use dns_handling_events::{
    CustomDomainEvent, DomainStatus, FailureReason, IssuedCertificate, OrderDetails,
};

use super::{CurrentCertificate, CustomDomain, DomainError};
use crate::domain::renewal::RenewalPolicy;

/// The commands, and the rules on the open order that renewal shares.
impl CustomDomain {
    /// The open order, provided the command names it; reports of stale orders are refused so a
    /// late poller of an earlier attempt can never change the current one.
    pub(super) fn require_open_order(&self, order_id: &str) -> Result<&OrderDetails, DomainError> {
        if !self.renewing {
            self.require_status(DomainStatus::CertificatePending)?;
        }
        self.require_registered()?;
        match &self.open_order {
            Some(order) if order.order_id == order_id => Ok(order),
            _ => Err(DomainError::UnknownOrder {
                order_id: order_id.to_owned(),
            }),
        }
    }

    /// An order must cover exactly the domain's names now: a set replaced after the names were
    /// read for the order would otherwise go unissued.
    pub(super) fn require_order_for_current_names(
        &self,
        order: &OrderDetails,
    ) -> Result<(), DomainError> {
        let expected = self.names();
        let mut ordered = order.names.clone();
        let mut wanted = expected.clone();
        ordered.sort();
        wanted.sort();
        if ordered != wanted {
            return Err(DomainError::OrderNamesMismatch {
                expected,
                ordered: order.names.clone(),
            });
        }
        Ok(())
    }

    /// Every name a certificate of this domain covers now: the domain, then its alt names.
    pub(super) fn names(&self) -> Vec<String> {
        std::iter::once(self.domain_name.clone())
            .chain(self.alt_names.iter().cloned())
            .collect()
    }

    pub(super) fn request_certificate(
        &self,
        order: OrderDetails,
        at: DateTime<Utc>,
    ) -> Result<CustomDomainEvent, DomainError> {
        self.require_status(DomainStatus::Verified)?;
        self.require_order_for_current_names(&order)?;
        Ok(CustomDomainEvent::CertificateRequested {
            order,
            requested_at: at,
        })
    }

    pub(super) fn observe_txt(
        &self,
        order_id: String,
        observed: BTreeMap<String, Vec<String>>,
        resolver: String,
        at: DateTime<Utc>,
    ) -> Result<Option<CustomDomainEvent>, DomainError> {
        let order = self.require_open_order(&order_id)?;
        if at > order.deadline {
            return Err(DomainError::DeadlinePassed {
                deadline: order.deadline,
            });
        }
        // Each value at its own name: a domain and its wildcard share one name and need both.
        let mut observed_values: Vec<String> = Vec::new();
        for challenge in &order.challenges {
            let values = observed
                .get(&challenge.challenge_domain)
                .map(Vec::as_slice)
                .unwrap_or_default();
            if !values.contains(&challenge.expected_txt_value) {
                return Err(DomainError::ChallengeValueMissing {
                    identifier: challenge.identifier.clone(),
                    challenge_domain: challenge.challenge_domain.clone(),
                });
            }
            for value in values {
                if !observed_values.contains(value) {
                    observed_values.push(value.clone());
                }
            }
        }
        // A poller resumed after a restart may see the record again: once is the fact.
        if self.record_observed {
            return Ok(None);
        }
        Ok(Some(CustomDomainEvent::ChallengeRecordObserved {
            order_id,
            observed_values,
            resolver,
            observed_at: at,
        }))
    }

    pub(super) fn finalize(
        &self,
        certificate: IssuedCertificate,
        at: DateTime<Utc>,
    ) -> Result<CustomDomainEvent, DomainError> {
        self.require_open_order(&certificate.order_id)?;
        if !self.record_observed {
            return Err(DomainError::RecordNotObserved {
                order_id: certificate.order_id,
            });
        }
        Ok(CustomDomainEvent::CertificateIssued {
            certificate,
            issued_at: at,
        })
    }

    pub(super) fn fail(
        &self,
        order_id: String,
        reason: FailureReason,
        at: DateTime<Utc>,
        policy: &RenewalPolicy,
    ) -> Result<CustomDomainEvent, DomainError> {
        self.require_open_order(&order_id)?;
        if self.renewing {
            return Ok(self.renewal_failed(Some(order_id), reason, at, policy));
        }
        Ok(CustomDomainEvent::IssuanceFailed {
            order_id,
            reason,
            failed_at: at,
        })
    }

    pub(super) fn time_out(
        &self,
        order_id: String,
        unseen_names: Vec<String>,
        at: DateTime<Utc>,
        policy: &RenewalPolicy,
    ) -> Result<CustomDomainEvent, DomainError> {
        let order = self.require_open_order(&order_id)?;
        if at < order.deadline {
            return Err(DomainError::DeadlineNotReached {
                deadline: order.deadline,
            });
        }
        if self.record_observed {
            // The record was there: the CA, not DNS, kept the order from finishing. A poller
            // that resumed after a restart no longer remembers having seen the record, so the
            // aggregate, which does, says which it was.
            let reason = FailureReason::new(
                FailureReason::ACME_UNAVAILABLE,
                format!(
                    "the challenge record was seen, but the CA did not complete the order before {}",
                    order.deadline
                ),
            );
            if self.renewing {
                return Ok(self.renewal_failed(Some(order_id), reason, at, policy));
            }
            return Ok(CustomDomainEvent::IssuanceFailed {
                order_id,
                reason,
                failed_at: at,
            });
        }
        if self.renewing {
            let reason = FailureReason::timed_out(&order.deadline, &unseen_names);
            return Ok(self.renewal_failed(Some(order_id), reason, at, policy));
        }
        Ok(CustomDomainEvent::IssuanceTimedOut {
            order_id,
            deadline: order.deadline,
            unseen_names,
            timed_out_at: at,
        })
    }

    pub(super) fn retry(&self, at: DateTime<Utc>) -> Result<CustomDomainEvent, DomainError> {
        self.require_status(DomainStatus::Failed)?;
        Ok(CustomDomainEvent::IssuanceRetried {
            previous_reason: self
                .last_failure
                .clone()
                .unwrap_or_else(|| FailureReason::new("unknown", "")),
            retried_at: at,
        })
    }
}

/// The fold.
impl CustomDomain {
    pub(super) fn fold_certificate_requested(&mut self, order: OrderDetails) {
        self.status = DomainStatus::CertificatePending;
        self.open_order = Some(order);
        self.record_observed = false;
    }

    pub(super) fn fold_record_observed(&mut self) {
        self.record_observed = true;
    }

    /// A first certificate, or a renewal's: the one it replaces stays known (its key may
    /// still be read until its own end).
    pub(super) fn fold_certificate_issued(&mut self, certificate: IssuedCertificate) {
        self.status = DomainStatus::Active;
        self.open_order = None;
        self.renewing = false;
        let replaced = self.current_certificate.replace(CurrentCertificate {
            certificate_id: certificate.certificate_id,
            order_id: certificate.order_id,
            not_after: certificate.not_after,
            revoked: false,
        });
        self.previous_certificates.extend(replaced);
        self.edge_readers.clear();
        self.renewal_due = None;
        self.renewal_attempts = 0;
        self.renewal_retry_at = None;
    }

    pub(super) fn fold_issuance_failed(&mut self, reason: FailureReason) {
        self.status = DomainStatus::Failed;
        self.open_order = None;
        self.last_failure = Some(reason);
    }

    pub(super) fn fold_issuance_timed_out(
        &mut self,
        deadline: DateTime<Utc>,
        unseen_names: &[String],
    ) {
        self.status = DomainStatus::Failed;
        self.open_order = None;
        self.last_failure = Some(FailureReason::timed_out(&deadline, unseen_names));
    }

    pub(super) fn fold_issuance_retried(&mut self) {
        self.status = DomainStatus::Verified;
        self.last_failure = None;
    }
}
