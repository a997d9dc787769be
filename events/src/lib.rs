//! The events of dns-handling: the persisted facts of every custom domain's life.
//!
//! This crate is the contract for everyone who reads the history without running the service:
//! auditors replaying an issuance, analysts consuming the feed, the projections. It depends on no
//! part of the service itself.
//!
//! Every event carries what a reader needs without calling anything else (names, values,
//! deadlines, timestamps) and never any private key material: a certificate's key is referenced
//! by the order it belongs to and identified by the certificate's public fingerprint.

#![forbid(unsafe_code)]

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// The aggregate type name under which every custom domain's events are stored.
pub const AGGREGATE_TYPE: &str = "CustomDomain";

/// The version every event type starts at; a changed payload means a new version plus an upcaster.
pub const INITIAL_EVENT_VERSION: &str = "1.0";

/// Where a domain is in its lifecycle (see the REST contract's state diagram).
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    Serialize,
    Deserialize,
    Default,
    schemars::JsonSchema,
    utoipa::ToSchema,
)]
#[serde(rename_all = "snake_case")]
// Inline in `DomainReturned`'s schema: a shared definition would change every older event's
// schema file.
#[schemars(inline)]
pub enum DomainStatus {
    /// Registered; ownership not proven yet.
    #[default]
    Pending,
    /// Ownership proven; a certificate may be requested.
    Verified,
    /// An ACME order is open and the service is waiting for the challenge record.
    CertificatePending,
    /// A certificate was issued and stored.
    Active,
    /// The last issuance attempt failed; see the failure reason.
    Failed,
    /// The current certificate expired before a renewal succeeded; renewal carries on, and the
    /// next certificate makes the domain `active` again.
    Expired,
    /// Every name routes elsewhere (or nowhere) and has for `MOVED_AFTER`: no renewal is
    /// ordered, the certificate is served until its end; routing back makes the domain
    /// `active` (or `expired`) again.
    Moved,
}

impl DomainStatus {
    /// Every status, in lifecycle order.
    pub const ALL: [DomainStatus; 7] = [
        Self::Pending,
        Self::Verified,
        Self::CertificatePending,
        Self::Active,
        Self::Failed,
        Self::Expired,
        Self::Moved,
    ];

    /// The status as the REST contract spells it.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Verified => "verified",
            Self::CertificatePending => "certificate_pending",
            Self::Active => "active",
            Self::Failed => "failed",
            Self::Expired => "expired",
            Self::Moved => "moved",
        }
    }

    /// Parses the contract's spelling back into a status.
    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|status| status.as_str() == text)
    }
}

impl std::fmt::Display for DomainStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why an issuance attempt failed: a stable machine-readable code and a human-readable detail.
#[derive(
    Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema, utoipa::ToSchema,
)]
pub struct FailureReason {
    /// Stable code such as `dns_timeout`, `challenge_invalid`, `finalize_failed`, `acme_error`.
    pub code: String,
    /// What happened, including the CA's RFC 7807 problem document where there is one.
    pub detail: String,
}

impl FailureReason {
    /// The code recorded when the challenge record never appeared before the deadline.
    pub const DNS_TIMEOUT: &'static str = "dns_timeout";

    /// The code recorded when the CA stayed unreachable, or did not finish the order, until the
    /// deadline.
    pub const ACME_UNAVAILABLE: &'static str = "acme_unavailable";

    /// The code recorded when CAA records forbade every configured CA, so no CA was asked.
    pub const CAA_FORBIDS: &'static str = "caa_forbids";

    /// Builds a reason from a code and a detail.
    pub fn new(code: &str, detail: impl Into<String>) -> Self {
        Self {
            code: code.to_owned(),
            detail: detail.into(),
        }
    }

    /// The reason an `IssuanceTimedOut` stands for, naming the names whose value went unseen
    /// where the event lists them.
    pub fn timed_out(deadline: &DateTime<Utc>, unseen_names: &[String]) -> Self {
        let detail = if unseen_names.is_empty() {
            format!("the challenge TXT record was not seen before {deadline}")
        } else {
            format!(
                "the challenge TXT record of {} was not seen before {deadline}",
                unseen_names.join(", ")
            )
        };
        Self::new(Self::DNS_TIMEOUT, detail)
    }
}

/// The kind of private key a certificate is issued for.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default, schemars::JsonSchema,
)]
#[serde(rename_all = "kebab-case")]
pub enum CertificateKeyType {
    /// RSA with a 2048-bit modulus: what the source system issued, and the default.
    #[default]
    Rsa2048,
    /// ECDSA on P-256: far cheaper to generate and to serve.
    EcdsaP256,
}

impl CertificateKeyType {
    /// The setting's spelling (`rsa2048`, `ecdsa-p256`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Rsa2048 => "rsa2048",
            Self::EcdsaP256 => "ecdsa-p256",
        }
    }

    /// Parses the setting's spelling.
    pub fn parse(text: &str) -> Option<Self> {
        [Self::Rsa2048, Self::EcdsaP256]
            .into_iter()
            .find(|kind| kind.as_str() == text)
    }
}

/// One authorization's dns-01 challenge: which name it proves, and the TXT record that proves
/// it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct OrderChallenge {
    /// The name the authorization is for, as the order lists it (`*.shop.example.com` for a
    /// wildcard).
    pub identifier: String,
    /// The URL of the authorization's dns-01 challenge.
    pub challenge_url: String,
    /// Where the TXT record must be published, with the trailing dot. A domain and its
    /// wildcard share one (`_acme-challenge.shop.example.com.`) and need both values at once.
    pub challenge_domain: String,
    /// The base64url SHA-256 key authorization digest the TXT record must hold.
    pub expected_txt_value: String,
    /// Where the service publishes the value itself, in its own zone (`<label>.<zone>.`), when
    /// the order is validated by delegation: `challenge_domain` is a CNAME to it (added in
    /// `CertificateRequested` 4.0 and `RenewalRequested` 2.0; `null` for manual orders).
    pub delegated_to: Option<String>,
}

impl OrderChallenge {
    /// Where the challenge record of `identifier` lives: `_acme-challenge.` before the name,
    /// without a wildcard's `*.` (RFC 8555 §8.4), with the trailing dot.
    pub fn record_name(identifier: &str) -> String {
        let base = identifier.strip_prefix("*.").unwrap_or(identifier);
        format!("_acme-challenge.{base}.")
    }
}

/// Everything needed to carry an ACME order forward, persisted before the order is handed to a
/// poller so that a restart can resume it without creating a second order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct OrderDetails {
    /// The service's own id for this order (returned to clients as `order_id`).
    pub order_id: String,
    /// The ACME order URL: the handle to resume the order with after a restart.
    pub order_url: String,
    /// Every name the order (and so the certificate) covers, the domain itself first (added in
    /// `CertificateRequested` 3.0; older orders were for the domain alone).
    pub names: Vec<String>,
    /// The dns-01 challenge of every authorization still to be proven, in the order's order
    /// (added in 3.0; a 2.0 order's one challenge is upcast into it). An authorization the CA
    /// already holds as valid has none.
    pub challenges: Vec<OrderChallenge>,
    /// The ACME account (its URL/KID) the order belongs to.
    pub account_id: String,
    /// How often the poller looks the record up, in milliseconds.
    pub poll_interval_ms: u64,
    /// When the poller gives up if the record has not been seen.
    pub deadline: DateTime<Utc>,
    /// The kind of key the certificate is issued for (added in `CertificateRequested` 2.0;
    /// version 1.0 events are upcast to `rsa2048`, the only kind there was).
    pub key_type: CertificateKeyType,
    /// Who publishes the challenge records: the owner (`manual`) or the service, in its own
    /// zone (`delegated`) (added in `CertificateRequested` 4.0 and `RenewalRequested` 2.0).
    pub validation: Validation,
    /// Why a domain set up for delegation fell back to `manual` (its CNAME missing or wrong);
    /// `null` otherwise.
    pub delegation_problem: Option<String>,
    /// The ACME directory of the CA the order was placed with (added in
    /// `CertificateRequested` 4.0 and `RenewalRequested` 2.0; empty for older orders, which
    /// went to the one CA configured then).
    #[serde(default)]
    pub ca_directory: String,
}

/// Who publishes an order's challenge records.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Serialize,
    Deserialize,
    schemars::JsonSchema,
    utoipa::ToSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum Validation {
    /// The domain's owner publishes each TXT record by hand.
    Manual,
    /// Every `_acme-challenge` name of the order is a CNAME into the service's delegation
    /// zone, where the service publishes the values itself.
    Delegated,
}

impl Validation {
    /// The method as the API spells it.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Manual => "manual",
            Self::Delegated => "delegated",
        }
    }
}

/// How ownership of a domain was proven.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Serialize,
    Deserialize,
    schemars::JsonSchema,
    utoipa::ToSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum OwnershipProof {
    /// The verification token was found in the TXT record at the verification name.
    Txt,
    /// `_acme-challenge.<domain>.` was found to be a CNAME to the domain's name in the
    /// service's delegation zone: only who controls the domain's zone can set it.
    Cname,
}

/// Why a certificate is (or was) renewed.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Serialize,
    Deserialize,
    schemars::JsonSchema,
    utoipa::ToSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum RenewalReason {
    /// Inside the window the CA suggested through ACME Renewal Information (RFC 9773).
    Ari,
    /// Its remaining lifetime fell below `RENEW_BEFORE` (by default a third of its lifetime).
    Lifetime,
    /// Someone asked for it (`POST /domains/{id}/renew`).
    Manual,
    /// The certificate was revoked: its replacement is due at once.
    Revoked,
}

impl RenewalReason {
    /// The reason as the API spells it.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Ari => "ari",
            Self::Lifetime => "lifetime",
            Self::Manual => "manual",
            Self::Revoked => "revoked",
        }
    }
}

/// Why a certificate was revoked (RFC 5280 §5.3.1 reason codes, as ACME takes them).
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Serialize,
    Deserialize,
    schemars::JsonSchema,
    utoipa::ToSchema,
)]
#[serde(rename_all = "camelCase")]
pub enum RevocationReason {
    /// No reason given (code 0).
    Unspecified,
    /// The private key may be known to others (code 1).
    KeyCompromise,
    /// The subject's name or other information changed (code 3).
    AffiliationChanged,
    /// A new certificate replaces it (code 4).
    Superseded,
    /// The names are no longer served (code 5).
    CessationOfOperation,
    /// The right to the names was withdrawn (code 9).
    PrivilegeWithdrawn,
}

/// Why a certificate's private key was destroyed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum KeyDisposal {
    /// Its order failed or was abandoned: no certificate will ever use it.
    OrderEnded,
    /// Its certificate was revoked for `keyCompromise`: the key may be known to others.
    KeyCompromised,
    /// Its certificate is past its end of validity.
    CertificateExpired,
    /// Its domain was removed.
    DomainRemoved,
}

/// The renewal window a CA suggested for a certificate (RFC 9773 §4.2).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct RenewalWindow {
    /// The window's start.
    pub start: DateTime<Utc>,
    /// The window's end.
    pub end: DateTime<Utc>,
    /// The CA's page explaining the window, when it gave one.
    pub explanation_url: Option<String>,
}

/// The public facts of an issued certificate; the private key is stored elsewhere, by order id.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct IssuedCertificate {
    /// Id of this certificate in the service.
    pub certificate_id: String,
    /// The order it was issued for (also the reference of its private key).
    pub order_id: String,
    /// Serial number, lower-case hex.
    pub serial: String,
    /// Start of validity, read from the certificate.
    pub not_before: DateTime<Utc>,
    /// End of validity, read from the certificate.
    pub not_after: DateTime<Utc>,
    /// SHA-256 of the leaf certificate's DER, lower-case hex.
    pub fingerprint_sha256: String,
    /// The chain as the CA returned it (public material only).
    pub chain_pem: String,
    /// The ACME directory of the CA that issued it (added in `CertificateIssued` 2.0; empty
    /// for older certificates, issued by the one CA configured then).
    #[serde(default)]
    pub ca_directory: String,
}

/// What one check found for one name of a domain (`HealthChanged`).
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Serialize,
    Deserialize,
    schemars::JsonSchema,
    utoipa::ToSchema,
)]
#[serde(rename_all = "snake_case")]
// Inline in `HealthChanged`'s schema: a shared definition would change every older event's
// schema file, whose payloads did not change.
#[schemars(inline)]
pub enum CheckOutcome {
    /// As expected: the name routes to the platform, its delegation CNAME leads to its record,
    /// a configured CA may issue for it.
    Ok,
    /// Routing or delegation leads somewhere else (what was found says where).
    Elsewhere,
    /// Nothing there: NXDOMAIN or no address (routing), no CNAME (delegation).
    Missing,
    /// CAA forbids every configured CA to issue for the name.
    Forbidden,
    /// The lookup failed (SERVFAIL, timeout): nothing is known, and nothing is done about it.
    Unknown,
}

impl CheckOutcome {
    /// The outcome as the API spells it.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Ok => "ok",
            Self::Elsewhere => "elsewhere",
            Self::Missing => "missing",
            Self::Forbidden => "forbidden",
            Self::Unknown => "unknown",
        }
    }
}

/// One check of one name: what was expected, what was found, and what that means.
#[derive(
    Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema, utoipa::ToSchema,
)]
#[schemars(inline)]
pub struct NameCheck {
    /// The name checked, as the domain lists it.
    pub name: String,
    /// What the check concluded.
    pub outcome: CheckOutcome,
    /// What the service expected to find.
    pub expected: String,
    /// What it found (the addresses and aliases, the CNAME target, the CAA records), or why
    /// the lookup failed.
    pub found: String,
}

/// What the health checks of a domain found, per check and per name. A check that is not
/// configured (no `ROUTING_TARGETS`, no `DELEGATION_ZONE` or a domain not delegated, CAA off)
/// has no entries.
#[derive(
    Debug,
    Clone,
    Default,
    PartialEq,
    Eq,
    Serialize,
    Deserialize,
    schemars::JsonSchema,
    utoipa::ToSchema,
)]
#[schemars(inline)]
pub struct HealthReport {
    /// Whether each name resolves to the platform (`ROUTING_TARGETS`).
    pub routing: Vec<NameCheck>,
    /// Whether each name's `_acme-challenge` CNAME still leads to its record in the delegation
    /// zone.
    pub delegation: Vec<NameCheck>,
    /// Whether a configured CA may issue for each name under its CAA records.
    pub caa: Vec<NameCheck>,
}

impl HealthReport {
    /// Every check of the report, each with the name of its kind (`routing`, `delegation`,
    /// `caa`).
    pub fn checks(&self) -> impl Iterator<Item = (&'static str, &NameCheck)> {
        let kind = |kind: &'static str| move |check| (kind, check);
        self.routing
            .iter()
            .map(kind("routing"))
            .chain(self.delegation.iter().map(kind("delegation")))
            .chain(self.caa.iter().map(kind("caa")))
    }

    /// Whether both reports come to the same outcomes for the same names (what they found
    /// aside): a check that finds the same thing again is not a change.
    pub fn same_outcomes(&self, other: &HealthReport) -> bool {
        let outcomes = |report: &HealthReport| -> Vec<(&'static str, String, CheckOutcome)> {
            report
                .checks()
                .map(|(kind, check)| (kind, check.name.clone(), check.outcome))
                .collect()
        };
        outcomes(self) == outcomes(other)
    }

    /// The problems the report shows, one sentence each: every outcome but `ok`.
    pub fn problems(&self) -> Vec<String> {
        self.checks()
            .filter(|(_, check)| check.outcome != CheckOutcome::Ok)
            .map(|(kind, check)| {
                format!(
                    "{kind} of {}: {} (expected {}, found {})",
                    check.name,
                    check.outcome.as_str(),
                    check.expected,
                    check.found
                )
            })
            .collect()
    }
}

/// Every fact recorded about a custom domain.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub enum CustomDomainEvent {
    /// The domain was registered and given a verification token.
    DomainRegistered {
        /// Normalised host name (lower case, punycode, no trailing dot).
        domain_name: String,
        /// The random token the owner must publish.
        verification_token: String,
        /// Where the token must be published, with the trailing dot.
        verification_record_name: String,
        /// When it happened.
        registered_at: DateTime<Utc>,
        /// Further names the certificate covers, each under the domain (a subdomain, or a
        /// wildcard `*.` whose rest is the domain or a subdomain), normalised like
        /// `domain_name` (added in 2.0; older registrations had none).
        alt_names: Vec<String>,
        /// The platform's account the domain belongs to, 1 to 64 letters, digits, `_` or `-`
        /// (added in 3.0; absent when it belongs to none, as every older registration).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        tenant: Option<String>,
    },
    /// The set of further names was replaced; it applies from the next order on.
    AltNamesReplaced {
        /// The new set (may be empty).
        alt_names: Vec<String>,
        /// When it happened.
        replaced_at: DateTime<Utc>,
    },
    /// Ownership was proven in DNS: the verification token, or the delegation CNAME.
    OwnershipVerified {
        /// All TXT values seen at the verification record name.
        observed_values: Vec<String>,
        /// Which proof was seen (added in 2.0; older verifications were all `txt`).
        proof: OwnershipProof,
        /// The CNAME target seen at `_acme-challenge.<domain>.`, for a `cname` proof.
        cname_target: Option<String>,
        /// When it happened.
        verified_at: DateTime<Utc>,
    },
    /// An ACME order was created and handed to a poller.
    CertificateRequested {
        /// The order and its challenge.
        order: OrderDetails,
        /// When it happened.
        requested_at: DateTime<Utc>,
    },
    /// Every expected challenge record of the order was seen in DNS; the CA is being asked to
    /// validate.
    ChallengeRecordObserved {
        /// The order the records belong to.
        order_id: String,
        /// All TXT values seen at the order's challenge domains, each once, in the order of the
        /// order's challenges.
        observed_values: Vec<String>,
        /// The resolver(s) that answered.
        resolver: String,
        /// When it happened.
        observed_at: DateTime<Utc>,
    },
    /// The order was finalized and the certificate stored.
    CertificateIssued {
        /// The certificate's public facts.
        certificate: IssuedCertificate,
        /// When it happened.
        issued_at: DateTime<Utc>,
    },
    /// The CA refused the challenge or the finalization, or the order could not be completed.
    IssuanceFailed {
        /// The order that failed.
        order_id: String,
        /// Why.
        reason: FailureReason,
        /// When it happened.
        failed_at: DateTime<Utc>,
    },
    /// The challenge record was not seen before the order's deadline.
    IssuanceTimedOut {
        /// The order that timed out.
        order_id: String,
        /// The deadline that passed.
        deadline: DateTime<Utc>,
        /// The names whose challenge value was not visible at the last lookup (added in 2.0;
        /// older timeouts, of one-name orders, have none listed).
        unseen_names: Vec<String>,
        /// When the timeout was recorded.
        timed_out_at: DateTime<Utc>,
    },
    /// When the current certificate is to be renewed, and why.
    RenewalScheduled {
        /// The certificate the schedule is for.
        certificate_id: String,
        /// When the renewal is due (a moment inside the CA's window, or by lifetime).
        due_at: DateTime<Utc>,
        /// `ari` or `lifetime`.
        reason: RenewalReason,
        /// The CA's suggested window, for `ari`.
        window: Option<RenewalWindow>,
        /// When it happened.
        scheduled_at: DateTime<Utc>,
    },
    /// A renewal order was created and handed to a poller; the current certificate stays in
    /// service until the new one is issued.
    RenewalRequested {
        /// The order (for every name the domain has now) and its challenges.
        order: OrderDetails,
        /// Why.
        reason: RenewalReason,
        /// The certificate being renewed.
        renews_certificate_id: String,
        /// The ARI certificate identifier sent as the order's `replaces`, when the CA offers ARI.
        replaces: Option<String>,
        /// When it happened.
        requested_at: DateTime<Utc>,
    },
    /// A renewal attempt failed; the current certificate stays, the next attempt is scheduled.
    RenewalFailed {
        /// The renewal order that failed, if one was placed.
        order_id: Option<String>,
        /// Why.
        reason: FailureReason,
        /// Failed attempts in a row, this one included.
        attempt: u32,
        /// When the next attempt is due.
        next_attempt_at: DateTime<Utc>,
        /// When it happened.
        failed_at: DateTime<Utc>,
    },
    /// The current certificate expired before a renewal succeeded: the domain is `expired`.
    CertificateExpired {
        /// The certificate that expired.
        certificate_id: String,
        /// Its end of validity.
        not_after: DateTime<Utc>,
        /// When it was recorded.
        expired_at: DateTime<Utc>,
    },
    /// The current certificate was revoked at the CA; its replacement is due at once.
    CertificateRevoked {
        /// The certificate revoked.
        certificate_id: String,
        /// Why (the reason code sent to the CA).
        reason: RevocationReason,
        /// When the CA confirmed it.
        revoked_at: DateTime<Utc>,
    },
    /// A certificate's private key was destroyed: nothing of it is kept.
    CertificateKeyDestroyed {
        /// The order the key was made for.
        order_id: String,
        /// The certificate it served, if one was issued.
        certificate_id: Option<String>,
        /// Why.
        why: KeyDisposal,
        /// When.
        destroyed_at: DateTime<Utc>,
    },
    /// A failed domain was put back to `verified` so a certificate can be requested again.
    IssuanceRetried {
        /// The failure being retried.
        previous_reason: FailureReason,
        /// When it happened.
        retried_at: DateTime<Utc>,
    },
    /// The domain was removed: it leaves the listings and frees its name; its history stays.
    DomainRemoved {
        /// The name that became free again.
        domain_name: String,
        /// When it happened.
        removed_at: DateTime<Utc>,
    },
    /// Audit fact: the current certificate's private key was handed out.
    PrivateKeyRead {
        /// The certificate whose key was read.
        certificate_id: String,
        /// Who read it (the role and a non-secret token label), for the auditors.
        reader: String,
        /// When it happened.
        read_at: DateTime<Utc>,
    },
    /// A health check of the domain's DNS came to other outcomes than the last one recorded
    /// (a check that changes nothing records nothing).
    HealthChanged {
        /// What the check found, per check and per name.
        report: HealthReport,
        /// When the check that found the change was made.
        checked_at: DateTime<Utc>,
    },
    /// Every name of the domain has routed elsewhere (or nowhere) since `routing_lost_at`, for
    /// at least `MOVED_AFTER`: the domain is `moved`, and no renewal is ordered for it.
    DomainMoved {
        /// When the check that first found every name routing elsewhere or nowhere was made.
        routing_lost_at: DateTime<Utc>,
        /// When the check that found it still so, `MOVED_AFTER` later, was made.
        moved_at: DateTime<Utc>,
    },
    /// A moved domain's names route to the platform again: it is back to `status`.
    DomainReturned {
        /// `active`, or `expired` when its certificate ended while it was moved.
        status: DomainStatus,
        /// When the check that found routing back was made.
        returned_at: DateTime<Utc>,
    },
}

impl CustomDomainEvent {
    /// The event's type name as stored (`event_type` column).
    pub fn type_name(&self) -> &'static str {
        match self {
            Self::DomainRegistered { .. } => "DomainRegistered",
            Self::AltNamesReplaced { .. } => "AltNamesReplaced",
            Self::OwnershipVerified { .. } => "OwnershipVerified",
            Self::CertificateRequested { .. } => "CertificateRequested",
            Self::ChallengeRecordObserved { .. } => "ChallengeRecordObserved",
            Self::CertificateIssued { .. } => "CertificateIssued",
            Self::IssuanceFailed { .. } => "IssuanceFailed",
            Self::IssuanceTimedOut { .. } => "IssuanceTimedOut",
            Self::IssuanceRetried { .. } => "IssuanceRetried",
            Self::RenewalScheduled { .. } => "RenewalScheduled",
            Self::RenewalRequested { .. } => "RenewalRequested",
            Self::RenewalFailed { .. } => "RenewalFailed",
            Self::CertificateExpired { .. } => "CertificateExpired",
            Self::CertificateRevoked { .. } => "CertificateRevoked",
            Self::CertificateKeyDestroyed { .. } => "CertificateKeyDestroyed",
            Self::DomainRemoved { .. } => "DomainRemoved",
            Self::PrivateKeyRead { .. } => "PrivateKeyRead",
            Self::HealthChanged { .. } => "HealthChanged",
            Self::DomainMoved { .. } => "DomainMoved",
            Self::DomainReturned { .. } => "DomainReturned",
        }
    }
}

impl CustomDomainEvent {
    /// The current version of this event's payload.
    pub fn version(&self) -> &'static str {
        match self {
            Self::IssuanceTimedOut { .. }
            | Self::OwnershipVerified { .. }
            | Self::RenewalRequested { .. }
            | Self::CertificateIssued { .. } => "2.0",
            Self::CertificateRequested { .. } => "4.0",
            Self::DomainRegistered { .. } => "3.0",
            _ => INITIAL_EVENT_VERSION,
        }
    }
}

impl cqrs_es::DomainEvent for CustomDomainEvent {
    fn event_type(&self) -> String {
        self.type_name().to_owned()
    }

    fn event_version(&self) -> String {
        self.version().to_owned()
    }
}

pub mod chain;
pub mod feed;
pub mod schema;
pub mod tokens;
pub mod upcast;
pub mod webhooks;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_round_trips_through_its_contract_spelling() {
        for status in [
            DomainStatus::Pending,
            DomainStatus::Verified,
            DomainStatus::CertificatePending,
            DomainStatus::Active,
            DomainStatus::Failed,
            DomainStatus::Expired,
            DomainStatus::Moved,
        ] {
            assert_eq!(DomainStatus::parse(status.as_str()), Some(status));
            let json = serde_json::to_string(&status).expect("serialises");
            assert_eq!(json, format!("\"{}\"", status.as_str()));
        }
        assert_eq!(DomainStatus::parse("bogus"), None);
    }

    /// One event of every variant, each at the place `place_of` gives its variant.
    fn one_of_each_variant() -> Vec<CustomDomainEvent> {
        let at = Utc::now();
        let order = OrderDetails {
            order_id: "o".into(),
            order_url: "https://ca.test/order/1".into(),
            names: vec!["shop.example.com".into(), "*.shop.example.com".into()],
            challenges: vec![OrderChallenge {
                identifier: "*.shop.example.com".into(),
                challenge_url: "https://ca.test/chall/1".into(),
                challenge_domain: OrderChallenge::record_name("*.shop.example.com"),
                expected_txt_value: "digest".into(),
                delegated_to: Some("k7q2.acme.platform.example.".into()),
            }],
            account_id: "https://ca.test/acct/1".into(),
            poll_interval_ms: 10_000,
            deadline: at,
            key_type: CertificateKeyType::EcdsaP256,
            validation: Validation::Delegated,
            delegation_problem: None,
            ca_directory: String::new(),
        };
        let certificate = IssuedCertificate {
            certificate_id: "c".into(),
            order_id: "o".into(),
            serial: "01".into(),
            not_before: at,
            not_after: at,
            fingerprint_sha256: "ab".repeat(32),
            chain_pem: "-----BEGIN CERTIFICATE-----".into(),
            ca_directory: String::new(),
        };
        let reason = FailureReason::new("challenge_invalid", "refused");
        vec![
            CustomDomainEvent::DomainRegistered {
                domain_name: "shop.example.com".into(),
                verification_token: "t".into(),
                verification_record_name: "_dns-handling.shop.example.com.".into(),
                registered_at: at,
                alt_names: vec!["www.shop.example.com".into()],
                tenant: Some("acct_123".into()),
            },
            CustomDomainEvent::AltNamesReplaced {
                alt_names: vec!["*.shop.example.com".into()],
                replaced_at: at,
            },
            CustomDomainEvent::OwnershipVerified {
                observed_values: vec![],
                proof: OwnershipProof::Cname,
                cname_target: Some("k7q2.acme.platform.example.".into()),
                verified_at: at,
            },
            CustomDomainEvent::CertificateRequested {
                order: order.clone(),
                requested_at: at,
            },
            CustomDomainEvent::ChallengeRecordObserved {
                order_id: "o".into(),
                observed_values: vec!["digest".into()],
                resolver: "127.0.0.1:53".into(),
                observed_at: at,
            },
            CustomDomainEvent::CertificateIssued {
                certificate,
                issued_at: at,
            },
            CustomDomainEvent::IssuanceFailed {
                order_id: "o".into(),
                reason: reason.clone(),
                failed_at: at,
            },
            CustomDomainEvent::IssuanceTimedOut {
                order_id: "o".into(),
                deadline: at,
                unseen_names: vec!["www.shop.example.com".into()],
                timed_out_at: at,
            },
            CustomDomainEvent::IssuanceRetried {
                previous_reason: reason.clone(),
                retried_at: at,
            },
            CustomDomainEvent::RenewalScheduled {
                certificate_id: "c".into(),
                due_at: at,
                reason: RenewalReason::Ari,
                window: Some(RenewalWindow {
                    start: at,
                    end: at,
                    explanation_url: Some("https://ca.test/ari".into()),
                }),
                scheduled_at: at,
            },
            CustomDomainEvent::RenewalRequested {
                order: order.clone(),
                reason: RenewalReason::Lifetime,
                renews_certificate_id: "c".into(),
                replaces: None,
                requested_at: at,
            },
            CustomDomainEvent::RenewalFailed {
                order_id: Some("o".into()),
                reason,
                attempt: 1,
                next_attempt_at: at,
                failed_at: at,
            },
            CustomDomainEvent::CertificateExpired {
                certificate_id: "c".into(),
                not_after: at,
                expired_at: at,
            },
            CustomDomainEvent::CertificateRevoked {
                certificate_id: "c".into(),
                reason: RevocationReason::KeyCompromise,
                revoked_at: at,
            },
            CustomDomainEvent::CertificateKeyDestroyed {
                order_id: "o".into(),
                certificate_id: Some("c".into()),
                why: KeyDisposal::CertificateExpired,
                destroyed_at: at,
            },
            CustomDomainEvent::DomainRemoved {
                domain_name: "shop.example.com".into(),
                removed_at: at,
            },
            CustomDomainEvent::PrivateKeyRead {
                certificate_id: "c".into(),
                reader: "admin".into(),
                read_at: at,
            },
            CustomDomainEvent::HealthChanged {
                report: HealthReport {
                    routing: vec![NameCheck {
                        name: "shop.example.com".into(),
                        outcome: CheckOutcome::Elsewhere,
                        expected: "edge.platform.example".into(),
                        found: "198.51.100.1".into(),
                    }],
                    delegation: Vec::new(),
                    caa: Vec::new(),
                },
                checked_at: at,
            },
            CustomDomainEvent::DomainMoved {
                routing_lost_at: at,
                moved_at: at,
            },
            CustomDomainEvent::DomainReturned {
                status: DomainStatus::Active,
                returned_at: at,
            },
        ]
    }

    /// Where a variant's sample is in `one_of_each_variant`. No wildcard arm: a new variant
    /// does not compile until it is given a place here (and then a sample, or the test fails).
    fn place_of(event: &CustomDomainEvent) -> usize {
        match event {
            CustomDomainEvent::DomainRegistered { .. } => 0,
            CustomDomainEvent::AltNamesReplaced { .. } => 1,
            CustomDomainEvent::OwnershipVerified { .. } => 2,
            CustomDomainEvent::CertificateRequested { .. } => 3,
            CustomDomainEvent::ChallengeRecordObserved { .. } => 4,
            CustomDomainEvent::CertificateIssued { .. } => 5,
            CustomDomainEvent::IssuanceFailed { .. } => 6,
            CustomDomainEvent::IssuanceTimedOut { .. } => 7,
            CustomDomainEvent::IssuanceRetried { .. } => 8,
            CustomDomainEvent::RenewalScheduled { .. } => 9,
            CustomDomainEvent::RenewalRequested { .. } => 10,
            CustomDomainEvent::RenewalFailed { .. } => 11,
            CustomDomainEvent::CertificateExpired { .. } => 12,
            CustomDomainEvent::CertificateRevoked { .. } => 13,
            CustomDomainEvent::CertificateKeyDestroyed { .. } => 14,
            CustomDomainEvent::DomainRemoved { .. } => 15,
            CustomDomainEvent::PrivateKeyRead { .. } => 16,
            CustomDomainEvent::HealthChanged { .. } => 17,
            CustomDomainEvent::DomainMoved { .. } => 18,
            CustomDomainEvent::DomainReturned { .. } => 19,
        }
    }

    /// The variant names as serde writes them, read from the generated JSON Schema, which
    /// lists every variant of the type (one `oneOf` entry each, keyed by its name).
    fn variant_names_in_the_schema() -> Vec<String> {
        let schema = serde_json::to_value(schemars::schema_for!(CustomDomainEvent))
            .expect("the schema serialises");
        let variants = schema["oneOf"].as_array().expect("one schema per variant");
        variants
            .iter()
            .map(|variant| {
                let properties = variant["properties"].as_object().expect("properties");
                assert_eq!(properties.len(), 1, "one key per variant: {variant}");
                properties.keys().next().expect("one key").clone()
            })
            .collect()
    }

    #[test]
    fn every_event_type_name_is_its_serialised_variant_name() {
        let events = one_of_each_variant();
        for (place, event) in events.iter().enumerate() {
            assert_eq!(place_of(event), place, "one sample per variant, in order");
        }
        // Every variant has its sample: the schema knows every variant, the samples must too.
        let mut sampled: Vec<String> = events.iter().map(|e| e.type_name().to_owned()).collect();
        let mut in_schema = variant_names_in_the_schema();
        sampled.sort();
        in_schema.sort();
        assert_eq!(sampled, in_schema);

        for event in &events {
            let json = serde_json::to_value(event).expect("serialises");
            let keys: Vec<&String> = json.as_object().expect("an object").keys().collect();
            assert_eq!(keys, [event.type_name()], "{json}");
            let back: CustomDomainEvent = serde_json::from_value(json).expect("deserialises");
            assert_eq!(&back, event);
            assert_eq!(cqrs_es::DomainEvent::event_type(event), event.type_name());
        }
    }
}
