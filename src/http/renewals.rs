//! A certificate's life after issuance: `POST /domains/{id}/renew` starts a renewal now,
//! `POST /domains/{id}/certificate/revoke` revokes it at the CA and orders its replacement, and
//! `GET /domains/{id}/certificates` lists every certificate the domain ever had.

use actix::Addr;
use actix_web::{web, HttpRequest, HttpResponse};
use chrono::{DateTime, Utc};
use dns_handling_events::{CustomDomainEvent, RenewalReason, RevocationReason};
use serde::{Deserialize, Serialize};

use super::answers::{issuance_started, key_handed_out};
use super::auth::Role;
use super::bodies::{
    rfc3339, rfc3339_opt, CallerErrors, ChangeErrors, DomainBody, ErrorBody, IssuanceStarted,
    NotFoundError, OrderConflictBody, PrivateKeyBody,
};
use super::origin::{key_reader, origin};
use super::{ApiError, SharedState};
use crate::actors::Supervisor;
use crate::adapters::acme::{certificate_issuer, certificate_names};
use crate::app_state::AppState;
use crate::use_cases::{keys, live_view, renew, revoke};

/// `POST /domains/{id}/renew`: renew the domain's certificate now, whatever its schedule says.
/// The certificate in service stays until the new one is issued.
#[utoipa::path(
    post, path = "/domains/{id}/renew", operation_id = "renewCertificate", tag = "certificates",
    params(("id" = String, Path, description = "The domain's id")),
    responses(
        (status = 202, description = "A renewal order was created for every name of the domain; publish each challenge's TXT record (the domain stays active meanwhile)", body = IssuanceStarted),
        (status = 500, description = "The CA could not be reached (nothing was recorded; the answer names the request id; a refusal by the CA is a 400)", body = ErrorBody),
        (status = 429, description = "A budget kept for the CA is spent, or the CA said not now: retry after `Retry-After` seconds; nothing was recorded", body = ErrorBody),
        CallerErrors, NotFoundError, ChangeErrors,
        // After ChangeErrors: this 409 is the one described.
        (status = 409, description = "A renewal is being started by another request or replica, or another request changed the domain at the same time (`error` alone), or CAA records forbid every configured CA to issue for its names (`code` is `caa_forbids`; `caa` names each CA, name, the records that forbid it and a record that would allow it); nothing was asked of any CA and nothing was recorded", body = OrderConflictBody)
    ),
    security(("bearer" = []))
)]
pub async fn renew(
    state: SharedState,
    supervisor: web::Data<Addr<Supervisor>>,
    request: HttpRequest,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let renewal = renew::renew_now(&state, supervisor.get_ref(), &id, origin(&request)).await?;
    let settings = &state.settings;
    let started = issuance_started(
        renewal.order,
        &renewal.view.domain_name,
        renewal.view.status,
        settings,
        settings.renewal_txt_timeout,
    );
    Ok(HttpResponse::Accepted().json(started))
}

/// One certificate in `GET /domains/{id}/certificates`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct CertificateHistoryItem {
    /// The certificate's id.
    pub id: String,
    /// The order it was issued for.
    pub order_id: String,
    /// Serial number, lower-case hex.
    pub serial: String,
    /// The names it covers, read from the certificate.
    pub names: Vec<String>,
    /// The issuer's distinguished name, read from the certificate.
    pub issuer: Option<String>,
    /// Start of validity.
    #[serde(serialize_with = "rfc3339")]
    pub not_before: DateTime<Utc>,
    /// End of validity.
    #[serde(serialize_with = "rfc3339")]
    pub not_after: DateTime<Utc>,
    /// When it was stored.
    #[serde(serialize_with = "rfc3339")]
    pub issued_at: DateTime<Utc>,
    /// The certificate it replaced, for a renewal.
    pub replaced: Option<String>,
    /// Why it was renewed (`ari`, `lifetime`, `manual`, `revoked`), for a renewal.
    pub renewal_reason: Option<RenewalReason>,
    /// The domain's certificate in service now.
    pub current: bool,
    /// When the CA revoked it, if it did.
    #[serde(
        serialize_with = "rfc3339_opt",
        skip_serializing_if = "Option::is_none"
    )]
    pub revoked_at: Option<DateTime<Utc>>,
    /// Why it was revoked.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub revocation_reason: Option<RevocationReason>,
}

/// `200` body of `GET /domains/{id}/certificates`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct CertificateHistory {
    /// Every certificate, newest first.
    pub items: Vec<CertificateHistoryItem>,
}

/// `GET /domains/{id}/certificates`: every certificate the domain ever had, newest first, read
/// from its event history.
#[utoipa::path(
    get, path = "/domains/{id}/certificates", operation_id = "listCertificates", tag = "certificates",
    params(("id" = String, Path, description = "The domain's id")),
    responses(
        (status = 200, description = "Every certificate, newest first", body = CertificateHistory),
        CallerErrors, NotFoundError
    ),
    security(("bearer" = []))
)]
pub async fn history(state: SharedState, id: web::Path<String>) -> Result<HttpResponse, ApiError> {
    live_view::<ApiError>(&state, &id).await?;
    let items = certificates_of(&state, &id)
        .await?
        .into_iter()
        .map(|(item, _)| item)
        .collect();
    Ok(HttpResponse::Ok().json(CertificateHistory { items }))
}

/// Every certificate of a domain, newest first, with its chain, folded from its events.
async fn certificates_of(
    state: &AppState,
    id: &str,
) -> Result<Vec<(CertificateHistoryItem, String)>, ApiError> {
    let mut items: Vec<(CertificateHistoryItem, String)> = Vec::new();
    let mut renewal: Option<(RenewalReason, String)> = None;
    for stored in state.store.domain_history(id).await? {
        let event = stored
            .decode()
            .map_err(|e| ApiError::internal_from("stored event is unreadable", e))?;
        match event {
            CustomDomainEvent::RenewalRequested {
                reason,
                renews_certificate_id,
                ..
            } => renewal = Some((reason, renews_certificate_id)),
            CustomDomainEvent::RenewalFailed { .. } => renewal = None,
            CustomDomainEvent::CertificateIssued {
                certificate,
                issued_at,
            } => {
                let renewed = renewal.take();
                let item = CertificateHistoryItem {
                    names: certificate_names(&certificate.chain_pem),
                    issuer: certificate_issuer(&certificate.chain_pem),
                    id: certificate.certificate_id,
                    order_id: certificate.order_id,
                    serial: certificate.serial,
                    not_before: certificate.not_before,
                    not_after: certificate.not_after,
                    issued_at,
                    renewal_reason: renewed.as_ref().map(|(reason, _)| *reason),
                    replaced: renewed.map(|(_, replaced)| replaced),
                    current: false,
                    revoked_at: None,
                    revocation_reason: None,
                };
                items.push((item, certificate.chain_pem));
            }
            CustomDomainEvent::CertificateRevoked {
                certificate_id,
                reason,
                revoked_at,
            } => {
                if let Some((item, _)) =
                    items.iter_mut().find(|(item, _)| item.id == certificate_id)
                {
                    item.revoked_at = Some(revoked_at);
                    item.revocation_reason = Some(reason);
                }
            }
            _ => {}
        }
    }
    if let Some((last, _)) = items.last_mut() {
        last.current = true;
    }
    items.reverse();
    Ok(items)
}

/// One certificate of a domain with its chain, current or past.
async fn one_certificate(
    state: &AppState,
    id: &str,
    certificate_id: &str,
) -> Result<(CertificateHistoryItem, String), ApiError> {
    live_view::<ApiError>(state, id).await?;
    certificates_of(state, id)
        .await?
        .into_iter()
        .find(|(item, _)| item.id == certificate_id)
        .ok_or_else(|| {
            ApiError::NotFound(format!("domain {id} has no certificate {certificate_id}"))
        })
}

/// `200` body of `GET /domains/{id}/certificates/{certificate_id}`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct PastCertificateBody {
    /// Its facts, as the history lists them.
    #[serde(flatten)]
    pub certificate: CertificateHistoryItem,
    /// The chain as PEM, leaf first.
    pub chain_pem: String,
}

/// `GET /domains/{id}/certificates/{certificate_id}`: one certificate, current or past, with
/// its chain (a renewed certificate stays readable: edges may still serve it).
#[utoipa::path(
    get, path = "/domains/{id}/certificates/{certificate_id}", operation_id = "getPastCertificate", tag = "certificates",
    params(
        ("id" = String, Path, description = "The domain's id"),
        ("certificate_id" = String, Path, description = "The certificate's id")
    ),
    responses(
        (status = 200, description = "The certificate and its chain", body = PastCertificateBody),
        CallerErrors, NotFoundError
    ),
    security(("bearer" = []))
)]
pub async fn one(
    state: SharedState,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, ApiError> {
    let (id, certificate_id) = path.into_inner();
    let (certificate, chain_pem) = one_certificate(&state, &id, &certificate_id).await?;
    Ok(HttpResponse::Ok().json(PastCertificateBody {
        certificate,
        chain_pem,
    }))
}

/// `GET /domains/{id}/certificates/{certificate_id}/key`: the private key of a certificate in
/// service or of one it replaced, until that one's end of validity (then its key is destroyed).
/// Admins only; every read is recorded before the key leaves.
#[utoipa::path(
    get, path = "/domains/{id}/certificates/{certificate_id}/key", operation_id = "getPastCertificateKey", tag = "certificates",
    params(
        ("id" = String, Path, description = "The domain's id"),
        ("certificate_id" = String, Path, description = "The certificate's id")
    ),
    responses(
        (status = 200, description = "The private key (the read is recorded first)", body = PrivateKeyBody),
        CallerErrors, NotFoundError, ChangeErrors
    ),
    security(("bearer" = []))
)]
pub async fn key(
    state: SharedState,
    request: HttpRequest,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, ApiError> {
    Role::require_admin(&request, "read private keys")?;
    let (id, certificate_id) = path.into_inner();
    let (certificate, _) = one_certificate(&state, &id, &certificate_id).await?;
    let key = keys::past_key(
        &state,
        &id,
        certificate_id,
        &certificate.order_id,
        key_reader(&request),
        origin(&request),
    )
    .await?;
    Ok(key_handed_out(key))
}

/// Body of `POST /domains/{id}/certificate/revoke`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RevokeRequest {
    /// Why (RFC 5280 reason): `unspecified` (the default), `keyCompromise`,
    /// `affiliationChanged`, `superseded`, `cessationOfOperation` or `privilegeWithdrawn`.
    reason: Option<RevocationReason>,
}

/// `POST /domains/{id}/certificate/revoke`: revoke the current certificate at the CA, record
/// it, and order its replacement at once (the scheduler orders it at its next tick if the CA
/// cannot be asked now).
#[utoipa::path(
    post, path = "/domains/{id}/certificate/revoke", operation_id = "revokeCertificate", tag = "certificates",
    params(("id" = String, Path, description = "The domain's id")),
    request_body = RevokeRequest,
    responses(
        (status = 200, description = "Revoked; the domain's renewal shows the replacement's order and records", body = DomainBody),
        (status = 413, description = "Body too large", body = ErrorBody),
        (status = 415, description = "Body is not JSON", body = ErrorBody),
        (status = 500, description = "The CA could not be reached (nothing was recorded; the answer names the request id; a refusal by the CA is a 400)", body = ErrorBody),
        (status = 502, description = "The CA that issued the certificate is no longer configured and could not be asked (the message names it; nothing was recorded). A 409 when no account for it is stored", body = ErrorBody),
        CallerErrors, NotFoundError, ChangeErrors
    ),
    security(("bearer" = []))
)]
pub async fn revoke(
    state: SharedState,
    supervisor: web::Data<Addr<Supervisor>>,
    request: HttpRequest,
    id: web::Path<String>,
    body: web::Json<RevokeRequest>,
) -> Result<HttpResponse, ApiError> {
    let reason = body.reason.unwrap_or(RevocationReason::Unspecified);
    let pollers = supervisor.get_ref();
    let view = revoke::revoke(&state, pollers, &id, reason, origin(&request)).await?;
    Ok(HttpResponse::Ok().json(DomainBody::of(view, state.settings.delegation().as_ref())))
}
