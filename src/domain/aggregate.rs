//! The `CustomDomain` aggregate: decides which commands are accepted and records the facts.
//!
//! It does no I/O and never reads the clock: every command carries the time it happened, so the
//! same history always leads to the same decisions (and the tests need no clock).

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use cqrs_es::event_sink::EventSink;
use cqrs_es::Aggregate;
use dns_handling_events::{
    CustomDomainEvent, DomainStatus, FailureReason, IssuedCertificate, OrderDetails, RenewalReason,
    RenewalWindow, AGGREGATE_TYPE,
};
use dns_handling_events::{KeyDisposal, OwnershipProof, RevocationReason};
use serde::{Deserialize, Serialize};

use crate::domain::alt_names::AltNames;
use crate::domain::delegation::{DelegationRecord, DelegationZone};
use crate::domain::domain_name::DomainName;
use crate::domain::renewal::RenewalPolicy;

/// What can be asked of a custom domain.
#[derive(Debug, Clone, PartialEq)]
pub enum CustomDomainCommand {
    /// Register a new domain with its verification token.
    RegisterDomain {
        /// The validated, normalised name.
        domain_name: DomainName,
        /// The token the owner must publish.
        verification_token: String,
        /// Where the token must be published.
        verification_record_name: String,
        /// The further names its certificates cover.
        alt_names: AltNames,
        /// When the request arrived.
        at: DateTime<Utc>,
    },
    /// Replace the further names; the next order covers the new set.
    ReplaceAltNames {
        /// The new set.
        alt_names: AltNames,
        /// When the request arrived.
        at: DateTime<Utc>,
    },
    /// Prove ownership with the TXT values found at the verification record name.
    VerifyOwnership {
        /// Every value found there.
        observed_values: Vec<String>,
        /// With delegated validation on: the domain's delegation record and the CNAME target
        /// seen at its name (`None` when there was none), a proof of ownership in its own right.
        delegation: Option<(DelegationRecord, Option<String>)>,
        /// When they were looked up.
        at: DateTime<Utc>,
    },
    /// Record a newly created ACME order (created before this command, by the HTTP layer).
    RequestCertificate {
        /// The order and its challenge.
        order: OrderDetails,
        /// When the order was created.
        at: DateTime<Utc>,
    },
    /// The poller saw every expected challenge value.
    TxtObserved {
        /// The order the poller works on.
        order_id: String,
        /// Every value found, by the challenge domain it was found at.
        observed_values: BTreeMap<String, Vec<String>>,
        /// Which resolver answered.
        resolver: String,
        /// When they were looked up.
        at: DateTime<Utc>,
    },
    /// The order was finalized and the certificate downloaded and its key stored.
    OrderFinalized {
        /// The certificate's public facts.
        certificate: IssuedCertificate,
        /// When it was stored.
        at: DateTime<Utc>,
    },
    /// The order failed: the CA refused the challenge or the finalization, or stayed
    /// unreachable until the deadline. (The event it emits is `IssuanceFailed`.)
    OrderFailed {
        /// The order that failed.
        order_id: String,
        /// Why.
        reason: FailureReason,
        /// When it was decided.
        at: DateTime<Utc>,
    },
    /// The poller's deadline passed without the records being seen.
    TimedOut {
        /// The order that timed out.
        order_id: String,
        /// The names whose value the poller's last lookup did not find.
        unseen_names: Vec<String>,
        /// When the poller gave up.
        at: DateTime<Utc>,
    },
    /// Record when the current certificate is to be renewed, and why.
    ScheduleRenewal {
        /// The certificate the schedule is for (must be the current one).
        certificate_id: String,
        /// When the renewal is due.
        due_at: DateTime<Utc>,
        /// `ari` or `lifetime`.
        reason: RenewalReason,
        /// The CA's suggested window, for `ari`.
        window: Option<RenewalWindow>,
        /// When it was decided.
        at: DateTime<Utc>,
    },
    /// Record a newly created renewal order (created before this command, by the scheduler or
    /// the HTTP layer).
    RequestRenewal {
        /// The order and its challenges.
        order: OrderDetails,
        /// Why: `ari` and `lifetime` only once due (and not before a failed attempt's retry
        /// time); `manual` at any time.
        reason: RenewalReason,
        /// The ARI certificate identifier sent as the order's `replaces`.
        replaces: Option<String>,
        /// When the order was created.
        at: DateTime<Utc>,
    },
    /// A renewal attempt failed before any order was placed (the CA refused or was down).
    RenewalAttemptFailed {
        /// Why.
        reason: FailureReason,
        /// The earliest the CA will take another order (its `Retry-After`), when it said.
        not_before: Option<DateTime<Utc>>,
        /// When.
        at: DateTime<Utc>,
    },
    /// The current certificate's end of validity passed with no renewal issued.
    ExpireCertificate {
        /// The certificate (must be the current one).
        certificate_id: String,
        /// When it was noticed.
        at: DateTime<Utc>,
    },
    /// Record that the CA revoked the current certificate (revoked there first).
    RevokeCertificate {
        /// The certificate: the current one, or one a renewal replaced since the CA revoked it.
        certificate_id: String,
        /// Why.
        reason: RevocationReason,
        /// When the CA confirmed it.
        at: DateTime<Utc>,
    },
    /// Record that an order's certificate key was destroyed (recorded before the key is
    /// deleted, so a crash in between only deletes it again).
    RecordKeyDestroyed {
        /// The order the key was made for.
        order_id: String,
        /// The certificate it served, if any.
        certificate_id: Option<String>,
        /// Why.
        why: KeyDisposal,
        /// When.
        at: DateTime<Utc>,
    },
    /// Put a failed domain back to `verified`.
    RetryIssuance {
        /// When the request arrived.
        at: DateTime<Utc>,
    },
    /// Remove the domain (its history stays).
    RemoveDomain {
        /// When the request arrived.
        at: DateTime<Utc>,
    },
    /// Record that the current certificate's private key is being handed out.
    RecordPrivateKeyRead {
        /// The certificate the caller is reading the key of.
        certificate_id: String,
        /// Who reads it.
        reader: String,
        /// When.
        at: DateTime<Utc>,
    },
}

/// Why a command was refused. Business meaning only; the HTTP layer maps it to a status code.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DomainError {
    /// The aggregate already holds a registration.
    #[error("domain is already registered")]
    AlreadyRegistered,
    /// Any command but a registration on an aggregate without one.
    #[error("domain not found")]
    NotRegistered,
    /// Any command on a removed domain.
    #[error("domain was removed")]
    Removed,
    /// A key read for a certificate that is not the domain's current one.
    #[error("certificate {certificate_id} is not the domain's current certificate")]
    NotCurrentCertificate {
        /// The certificate named.
        certificate_id: String,
    },
    /// The command is not allowed in the domain's current status.
    #[error("domain status is {actual}; this requires status {required}")]
    WrongStatus {
        /// The status the command needs.
        required: DomainStatus,
        /// The status the domain has.
        actual: DomainStatus,
    },
    /// Verification found no TXT value equal to the token.
    #[error("verification token not found in TXT records at {record_name}; found {}{}", describe_values(.found), .delegation_problem.as_ref().map(|problem| format!("; and {problem}")).unwrap_or_default())]
    TokenNotFound {
        /// Where it was looked for.
        record_name: String,
        /// What was there.
        found: Vec<String>,
        /// Why the delegation CNAME did not prove ownership either, when delegation is on.
        delegation_problem: Option<String>,
    },
    /// A renewal asked for while one is in progress.
    #[error("a renewal is in progress already (order {order_id})")]
    RenewalInProgress {
        /// The open renewal order.
        order_id: String,
    },
    /// A scheduled renewal asked for before it is due (or before a failed attempt's retry time).
    #[error("the renewal is not due before {due_at}")]
    RenewalNotDue {
        /// When it is due.
        due_at: DateTime<Utc>,
    },
    /// A scheduled renewal asked for with no schedule recorded.
    #[error("no renewal is scheduled for the current certificate")]
    NoRenewalScheduled,
    /// An expiry recorded before the certificate's end of validity.
    #[error("the certificate is valid until {not_after}")]
    NotExpiredYet {
        /// Its end of validity.
        not_after: DateTime<Utc>,
    },
    /// A revocation of a certificate revoked already.
    #[error("certificate {certificate_id} is revoked already")]
    AlreadyRevoked {
        /// The certificate.
        certificate_id: String,
    },
    /// A key asked for that is no longer available.
    #[error("the key of certificate {certificate_id} is no longer available: {reason}")]
    KeyUnavailable {
        /// The certificate.
        certificate_id: String,
        /// Why.
        reason: String,
    },
    /// A second destruction of one key.
    #[error("the key of order {order_id} was destroyed already")]
    KeyAlreadyDestroyed {
        /// The order.
        order_id: String,
    },
    /// A report about an order that is not the domain's open order.
    #[error("order {order_id} is not the domain's open order")]
    UnknownOrder {
        /// The order named in the command.
        order_id: String,
    },
    /// The poller reported values that do not contain a challenge's expected one.
    #[error("the challenge value of {identifier} is not among the values observed at {challenge_domain}")]
    ChallengeValueMissing {
        /// The name whose value is missing.
        identifier: String,
        /// Where it was looked for.
        challenge_domain: String,
    },
    /// An order that does not cover exactly the domain's names (they changed after the order
    /// was placed).
    #[error("the order covers {}, but the domain's names are now {}; ask for the certificate again", .ordered.join(", "), .expected.join(", "))]
    OrderNamesMismatch {
        /// The domain's names now.
        expected: Vec<String>,
        /// The names the order covers.
        ordered: Vec<String>,
    },
    /// The record was reported after the order's deadline had passed.
    #[error("the order's deadline {deadline} has passed")]
    DeadlinePassed {
        /// The order's deadline.
        deadline: DateTime<Utc>,
    },
    /// A timeout was reported before the order's deadline.
    #[error("the order's deadline {deadline} has not passed yet")]
    DeadlineNotReached {
        /// The order's deadline.
        deadline: DateTime<Utc>,
    },
    /// A certificate was reported before its challenge record was observed.
    #[error("the challenge record of order {order_id} has not been observed yet")]
    RecordNotObserved {
        /// The open order.
        order_id: String,
    },
}

fn describe_values(values: &[String]) -> String {
    if values.is_empty() {
        "no TXT records".to_owned()
    } else {
        format!("{values:?}")
    }
}

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
    removed: bool,
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

    /// The open order, provided the command names it; reports of stale orders are refused so a
    /// late poller of an earlier attempt can never change the current one.
    fn require_open_order(&self, order_id: &str) -> Result<&OrderDetails, DomainError> {
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

    fn register(
        &self,
        domain_name: DomainName,
        verification_token: String,
        verification_record_name: String,
        alt_names: AltNames,
        at: DateTime<Utc>,
    ) -> Result<CustomDomainEvent, DomainError> {
        if self.registered {
            return Err(DomainError::AlreadyRegistered);
        }
        Ok(CustomDomainEvent::DomainRegistered {
            domain_name: domain_name.into_string(),
            verification_token,
            verification_record_name,
            registered_at: at,
            alt_names: alt_names.into_vec(),
        })
    }

    /// A set equal to the current one records nothing: replacing is idempotent.
    fn replace_alt_names(
        &self,
        alt_names: AltNames,
        at: DateTime<Utc>,
    ) -> Result<Option<CustomDomainEvent>, DomainError> {
        self.require_registered()?;
        if alt_names.as_slice() == self.alt_names.as_slice() {
            return Ok(None);
        }
        Ok(Some(CustomDomainEvent::AltNamesReplaced {
            alt_names: alt_names.into_vec(),
            replaced_at: at,
        }))
    }

    /// An order must cover exactly the domain's names now: a set replaced after the names were
    /// read for the order would otherwise go unissued.
    fn require_order_for_current_names(&self, order: &OrderDetails) -> Result<(), DomainError> {
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
    fn names(&self) -> Vec<String> {
        std::iter::once(self.domain_name.clone())
            .chain(self.alt_names.iter().cloned())
            .collect()
    }

    fn verify(
        &self,
        observed_values: Vec<String>,
        delegation: Option<(DelegationRecord, Option<String>)>,
        at: DateTime<Utc>,
    ) -> Result<CustomDomainEvent, DomainError> {
        self.require_status(DomainStatus::Pending)?;
        // Exact comparison: a token differing in case or quoting is a different token.
        if observed_values.contains(&self.verification_token) {
            return Ok(CustomDomainEvent::OwnershipVerified {
                observed_values,
                proof: OwnershipProof::Txt,
                cname_target: None,
                verified_at: at,
            });
        }
        // Pointing `_acme-challenge` of a name at the platform takes control of the name's zone,
        // as publishing the token does.
        let delegation_problem = match &delegation {
            Some((record, seen)) => match DelegationZone::problem_with(record, seen.as_deref()) {
                None => {
                    return Ok(CustomDomainEvent::OwnershipVerified {
                        observed_values,
                        proof: OwnershipProof::Cname,
                        cname_target: seen.clone(),
                        verified_at: at,
                    })
                }
                problem => problem,
            },
            None => None,
        };
        Err(DomainError::TokenNotFound {
            record_name: self.verification_record_name.clone(),
            found: observed_values,
            delegation_problem,
        })
    }

    fn request_certificate(
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

    fn observe_txt(
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

    fn finalize(
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

    fn fail(
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

    /// A failed renewal attempt: the certificate in service stays, the next attempt follows
    /// the policy's schedule.
    fn renewal_failed(
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

    fn time_out(
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
}

impl CustomDomain {
    /// The domain has a certificate in service (or had one, now expired) and no open order.
    fn require_renewable(&self) -> Result<&CurrentCertificate, DomainError> {
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

    fn schedule_renewal(
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

    fn request_renewal(
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

    fn record_renewal_attempt_failure(
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

    fn expire(
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

    fn revoke(
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

    /// Recorded for a removed domain too: its keys are destroyed after the removal.
    fn record_key_destroyed(
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

    fn retry(&self, at: DateTime<Utc>) -> Result<CustomDomainEvent, DomainError> {
        self.require_status(DomainStatus::Failed)?;
        Ok(CustomDomainEvent::IssuanceRetried {
            previous_reason: self
                .last_failure
                .clone()
                .unwrap_or_else(|| FailureReason::new("unknown", "")),
            retried_at: at,
        })
    }

    fn remove(&self, at: DateTime<Utc>) -> Result<CustomDomainEvent, DomainError> {
        self.require_registered()?;
        Ok(CustomDomainEvent::DomainRemoved {
            domain_name: self.domain_name.clone(),
            removed_at: at,
        })
    }

    fn record_key_read(
        &self,
        certificate_id: String,
        reader: String,
        at: DateTime<Utc>,
    ) -> Result<CustomDomainEvent, DomainError> {
        self.require_status(DomainStatus::Active)?;
        let current = self.current_certificate.as_ref();
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
        Ok(CustomDomainEvent::PrivateKeyRead {
            certificate_id,
            reader,
            read_at: at,
        })
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
                at,
            } => Some(self.register(
                domain_name,
                verification_token,
                verification_record_name,
                alt_names,
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
            } => Some(self.record_key_read(certificate_id, reader, at)?),
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
            } => {
                self.registered = true;
                self.domain_name = domain_name;
                self.alt_names = alt_names;
                self.verification_token = verification_token;
                self.verification_record_name = verification_record_name;
                self.status = DomainStatus::Pending;
            }
            CustomDomainEvent::AltNamesReplaced { alt_names, .. } => self.alt_names = alt_names,
            CustomDomainEvent::OwnershipVerified { .. } => self.status = DomainStatus::Verified,
            CustomDomainEvent::CertificateRequested { order, .. } => {
                self.status = DomainStatus::CertificatePending;
                self.open_order = Some(order);
                self.record_observed = false;
            }
            CustomDomainEvent::ChallengeRecordObserved { .. } => self.record_observed = true,
            CustomDomainEvent::CertificateIssued { certificate, .. } => {
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
                self.renewal_due = None;
                self.renewal_attempts = 0;
                self.renewal_retry_at = None;
            }
            CustomDomainEvent::RenewalScheduled { due_at, reason, .. } => {
                self.renewal_due = Some((due_at, reason));
            }
            CustomDomainEvent::RenewalRequested { order, .. } => {
                self.open_order = Some(order);
                self.renewing = true;
                self.record_observed = false;
            }
            CustomDomainEvent::RenewalFailed {
                attempt,
                next_attempt_at,
                ..
            } => {
                self.open_order = None;
                self.renewing = false;
                self.renewal_attempts = attempt;
                self.renewal_retry_at = Some(next_attempt_at);
            }
            CustomDomainEvent::CertificateExpired { .. } => self.status = DomainStatus::Expired,
            CustomDomainEvent::CertificateRevoked {
                certificate_id,
                revoked_at,
                ..
            } => {
                let current = self
                    .current_certificate
                    .as_mut()
                    .filter(|c| c.certificate_id == certificate_id);
                let Some(current) = current else {
                    // One a renewal replaced: the certificate in service is another, whose
                    // renewal stays as it was.
                    let replaced = self.previous_certificates.iter_mut();
                    if let Some(previous) =
                        replaced.rev().find(|c| c.certificate_id == certificate_id)
                    {
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
            CustomDomainEvent::CertificateKeyDestroyed { order_id, .. } => {
                self.destroyed_keys.push(order_id);
            }
            CustomDomainEvent::IssuanceFailed { reason, .. } => {
                self.status = DomainStatus::Failed;
                self.open_order = None;
                self.last_failure = Some(reason);
            }
            CustomDomainEvent::IssuanceTimedOut {
                deadline,
                unseen_names,
                ..
            } => {
                self.status = DomainStatus::Failed;
                self.open_order = None;
                self.last_failure = Some(FailureReason::timed_out(&deadline, &unseen_names));
            }
            CustomDomainEvent::IssuanceRetried { .. } => {
                self.status = DomainStatus::Verified;
                self.last_failure = None;
            }
            CustomDomainEvent::DomainRemoved { .. } => {
                self.removed = true;
                self.open_order = None;
            }
            CustomDomainEvent::PrivateKeyRead { .. } => {}
        }
    }
}

#[cfg(test)]
mod tests;
