//! What can be asked of a custom domain: the commands the aggregate decides on.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use dns_handling_events::{
    FailureReason, HealthReport, IssuedCertificate, KeyDisposal, OrderDetails, RenewalReason,
    RenewalWindow, RevocationReason,
};

use crate::domain::alt_names::AltNames;
use crate::domain::delegation::DelegationRecord;
use crate::domain::domain_name::DomainName;
use crate::domain::tenant::TenantId;

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
        /// The platform's account it belongs to, if any.
        tenant: Option<TenantId>,
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
    /// Record what the health checks of the domain's DNS found (recorded only when an outcome
    /// changed).
    RecordHealth {
        /// What the checks found.
        report: HealthReport,
        /// How long every name must have routed elsewhere or nowhere for the domain to be
        /// `moved` (`MOVED_AFTER`).
        moved_after: chrono::Duration,
        /// When the checks were made.
        at: DateTime<Utc>,
    },
}
