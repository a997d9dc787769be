//! Read models of dns-handling, built only from its events.
//!
//! Each view is a plain struct with a pure `apply`: given the same events in the same order it
//! always ends in the same state, so a rebuild from zero reproduces the live views exactly. Where
//! the views are stored is the service's business, not this crate's.

#![forbid(unsafe_code)]

use chrono::{DateTime, Utc};
use dns_handling_events::{
    CustomDomainEvent, DomainStatus, FailureReason, HealthReport, NameCheck, OrderChallenge,
    OrderDetails, RenewalReason, RevocationReason,
};
use serde::{Deserialize, Serialize};

/// A challenge a client must satisfy while a certificate is pending: one per authorization.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ChallengeView {
    /// The name it proves (`*.shop.example.com` for a wildcard).
    #[schema(example = "www.shop.example.com")]
    pub identifier: String,
    /// Where the TXT record must be published, with the trailing dot.
    pub challenge_domain: String,
    /// The value the record must hold.
    pub expected_txt_value: String,
    /// Where the service publishes the value itself (delegated validation), which
    /// `challenge_domain` is a CNAME to; absent when the owner publishes it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delegated_to: Option<String>,
}

/// A short summary of the domain's current certificate.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct CertificateSummary {
    /// Id of the certificate.
    pub id: String,
    /// Start of validity.
    pub not_before: DateTime<Utc>,
    /// End of validity.
    pub not_after: DateTime<Utc>,
    /// Serial number, lower-case hex.
    pub serial: String,
    /// When the CA revoked it, if it did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revoked_at: Option<DateTime<Utc>>,
    /// Why it was revoked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revocation_reason: Option<RevocationReason>,
}

impl From<&OrderChallenge> for ChallengeView {
    fn from(challenge: &OrderChallenge) -> Self {
        Self {
            identifier: challenge.identifier.clone(),
            challenge_domain: challenge.challenge_domain.clone(),
            expected_txt_value: challenge.expected_txt_value.clone(),
            delegated_to: challenge.delegated_to.clone(),
        }
    }
}

impl ChallengeView {
    /// Every challenge of `order`, and the one the seed's single-record fields show: the
    /// domain's own, else the first (when the CA already holds the domain's authorization).
    pub fn of_order(order: &OrderDetails, domain_name: &str) -> (Option<Self>, Vec<Self>) {
        let all: Vec<Self> = order.challenges.iter().map(Self::from).collect();
        let own = all
            .iter()
            .find(|challenge| challenge.identifier == domain_name)
            .or_else(|| all.first())
            .cloned();
        (own, all)
    }
}

/// Where the renewal of the certificate in service stands.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct RenewalView {
    /// When the renewal is due; `null` until the scheduler has decided (right after issuance).
    pub due_at: Option<DateTime<Utc>>,
    /// Why it is due then: `ari` (the CA's suggested window) or `lifetime`.
    pub reason: Option<RenewalReason>,
    /// The CA's suggested window (`ari`).
    pub window_start: Option<DateTime<Utc>>,
    /// The CA's suggested window (`ari`).
    pub window_end: Option<DateTime<Utc>>,
    /// The CA's page explaining its window, when it gave one.
    pub explanation_url: Option<String>,
    /// A renewal order is open: its records are in `challenges`.
    pub in_progress: bool,
    /// The open renewal order.
    pub order_id: Option<String>,
    /// The TXT records the open renewal order needs, one per authorization.
    #[serde(default)]
    pub challenges: Vec<ChallengeView>,
    /// Failed attempts in a row.
    pub attempts: u32,
    /// When the next attempt is due after a failure.
    pub next_attempt_at: Option<DateTime<Utc>>,
    /// Why the last attempt failed.
    pub last_failure: Option<FailureReason>,
}

/// What the health checks of a domain's DNS found, as last recorded: each check per name, with
/// what was expected and found. Only a change of outcome is an event, so the time shown is that
/// of the check that found the last change (`changed_at`), not of the latest check.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct HealthView {
    /// Whether each name (wildcards aside) resolves to the platform (`ROUTING_TARGETS`).
    pub routing: Vec<NameCheck>,
    /// Whether each name's `_acme-challenge` CNAME leads to its record in the delegation zone
    /// (delegated domains only).
    pub delegation: Vec<NameCheck>,
    /// Whether a configured CA may issue for each name under its CAA records.
    pub caa: Vec<NameCheck>,
    /// Every outcome but `ok`, one sentence each.
    pub problems: Vec<String>,
    /// When the check that found these outcomes was made.
    pub changed_at: DateTime<Utc>,
}

impl HealthView {
    /// The view of a report found at `changed_at`.
    pub fn of(report: &HealthReport, changed_at: DateTime<Utc>) -> Self {
        Self {
            routing: report.routing.clone(),
            delegation: report.delegation.clone(),
            caa: report.caa.clone(),
            problems: report.problems(),
            changed_at,
        }
    }
}

/// The view behind `GET /domains/{id}` and `GET /domains`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DomainView {
    /// The domain's id (the aggregate id).
    pub id: String,
    /// Normalised host name.
    pub domain_name: String,
    /// The further names its next certificate covers.
    #[serde(default)]
    pub alt_names: Vec<String>,
    /// The platform's account it belongs to (none for a domain registered without one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant: Option<String>,
    /// Lifecycle status.
    pub status: DomainStatus,
    /// The token the owner must publish to prove ownership.
    pub verification_token: String,
    /// Where the token must be published.
    pub verification_record_name: String,
    /// When ownership was proven.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub verified_at: Option<DateTime<Utc>>,
    /// When the domain was registered.
    pub created_at: DateTime<Utc>,
    /// When the last event was recorded.
    pub updated_at: DateTime<Utc>,
    /// Why the last issuance failed, while the domain is `failed`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failure_reason: Option<FailureReason>,
    /// The domain's own challenge, while a certificate is pending.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub challenge: Option<ChallengeView>,
    /// Every challenge of the pending order, one per authorization.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub challenges: Vec<ChallengeView>,
    /// The current certificate, once one was issued.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub certificate: Option<CertificateSummary>,
    /// The renewal of the current certificate, once one was issued.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub renewal: Option<RenewalView>,
    /// The open (or last) ACME order, for resuming and for correlation; not part of the API body.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub order: Option<OrderDetails>,
    /// True once the domain was removed: it no longer appears in the API, its history stays.
    #[serde(default)]
    pub removed: bool,
    /// What the health checks found, once a check was recorded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health: Option<HealthView>,
    /// The sequence number of the last event applied.
    pub last_sequence: u64,
}

impl DomainView {
    /// Starts a view from the domain's first event; `None` when the event is not a registration.
    pub fn from_registration(
        id: &str,
        sequence: u64,
        event: &CustomDomainEvent,
    ) -> Option<DomainView> {
        let CustomDomainEvent::DomainRegistered {
            domain_name,
            verification_token,
            verification_record_name,
            registered_at,
            alt_names,
            tenant,
        } = event
        else {
            return None;
        };
        Some(DomainView {
            id: id.to_owned(),
            domain_name: domain_name.clone(),
            alt_names: alt_names.clone(),
            tenant: tenant.clone(),
            status: DomainStatus::Pending,
            verification_token: verification_token.clone(),
            verification_record_name: verification_record_name.clone(),
            verified_at: None,
            created_at: *registered_at,
            updated_at: *registered_at,
            failure_reason: None,
            challenge: None,
            challenges: Vec::new(),
            certificate: None,
            renewal: None,
            order: None,
            removed: false,
            health: None,
            last_sequence: sequence,
        })
    }

    /// The order a poller must carry on: the first issuance's while `certificate_pending`, or a
    /// renewal's in progress.
    pub fn open_order(&self) -> Option<&OrderDetails> {
        let renewing = self.renewal.as_ref().is_some_and(|r| r.in_progress);
        let open = !self.removed && (self.status == DomainStatus::CertificatePending || renewing);
        self.order.as_ref().filter(|_| open)
    }

    /// When the renewal scheduler must next look at this domain: at once for a certificate
    /// with no renewal scheduled yet, when its renewal (or the retry of a failed one) is due,
    /// and, while it is `active`, no later than its expiry. `None` when there is nothing to do.
    pub fn wake_at(&self) -> Option<DateTime<Utc>> {
        if self.removed || !matches!(self.status, DomainStatus::Active | DomainStatus::Expired) {
            return None;
        }
        let certificate = self.certificate.as_ref()?;
        let renewal = self.renewal.clone().unwrap_or_default();
        let renewal_due = if renewal.in_progress {
            None
        } else {
            match (renewal.due_at, renewal.next_attempt_at) {
                (None, _) => Some(self.updated_at),
                (Some(due), None) => Some(due),
                (Some(due), Some(retry)) => Some(due.max(retry)),
            }
        };
        let expiry = (self.status == DomainStatus::Active).then_some(certificate.not_after);
        match (renewal_due, expiry) {
            (Some(due), Some(expiry)) => Some(due.min(expiry)),
            (due, expiry) => due.or(expiry),
        }
    }

    /// Every name the domain's next certificate covers: the domain, then its alt names.
    pub fn names(&self) -> Vec<String> {
        std::iter::once(self.domain_name.clone())
            .chain(self.alt_names.iter().cloned())
            .collect()
    }

    /// Applies one event that follows the registration. A view only moves by the next
    /// sequence: an event already applied is ignored (delivering an event twice is harmless),
    /// and an event after a gap is refused, leaving the view as it was, since applying it would
    /// skip the missing events for good; the caller rebuilds the view from its stream.
    pub fn apply(&mut self, sequence: u64, event: &CustomDomainEvent) -> Applied {
        if sequence <= self.last_sequence {
            return Applied::AlreadyApplied;
        }
        if sequence != self.last_sequence + 1 {
            return Applied::Gap {
                expected: self.last_sequence + 1,
            };
        }
        self.last_sequence = sequence;
        self.apply_next(event);
        Applied::Moved
    }

    /// Folds a whole stream, in sequence order, into its view: `None` when it does not start
    /// with a registration or skips a sequence.
    pub fn fold<'a>(
        id: &str,
        events: impl IntoIterator<Item = (u64, &'a CustomDomainEvent)>,
    ) -> Option<DomainView> {
        let mut view: Option<DomainView> = None;
        for (sequence, event) in events {
            match view.as_mut() {
                None if sequence == 1 => view = Some(Self::from_registration(id, 1, event)?),
                None => return None,
                Some(view) => {
                    if view.apply(sequence, event) != Applied::Moved {
                        return None;
                    }
                }
            }
        }
        view
    }

    fn apply_next(&mut self, event: &CustomDomainEvent) {
        match event {
            CustomDomainEvent::DomainRegistered { registered_at, .. } => {
                self.updated_at = *registered_at;
            }
            CustomDomainEvent::AltNamesReplaced {
                alt_names,
                replaced_at,
            } => {
                self.alt_names = alt_names.clone();
                self.updated_at = *replaced_at;
            }
            CustomDomainEvent::OwnershipVerified { verified_at, .. } => {
                self.status = DomainStatus::Verified;
                self.verified_at = Some(*verified_at);
                self.updated_at = *verified_at;
            }
            CustomDomainEvent::CertificateRequested {
                order,
                requested_at,
            } => {
                self.status = DomainStatus::CertificatePending;
                self.failure_reason = None;
                (self.challenge, self.challenges) =
                    ChallengeView::of_order(order, &self.domain_name);
                self.order = Some(order.clone());
                self.updated_at = *requested_at;
            }
            CustomDomainEvent::ChallengeRecordObserved { observed_at, .. } => {
                self.updated_at = *observed_at;
            }
            CustomDomainEvent::CertificateIssued {
                certificate,
                issued_at,
            } => {
                self.status = DomainStatus::Active;
                self.challenge = None;
                self.challenges.clear();
                // A new certificate starts with no renewal scheduled: the scheduler decides.
                self.renewal = Some(RenewalView::default());
                self.certificate = Some(CertificateSummary {
                    id: certificate.certificate_id.clone(),
                    not_before: certificate.not_before,
                    not_after: certificate.not_after,
                    serial: certificate.serial.clone(),
                    revoked_at: None,
                    revocation_reason: None,
                });
                self.updated_at = *issued_at;
            }
            CustomDomainEvent::IssuanceFailed {
                reason, failed_at, ..
            } => {
                self.status = DomainStatus::Failed;
                self.challenge = None;
                self.challenges.clear();
                self.failure_reason = Some(reason.clone());
                self.updated_at = *failed_at;
            }
            CustomDomainEvent::IssuanceTimedOut {
                deadline,
                unseen_names,
                timed_out_at,
                ..
            } => {
                self.status = DomainStatus::Failed;
                self.challenge = None;
                self.challenges.clear();
                self.failure_reason = Some(FailureReason::timed_out(deadline, unseen_names));
                self.updated_at = *timed_out_at;
            }
            CustomDomainEvent::RenewalScheduled {
                due_at,
                reason,
                window,
                scheduled_at,
                ..
            } => {
                let renewal = self.renewal.get_or_insert_with(RenewalView::default);
                renewal.due_at = Some(*due_at);
                renewal.reason = Some(*reason);
                renewal.window_start = window.as_ref().map(|w| w.start);
                renewal.window_end = window.as_ref().map(|w| w.end);
                renewal.explanation_url = window.as_ref().and_then(|w| w.explanation_url.clone());
                self.updated_at = *scheduled_at;
            }
            CustomDomainEvent::RenewalRequested {
                order,
                requested_at,
                ..
            } => {
                let renewal = self.renewal.get_or_insert_with(RenewalView::default);
                renewal.in_progress = true;
                renewal.order_id = Some(order.order_id.clone());
                renewal.challenges = order.challenges.iter().map(ChallengeView::from).collect();
                self.order = Some(order.clone());
                self.updated_at = *requested_at;
            }
            CustomDomainEvent::RenewalFailed {
                reason,
                attempt,
                next_attempt_at,
                failed_at,
                ..
            } => {
                let renewal = self.renewal.get_or_insert_with(RenewalView::default);
                renewal.in_progress = false;
                renewal.order_id = None;
                renewal.challenges.clear();
                renewal.attempts = *attempt;
                renewal.next_attempt_at = Some(*next_attempt_at);
                renewal.last_failure = Some(reason.clone());
                self.updated_at = *failed_at;
            }
            CustomDomainEvent::CertificateExpired { expired_at, .. } => {
                self.status = DomainStatus::Expired;
                self.updated_at = *expired_at;
            }
            CustomDomainEvent::CertificateRevoked {
                certificate_id,
                reason,
                revoked_at,
            } => {
                self.updated_at = *revoked_at;
                let current = self
                    .certificate
                    .as_mut()
                    .filter(|certificate| certificate.id == *certificate_id);
                let Some(certificate) = current else {
                    // One a renewal replaced after the CA revoked it: the certificate in
                    // service and its renewal are another's.
                    return;
                };
                certificate.revoked_at = Some(*revoked_at);
                certificate.revocation_reason = Some(*reason);
                let renewal = self.renewal.get_or_insert_with(RenewalView::default);
                renewal.due_at = Some(*revoked_at);
                renewal.reason = Some(RenewalReason::Revoked);
                // A revocation starts a fresh series of attempts (as the aggregate counts them).
                renewal.attempts = 0;
                renewal.next_attempt_at = None;
                self.updated_at = *revoked_at;
            }
            // Key custody: the domain's state does not change.
            CustomDomainEvent::CertificateKeyDestroyed { .. } => {}
            CustomDomainEvent::IssuanceRetried { retried_at, .. } => {
                self.status = DomainStatus::Verified;
                self.failure_reason = None;
                self.updated_at = *retried_at;
            }
            CustomDomainEvent::DomainRemoved { removed_at, .. } => {
                self.removed = true;
                self.challenge = None;
                self.challenges.clear();
                self.updated_at = *removed_at;
            }
            // An audit fact: the domain's state does not change.
            CustomDomainEvent::PrivateKeyRead { .. } => {}
            // What the domain's DNS says, beside its lifecycle: `updated_at` stays the
            // lifecycle's.
            CustomDomainEvent::HealthChanged { report, checked_at } => {
                self.health = Some(HealthView::of(report, *checked_at));
            }
            CustomDomainEvent::DomainMoved { moved_at, .. } => {
                self.status = DomainStatus::Moved;
                self.updated_at = *moved_at;
            }
            CustomDomainEvent::DomainReturned {
                status,
                returned_at,
            } => {
                self.status = *status;
                self.updated_at = *returned_at;
            }
        }
    }
}

/// What [`DomainView::apply`] did with an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Applied {
    /// The event was the next one: the view moved to it.
    Moved,
    /// The view had applied it already: nothing changed.
    AlreadyApplied,
    /// Events are missing between the view and this one: nothing changed.
    Gap {
        /// The sequence the view needs next.
        expected: u64,
    },
}

/// The view behind `GET /domains/{id}/certificate`: public parts only.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CertificateView {
    /// Id of the certificate.
    pub id: String,
    /// The domain it belongs to.
    pub domain_id: String,
    /// The order it was issued for.
    pub order_id: String,
    /// Serial number, lower-case hex.
    pub serial: String,
    /// Start of validity, read from the certificate.
    pub not_before: DateTime<Utc>,
    /// End of validity, read from the certificate.
    pub not_after: DateTime<Utc>,
    /// When the service stored it.
    pub issued_at: DateTime<Utc>,
    /// SHA-256 of the leaf certificate's DER, lower-case hex.
    pub fingerprint_sha256: String,
    /// The sequence of the `CertificateIssued` event in the domain's stream.
    pub sequence: u64,
    /// The certificate chain (PEM), leaf first, so the certificate is served from this view
    /// alone. Views written before it was kept here are rebuilt by migration 0005.
    #[serde(default)]
    pub chain_pem: String,
    /// The ACME directory of the CA that issued it (empty: the one CA configured when it was
    /// issued).
    #[serde(default)]
    pub ca_directory: String,
}

impl CertificateView {
    /// The certificate view an event produces, if it is a `CertificateIssued`.
    pub fn from_event(
        domain_id: &str,
        sequence: u64,
        event: &CustomDomainEvent,
    ) -> Option<CertificateView> {
        let CustomDomainEvent::CertificateIssued {
            certificate,
            issued_at,
        } = event
        else {
            return None;
        };
        Some(CertificateView {
            id: certificate.certificate_id.clone(),
            domain_id: domain_id.to_owned(),
            order_id: certificate.order_id.clone(),
            serial: certificate.serial.clone(),
            not_before: certificate.not_before,
            not_after: certificate.not_after,
            issued_at: *issued_at,
            fingerprint_sha256: certificate.fingerprint_sha256.clone(),
            sequence,
            chain_pem: certificate.chain_pem.clone(),
            ca_directory: certificate.ca_directory.clone(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn registered() -> CustomDomainEvent {
        CustomDomainEvent::DomainRegistered {
            domain_name: "shop.example.com".into(),
            verification_token: "tok".into(),
            verification_record_name: "_acme-challenge.shop.example.com.".into(),
            registered_at: Utc::now(),
            alt_names: vec!["www.shop.example.com".into()],
            tenant: None,
        }
    }

    /// The issuance of certificate `id` (of order `order-<id>`), valid for 90 days from now.
    fn issued(id: &str) -> CustomDomainEvent {
        CustomDomainEvent::CertificateIssued {
            certificate: dns_handling_events::IssuedCertificate {
                certificate_id: id.into(),
                order_id: format!("order-{id}"),
                serial: "01".into(),
                not_before: Utc::now(),
                not_after: Utc::now() + chrono::Duration::days(90),
                fingerprint_sha256: "ab".into(),
                chain_pem: String::new(),
                ca_directory: String::new(),
            },
            issued_at: Utc::now(),
        }
    }

    #[test]
    fn a_view_starts_pending_and_ignores_replayed_events() {
        let mut view = DomainView::from_registration("d1", 1, &registered()).expect("view");
        assert_eq!(view.status, DomainStatus::Pending);
        let verified = CustomDomainEvent::OwnershipVerified {
            observed_values: vec!["tok".into()],
            proof: dns_handling_events::OwnershipProof::Txt,
            cname_target: None,
            verified_at: Utc::now(),
        };
        assert_eq!(view.apply(2, &verified), Applied::Moved);
        assert_eq!(view.status, DomainStatus::Verified);
        let snapshot = view.clone();
        assert_eq!(view.apply(2, &verified), Applied::AlreadyApplied);
        assert_eq!(view, snapshot);
    }

    #[test]
    fn a_timeout_fails_the_domain_with_dns_timeout() {
        let mut view = DomainView::from_registration("d1", 1, &registered()).expect("view");
        view.apply(
            2,
            &CustomDomainEvent::IssuanceTimedOut {
                order_id: "o".into(),
                deadline: Utc::now(),
                unseen_names: vec![],
                timed_out_at: Utc::now(),
            },
        );
        assert_eq!(view.status, DomainStatus::Failed);
        assert_eq!(
            view.failure_reason.map(|reason| reason.code),
            Some(FailureReason::DNS_TIMEOUT.to_owned())
        );
    }

    #[test]
    fn a_view_refuses_an_event_after_a_gap_and_stays_as_it_was() {
        let mut view = DomainView::from_registration("d1", 1, &registered()).expect("view");
        let snapshot = view.clone();
        let removed = CustomDomainEvent::DomainRemoved {
            domain_name: "shop.example.com".into(),
            removed_at: Utc::now(),
        };
        assert_eq!(view.apply(3, &removed), Applied::Gap { expected: 2 });
        assert_eq!(view, snapshot);
    }

    #[test]
    fn a_stream_with_a_missing_sequence_does_not_fold() {
        let verified = CustomDomainEvent::OwnershipVerified {
            observed_values: vec!["tok".into()],
            proof: dns_handling_events::OwnershipProof::Txt,
            cname_target: None,
            verified_at: Utc::now(),
        };
        let registration = registered();
        let whole = DomainView::fold("d1", [(1, &registration), (2, &verified)]).expect("folds");
        assert_eq!(whole.status, DomainStatus::Verified);
        assert_eq!(whole.last_sequence, 2);
        assert!(DomainView::fold("d1", [(1, &registration), (3, &verified)]).is_none());
        assert!(DomainView::fold("d1", [(2, &verified)]).is_none());
    }

    #[test]
    fn a_view_lists_its_alt_names_and_every_challenge_of_a_pending_order() {
        let mut view = DomainView::from_registration("d1", 1, &registered()).expect("view");
        assert_eq!(view.alt_names, ["www.shop.example.com"]);
        view.apply(
            2,
            &CustomDomainEvent::AltNamesReplaced {
                alt_names: vec!["*.shop.example.com".into()],
                replaced_at: Utc::now(),
            },
        );
        assert_eq!(view.alt_names, ["*.shop.example.com"]);
        let challenge = |identifier: &str, value: &str| OrderChallenge {
            identifier: identifier.into(),
            challenge_url: "https://ca.test/chall".into(),
            challenge_domain: OrderChallenge::record_name(identifier),
            expected_txt_value: value.into(),
            delegated_to: None,
        };
        let order = OrderDetails {
            order_id: "o".into(),
            order_url: "https://ca.test/order".into(),
            names: vec!["shop.example.com".into(), "*.shop.example.com".into()],
            challenges: vec![
                challenge("*.shop.example.com", "w"),
                challenge("shop.example.com", "a"),
            ],
            account_id: "acct".into(),
            poll_interval_ms: 1000,
            deadline: Utc::now(),
            key_type: dns_handling_events::CertificateKeyType::EcdsaP256,
            validation: dns_handling_events::Validation::Manual,
            delegation_problem: None,
            ca_directory: String::new(),
        };
        view.apply(
            3,
            &CustomDomainEvent::CertificateRequested {
                order,
                requested_at: Utc::now(),
            },
        );
        let own = view.challenge.clone().expect("the domain's own challenge");
        assert_eq!(own.identifier, "shop.example.com");
        assert_eq!(own.expected_txt_value, "a");
        assert_eq!(view.challenges.len(), 2);
        assert!(view
            .challenges
            .iter()
            .all(|c| c.challenge_domain == "_acme-challenge.shop.example.com."));
    }

    #[test]
    fn a_revocation_shows_a_fresh_series_of_renewal_attempts() {
        let mut view = DomainView::from_registration("d1", 1, &registered()).expect("view");
        view.apply(2, &issued("c1"));
        let failed = CustomDomainEvent::RenewalFailed {
            order_id: None,
            reason: FailureReason::new("acme_unavailable", "down"),
            attempt: 4,
            next_attempt_at: Utc::now() + chrono::Duration::days(1),
            failed_at: Utc::now(),
        };
        view.apply(3, &failed);
        assert_eq!(view.renewal.as_ref().map(|r| r.attempts), Some(4));
        let revoked = CustomDomainEvent::CertificateRevoked {
            certificate_id: "c1".into(),
            reason: dns_handling_events::RevocationReason::KeyCompromise,
            revoked_at: Utc::now(),
        };
        view.apply(4, &revoked);
        let renewal = view.renewal.expect("a renewal");
        assert_eq!(renewal.attempts, 0);
        assert_eq!(renewal.next_attempt_at, None);
    }

    #[test]
    fn the_revocation_of_a_replaced_certificate_leaves_the_current_one_alone() {
        let mut view = DomainView::from_registration("d1", 1, &registered()).expect("view");
        view.apply(2, &issued("c1"));
        view.apply(3, &issued("c2"));
        let before = view.clone();
        let revoked = CustomDomainEvent::CertificateRevoked {
            certificate_id: "c1".into(),
            reason: dns_handling_events::RevocationReason::KeyCompromise,
            revoked_at: Utc::now(),
        };
        assert_eq!(view.apply(4, &revoked), Applied::Moved);
        assert_eq!(view.certificate, before.certificate, "c2 is not revoked");
        assert_eq!(view.renewal, before.renewal, "and not due");
    }

    #[test]
    fn a_health_change_shows_with_its_problems_and_a_move_and_return_change_the_status() {
        use dns_handling_events::{CheckOutcome, NameCheck};
        let mut view = DomainView::from_registration("d1", 1, &registered()).expect("view");
        view.apply(2, &issued("c1"));
        let updated_at = view.updated_at;
        let checked_at = Utc::now() + chrono::Duration::hours(1);
        let report = HealthReport {
            routing: vec![NameCheck {
                name: "shop.example.com".into(),
                outcome: CheckOutcome::Elsewhere,
                expected: "edge.platform.example".into(),
                found: "198.51.100.1".into(),
            }],
            ..HealthReport::default()
        };
        view.apply(3, &CustomDomainEvent::HealthChanged { report, checked_at });
        let health = view.health.clone().expect("health");
        assert_eq!(health.changed_at, checked_at);
        assert_eq!(health.routing[0].outcome, CheckOutcome::Elsewhere);
        assert_eq!(
            health.problems,
            ["routing of shop.example.com: elsewhere (expected edge.platform.example, found 198.51.100.1)"]
        );
        assert_eq!(
            view.updated_at, updated_at,
            "health is beside the lifecycle"
        );
        let moved_at = checked_at + chrono::Duration::hours(72);
        view.apply(
            4,
            &CustomDomainEvent::DomainMoved {
                routing_lost_at: checked_at,
                moved_at,
            },
        );
        assert_eq!(view.status, DomainStatus::Moved);
        assert_eq!(view.wake_at(), None, "no renewal for a moved domain");
        view.apply(
            5,
            &CustomDomainEvent::DomainReturned {
                status: DomainStatus::Active,
                returned_at: moved_at,
            },
        );
        assert_eq!(view.status, DomainStatus::Active);
        assert!(view.wake_at().is_some());
    }

    #[test]
    fn only_a_registration_starts_a_view() {
        let event = CustomDomainEvent::OwnershipVerified {
            observed_values: vec![],
            proof: dns_handling_events::OwnershipProof::Txt,
            cname_target: None,
            verified_at: Utc::now(),
        };
        assert!(DomainView::from_registration("d1", 1, &event).is_none());
    }
}
