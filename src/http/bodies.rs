//! The JSON bodies the API answers with, built from the read projections.

use chrono::{DateTime, SecondsFormat, Utc};
use dns_handling_events::{DomainStatus, FailureReason, NameCheck, RenewalReason, Validation};
use dns_handling_projections::{
    CertificateSummary, ChallengeView, DomainView, HealthView, RenewalView,
};
use serde::{Serialize, Serializer};

use crate::domain::delegation::DelegationZone;
use crate::tasks::TaskHealth;

/// RFC 3339 UTC with second precision and a `Z`, as the contract asks.
pub fn rfc3339<S: Serializer>(time: &DateTime<Utc>, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(&time.to_rfc3339_opts(SecondsFormat::Secs, true))
}

pub fn rfc3339_opt<S: Serializer>(
    time: &Option<DateTime<Utc>>,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    match time {
        Some(time) => rfc3339(time, serializer),
        None => serializer.serialize_none(),
    }
}

/// Where and what to publish to prove ownership.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct VerificationRecord {
    /// The record's name, with the trailing dot.
    pub name: String,
    /// Always `TXT`.
    #[serde(rename = "type")]
    pub record_type: &'static str,
    /// The token.
    pub value: String,
}

impl VerificationRecord {
    /// The record a domain view asks for.
    pub fn of(view: &DomainView) -> Self {
        Self {
            name: view.verification_record_name.clone(),
            record_type: "TXT",
            value: view.verification_token.clone(),
        }
    }
}

/// The CNAME an owner sets once to let the service publish a name's challenges itself.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct DelegationRecordBody {
    /// `_acme-challenge.<name>.`, with the trailing dot.
    #[schema(example = "_acme-challenge.shop.example.com.")]
    pub name: String,
    /// Always `CNAME`.
    #[serde(rename = "type")]
    pub record_type: &'static str,
    /// `<label>.<zone>.`: the domain's own name in the service's delegation zone.
    #[schema(example = "3f1c0e9a4b7d2e6f8a1b2c3d4e5f6a7b.acme.platform.example.")]
    pub value: String,
    /// The names the record serves: a name and its wildcard share one.
    pub names: Vec<String>,
}

impl DelegationRecordBody {
    /// One record per `_acme-challenge` name the domain's names need, the domain's own first.
    pub fn all(zone: &DelegationZone, view: &DomainView) -> Vec<Self> {
        let mut records: Vec<Self> = Vec::new();
        for name in view.names() {
            let record = zone.record_for(&view.verification_token, &name);
            match records.iter_mut().find(|known| known.name == record.name) {
                Some(known) => known.names.push(name),
                None => records.push(Self {
                    name: record.name,
                    record_type: "CNAME",
                    value: record.target,
                    names: vec![name],
                }),
            }
        }
        records
    }
}

/// `201` body of `POST /domains`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct RegisteredDomain {
    /// The new domain's id.
    pub id: String,
    /// The normalised name.
    pub domain_name: String,
    /// The further names its certificates cover, normalised.
    #[schema(example = json!(["www.shop.example.com", "*.shop.example.com"]))]
    pub alt_names: Vec<String>,
    /// The platform's account it belongs to; absent when it belongs to none.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(example = "acct_123")]
    pub tenant: Option<String>,
    /// Always `pending`.
    pub status: DomainStatus,
    /// The token to publish.
    pub verification_token: String,
    /// Where and how to publish it.
    pub verification_record: VerificationRecord,
    /// With delegated validation on: the CNAME that proves ownership in place of the token
    /// and lets the service publish every challenge of the domain itself.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub delegation_record: Option<DelegationRecordBody>,
    /// With delegated validation on: the CNAME of every name (the domain's own first).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub delegation_records: Vec<DelegationRecordBody>,
    /// Human-readable instructions.
    pub instructions: String,
    /// When it was registered.
    #[serde(serialize_with = "rfc3339")]
    pub created_at: DateTime<Utc>,
}

/// The body of `GET /domains/{id}` (and of each item of `GET /domains`).
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct DomainBody {
    /// The domain's id.
    pub id: String,
    /// The normalised name.
    pub domain_name: String,
    /// The further names its next certificate covers (a pending order keeps the names it was
    /// placed with: see `challenges`).
    pub alt_names: Vec<String>,
    /// The platform's account it belongs to; absent when it belongs to none.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(example = "acct_123")]
    pub tenant: Option<String>,
    /// Lifecycle status.
    pub status: DomainStatus,
    /// When ownership was proven.
    #[serde(
        serialize_with = "rfc3339_opt",
        skip_serializing_if = "Option::is_none"
    )]
    pub verified_at: Option<DateTime<Utc>>,
    /// When it was registered.
    #[serde(serialize_with = "rfc3339")]
    pub created_at: DateTime<Utc>,
    /// When it last changed.
    #[serde(serialize_with = "rfc3339")]
    pub updated_at: DateTime<Utc>,
    /// Why the last issuance failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failure_reason: Option<FailureReason>,
    /// The domain's own record to publish while a certificate is pending.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub challenge: Option<ChallengeView>,
    /// Every record to publish while a certificate is pending, one per authorization.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub challenges: Vec<ChallengeView>,
    /// The current certificate.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub certificate: Option<CertificateSummary>,
    /// The renewal of the current certificate: when it is due and why, an order in progress
    /// and its records, failed attempts and the next one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub renewal: Option<RenewalBody>,
    /// The record to publish while ownership is not proven yet.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub verification_record: Option<VerificationRecord>,
    /// The id of the open or last ACME order.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub order_id: Option<String>,
    /// Who publishes the open order's records: the owner (`manual`) or the service
    /// (`delegated`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub validation: Option<Validation>,
    /// Why the open order fell back to `manual` although delegation is on.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub delegation_problem: Option<String>,
    /// With delegated validation on: the CNAME of every name (the domain's own first).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub delegation_records: Vec<DelegationRecordBody>,
    /// What the health checks of its DNS found, as last recorded; absent until a check
    /// recorded something.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub health: Option<DomainHealthBody>,
}

/// What the health checks of a domain's DNS found, as last recorded (in `GET /domains/{id}`).
/// A check that finds the outcomes already recorded records nothing: `changed_at` is the
/// time of the check that found the last change, not of the latest check.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct DomainHealthBody {
    /// Whether each name (wildcards aside) resolves to the platform (`ROUTING_TARGETS`):
    /// `ok`, `elsewhere`, `missing` or `unknown`.
    pub routing: Vec<NameCheck>,
    /// Whether each name's `_acme-challenge` CNAME still leads to its record in the delegation
    /// zone (domains whose last order was delegated): `ok`, `elsewhere`, `missing`, `unknown`.
    pub delegation: Vec<NameCheck>,
    /// Whether a configured CA may issue for each name under its CAA records: `ok`,
    /// `forbidden`, `unknown`.
    pub caa: Vec<NameCheck>,
    /// Every outcome but `ok`, one sentence each.
    pub problems: Vec<String>,
    /// When the check that found these outcomes was made.
    #[serde(serialize_with = "rfc3339")]
    pub changed_at: DateTime<Utc>,
}

impl From<HealthView> for DomainHealthBody {
    fn from(view: HealthView) -> Self {
        Self {
            routing: view.routing,
            delegation: view.delegation,
            caa: view.caa,
            problems: view.problems,
            changed_at: view.changed_at,
        }
    }
}

impl DomainBody {
    /// The body of a domain view; `zone` when delegated validation is on.
    pub fn of(view: DomainView, zone: Option<&DelegationZone>) -> Self {
        let verification_record =
            (view.status == DomainStatus::Pending).then(|| VerificationRecord::of(&view));
        let delegation_records = match zone {
            Some(zone) if !view.removed => DelegationRecordBody::all(zone, &view),
            _ => Vec::new(),
        };
        let open_order = view.open_order();
        let validation = open_order.map(|order| order.validation);
        let delegation_problem = open_order.and_then(|order| order.delegation_problem.clone());
        Self {
            verification_record,
            validation,
            delegation_problem,
            delegation_records,
            order_id: view.order.as_ref().map(|order| order.order_id.clone()),
            id: view.id,
            domain_name: view.domain_name,
            alt_names: view.alt_names,
            tenant: view.tenant,
            status: view.status,
            verified_at: view.verified_at,
            created_at: view.created_at,
            updated_at: view.updated_at,
            failure_reason: view.failure_reason,
            challenge: view.challenge,
            challenges: view.challenges,
            certificate: view.certificate,
            renewal: view.renewal.map(RenewalBody::from),
            health: view.health.map(DomainHealthBody::from),
        }
    }
}

/// Where the renewal of the current certificate stands (in `GET /domains/{id}`).
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct RenewalBody {
    /// When the renewal is due; absent until the scheduler has decided (right after issuance).
    #[serde(
        serialize_with = "rfc3339_opt",
        skip_serializing_if = "Option::is_none"
    )]
    pub due_at: Option<DateTime<Utc>>,
    /// Why then: `ari` (inside the window the CA suggests), `lifetime` (`RENEW_BEFORE`), or
    /// `revoked` (the certificate was revoked: its replacement is due at once).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<RenewalReason>,
    /// The CA's suggested window, for `ari`.
    #[serde(
        serialize_with = "rfc3339_opt",
        skip_serializing_if = "Option::is_none"
    )]
    pub window_start: Option<DateTime<Utc>>,
    /// The CA's suggested window, for `ari`.
    #[serde(
        serialize_with = "rfc3339_opt",
        skip_serializing_if = "Option::is_none"
    )]
    pub window_end: Option<DateTime<Utc>>,
    /// The CA's page explaining its window, when it gave one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub explanation_url: Option<String>,
    /// A renewal order is open: publish its `challenges`. Until they are visible the current
    /// certificate stays in service, and the domain `active`.
    pub in_progress: bool,
    /// The open renewal order.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub order_id: Option<String>,
    /// The TXT records the open renewal order needs, as `issue-certificate` gives them.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub challenges: Vec<ChallengeView>,
    /// Failed attempts in a row.
    pub attempts: u32,
    /// When the next attempt is due after a failure.
    #[serde(
        serialize_with = "rfc3339_opt",
        skip_serializing_if = "Option::is_none"
    )]
    pub next_attempt_at: Option<DateTime<Utc>>,
    /// Why the last attempt failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_failure: Option<FailureReason>,
}

impl From<RenewalView> for RenewalBody {
    fn from(view: RenewalView) -> Self {
        Self {
            due_at: view.due_at,
            reason: view.reason,
            window_start: view.window_start,
            window_end: view.window_end,
            explanation_url: view.explanation_url,
            in_progress: view.in_progress,
            order_id: view.order_id,
            challenges: view.challenges,
            attempts: view.attempts,
            next_attempt_at: view.next_attempt_at,
            last_failure: view.last_failure,
        }
    }
}

/// `202` body of `POST /domains/{id}/issue-certificate`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct IssuanceStarted {
    /// The service's id of the ACME order.
    pub order_id: String,
    /// `certificate_pending` for a first issuance; a renewal keeps the domain's status
    /// (`active`, or `expired`).
    pub status: DomainStatus,
    /// Where to publish the domain's own TXT record (when the CA already holds a valid
    /// authorization for the domain itself: the first challenge's).
    pub challenge_domain: String,
    /// What to publish there (empty only when no name needs a record at all).
    pub expected_txt_value: String,
    /// Every record, in words, for people.
    pub instructions: String,
    /// Every record to publish, one per authorization of the order. A domain and its wildcard
    /// share one `challenge_domain`: both values must be published there at once.
    pub challenges: Vec<ChallengeView>,
    /// `delegated`: every `_acme-challenge` name is a CNAME into the service's zone, where the
    /// service publishes the values itself, and nobody need publish anything. `manual`: publish
    /// the `challenges`.
    pub validation: Validation,
    /// Why the order fell back to `manual` although delegation is on (a CNAME missing or
    /// pointing elsewhere).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub delegation_problem: Option<String>,
}

/// `200` body of `GET /domains?…`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct DomainList {
    /// One page of domains.
    pub items: Vec<DomainBody>,
    /// Pass as `cursor` for the next page; `null` on the last page.
    pub next_cursor: Option<String>,
}

/// `200` body of `GET /domains/{id}/certificate`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct CertificateBody {
    /// The certificate's id.
    pub id: String,
    /// The domain's id.
    pub domain_id: String,
    /// The names the certificate covers, read from its subjectAltName.
    #[schema(example = json!(["shop.example.com", "www.shop.example.com", "*.shop.example.com"]))]
    pub names: Vec<String>,
    /// Serial number, lower-case hex.
    pub serial: String,
    /// Start of validity, from the certificate.
    #[serde(serialize_with = "rfc3339")]
    pub not_before: DateTime<Utc>,
    /// End of validity, from the certificate.
    #[serde(serialize_with = "rfc3339")]
    pub not_after: DateTime<Utc>,
    /// When it was stored.
    #[serde(serialize_with = "rfc3339")]
    pub issued_at: DateTime<Utc>,
    /// SHA-256 of the leaf's DER, lower-case hex.
    pub fingerprint_sha256: String,
    /// The ACME directory of the CA that issued it (empty for a certificate issued before the
    /// service recorded it, by the one CA configured then).
    pub ca_directory: String,
    /// The chain as PEM.
    pub chain_pem: String,
}

/// Every error the API answers with.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ErrorBody {
    /// What went wrong, for people.
    pub error: String,
}

/// `409` body of `issue-certificate` and `renew`: another request changed the domain first
/// (`error` alone), or CAA records forbid every configured CA (`code` `caa_forbids`, and `caa`).
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct OrderConflictBody {
    /// What went wrong, for people.
    pub error: String,
    /// `caa_forbids` when CAA records forbid every configured CA.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub code: Option<String>,
    /// With `caa_forbids`: for every configured CA, each name whose CAA records forbid it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub caa: Option<Vec<CaaRefusalBody>>,
}

/// One name a CA may not issue for, and why (RFC 8659).
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct CaaRefusalBody {
    /// The CA (its ACME directory).
    pub ca: String,
    /// The name of the order (`*.` for a wildcard).
    pub name: String,
    /// Where the relevant CAA records are: the name itself or the nearest ancestor with some.
    pub found_at: String,
    /// The records that forbid the CA, as published (`0 issue "other-ca.example"`).
    pub forbidding: Vec<String>,
    /// A record that would let the CA issue, to add at `found_at`.
    pub would_allow: Option<String>,
    /// A record of the same set that lets another configured CA issue for this name.
    pub allows_other: Option<CaaAllowsOther>,
}

/// A CAA record that lets another configured CA issue.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct CaaAllowsOther {
    /// That CA (its ACME directory).
    pub ca: String,
    /// The record.
    pub record: String,
}

/// `200` body of `GET /domains/{id}/certificate/key`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct PrivateKeyBody {
    /// The domain's id.
    pub domain_id: String,
    /// The certificate the key belongs to.
    pub certificate_id: String,
    /// The private key, PKCS#8 PEM.
    pub private_key_pem: String,
}

/// `200` body of `GET /healthz`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct HealthBody {
    /// `ok`: alive.
    pub status: &'static str,
}

/// `200` body of `GET /readyz`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ReadyBody {
    /// `ready`.
    pub status: &'static str,
    /// Each kind of background work that panicked since the process started (the renewal
    /// scheduler, the zone follower, a webhook driver, …): how often, and whether it is down.
    pub background: std::collections::BTreeMap<&'static str, TaskHealth>,
}

/// The error answers every authenticated operation may give, for the OpenAPI description.
/// (The description's types are never built: `ApiError` produces these answers.)
#[allow(dead_code)]
#[derive(utoipa::IntoResponses)]
pub enum CallerErrors {
    /// Bad input: malformed JSON, a wrong field or query parameter (the message says which), a
    /// request the domain's current status does not allow (the message names the status), or an
    /// order the CA refused on policy (the message gives its problem; nothing was recorded).
    #[response(status = 400)]
    BadRequest(ErrorBody),
    /// A token is configured and the request carries no valid one.
    #[response(status = 401)]
    Unauthorized(ErrorBody),
    /// The store cannot be reached (down, restarting, or no connection free within
    /// `STORE_TIMEOUT`): nothing is wrong with the request; retry after `Retry-After` seconds.
    #[response(
        status = 503,
        headers(("Retry-After" = u32, description = "Seconds to wait before retrying"))
    )]
    StoreUnavailable(ErrorBody),
}

/// The answer for an unknown (or removed) domain id.
#[allow(dead_code)]
#[derive(utoipa::IntoResponses)]
pub enum NotFoundError {
    /// No domain has this id (or it was removed); the message says which. A tenant token gets
    /// exactly this, `no domain with id <id>`, for every domain not of its tenant.
    #[response(status = 404)]
    NotFound(ErrorBody),
}

/// The error answers of the operations that change a domain.
#[allow(dead_code)]
#[derive(utoipa::IntoResponses)]
pub enum ChangeErrors {
    /// A read-only (auditor) token may not change anything or read private keys; a tenant
    /// token reads no private key and registers for its own tenant only.
    #[response(status = 403)]
    Forbidden(ErrorBody),
    /// The name is registered already, or another request changed the domain at the same
    /// time; nothing was recorded (the message says which).
    #[response(status = 409)]
    Conflict(ErrorBody),
}
