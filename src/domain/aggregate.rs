//! The `CustomDomain` aggregate: decides which commands are accepted and records the facts.
//!
//! It does no I/O and never reads the clock: every command carries the time it happened, so the
//! same history always leads to the same decisions (and the tests need no clock).
//!
//! This file is the one aggregate: its state, `handle` (which stage decides a command) and
//! `apply` (which stage folds an event). The decisions and the folds live by stage of the
//! lifecycle: `registration`, `issuance`, `renewal`, `revocation` and `key_custody`, each
//! holding its stage's commands (`impl CustomDomain` methods) and its folds (`fold_…`).

use chrono::{DateTime, Utc};
use cqrs_es::event_sink::EventSink;
use cqrs_es::Aggregate;
use dns_handling_events::{
    CustomDomainEvent, DomainStatus, FailureReason, OrderDetails, RenewalReason, AGGREGATE_TYPE,
};
use serde::{Deserialize, Serialize};

use crate::domain::renewal::RenewalPolicy;

mod command;
mod error;
mod health;
mod issuance;
mod key_custody;
mod registration;
mod renewal;
mod revocation;

pub use command::CustomDomainCommand;
pub use error::DomainError;
pub use key_custody::edge_reader;

/// One custom domain, rebuilt from its events.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CustomDomain {
    registered: bool,
    domain_name: String,
    alt_names: Vec<String>,
    status: DomainStatus,
    verification_token: String,
    verification_record_name: String,
    open_order: Option<OrderDetails>,
    /// The open order renews a certificate (the domain stays `active` or `expired` meanwhile).
    renewing: bool,
    record_observed: bool,
    last_failure: Option<FailureReason>,
    current_certificate: Option<CurrentCertificate>,
    /// When the current certificate is due for renewal, and why.
    renewal_due: Option<(DateTime<Utc>, RenewalReason)>,
    /// Failed renewal attempts in a row, and when the next one is due.
    renewal_attempts: u32,
    renewal_retry_at: Option<DateTime<Utc>>,
    /// The orders whose certificate key was destroyed.
    destroyed_keys: Vec<String>,
    /// The certificates the current one replaced, newest last.
    previous_certificates: Vec<CurrentCertificate>,
    /// The edges (their readers, `edge:<name>`) that already received the current
    /// certificate's key: an edge's first read of a certificate is recorded, its repeats are
    /// not. Emptied by each new certificate (absent from older snapshots: empty).
    #[serde(default)]
    edge_readers: std::collections::BTreeSet<String>,
    removed: bool,
    /// The outcomes of the domain's health checks as last recorded (absent from older
    /// snapshots: none recorded).
    #[serde(default)]
    health: Option<dns_handling_events::HealthReport>,
    /// When the check that first found every name routing elsewhere or nowhere was made, while
    /// they still do (as recorded: the start of the `MOVED_AFTER` that makes the domain
    /// `moved`).
    #[serde(default)]
    routing_lost_at: Option<DateTime<Utc>>,
}

/// What the aggregate remembers of the certificate in service.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct CurrentCertificate {
    certificate_id: String,
    order_id: String,
    not_after: DateTime<Utc>,
    revoked: bool,
}

impl CustomDomain {
    /// The domain's current status.
    pub fn status(&self) -> DomainStatus {
        self.status
    }

    fn require_registered(&self) -> Result<(), DomainError> {
        if !self.registered {
            Err(DomainError::NotRegistered)
        } else if self.removed {
            Err(DomainError::Removed)
        } else {
            Ok(())
        }
    }

    fn require_status(&self, required: DomainStatus) -> Result<(), DomainError> {
        self.require_registered()?;
        if self.status == required {
            Ok(())
        } else {
            Err(DomainError::WrongStatus {
                required,
                actual: self.status,
            })
        }
    }
}

impl Aggregate for CustomDomain {
    const TYPE: &'static str = AGGREGATE_TYPE;
    type Command = CustomDomainCommand;
    type Event = CustomDomainEvent;
    type Error = DomainError;
    type Services = RenewalPolicy;

    async fn handle(
        &mut self,
        command: Self::Command,
        policy: &Self::Services,
        sink: &EventSink<Self>,
    ) -> Result<(), Self::Error> {
        let event = match command {
            CustomDomainCommand::RegisterDomain {
                domain_name,
                verification_token,
                verification_record_name,
                alt_names,
                tenant,
                at,
            } => Some(self.register(
                domain_name,
                verification_token,
                verification_record_name,
                alt_names,
                tenant,
                at,
            )?),
            CustomDomainCommand::ReplaceAltNames { alt_names, at } => {
                self.replace_alt_names(alt_names, at)?
            }
            CustomDomainCommand::VerifyOwnership {
                observed_values,
                delegation,
                at,
            } => Some(self.verify(observed_values, delegation, at)?),
            CustomDomainCommand::RequestCertificate { order, at } => {
                Some(self.request_certificate(order, at)?)
            }
            CustomDomainCommand::TxtObserved {
                order_id,
                observed_values,
                resolver,
                at,
            } => self.observe_txt(order_id, observed_values, resolver, at)?,
            CustomDomainCommand::OrderFinalized { certificate, at } => {
                Some(self.finalize(certificate, at)?)
            }
            CustomDomainCommand::OrderFailed {
                order_id,
                reason,
                at,
            } => Some(self.fail(order_id, reason, at, policy)?),
            CustomDomainCommand::TimedOut {
                order_id,
                unseen_names,
                at,
            } => Some(self.time_out(order_id, unseen_names, at, policy)?),
            CustomDomainCommand::ScheduleRenewal {
                certificate_id,
                due_at,
                reason,
                window,
                at,
            } => self.schedule_renewal(certificate_id, due_at, reason, window, at)?,
            CustomDomainCommand::RequestRenewal {
                order,
                reason,
                replaces,
                at,
            } => Some(self.request_renewal(order, reason, replaces, at)?),
            CustomDomainCommand::RenewalAttemptFailed {
                reason,
                not_before,
                at,
            } => Some(self.record_renewal_attempt_failure(reason, not_before, at, policy)?),
            CustomDomainCommand::ExpireCertificate { certificate_id, at } => {
                Some(self.expire(certificate_id, at)?)
            }
            CustomDomainCommand::RevokeCertificate {
                certificate_id,
                reason,
                at,
            } => Some(self.revoke(certificate_id, reason, at)?),
            CustomDomainCommand::RecordKeyDestroyed {
                order_id,
                certificate_id,
                why,
                at,
            } => Some(self.record_key_destroyed(order_id, certificate_id, why, at)?),
            CustomDomainCommand::RetryIssuance { at } => Some(self.retry(at)?),
            CustomDomainCommand::RemoveDomain { at } => Some(self.remove(at)?),
            CustomDomainCommand::RecordPrivateKeyRead {
                certificate_id,
                reader,
                at,
            } => self.record_key_read(certificate_id, reader, at)?,
            CustomDomainCommand::RecordHealth {
                report,
                moved_after,
                at,
            } => {
                // A health report may record a change and a move (or a return) together.
                for event in self.record_health(report, moved_after, at)? {
                    sink.write(event, self).await;
                }
                None
            }
        };
        if let Some(event) = event {
            sink.write(event, self).await;
        }
        Ok(())
    }

    fn apply(&mut self, event: Self::Event) {
        match event {
            CustomDomainEvent::DomainRegistered {
                domain_name,
                verification_token,
                verification_record_name,
                alt_names,
                ..
            } => self.fold_registered(
                domain_name,
                verification_token,
                verification_record_name,
                alt_names,
            ),
            CustomDomainEvent::AltNamesReplaced { alt_names, .. } => {
                self.fold_alt_names_replaced(alt_names)
            }
            CustomDomainEvent::OwnershipVerified { .. } => self.fold_ownership_verified(),
            CustomDomainEvent::CertificateRequested { order, .. } => {
                self.fold_certificate_requested(order)
            }
            CustomDomainEvent::ChallengeRecordObserved { .. } => self.fold_record_observed(),
            CustomDomainEvent::CertificateIssued { certificate, .. } => {
                self.fold_certificate_issued(certificate)
            }
            CustomDomainEvent::RenewalScheduled { due_at, reason, .. } => {
                self.fold_renewal_scheduled(due_at, reason)
            }
            CustomDomainEvent::RenewalRequested { order, .. } => self.fold_renewal_requested(order),
            CustomDomainEvent::RenewalFailed {
                attempt,
                next_attempt_at,
                ..
            } => self.fold_renewal_failed(attempt, next_attempt_at),
            CustomDomainEvent::CertificateExpired { .. } => self.fold_certificate_expired(),
            CustomDomainEvent::CertificateRevoked {
                certificate_id,
                revoked_at,
                ..
            } => self.fold_certificate_revoked(certificate_id, revoked_at),
            CustomDomainEvent::CertificateKeyDestroyed { order_id, .. } => {
                self.fold_key_destroyed(order_id)
            }
            CustomDomainEvent::IssuanceFailed { reason, .. } => self.fold_issuance_failed(reason),
            CustomDomainEvent::IssuanceTimedOut {
                deadline,
                unseen_names,
                ..
            } => self.fold_issuance_timed_out(deadline, &unseen_names),
            CustomDomainEvent::IssuanceRetried { .. } => self.fold_issuance_retried(),
            CustomDomainEvent::DomainRemoved { .. } => self.fold_removed(),
            CustomDomainEvent::PrivateKeyRead {
                certificate_id,
                reader,
                ..
            } => self.fold_key_read(certificate_id, reader),
            CustomDomainEvent::HealthChanged { report, checked_at } => {
                self.fold_health_changed(report, checked_at)
            }
            CustomDomainEvent::DomainMoved { .. } => self.fold_moved(),
            CustomDomainEvent::DomainReturned { status, .. } => self.fold_returned(status),
        }
    }
}

#[cfg(test)]
mod tests;
